"""Training-step time and peak memory with gradscope attached over without, side by side.

    python benchmarks/overhead.py [--rounds 8] [--steps 4] [--models mlp,cnn,resnet20,gpt,small_mlp]
    python benchmarks/overhead.py --device cuda      # a GPT-2-small-sized model, bf16 autocast
    python benchmarks/overhead.py --quick            # 3 rounds of 3 steps: a smoke run, or the GPU check
    python benchmarks/overhead.py --before DIR       # also another checkout's gradscope, same run

Blocks of `--steps` steps of every variant alternate in one process, so all of them see the same
machine load; what is printed is each variant's median step time over the plain median (absolute
times on a shared machine mean little; run it a few times and read the ranges). Variants:

- gradscope every=1: all default statistics every step (the cost to bring down);
- every=10, every=100: the mean over whole windows (recorded steps included); for every=100
  also the median, which is the cost of a step between recorded steps (it should be 1.00x);
- budget=0.02: gradscope chooses the interval from its measured cost; the mean over all its
  steps (blocks ten times as long, so that they span several of its intervals), which should be
  about 1.02x, and the interval it chose;
- the floor: hooks that read every activation, output gradient and parameter gradient once
  (one reduction each, nothing copied): what any per-layer statistic must cost at least;
- naive hooks: statistics written the obvious way, with a `.item()` per layer and statistic;
- on CUDA, every=1 with the step's copy waited for (`_defer_copies=False`, what a CPU does): what
  queueing the copy non-blocking into pinned memory, read at a later step, buys.

On CUDA a block of steps is timed as a whole, synchronised before and after it, and each of its
steps gets the block's mean: the CPU queues kernels ahead, so a step's own time would include a
wait for the previous one's. (`benchmarks/gpu_check.sh` runs this with the CUDA tests.)

`--before DIR` loads the gradscope package of another checkout (`git archive REV gradscope | tar
-x -C DIR`) under another name and adds its `every=1` as a variant: before and after, one run.

Also counted, not timed (so the same on a busy machine): the aten ops, and on CUDA the kernel
launches, that one recorded step adds, for every=1, the floor, the naive hooks and `--before`.
On a GPU each launch costs the CPU a few microseconds whatever its size; on a CPU most of the
ops are views, so read those counts as dispatches rather than as time.

Each watcher is made once per model and attached for its blocks only, so its step counter (and
so every=N) runs on across blocks. Peak memory added is measured on one extra step of each
variant: the CUDA allocator's peak, or on a CPU the peak of the profiler's allocation timeline.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

import gradscope

# ---- models -------------------------------------------------------------------------------------


@dataclass
class Bench:
    name: str
    model: nn.Module
    batch: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy


def _classification(x: torch.Tensor, classes: int = 10) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    y = torch.randint(0, classes, (x.shape[0],))
    return lambda: (x, y)


def _mlp(inputs: int, width: int, hidden: int, activation: type[nn.Module], batch: int) -> Bench:
    layers: list[nn.Module] = [nn.Linear(inputs, width), activation()]
    for _ in range(hidden - 1):
        layers += [nn.Linear(width, width), activation()]
    layers.append(nn.Linear(width, 10))
    name = f"{hidden + 1}-layer {activation.__name__} MLP, width {width}, batch {batch}"
    return Bench(name, nn.Sequential(*layers), _classification(torch.randn(batch, inputs)))


def tanh_mlp(device: str) -> Bench:
    return _mlp(784, 512, 11, nn.Tanh, 256)


def small_mlp(device: str) -> Bench:
    return _mlp(32, 64, 15, nn.ReLU, 64)


def small_cnn(device: str) -> Bench:
    layers: list[nn.Module] = []
    channels = 3
    for width in (32, 64, 64, 128):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        channels = width
        if width != 128:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10)]
    model = nn.Sequential(*layers)
    return Bench("4-block CNN + BN, 32x32, batch 64", model, _classification(torch.randn(64, 3, 32, 32)))


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != width:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, width, 1, stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)  # in place on bn2's output, as torchvision's ResNets do
        return self.relu(out)


def resnet20(device: str) -> Bench:
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True)]
    inputs = 16
    for width, stride in ((16, 1), (32, 2), (64, 2)):
        for block in range(3):
            layers.append(BasicBlock(inputs, width, stride if block == 0 else 1))
            inputs = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    model = nn.Sequential(*layers)
    return Bench("ResNet-20, 32x32, batch 32", model, _classification(torch.randn(32, 3, 32, 32)))


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.dropout(self.proj(out.transpose(1, 2).reshape(batch, length, width)))


class GPTBlock(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.act = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(4 * width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.dropout(self.proj(self.act(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    """GPT-2's layout, one module per piece (≈10 watched modules a block)."""

    def __init__(self, vocab: int, context: int, width: int, depth: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Embedding(context, width)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(GPTBlock(width, heads, dropout) for _ in range(depth))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tokens.weight  # tied, as in GPT-2

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.dropout(self.tokens(ids) + self.positions(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def _next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def gpt(device: str) -> Bench:
    vocab, context = 512, 64
    model = GPT(vocab, context, width=128, depth=12, heads=4)
    ids = torch.randint(0, vocab, (8, context + 1))
    return Bench(
        "12-block GPT, width 128, 8x64 tokens", model, lambda: (ids[:, :-1], ids[:, 1:]), _next_token_loss
    )


def gpt2_small(device: str) -> Bench:
    """GPT-2 small's shape (124M parameters) from a config: nothing is downloaded."""
    vocab, context = 50257, 1024
    model = GPT(vocab, context, width=768, depth=12, heads=12)
    ids = torch.randint(0, vocab, (8, context + 1), device=device)
    name = "GPT-2 small, 8x1024 tokens, bf16 autocast"
    return Bench(name, model, lambda: (ids[:, :-1], ids[:, 1:]), _next_token_loss)


CPU_MODELS = {"mlp": tanh_mlp, "cnn": small_cnn, "resnet20": resnet20, "gpt": gpt, "small_mlp": small_mlp}

# ---- the reference hooks ------------------------------------------------------------------------


class ReferenceHooks:
    """Hooks on every leaf module's output, its gradient and every parameter gradient.

    `naive=False`: the floor, one reduction per tensor and nothing read back. `naive=True`:
    statistics written the obvious way, a few reductions and a `.item()` each.
    """

    def __init__(self, model: nn.Module, naive: bool) -> None:
        self.model = model
        self.naive = naive
        self.values: list[Any] = []
        self.handles: list[Any] = []

    def attach(self) -> None:
        for module in self.model.modules():
            if next(module.children(), None) is None:
                self.handles.append(module.register_forward_hook(self._forward))
        for p in self.model.parameters():
            if p.requires_grad:
                self.handles.append(p.register_post_accumulate_grad_hook(self._gradient))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.values.clear()

    def _forward(self, module: nn.Module, args: Any, out: Any) -> None:
        if not (torch.is_grad_enabled() and isinstance(out, torch.Tensor) and out.is_floating_point()):
            return
        d = out.detach()
        if self.naive:
            self.values += [(d == 0).float().mean().item(), d.mean().item(), d.std().item()]
        else:
            self.values.append(d.sum())
        if out.requires_grad:
            out.register_hook(self._output_gradient)

    def _output_gradient(self, grad: torch.Tensor) -> None:
        self.values.append(grad.norm().item() if self.naive else grad.norm())

    def _gradient(self, p: torch.Tensor) -> None:
        g = p.grad
        if self.naive:
            self.values += [g.norm().item(), g.abs().mean().item(), g.abs().max().item()]
        else:
            self.values.append(g.norm())


class Variant:
    """One way of running the same training steps: attach before a block, detach after."""

    def __init__(self, label: str, attach: Callable[[], None], detach: Callable[[], None], watcher: Any = None) -> None:
        self.label = label
        self.attach = attach
        self.detach = detach
        self.watcher = watcher
        self.times: list[float] = []


def load_other_gradscope(root: str) -> Any:
    """The gradscope package under `root`, imported as `gradscope_before` (its imports are relative)."""
    folder = Path(root) / "gradscope"
    spec = importlib.util.spec_from_file_location(
        "gradscope_before", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"--before {root}: no gradscope package there (expected {folder / '__init__.py'})")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gradscope_before"] = module
    spec.loader.exec_module(module)
    return module


def variants(model: nn.Module, optimizer: torch.optim.Optimizer, before: Any = None) -> list[Variant]:
    found = [Variant("plain", lambda: None, lambda: None)]
    if before is not None:
        watcher = before.Watcher(model, optimizer)
        found.append(Variant("before every=1", watcher.attach, watcher.detach))
    for every in (1, 10, 100):
        watcher = gradscope.Watcher(model, optimizer, every=every)
        found.append(Variant(f"every={every}", watcher.attach, watcher.detach))
    watcher = gradscope.Watcher(model, optimizer, budget=0.02)
    found.append(Variant("budget=0.02", watcher.attach, watcher.detach, watcher))
    if next(model.parameters()).is_cuda:
        watcher = gradscope.Watcher(model, optimizer)
        watcher._defer_copies = False
        found.append(Variant("every=1 copy waited", watcher.attach, watcher.detach))
    for naive, label in ((False, "floor"), (True, "naive")):
        hooks = ReferenceHooks(model, naive)
        found.append(Variant(label, hooks.attach, hooks.detach))
    return found


# ---- timing ---------------------------------------------------------------------------------------


def train_step(bench: Bench, optimizer: torch.optim.Optimizer, device: str) -> None:
    x, y = bench.batch()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        out = bench.model(x)
    bench.loss(out, y).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def time_steps(bench: Bench, optimizer: torch.optim.Optimizer, steps: int, device: str) -> list[float]:
    """Seconds per step. On a CPU with one thread every op (the backward too) runs on this
    thread, so its CPU time is the step's cost, whatever else takes the cores meanwhile."""
    if device == "cuda":  # the whole block: the GPU runs behind the CPU, which queues ahead
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            train_step(bench, optimizer, device)
        torch.cuda.synchronize()
        return [(time.perf_counter() - start) / steps] * steps
    clock = time.thread_time if device == "cpu" and torch.get_num_threads() == 1 else time.perf_counter
    times = []
    for _ in range(steps):
        start = clock()
        train_step(bench, optimizer, device)
        times.append(clock() - start)
    return times


@contextlib.contextmanager
def attached(variant: Variant) -> Iterator[None]:
    variant.attach()
    try:
        yield
    finally:
        variant.detach()


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Hide what C++ writes to file descriptor 2 meanwhile: the profiler logs a line at each start
    and stop ("USDT: ... profiler_start"), dozens a model. Python's own stderr is flushed first."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(bench: Bench, optimizer: torch.optim.Optimizer, variant: Variant, device: str) -> float:
    """Bytes allocated at the peak of one training step, over those allocated before it."""
    with attached(variant):
        if device == "cuda":
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            train_step(bench, optimizer, device)
            torch.cuda.synchronize()
            return float(torch.cuda.max_memory_allocated() - before)
        with native_stderr_silenced(), torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
        ) as prof:
            train_step(bench, optimizer, device)
    # Each op's own allocations net of its own frees, and the frees no op claimed ("[memory]"),
    # in time order: the live bytes over the step, whose maximum is its peak.
    changes = [e for e in prof.events() if e.self_cpu_memory_usage]
    changes.sort(key=lambda e: e.time_range.start)
    live = peak = 0
    for event in changes:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return float(peak)


def dispatches(bench: Bench, optimizer: torch.optim.Optimizer, variant: Variant, device: str) -> tuple[int, int]:
    """(aten ops, kernel launches) of one training step: what a recorded step adds, counted rather
    than timed, so it is the same on a busy machine. On a GPU each launch costs the CPU a few
    microseconds whatever its size, which is what slows a loop of many small layers."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with attached(variant), native_stderr_silenced():
        with torch.profiler.profile(activities=activities) as prof:
            train_step(bench, optimizer, device)
            if device == "cuda":
                torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    return sum(n.startswith("aten::") for n in names), sum(n in _LAUNCHES for n in names)


_LAUNCHES = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx"}


def measure(bench: Bench, rounds: int, steps: int, device: str, before: Any = None) -> dict[str, Any]:
    torch.manual_seed(0)
    bench.model.to(device)
    optimizer = torch.optim.SGD(bench.model.parameters(), lr=1e-3, momentum=0.9)
    runs = variants(bench.model, optimizer, before)
    for variant in runs:  # warm-up: allocator, kernels, each variant's first (recorded) step
        with attached(variant):
            time_steps(bench, optimizer, 2, device)
    for _ in range(rounds):
        for variant in runs:
            with attached(variant):
                # every=100: a block's worth of steps between recorded steps, and the recorded ones;
                # budget: blocks that span several of the intervals it chooses
                blocks = 10 if variant.watcher is not None else 3 if "100" in variant.label else 1
                variant.times += time_steps(bench, optimizer, steps * blocks, device)
    plain = statistics.median(runs[0].times)
    plain_mean = statistics.mean(runs[0].times)
    result: dict[str, Any] = {"plain_ms": plain * 1e3}
    for variant in runs[1:]:
        result[variant.label] = statistics.median(variant.times) / plain
        if variant.label in ("every=10", "every=100", "budget=0.02"):  # the mean over whole windows
            result[f"{variant.label} mean"] = statistics.mean(variant.times) / plain_mean
        if variant.watcher is not None:
            options = variant.watcher.record.meta.options.get("budget_interval", {})
            result["budget interval"] = f"{options.get('last', '?')} (mean {options.get('mean', '?')})"
    plain_peak = peak_memory(bench, optimizer, runs[0], device)
    result["plain_peak_mb"] = plain_peak / 2**20
    plain_ops, plain_launches = dispatches(bench, optimizer, runs[0], device)
    for variant in runs[1:]:
        if variant.label in ("every=1", "floor", "naive", "before every=1"):
            result[f"{variant.label} memory"] = (peak_memory(bench, optimizer, variant, device) - plain_peak) / 2**20
            ops, launches = dispatches(bench, optimizer, variant, device)
            result[f"{variant.label} ops"] = (ops - plain_ops, launches - plain_launches)
    return result


COLUMNS = (
    ("before every=1", "before"),
    ("every=1", "every=1"),
    ("every=1 copy waited", "1:copy waited"),
    ("every=10 mean", "every=10"),
    ("every=100", "100:between"),
    ("every=100 mean", "100:mean"),
    ("budget=0.02 mean", "budget=0.02"),
    ("floor", "floor"),
    ("naive", "naive"),
)


def report(name: str, result: dict[str, Any]) -> str:
    ratios = "  ".join(f"{title} {result[key]:.3f}x" for key, title in COLUMNS if key in result)
    if "budget interval" in result:
        ratios += f"  (budget: every {result['budget interval']} steps)"
    labels = [label for label in ("before every=1", "every=1", "floor", "naive") if f"{label} memory" in result]
    memory = "  ".join(f"{label} +{result[f'{label} memory']:.1f}" for label in labels)
    ops = "  ".join(f"{label} +{result[f'{label} ops'][0]}" for label in labels)
    launches = "  ".join(f"{label} +{result[f'{label} ops'][1]}" for label in labels)
    return (
        f"{name}\n    {ratios}\n    peak memory added, MiB: {memory}   "
        f"(plain: step {result['plain_ms']:.1f} ms, peak {result['plain_peak_mb']:.0f} MiB, for scale)\n"
        f"    aten ops added per recorded step: {ops}"
        + (f"\n    kernel launches added per recorded step: {launches}" if result["every=1 ops"][1] else "")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 8; --quick 3)")
    parser.add_argument("--steps", type=int, default=None, help="steps of each variant a round (default 4; --quick 3)")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 3 steps: about 2 minutes on one GPU")
    parser.add_argument("--models", default=",".join(CPU_MODELS), help=f"comma-separated, of {', '.join(CPU_MODELS)}")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--before", metavar="DIR", help="a checkout whose gradscope/ is measured too, as 'before'")
    # One intra-op thread: on a shared machine a second thread waits for a descheduled first.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on a CPU (default 1)")
    args = parser.parse_args()
    args.rounds = args.rounds or (3 if args.quick else 8)
    args.steps = args.steps or (3 if args.quick else 4)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}; all default statistics; "
        f"ratios of median step times, {args.rounds} interleaved rounds"
    )
    before = load_other_gradscope(args.before) if args.before else None
    builders: list[Callable[[str], Bench]]
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        builders = [gpt2_small]
    else:
        builders = [CPU_MODELS[name.strip()] for name in args.models.split(",") if name.strip()]
    for build in builders:
        torch.manual_seed(0)
        bench = build(args.device)  # the CUDA model makes its batch on the device
        print(report(bench.name, measure(bench, args.rounds, args.steps, args.device, before)), flush=True)


if __name__ == "__main__":
    main()
