"""Print the corpus score: false alarms on the healthy originals, detections on the broken twins.

    python -m tests.corpus.score            # every case
    python -m tests.corpus.score gan vae    # cases whose name starts with one of these
"""

from __future__ import annotations

import sys
import time

import torch

from .cases import all_cases, detected, diagnose_all, false_alarms


def main(prefixes: list[str]) -> int:
    torch.set_num_threads(1)
    cases = [c for c in all_cases() if not prefixes or c.name.startswith(tuple(prefixes))]
    alarms = detections = twins = originals = 0
    started = time.perf_counter()
    for case in cases:
        t0 = time.perf_counter()
        diagnoses = diagnose_all(case.train())
        seconds = time.perf_counter() - t0
        found = {net: [f"{f.code}:{f.severity}" for f in d if f.code != "rule-skipped"] for net, d in diagnoses.items()}
        if case.healthy:
            originals += 1
            loud = false_alarms(diagnoses)
            alarms += bool(loud)
            verdict = "ok" if not loud else "FALSE ALARM " + "; ".join(loud)
        else:
            twins += 1
            hit = detected(case, diagnoses)
            detections += hit
            verdict = ("detected" if hit else "MISSED") + f" (expected {' or '.join(case.expected)})"
        print(f"{case.name:24} {seconds:5.1f}s  {verdict}\n{'':32}findings: {found}")
    print(
        f"\nhealthy originals with a false alarm: {alarms}/{originals}; broken twins detected: {detections}/{twins}; "
        f"{time.perf_counter() - started:.0f}s in all"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
