"""How report rendering scales with depth: figures and the HTML page for 12 to 600 layers.

    python benchmarks/report_render.py [--depths 12,150,600] [--steps 20]

Each depth is a real watched tanh MLP (width 8, so training is instant) trained for `--steps`
steps; then the six figures are drawn and the HTML page is assembled from them. Printed side by
side, measured in this one process: seconds for the figures, for the rest of the page, the page
size, and the figure time relative to the shallowest net (the target: well under linear in
depth, since a figure's cost is mostly fixed).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import gradscope
from gradscope.report.html import render_html
from gradscope.report.plots import build_figures


def watched_run(layers: int, steps: int):
    blocks = [m for _ in range(layers // 2) for m in (nn.Linear(8, 8), nn.Tanh())]
    model = nn.Sequential(*blocks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 8), torch.randn(32, 8)
    with gradscope.watch(model, optimizer=optimizer) as run:
        for _ in range(steps):
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(loss=loss.item())
    return run.record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="12,150,600", help="comma-separated layer counts")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    print(f"{'layers':>7} {'figures s':>10} {'page s':>8} {'page MB':>8} {'figures vs first':>17}")
    first = None
    for depth in (int(d) for d in args.depths.split(",")):
        record = watched_run(depth, args.steps)
        diagnosis = gradscope.diagnose(record)
        start = time.perf_counter()
        figures = build_figures(record, diagnosis)
        drawn = time.perf_counter()
        page = render_html(record, diagnosis, figures=figures)
        done = time.perf_counter()
        first = first or (drawn - start)
        print(
            f"{len(record.layers):>7} {drawn - start:>10.2f} {done - drawn:>8.3f} "
            f"{len(page.encode()) / 1e6:>8.2f} {(drawn - start) / first:>16.2f}x"
        )


if __name__ == "__main__":
    main()
