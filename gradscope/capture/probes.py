"""What each hook measures and hands to the step's accumulator.

The Watcher decides *when* (the step clock says whether the step is recorded); a probe decides
*what*: a module's outputs (activation statistics on recorded steps, only unit activity between
them), the gradients as the optimizer reads them, and the weight update of a step. A new kind
of measurement (a layer's input, gradients before clipping) is a probe here plus one
registration line in the Watcher.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..distributed import local_tensor
from ..measure import PARAMETER_SAMPLE, StepAccumulator, sample
from ..model_tree import WatchedModule, saturation_counter
from ..statdefs import NONNEGATIVE, RELU_FAMILY


class OutputProbe:
    """How one watched module's outputs are measured."""

    def __init__(self, w: WatchedModule, activations: bool, gradients: bool) -> None:
        self.name = w.name
        self.activations = activations
        self.gradients = gradients
        self.count_saturated = saturation_counter(w.module, w.activation)
        self.nonnegative = w.activation in NONNEGATIVE
        # Units can only die where zero is a large part of the output range (ReLU and friends);
        # a Linear or Conv output is 0 for every sample only when its weights are.
        self.tracks_dead_units = w.activation in RELU_FAMILY or w.activation in NONNEGATIVE

    def measure(self, acc: StepAccumulator, out: torch.Tensor, layout: Optional[str], recorded: bool) -> bool:
        """Measure one training call's output; True when its backprop signal should be hooked."""
        unit_dim = (1 if layout == "first" else out.dim() - 1) if out.dim() >= 2 else None
        if not recorded:
            # Between recorded steps (every=N) only unit activity is watched, for act_dead_frac.
            if self.activations and self.tracks_dead_units and unit_dim is not None:
                acc.add_unit_activity(self.name, out, unit_dim, self.nonnegative)
            return False
        if self.activations:
            dead_unit_dim = unit_dim if self.tracks_dead_units else None
            acc.add_activation(self.name, out, dead_unit_dim, self.count_saturated, self.nonnegative)
        return self.gradients and out.requires_grad


def current_gradients(
    params: list[tuple[str, nn.Parameter]], sharded: bool
) -> tuple[list[tuple[str, torch.Tensor]], list[torch.Tensor]]:
    """(name, gradient) and the weight of each parameter that has a gradient now; under FSDP2
    this rank's shards (the ranks are combined at the flush)."""
    named, weights = [], []
    for pname, param in params:
        if param.grad is not None:
            if sharded:
                named.append((pname, local_tensor(param.grad)))
                weights.append(local_tensor(param))
            else:
                named.append((pname, param.grad))
                weights.append(param)
    return named, weights


class UpdateProbe:
    """Δw of one optimizer step, measured on samples of the weights copied just before it."""

    def __init__(self) -> None:
        self._before: Optional[tuple[list[str], list[torch.Tensor], list[torch.Tensor]]] = None

    def before_step(self, named: list[tuple[str, torch.Tensor]], weights: list[torch.Tensor]) -> None:
        if named:
            samples = [sample(w.detach(), PARAMETER_SAMPLE) for w in weights]
            self._before = ([n for n, _ in named], samples, [s.clone() for s in samples])

    def after_step(self, acc: StepAccumulator) -> None:
        if self._before is not None:
            names, after, before = self._before  # `after`: views of the weights, updated in place
            self._before = None
            torch._foreach_sub_(before, after)
            acc.add_updates(names, before)

    def clear(self) -> None:
        self._before = None
