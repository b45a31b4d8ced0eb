"""Which network each optimizer trains, when a model file's `make_optimizer` returns several.

A GAN's `build_model()` returns one module holding a generator and a discriminator, and
`make_optimizer` returns one optimizer for each. Watching the whole model with the first
optimizer would number the steps by the discriminator's optimizer and measure the generator
as if it never stepped, so each optimizer gets its own watcher on the submodule it trains:
the smallest submodule holding all of that optimizer's parameters, named after its attribute
(`generator`) or after the dict key when `make_optimizer` returned a dict.

That split is only sound when the networks do not overlap. When an optimizer's parameters
span the whole model, two optimizers share parameters or one network sits inside another,
`split_networks` gives the whole model with the first optimizer, as a single optimizer would
be watched, and a note saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn


@dataclass(frozen=True)
class NetworkPart:
    """One network of the model and the optimizer that trains it."""

    name: str  # "generator": the attribute path in the model, or make_optimizer's dict key
    module: nn.Module
    optimizer: torch.optim.Optimizer


@dataclass(frozen=True)
class Split:
    parts: list[NetworkPart]  # one per optimizer, or one for the whole model when they cannot be split
    note: Optional[str] = None  # why the optimizers could not be split, when they could not


def split_networks(model: nn.Module, made: Any, optimizers: list[torch.optim.Optimizer]) -> Split:
    """One `NetworkPart` per optimizer when each trains its own submodule, else the whole model.

    `made` is what make_optimizer returned (its dict keys name the networks); `optimizers` the
    optimizers in it, in order. A single optimizer is the whole model, as it always was.
    """
    if len(optimizers) == 1:
        return Split([NetworkPart("model", model, optimizers[0])])
    keys = [str(key) for key in made] if isinstance(made, dict) else None
    labels = [repr(key) for key in made] if keys is not None else [f"#{i + 1}" for i in range(len(optimizers))]
    names_of = {id(p): name for name, p in model.named_parameters()}
    holders: list[str] = []  # the submodule each optimizer trains, by qualified name
    owner: dict[int, str] = {}  # parameter id -> the optimizer holding it
    for label, optimizer in zip(labels, optimizers):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        shared = next((owner[id(p)] for p in params if id(p) in owner), None)
        if shared is not None:
            return _whole(model, optimizers, f"optimizers {shared} and {label} share parameters")
        owner.update((id(p), label) for p in params)
        outside = sum(1 for p in params if id(p) not in names_of)
        if outside:
            return _whole(
                model, optimizers,
                f"optimizer {label} holds {outside} parameter(s) that are not in the model build_model() returned "
                "(return one module holding every network, e.g. an nn.Module with .generator and .discriminator)",
            )
        if not params:
            return _whole(model, optimizers, f"optimizer {label} holds no parameters")
        holder = _common_module([names_of[id(p)] for p in params])
        if not holder:
            return _whole(model, optimizers, f"the parameters of optimizer {label} span the whole model")
        holders.append(holder)
    for i, outer in enumerate(holders):
        for j, inner in enumerate(holders):
            if i < j and inner == outer:
                return _whole(
                    model, optimizers, f"optimizers {labels[i]} and {labels[j]} both train parts of {outer}",
                )
            if i != j and inner.startswith(outer + "."):
                return _whole(
                    model, optimizers, f"the network of optimizer {labels[j]} ({inner}) lies inside the network "
                    f"of optimizer {labels[i]} ({outer})",
                )
    names = _unique(keys if keys is not None else holders)
    modules = dict(model.named_modules())
    return Split([NetworkPart(name, modules[holder], opt) for name, holder, opt in zip(names, holders, optimizers)])


def _whole(model: nn.Module, optimizers: list[torch.optim.Optimizer], why: str) -> Split:
    note = (
        f"make_optimizer returned {len(optimizers)} optimizers, but they could not be split into one network each: "
        f"{why}. gradscope watched the whole model with the first optimizer ({type(optimizers[0]).__name__}), "
        "so its steps are that optimizer's steps. To get one record per network, give each optimizer only the "
        "parameters of one submodule (e.g. `model.generator.parameters()`)."
    )
    return Split([NetworkPart("model", model, optimizers[0])], note)


def _common_module(parameter_names: list[str]) -> str:
    """The qualified name of the smallest module owning all these parameters ("" is the model itself)."""
    paths = [name.split(".")[:-1] for name in parameter_names]
    common = paths[0]
    for path in paths[1:]:
        length = 0
        while length < min(len(common), len(path)) and common[length] == path[length]:
            length += 1
        common = common[:length]
    return ".".join(common)


def _unique(names: list[str]) -> list[str]:
    """The names, with a suffix where two would be the same (dict keys 1 and "1")."""
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        count = seen.get(name, 0)
        seen[name] = count + 1
        unique.append(name if count == 0 else f"{name}_{count + 1}")
    return unique
