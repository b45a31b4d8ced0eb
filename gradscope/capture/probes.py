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
from ..measure import PARAMETER_SAMPLE, HostBuffers, HostCopy, StepAccumulator, sample
from ..model_tree import WatchedModule, saturation_counter
from ..statdefs import NONNEGATIVE, RELU_FAMILY

# The autograd nodes of the activation functions a forward calls as functions (F.relu, torch.relu,
# x.relu(), torch.sigmoid, torch.tanh, F.gelu, ...): the node that made a tensor says exactly which
# function produced it, with no guessing from values and no interception of calls.
_ACTIVATION_NODES = {
    "ReluBackward0": "relu",
    "SigmoidBackward0": "sigmoid",
    "TanhBackward0": "tanh",
    "HardsigmoidBackward0": "hardsigmoid",
    "HardswishBackward0": "hardswish",
    "GeluBackward0": "gelu",
    "SiluBackward0": "silu",
    "LeakyReluBackward0": "leaky_relu",
    "EluBackward0": "elu",
    "SoftplusBackward0": "softplus",
}
# Between the activation and the layer that reads it: views keep every value; max pooling and
# dropout (a multiplication by a mask) keep zeros zero, so dead units still show, but change values.
_VIEW_NODES = frozenset(
    {"ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0", "CloneBackward0", "TransposeBackward0",
     "PermuteBackward0",
     "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2"}  # a classifier's `torch.sigmoid(self.out(x)).squeeze(1)`
)
_ZERO_KEEPING_NODES = frozenset(
    {"MaxPool1DWithIndicesBackward0", "MaxPool2DWithIndicesBackward0", "MaxPool3DWithIndicesBackward0",
     "MulBackward0", "NativeDropoutBackward0"}
)
_MAX_HOPS = 4


def functional_activation(tensor: torch.Tensor) -> Optional[tuple[str, object]]:
    """(kind, autograd node) of the activation function that produced `tensor`, looking back through
    a few views (and, for the ReLU family, pooling or dropout); None when it is something else."""
    node = tensor.grad_fn
    values_kept = True
    for _ in range(_MAX_HOPS):
        if node is None:
            return None
        name = type(node).__name__
        kind = _ACTIVATION_NODES.get(name)
        if kind is not None:
            return (kind, node) if values_kept or kind in RELU_FAMILY else None
        if name in _ZERO_KEEPING_NODES:
            values_kept = False
        elif name not in _VIEW_NODES:
            return None
        node = node.next_functions[0][0] if node.next_functions else None
    return None


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


class AsyncFlags:
    """A few booleans computed on the device, read on the host without making the training thread
    wait (`HostCopy`, into a buffer of the one the recorded steps' copies use)."""

    def __init__(self, flags: torch.Tensor, buffers: HostBuffers) -> None:
        self._copy: Optional[HostCopy] = HostCopy(flags, buffers)

    def read(self) -> Optional[list[bool]]:
        """The flags, or None while the copy is still under way (read once)."""
        if self._copy is None or not self._copy.ready():
            return None
        values = [bool(flag) for flag in self._copy.numbers()]
        self._copy = None
        return values
