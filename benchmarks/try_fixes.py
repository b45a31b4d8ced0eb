"""What `--try-fixes` costs: analyze + fix trials over a plain analyze of the same sample, side by side.

    python benchmarks/try_fixes.py [--rounds 3] [--sample samples/deep_sigmoid_mlp.py] [--steps 50]

Rounds alternate a plain analyze run and an analyze run followed by its fix trials (as
`gradscope analyze --try-fixes` does, workers chosen the same way) in one process, so both see
the same machine load; the ratio of the medians is printed, with the number of trials.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import gradscope
from gradscope.analyze import AnalyzeConfig, analyze_file
from gradscope.fixes import run_fix_trials

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", default=str(ROOT / "samples" / "deep_sigmoid_mlp.py"))
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    config = AnalyzeConfig(steps=args.steps)
    thresholds = gradscope.load_config()
    analyze_file(args.sample, config)  # warm-up: first-call costs belong to neither side
    plain, with_fixes, trials = [], [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        analyze_file(args.sample, config)
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        record = analyze_file(args.sample, config)
        base_seconds = time.perf_counter() - started
        trials = run_fix_trials(
            args.sample, config, record, gradscope.diagnose(record, thresholds), thresholds, base_seconds=base_seconds
        )
        with_fixes.append(time.perf_counter() - started)
    ran = sum(1 for t in trials if t.record is not None)
    print(f"{Path(args.sample).name}, {args.steps} steps: {len(trials)} trials ({ran} trained)")
    print(f"  --try-fixes / plain analyze: {statistics.median(with_fixes) / statistics.median(plain):.2f}x")
    for trial in trials:
        print(f"  {trial.finding} / {trial.fix}: {trial.verdict}")


if __name__ == "__main__":
    main()
