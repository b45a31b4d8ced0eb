"""A small GPT-style character model trained with its usual recipe: AdamW with weight decay on
matrices only, a linear warm-up and gradient clipping at 1.0.

gradscope should find: nothing at warning or error level.

It shows three parts of the model-file contract: `make_optimizer(model)` (the parameter is named
`model`, so gradscope passes the model, not its parameters, and the groups can be built by
dimension), `make_scheduler(optimizer)` (stepped after every optimizer step) and
`clip_grad_norm = 1.0` (clipping between backward() and step(); `--clip` overrides it).

Run:  gradscope analyze samples/gpt_recipe.py --steps 40
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, BLOCK, EMBD, HEADS, LAYERS = 32, 16, 32, 4, 2
WARMUP = 10
clip_grad_norm = 1.0


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(EMBD)
        self.c_attn = nn.Linear(EMBD, 3 * EMBD)
        self.c_proj = nn.Linear(EMBD, EMBD)
        self.ln_2 = nn.LayerNorm(EMBD)
        self.c_fc = nn.Linear(EMBD, 4 * EMBD)
        self.mlp_proj = nn.Linear(4 * EMBD, EMBD)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(EMBD, dim=2)
        q, k, v = (t.view(B, T, HEADS, C // HEADS).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB, EMBD)
        self.wpe = nn.Embedding(BLOCK, EMBD)
        self.h = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(EMBD)
        self.lm_head = nn.Linear(EMBD, VOCAB, bias=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def build_model():
    return GPT()


_TEXT = None


def _text():
    """A synthetic 'corpus': a Markov chain where each character has three likely successors."""
    global _TEXT
    if _TEXT is None:
        g = torch.Generator().manual_seed(0)
        successors = torch.randint(0, VOCAB, (VOCAB, 3), generator=g)
        tokens = [0]
        for choice in torch.randint(0, 3, (5000,), generator=g).tolist():
            tokens.append(int(successors[tokens[-1], choice]))
        _TEXT = torch.tensor(tokens)
    return _TEXT


def make_batch(batch_size):
    text = _text()
    starts = torch.randint(0, len(text) - BLOCK - 1, (batch_size,))
    x = torch.stack([text[s : s + BLOCK] for s in starts])
    y = torch.stack([text[s + 1 : s + 1 + BLOCK] for s in starts])
    return x, y  # the default loss: cross-entropy over the last dimension of (B, T, VOCAB)


def make_optimizer(model):
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # biases and LayerNorm gains
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=3e-3, betas=(0.9, 0.95))


def make_scheduler(optimizer):
    def warmup_then_cosine(step):
        if step < WARMUP:
            return (step + 1) / WARMUP
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - WARMUP) / 200)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_cosine)
