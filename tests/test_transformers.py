"""Real architectures, built from small configs without weights: no crash, identical losses."""

from __future__ import annotations

import pytest
import torch

import gradscope

transformers = pytest.importorskip("transformers", reason="transformers is a test extra: pip install -e .[test]")


def _configs():
    common = dict(vocab_size=64, hidden_size=32, num_attention_heads=2, intermediate_size=64)
    return {
        "gpt2": (transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=32), transformers.GPT2LMHeadModel),
        "bert": (transformers.BertConfig(num_hidden_layers=2, max_position_embeddings=32, **common), transformers.BertForMaskedLM),
        "llama": (
            transformers.LlamaConfig(num_hidden_layers=2, num_key_value_heads=1, max_position_embeddings=32, **common),
            transformers.LlamaForCausalLM,
        ),
    }


def _train(name: str, watch: bool, steps: int = 3):
    config, cls = _configs()[name]
    torch.manual_seed(0)
    model = cls(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    watcher = gradscope.watch(model, optimizer=opt).attach() if watch else None
    try:
        for _ in range(steps):
            ids = torch.randint(0, 64, (2, 16), generator=g)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
    finally:
        record = watcher.detach() if watcher else None
    return losses, record


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama"])
def test_transformer_models_train_identically_and_are_recorded(name):
    plain, _ = _train(name, watch=False)
    watched, record = _train(name, watch=True)
    assert watched == plain
    assert not record.hook_errors, record.hook_errors
    assert record.steps == [0, 1, 2]
    with_grads = [m.name for m in record.modules if m.params and record.last("grad_norm", m.name)]
    assert len(with_grads) >= 8
    with_signal = [n for n in record.layers if record.last("backprop_norm", n)]
    assert len(with_signal) >= 8
