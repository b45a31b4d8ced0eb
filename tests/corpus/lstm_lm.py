"""An LSTM language model in the style of PyTorch's word-language-model example: embedding,
dropout, a two-layer LSTM, a tied decoder; truncated backpropagation through time with the
hidden state carried from batch to batch (detached), gradient clipping at 0.25 and plain SGD
with the example's learning rate of 20.

Twin: the learning rate multiplied by 1000.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import gradscope

from .cases import Case
from .data import token_stream

VOCAB, BPTT, BATCH = 50, 12, 8


class RNNModel(nn.Module):
    def __init__(self, ntoken: int, ninp: int = 32, nhid: int = 32, nlayers: int = 2, dropout: float = 0.2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.decoder.weight = self.encoder.weight  # tied weights
        self.nlayers, self.nhid = nlayers, nhid
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, tokens, hidden):
        emb = self.drop(self.encoder(tokens))
        output, hidden = self.rnn(emb, hidden)
        return self.decoder(self.drop(output)), hidden

    def init_hidden(self, batch: int):
        weight = next(self.parameters())
        return (weight.new_zeros(self.nlayers, batch, self.nhid), weight.new_zeros(self.nlayers, batch, self.nhid))


def repackage_hidden(h):
    """Detach the hidden state from the graph of the previous batch."""
    return h.detach() if isinstance(h, torch.Tensor) else tuple(repackage_hidden(v) for v in h)


def batchify(data: torch.Tensor, batch: int) -> torch.Tensor:
    rows = data.size(0) // batch
    return data[: rows * batch].view(batch, -1).t().contiguous()


def _train(lr: float) -> dict:
    torch.manual_seed(0)
    model = RNNModel(VOCAB)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    source = batchify(token_stream(BATCH * BPTT * 31, VOCAB), BATCH)
    hidden = model.init_hidden(BATCH)
    with gradscope.watch(model, optimizer=optimizer) as run:
        for i in range(0, source.size(0) - 1 - BPTT, BPTT):
            data, targets = source[i : i + BPTT], source[i + 1 : i + 1 + BPTT].reshape(-1)
            hidden = repackage_hidden(hidden)
            model.zero_grad()
            output, hidden = model(data, hidden)
            loss = F.cross_entropy(output.view(-1, VOCAB), targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            optimizer.step()
            run.log(loss=loss.item())
    return {"model": run.record}


CASES = [
    Case("lstm-lm", "word-language-model example: carried hidden state, clip 0.25, SGD lr=20", lambda: _train(20.0)),
    Case("lstm-lm/lr-x1000", "SGD lr=20000", lambda: _train(20000.0), ("update-ratio-high", "exploding-gradients", "nonfinite")),
]
