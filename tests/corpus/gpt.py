"""A GPT-style character model in the style of minGPT/nanoGPT: token and position embeddings,
pre-LayerNorm blocks of causal self-attention and an MLP with F.gelu, a tied head; AdamW with
weight decay only on matrices (two parameter groups), linear warm-up then cosine decay, and
gradient clipping at 1.0.

Twins: the first two blocks frozen by mistake (`requires_grad_(False)` left in from a
fine-tuning experiment); the learning rate multiplied by 1000.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import gradscope

from .cases import Case
from .data import token_stream

VOCAB, BLOCK, EMBD, HEADS, LAYERS = 40, 16, 32, 4, 3


class CausalSelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn = nn.Linear(EMBD, 3 * EMBD)
        self.c_proj = nn.Linear(EMBD, EMBD)
        self.resid_dropout = nn.Dropout(0.1)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(EMBD, dim=2)
        q, k, v = (t.view(B, T, HEADS, C // HEADS).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_fc = nn.Linear(EMBD, 4 * EMBD)
        self.c_proj = nn.Linear(4 * EMBD, EMBD)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(EMBD)
        self.attn = CausalSelfAttention()
        self.ln_2 = nn.LayerNorm(EMBD)
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(VOCAB, EMBD),
                wpe=nn.Embedding(BLOCK, EMBD),
                h=nn.ModuleList(Block() for _ in range(LAYERS)),
                ln_f=nn.LayerNorm(EMBD),
            )
        )
        self.lm_head = nn.Linear(EMBD, VOCAB, bias=False)
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # scaled init of the residual projections
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * LAYERS))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx):
        pos = torch.arange(idx.size(1))
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))

    def configure_optimizers(self, weight_decay: float, lr: float):
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        decay = [p for p in params.values() if p.dim() >= 2]
        no_decay = [p for p in params.values() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def _train(lr: float = 3e-3, frozen_blocks: int = 0, steps: int = 30) -> dict:
    torch.manual_seed(0)
    model = GPT()
    for block in model.transformer.h[:frozen_blocks]:
        block.requires_grad_(False)
    optimizer = model.configure_optimizers(weight_decay=0.1, lr=lr)
    warmup = 5

    def lr_lambda(it: int) -> float:
        if it < warmup:
            return (it + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (it - warmup) / (steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    text = token_stream(4000, VOCAB)
    g = torch.Generator().manual_seed(1)
    with gradscope.watch(model, optimizer=optimizer) as run:
        for _ in range(steps):
            starts = torch.randint(0, len(text) - BLOCK - 1, (16,), generator=g)
            x = torch.stack([text[s : s + BLOCK] for s in starts])
            y = torch.stack([text[s + 1 : s + 1 + BLOCK] for s in starts])
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, VOCAB), y.view(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            run.log(loss=loss.item())
    return {"model": run.record}


CASES = [
    Case("gpt", "nanoGPT-style: F.gelu, AdamW decay groups, warm-up + cosine, clip 1.0", lambda: _train()),
    Case("gpt/frozen-blocks", "transformer.h[0:2] frozen by mistake", lambda: _train(frozen_blocks=2), ("no-gradient",), level="info"),
    Case("gpt/lr-x1000", "AdamW lr=3.0", lambda: _train(lr=3.0), ("update-ratio-high", "exploding-gradients", "nonfinite")),
]
