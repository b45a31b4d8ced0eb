"""The table of measured kinds: every queued value is one of its rows, and the folds it names
are the ones windows and ranks use."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest
import torch
from torch import nn

from gradscope.measure import (
    ACTIVATION_SAMPLE,
    KINDS,
    KINDS_BY_NAME,
    LAYER_COUNTER_WIDTH,
    Fold,
    LayerCounters,
    Scope,
    StepAccumulator,
    _abs_maxima,
    _abs_sums,
    _nonzero_counts,
    per_unit_peak,
    sample_rows,
)
from gradscope.model_tree import saturation_counter


def test_every_value_a_step_queues_is_a_row_of_the_table() -> None:
    layer = nn.Linear(6, 5)
    out = torch.sigmoid(layer(torch.randn(4, 6)))
    out.sum().backward()
    accumulator = StepAccumulator()
    accumulator.add_activation("act", out, 1, saturation_counter(nn.Sigmoid(), "sigmoid"), nonnegative=True)
    accumulator.add_backprop("act", torch.ones_like(out))
    named = [(n, p.grad) for n, p in layer.named_parameters()]
    accumulator.add_backward_end_gradients(named)  # before clipping: queued with the optimizer's read
    accumulator.add_gradients(named, list(layer.parameters()))
    accumulator.add_updates([n for n, _ in named], [g for _, g in named])
    accumulator.add_local_gradient_norm([g.norm() for _, g in named])
    accumulator.queue("loss_scale", "", torch.tensor(2.0**16))
    measured = accumulator.measurements()
    queued = {kind for kind, _ in measured.keys}
    assert queued <= set(KINDS_BY_NAME), queued - set(KINDS_BY_NAME)
    assert queued == set(KINDS_BY_NAME) - {"unit_activity"}  # the one vector kind travels apart
    assert set(measured.unit_activity) == {"act"}
    values = measured.to_host()
    # norms are kept squared: the folded grad_norm is the sum of squares of the gradient
    assert values.folded["grad_norm"]["weight"] == pytest.approx(float(layer.weight.grad.pow(2).sum()), rel=1e-5)
    assert values.rank_grad_norms[0] == pytest.approx(
        math.sqrt(sum(float(p.grad.pow(2).sum()) for p in layer.parameters())), rel=1e-5
    )


def test_a_window_folds_each_kind_as_the_table_says() -> None:
    accumulator = StepAccumulator()
    for value in (3.0, 4.0):
        accumulator.add_backprop("a", torch.full((1,), value))  # norms 3 and 4: squares add to 25
        accumulator.queue("act_sum", "a", torch.tensor(value))
        accumulator.queue("grad_absmax", "p", torch.tensor(value))
        accumulator.queue("loss_scale", "", torch.tensor(value))
    folded = accumulator.measurements().to_host().folded
    assert folded["backprop_norm"]["a"] == 25.0
    assert folded["act_sum"]["a"] == 7.0
    assert folded["grad_absmax"]["p"] == 4.0
    assert folded["loss_scale"][""] == 3.0


@pytest.mark.parametrize(
    ("kind", "replicas", "rule"),
    [
        ("act_sum", 4, (Fold.SUM, 1.0)),  # each rank measured its own samples
        ("act_norm", 4, (Fold.SUM_OF_SQUARES, 1.0)),
        ("backprop_norm", 4, (Fold.SUM_OF_SQUARES, 1 / 16)),  # of the rank-averaged loss
        ("grad_norm", 4, (Fold.FIRST, 1.0)),  # replicated (DDP): every rank read the same values
        ("grad_norm", 1, (Fold.SUM_OF_SQUARES, 1.0)),  # FSDP2 shards
        ("grad_l1", 2, (Fold.SUM, 0.5)),  # HSDP: each shard held by two ranks
        ("grad_absmax", 2, (Fold.MAX, 1.0)),
        ("grad_absmax", 1, (Fold.MAX, 1.0)),  # FSDP2 shards: the largest entry of any shard
        ("loss_scale", 1, (Fold.FIRST, 1.0)),
    ],
)
def test_ranks_combine_by_scope_and_fold(kind: str, replicas: int, rule: tuple[Fold, float]) -> None:
    assert KINDS_BY_NAME[kind].across_ranks(replicas, world=4) == rule


def test_folds_of_a_window_and_of_ranks_agree() -> None:
    rows = torch.tensor([[3.0, -1.0], [5.0, 2.0], [4.0, 2.0]], dtype=torch.float64)
    for fold in Fold:
        folded = rows[0].tolist()
        for row in rows[1:].tolist():
            folded = [fold.combine(a, b) for a, b in zip(folded, row)]
        assert fold.reduce(rows).tolist() == folded, fold


def test_layer_counters_travel_in_field_order_and_fold_per_field() -> None:
    assert LAYER_COUNTER_WIDTH == len(fields(LayerCounters))
    a = LayerCounters(calls=2, numel=60, batch=6, eval_calls=1, sampled=60, units=5, saturating=True)
    b = LayerCounters(calls=2, numel=40, batch=4, eval_calls=0, sampled=40, units=5, saturating=False)
    assert LayerCounters.decode(a.encode()) == a
    assert LayerCounters.decode(LayerCounters(units=None).encode()).units is None
    combined = LayerCounters.combine_ranks(torch.tensor([[a.encode()], [b.encode()]], dtype=torch.float64))[0]
    assert combined == LayerCounters(calls=2, numel=100, batch=10, eval_calls=1, sampled=100, units=5, saturating=True)
    b.units = 7  # the ranks saw different widths: dead units are undefined
    assert LayerCounters.combine_ranks(torch.tensor([[a.encode()], [b.encode()]], dtype=torch.float64))[0].units is None


def test_every_row_is_complete() -> None:
    assert len(KINDS_BY_NAME) == len(KINDS)
    for kind in KINDS:
        assert kind.meaning and isinstance(kind.scope, Scope) and isinstance(kind.fold, Fold)


@pytest.mark.parametrize(
    "shape",
    # whole output, a staged sample, every k-th token of a batch of sequences (a strided view, staged),
    # a sample of wide rows reduced where it is
    [(3, 5), (64, 512), (2, 64, 512), (2, 3, 20000)],
    ids=["small", "staged", "token-rows", "large-sample"],
)
def test_sample_statistics_equal_numpy_on_the_sample_whatever_the_path(shape) -> None:
    torch.manual_seed(0)
    tanh = nn.Tanh()
    outputs = [tanh(3 * torch.randn(*shape)).relu_() for _ in range(3)]  # zeros and saturation in each
    accumulator = StepAccumulator()
    for i, out in enumerate(outputs):
        accumulator.add_activation(f"layer{i}", out, None, saturation_counter(tanh, "tanh"))
    values = accumulator.measurements().to_host()
    for i, out in enumerate(outputs):
        part = sample_rows(out, ACTIVATION_SAMPLE).double().numpy().ravel()
        stats = values.activation_stats(f"layer{i}")
        assert stats["act_sparsity"] == pytest.approx(np.mean(part == 0), abs=1e-9)
        assert stats["act_saturation"] == pytest.approx(np.mean(np.abs(part) > 0.99), abs=1e-9)
        assert stats["act_std"] == pytest.approx(part.std(), rel=1e-4)
        assert stats["act_mean"] == pytest.approx(out.double().mean().item(), rel=1e-5)


@pytest.mark.parametrize("fused", [False, True], ids=["per-tensor (CPU)", "multi-tensor (accelerator)"])
def test_gradient_reductions_equal_numpy_on_either_path(fused: bool) -> None:
    """The accelerator path (one multi-tensor kernel each) and the CPU path (per-tensor ops) give
    the same maxima, |g| sums and nonzero counts, here forced on a CPU; an empty FSDP shard reads 0."""
    torch.manual_seed(0)
    grads = [torch.randn(300, 200), torch.empty(0), torch.randn(7).relu_(), -torch.rand(50, 3) - 2.0, torch.zeros(4)]
    grads.append(torch.randn(64, dtype=torch.bfloat16))
    as_numpy = [g.double().numpy().ravel() for g in grads]
    maxima = _abs_maxima(grads, fused=fused)
    assert maxima.dtype == torch.float32 and maxima.shape == (len(grads),)
    assert maxima.tolist() == pytest.approx([float(np.abs(a).max()) if a.size else 0.0 for a in as_numpy], rel=1e-6)
    full = [g for g in grads if g.numel()]
    full_numpy = [a for a in as_numpy if a.size]
    sums = [float(v) for v in _abs_sums(full, fused=fused)]
    assert sums == pytest.approx([float(np.abs(a).sum()) for a in full_numpy], rel=1e-5)
    counts = [float(v) for v in _nonzero_counts(full, fused=fused)]
    assert counts == [float(np.count_nonzero(a)) for a in full_numpy]


def test_unit_peak_is_zero_exactly_for_silent_units() -> None:
    """Dead units: a unit is silent exactly when its peak is 0, even for subnormal or huge entries."""
    out = torch.zeros(6, 5)
    out[2, 1] = 1e-44  # subnormal: |x|^2 underflows, hypot does not
    out[0, 2], out[3, 2] = 3e38, -3e38  # |max| + |min| overflows, still nonzero
    out[:, 3] = -1.0
    peak = per_unit_peak(out, unit_dim=1)
    assert (peak == 0).tolist() == [True, False, False, False, True]
    channels = torch.zeros(2, 3, 4, 4)
    channels[1, 2, 3, 0] = -2.0
    assert (per_unit_peak(channels, unit_dim=1) == 0).tolist() == [True, True, False]


def test_an_activation_sample_takes_rows_from_every_sample_of_the_batch() -> None:
    """A batch of 2 sequences of 64 tokens: a sample along the batch alone would be one whole
    sequence (8x too many entries, all from one sample); rows are taken from both."""
    out = torch.arange(2 * 64 * 512, dtype=torch.float32).view(2, 64, 512)
    part = sample_rows(out, ACTIVATION_SAMPLE)
    assert part.numel() <= ACTIVATION_SAMPLE and part.shape[-1] == 512
    sequences = {int(row[0]) // (64 * 512) for row in part}
    assert sequences == {0, 1}
    small = out[:, :4]  # 4096 entries: up to twice the sample size, all of it
    assert sample_rows(small, ACTIVATION_SAMPLE) is small
    transposed = out.transpose(1, 2)  # not contiguous: every k-th sample of the batch, as for any tensor
    assert sample_rows(transposed, ACTIVATION_SAMPLE).shape == (1, 512, 64)
