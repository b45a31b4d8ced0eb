"""Long runs: the run store's size, memory, speed and crash loss, measured side by side.

    python benchmarks/long_run.py [--steps 10000] [--ratio-steps 1000] [--long-steps 100000]
                                  [--long-layers 250] [--quick]

Prints, for a many-module model watched every step:
- bytes per recorded value on disk (goal: at most 6), and resident-memory growth per 1,000
  recorded steps with `path=` (goal: under 1 MB) and without (compact in-memory columns): a short
  real run's steps are replayed `--steps` times through the calls a watch writes a step with
  (`append_step`, `log_scalar`), each sink in its own child process, so that thousands of steps
  take seconds, not the hours of training them on a shared CPU;
- the step-time ratio with `path=` over without (goal: at most 1.02): two copies of the model,
  one watched into memory and one into a store, trained in alternating blocks in one process;
- the steps lost when a child process training with `path=` is killed with SIGKILL;
- load, diagnose and HTML-report times of the trained store and of a synthesized store of
  `--long-steps` steps and `--long-layers` layers (written through the store writer).
Times of one machine are only comparable within one run of this script.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# A many-module model: blocks of Linear + LayerNorm + GELU with a residual, small enough to train
# thousands of steps on a CPU, with as many modules as a mid-sized network.
MODEL = """
import torch
from torch import nn

class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.act = nn.GELU()

    def forward(self, x):
        return x + self.act(self.norm(self.fc(x)))

def build(blocks=24, width=16):
    return nn.Sequential(nn.Linear(8, width), *[Block(width) for _ in range(blocks)], nn.Linear(width, 1))

def batches(seed=0):
    g = torch.Generator().manual_seed(seed)
    while True:
        x = torch.randn(8, 8, generator=g)
        yield x, x.sum(1, keepdim=True)

def train(model, opt, data, steps, run=None, on_step=None):
    for step in range(steps):
        x, y = next(data)
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if run is not None:
            run.log(loss=loss)
        if on_step is not None:
            on_step(step)
"""


def _child(code: str, timeout: float = 1800) -> str:
    script = MODEL + textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if out.returncode != 0:
        raise SystemExit(f"child failed:\n{out.stderr}")
    return out.stdout


def sample_run(folder: Path, steps: int = 20) -> Path:
    """A short real run of the model, streamed into a store: the rows the other measurements replay."""
    store = folder / "sample.gsrun"
    _child(
        f"""
        import gradscope, torch
        torch.manual_seed(0)
        model = build()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        with gradscope.watch(model, optimizer=opt, path={str(store)!r}) as run:
            train(model, opt, batches(), {steps}, run)
        """
    )
    return store


def replayed_steps(sample: Path) -> list[tuple[dict, dict]]:
    """Each recorded step of the sample as the (layer values, parameter values) a watch writes."""
    import gradscope  # noqa: PLC0415

    record = gradscope.RunRecord.load(sample)
    rows = []
    for index in range(len(record.steps)):
        rows.append(tuple(
            {name: {stat: series[index] for stat, series in stats.items()} for name, stats in table.items()}
            for table in (record.layer_stats, record.param_stats)
        ))
    return rows


def memory_growth(sample: Path, steps: int, folder: Path, with_path: bool) -> tuple[float, int, Path]:
    """(MB of resident memory added per 1,000 recorded steps from the 1,000th to the last, bytes the
    in-memory columns hold at the end), in a child process that replays the sample's steps through
    what a watch writes them with."""
    store = folder / f"replay_{'path' if with_path else 'memory'}.gsrun"
    out = _child(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from long_run import replayed_steps
        from pathlib import Path
        from gradscope.record import RunMeta, RunRecord
        from gradscope.store import StoreWriter

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096

        import gradscope
        sample = gradscope.RunRecord.load({str(sample)!r})
        rows = replayed_steps(Path({str(sample)!r}))
        sink = StoreWriter({str(store)!r}, sample.meta) if {with_path} else RunRecord(meta=sample.meta)
        sink.modules = sample.modules  # so that the diagnosis of the replayed run has its module tree
        marks = {{}}
        for step in range({steps}):
            layers, params = rows[step % len(rows)]
            sink.append_step(step, layers, params, measured=True)
            sink.log_scalar(step, "loss", 1.0 / (step + 1))
            if step + 1 in (1000, {steps}):
                if {with_path}:
                    sink.flush()
                marks[step + 1] = rss()
        if {with_path}:
            sink.close()
            held = 0
        else:
            sink.save({str(store)!r})
            held = sum(c.nbytes for t in (sink.layer_stats, sink.param_stats) for s in t.values() for c in s.values())
        print(marks[1000], marks[{steps}], held)
        """
    )
    first, last, held = map(int, out.split())
    return (last - first) / 2**20 / ((steps - 1000) / 1000), held, store


def step_time_ratio(steps: int, block: int) -> float:
    """Median block time watched into a store over watched into memory, blocks alternating."""
    out = _child(
        f"""
        import statistics, tempfile, time, gradscope, torch
        torch.manual_seed(0)
        a, b = build(), build()
        b.load_state_dict(a.state_dict())
        opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=1e-3), torch.optim.SGD(b.parameters(), lr=1e-3)
        data_a, data_b = batches(), batches()
        folder = tempfile.mkdtemp()
        memory, stored = [], []
        with gradscope.watch(a, optimizer=opt_a) as run_a, \\
                gradscope.watch(b, optimizer=opt_b, path=folder + "/ratio.gsrun") as run_b:
            train(a, opt_a, data_a, {block}, run_a)  # warm-up
            train(b, opt_b, data_b, {block}, run_b)
            for _ in range({steps} // {block}):
                for model, opt, data, run, times in ((a, opt_a, data_a, run_a, memory), (b, opt_b, data_b, run_b, stored)):
                    start = time.perf_counter()
                    train(model, opt, data, {block}, run)
                    times.append(time.perf_counter() - start)
        print(statistics.median(stored) / statistics.median(memory))
        """
    )
    return float(out)


def steps_lost_after_kill(folder: Path, seconds: float = 10.0) -> tuple[int, int, float]:
    """(steps the child reported, steps in its store, steps per second) after kill -9."""
    store = folder / "killed.gsrun"
    script = MODEL + textwrap.dedent(
        f"""
        import sys, gradscope, torch
        torch.manual_seed(0)
        model = build()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        with gradscope.watch(model, optimizer=opt, path={str(store)!r}) as run:
            train(model, opt, batches(), 10**9, run, lambda step: print(step, flush=True))
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert child.stdout is not None
    first = child.stdout.readline()  # training has started
    started = time.perf_counter()
    time.sleep(seconds)
    os.kill(child.pid, signal.SIGKILL)
    elapsed = time.perf_counter() - started
    lines = [first] + child.stdout.readlines()
    child.wait()
    reported = int(lines[-1]) + 1
    import gradscope  # noqa: PLC0415 - after the child ran: its timing is not disturbed

    stored = len(gradscope.RunRecord.load(store).steps)
    return reported, stored, (reported - int(first)) / elapsed


def synthesize(path: Path, steps: int, layers: int) -> int:
    """A store of `steps` steps of a `layers`-layer MLP-like run, written through the writer."""
    from gradscope.record import ModuleInfo, RunMeta  # noqa: PLC0415
    from gradscope.store import StoreWriter  # noqa: PLC0415

    stats = ["grad_norm", "grad_rms", "grad_max", "weight_norm", "update_ratio", "act_mean", "act_std", "backprop_norm"]
    writer = StoreWriter(path, RunMeta(model_class="Synthetic", optimizer="SGD"))
    writer.modules = [ModuleInfo(f"layers.{i}", "Linear", 4160, [f"layers.{i}.weight", f"layers.{i}.bias"], 4160)
                      for i in range(layers)]
    for i in range(layers):
        for stat in stats:
            writer.add_series("layer", f"layers.{i}", stat)
    rng = np.random.default_rng(0)
    depth = np.repeat(0.8 ** np.arange(layers), len(stats))  # a gradient that shrinks with depth
    present = np.ones(layers * len(stats), bool)
    for step in range(steps):
        writer.append_packed(step, depth * (1 + 0.1 * rng.random(len(depth))), present, measured=True)
        if step % 1000 == 0:
            writer.log_scalar(step, "loss", 1.0 / (1 + step / 1000))
    writer.close()
    return layers * len(stats) * steps


def timings(path: Path) -> tuple[float, float, float, int]:
    """(load s, diagnose s, HTML s, HTML bytes) of a store."""
    import gradscope  # noqa: PLC0415
    from gradscope.report.html import render_html  # noqa: PLC0415

    start = time.perf_counter()
    record = gradscope.RunRecord.load(path)
    loaded = time.perf_counter()
    diagnosis = gradscope.diagnose(record)
    diagnosed = time.perf_counter()
    page = render_html(record, diagnosis)
    rendered = time.perf_counter()
    return loaded - start, diagnosed - loaded, rendered - diagnosed, len(page.encode("utf-8"))


def _measured_values(path: Path) -> int:
    import gradscope  # noqa: PLC0415
    from gradscope.columns import column_arrays  # noqa: PLC0415

    record = gradscope.RunRecord.load(path)
    return sum(
        int(column_arrays(series)[1].sum())
        for table in (record.layer_stats, record.param_stats)
        for stats in table.values()
        for series in stats.values()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10_000, help="recorded steps of the replayed runs")
    parser.add_argument("--ratio-steps", type=int, default=1_000, help="training steps per side for the time ratio")
    parser.add_argument("--long-steps", type=int, default=100_000, help="steps of the synthesized store")
    parser.add_argument("--long-layers", type=int, default=250, help="layers of the synthesized store")
    parser.add_argument("--quick", action="store_true", help="2,000 replayed, 100 timed and 10,000 synthesized steps")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.ratio_steps, args.long_steps = 2_000, 100, 10_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sample = sample_run(folder)
        growth_path, _, store = memory_growth(sample, args.steps, folder, with_path=True)
        growth_memory, held, _ = memory_growth(sample, args.steps, folder, with_path=False)
        values = _measured_values(store)
        import gradscope  # noqa: PLC0415 - the children above import it themselves

        modules = len(gradscope.RunRecord.load(sample).modules)
        print(f"many-module model (24 blocks, {modules} modules), {values // args.steps} values per recorded step, "
              f"{args.steps} recorded steps (a real run's steps, replayed through the watch's sink)")
        print(f"  bytes per value on disk:              {os.path.getsize(store) / values:.2f}  (goal <= 6)")
        print(f"  RSS growth per 1,000 steps, path=:    {growth_path:.2f} MB  (goal < 1 MB)")
        print(f"  RSS growth per 1,000 steps, memory:   {growth_memory:.2f} MB  (compact columns, "
              f"{held / values:.1f} bytes a value held; {values / args.steps * 40 / 2**20 * 1000:.0f} MB as Python float lists)")
        ratio = step_time_ratio(args.ratio_steps, block=max(10, args.ratio_steps // 20))
        print(f"  step time with path= / without:       {ratio:.3f}  (goal <= 1.02; {args.ratio_steps} real steps each)")
        reported, stored, rate = steps_lost_after_kill(folder)
        lost = reported - stored
        print(f"  kill -9: {reported} steps done, {stored} in the store, {lost} lost ({lost / rate:.2f} s of training)")
        load, diag, html, size = timings(store)
        print(f"  {args.steps} steps: load {load:.2f} s, diagnose {diag:.2f} s, HTML {html:.2f} s ({size / 1e6:.1f} MB)")
        long_store = folder / "long.gsrun"
        start = time.perf_counter()
        long_values = synthesize(long_store, args.long_steps, args.long_layers)
        written = time.perf_counter() - start
        print(f"synthesized store: {args.long_steps} steps x {args.long_layers} layers, {long_values / 1e6:.0f}M values, "
              f"written in {written:.1f} s, {os.path.getsize(long_store) / long_values:.2f} bytes per value")
        load, diag, html, size = timings(long_store)
        print(f"  load {load:.2f} s, diagnose {diag:.2f} s, HTML {html:.2f} s ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
