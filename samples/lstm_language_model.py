"""An LSTM language model trained with truncated backpropagation through time: the hidden state is
carried from one batch to the next (detached), gradients are clipped at 0.25, SGD with lr 20 (the
recipe of PyTorch's word-language-model example).

gradscope should find: nothing at warning or error level.

The plain loop gradscope runs cannot carry a hidden state, so this file defines its own step:
`train_step(model, batch, optimizer, state)` runs forward, backward, clipping and the optimizer
step and returns the loss; `state` is a dict gradscope keeps between calls (with three parameters,
`train_step(model, batch, optimizer)`, there is none). `train_data()` yields the consecutive
(inputs, targets) chunks of the token stream.

Run:  gradscope analyze samples/lstm_language_model.py --steps 30
"""

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, BPTT, BATCH = 40, 12, 8


class RNNModel(nn.Module):
    def __init__(self, ntoken=VOCAB, ninp=32, nhid=32, nlayers=2, dropout=0.2):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, nhid, nlayers, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        self.nlayers, self.nhid = nlayers, nhid
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, tokens, hidden):
        output, hidden = self.rnn(self.drop(self.encoder(tokens)), hidden)
        return self.decoder(self.drop(output)), hidden

    def init_hidden(self, batch):
        weight = next(self.parameters())
        return (weight.new_zeros(self.nlayers, batch, self.nhid), weight.new_zeros(self.nlayers, batch, self.nhid))


def build_model():
    return RNNModel()


def train_data():
    """Consecutive BPTT chunks of one long token stream laid out in BATCH columns."""
    g = torch.Generator().manual_seed(0)
    successors = torch.randint(0, VOCAB, (VOCAB, 3), generator=g)
    tokens = [0]
    for choice in torch.randint(0, 3, (BATCH * BPTT * 40,), generator=g).tolist():
        tokens.append(int(successors[tokens[-1], choice]))
    stream = torch.tensor(tokens[: (len(tokens) // BATCH) * BATCH]).view(BATCH, -1).t().contiguous()
    for i in range(0, stream.size(0) - 1 - BPTT, BPTT):
        yield stream[i : i + BPTT], stream[i + 1 : i + 1 + BPTT]


def make_optimizer(parameters):
    return torch.optim.SGD(parameters, lr=20.0)


def train_step(model, batch, optimizer, state):
    data, targets = batch
    hidden = state.get("hidden") or model.init_hidden(data.size(1))
    hidden = tuple(h.detach() for h in hidden)  # truncated BPTT: no gradient into the previous batch
    optimizer.zero_grad()
    output, hidden = model(data, hidden)
    loss = F.cross_entropy(output.reshape(-1, VOCAB), targets.reshape(-1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
    optimizer.step()
    state["hidden"] = hidden
    return loss
