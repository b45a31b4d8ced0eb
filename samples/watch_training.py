"""gradscope's hook API in your own training loop: three added lines, then a per-layer table.

Run:  python samples/watch_training.py

The model is a 6-layer sigmoid MLP on a small synthetic task; the table shows the gradient
RMS and the backprop signal shrinking towards the input, and the findings explain why.
"""

import torch
from torch import nn

import gradscope
from gradscope.report.text import render_text


def main() -> None:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(6):
        layers += [nn.Linear(20 if i == 0 else 32, 32), nn.Sigmoid()]
    model = nn.Sequential(*layers, nn.Linear(32, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs = torch.randn(256, 20)
    targets = (inputs[:, 0] > 0).long() + (inputs[:, 1] > 0).long()

    with gradscope.watch(model, optimizer=optimizer) as run:  # 1. attach
        for _ in range(50):
            batch = torch.randint(0, len(inputs), (32,))
            loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            run.log(loss=loss.item())  # 2. optional: log scalars per step

    record = run.record  # 3. the statistics; every hook is gone
    print(render_text(record, gradscope.diagnose(record)))


if __name__ == "__main__":
    main()
