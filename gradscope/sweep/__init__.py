"""Depth sweeps: the vanishing-gradient experiment as one call.

    result = gradscope.sweep(activations=("sigmoid", "tanh", "relu"), depths=(2, 4, 8, 16))
    print(gradscope.report.sweep_table(result))
    record = result.find(activation="sigmoid", depth=8, init="recommended")   # that network's RunRecord

Every configuration (activation x depth x norm x dropout x init) is the same MLP family built
from the same seed (networks.py), trained on the same data (data.py) under gradscope.watch;
summary.py turns each record into per-layer profiles, the first/last backprop ratio and the
fitted decay factor per layer; reading.py states what they show. By default every network runs
twice, at PyTorch's default init and at the init made for its activation, because the lesson
(which activations keep their gradient) only holds at the latter.
"""

from __future__ import annotations

import os
import time
from typing import Iterable, Optional, Union

from ..errors import DataFileError, SweepOptionError, UnknownConfigError
from .config import SweepConfig, check_workers, make_configs
from .data import SweepData, bundled_task, load_npz
from .networks import ACTIVATIONS, INITS, NORMS, build_network
from .result import SweepResult
from .runner import Progress, default_workers, run_configs
from .summary import ConfigSummary, LayerProfile, fit_decay_factor

DEFAULT_ACTIVATIONS = ("sigmoid", "tanh", "relu")
# Two inits doubled the networks; depth 32 was dropped to keep the default sweep's time (depth 16
# already shows every effect: benchmarks/sweep_time.py).
DEFAULT_DEPTHS = (2, 4, 8, 16)
DEFAULT_INITS = ("default", "recommended")


def sweep(
    activations: Iterable[str] = DEFAULT_ACTIVATIONS,
    depths: Iterable[int] = DEFAULT_DEPTHS,
    width: int = 64,
    norms: Iterable[str] = ("none",),
    dropouts: Iterable[float] = (0.0,),
    init: Union[str, Iterable[str]] = DEFAULT_INITS,
    steps: int = 100,
    lr: float = 0.1,
    seed: int = 0,
    data: Union[None, str, "os.PathLike[str]", SweepData] = None,
    workers: Optional[int] = None,
    progress: Optional[Progress] = None,
) -> SweepResult:
    """Train every combination and measure its gradient flow.

    init: one name or several ("default", "recommended", "xavier", "kaiming"; see
    networks.apply_init); each network is trained once per init.
    data: None for the bundled synthetic task, a path to an .npz file (arrays X, y, optional
    X_val, y_val), or a SweepData. workers: processes to use (None: one per core when the sweep
    is big enough to repay starting processes, else 1; 1: run here, sequentially). Parallel
    workers are started fresh (forkserver/spawn) and import the calling script's main module:
    in a script, call sweep() under `if __name__ == "__main__":` (or pass workers=1).
    progress(done, total, summary) is called once with done=0 and summary=None, then as each
    configuration finishes.
    A configuration whose training fails (non-finite loss, an exception) is kept with its
    error in `summary.error`; the others go on.
    """
    configs = make_configs(activations, depths, width, norms, dropouts, init, steps, lr, seed)
    workers = check_workers(workers)
    if data is None:
        data = bundled_task()
    elif not isinstance(data, SweepData):
        data = load_npz(data)
    started = time.perf_counter()
    used_workers = default_workers(configs) if workers is None else min(workers, len(configs))
    outcomes = run_configs(configs, data, used_workers, progress)
    return SweepResult(
        summaries=[summary for summary, _ in outcomes],
        records=[record for _, record in outcomes],
        data_description=data.description,
        options={
            "activations": list(dict.fromkeys(c.activation for c in configs)),
            "depths": list(dict.fromkeys(c.depth for c in configs)),
            "width": configs[0].width,
            "norms": list(dict.fromkeys(c.norm for c in configs)),
            "dropouts": list(dict.fromkeys(c.dropout for c in configs)),
            "inits": list(dict.fromkeys(c.init for c in configs)),
            "steps": configs[0].steps,
            "lr": configs[0].lr,
            "seed": configs[0].seed,
        },
        seconds=time.perf_counter() - started,
        workers=used_workers,
    )


__all__ = [
    "ACTIVATIONS", "DEFAULT_ACTIVATIONS", "DEFAULT_DEPTHS", "DEFAULT_INITS", "INITS", "NORMS", "ConfigSummary",
    "DataFileError", "LayerProfile", "SweepConfig",
    "SweepData", "SweepOptionError", "SweepResult", "UnknownConfigError", "build_network", "bundled_task",
    "fit_decay_factor", "load_npz", "sweep",
]
