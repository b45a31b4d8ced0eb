"""Which network each optimizer trains, when a loop has several optimizers.

A GAN's `build_model()` (or LightningModule) holds a generator and a discriminator, and
`make_optimizer` (or `configure_optimizers`) returns one optimizer for each. Watching the whole model with the first
optimizer would number the steps by the discriminator's optimizer and measure the generator
as if it never stepped, so each optimizer gets its own watcher on the submodule it trains:
the smallest submodule holding all of that optimizer's parameters, named after its attribute
(`generator`) or after the dict key when `make_optimizer` returned a dict. A network the model
does not hold but the model file keeps in a module-level variable (`netD = Discriminator()`)
is found there and named after the variable.

That split is only sound when the networks do not overlap. When an optimizer's parameters
span the whole model, two optimizers share parameters or one network sits inside another,
`split_networks` gives the whole model with the first optimizer, as a single optimizer would
be watched, and a note saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

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


def split_networks(
    model: nn.Module,
    made: Any,
    optimizers: list[torch.optim.Optimizer],
    elsewhere: Optional[Mapping[str, nn.Module]] = None,
    source: str = "make_optimizer",
) -> Split:
    """One `NetworkPart` per optimizer when each trains its own submodule, else the whole model.

    `made` is what make_optimizer returned (its dict keys name the networks); `optimizers` the
    optimizers in it, in order. A single optimizer is the whole model, as it always was.
    `elsewhere`: modules the model file holds outside the model, by variable name (a module-level
    `netD`), where an optimizer's parameters that the model lacks are looked for. `source`: what
    made the optimizers, as the notes name it ("configure_optimizers" in a Lightning fit).
    """
    if len(optimizers) == 1:
        return Split([NetworkPart("model", model, optimizers[0])])
    keys = [str(key) for key in made] if isinstance(made, dict) else None
    labels = [repr(key) for key in made] if keys is not None else [f"#{i + 1}" for i in range(len(optimizers))]
    roots = {"": model, **{name: module for name, module in (elsewhere or {}).items() if module is not model}}
    place: dict[int, tuple[str, str]] = {}  # parameter id -> (root, qualified name); the model's first
    for root, module in reversed(list(roots.items())):
        place.update((id(p), (root, name)) for name, p in module.named_parameters())
    holders: list[tuple[str, str]] = []  # the submodule each optimizer trains: (root, qualified name)
    owner: dict[int, str] = {}  # parameter id -> the optimizer holding it
    for label, optimizer in zip(labels, optimizers):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        shared = next((owner[id(p)] for p in params if id(p) in owner), None)
        if shared is not None:
            return _whole(model, optimizers, f"optimizers {shared} and {label} share parameters", source)
        owner.update((id(p), label) for p in params)
        outside = sum(1 for p in params if id(p) not in place)
        if outside:
            where = (
                "neither in the model build_model() returned nor in a module-level variable of the model file (return "
                "one module holding every network, e.g. an nn.Module with .generator and .discriminator)"
                if source == "make_optimizer" else "not in the model (make every network an attribute of it)"
            )
            return _whole(model, optimizers, f"optimizer {label} holds {outside} parameter(s) that are {where}", source)
        if not params:
            return _whole(model, optimizers, f"optimizer {label} holds no parameters", source)
        where = {place[id(p)][0] for p in params}
        if len(where) > 1:
            named = ", ".join(sorted(_label(w, "") for w in where))
            return _whole(model, optimizers, f"optimizer {label} trains parameters of {named} at once", source)
        root = where.pop()
        holders.append((root, _common_module([place[id(p)][1] for p in params])))
    for i, (outer_root, outer) in enumerate(holders):
        for j, (inner_root, inner) in enumerate(holders):
            if i == j or inner_root != outer_root:
                continue
            if i < j and inner == outer:
                return _whole(
                    model, optimizers, f"optimizers {labels[i]} and {labels[j]} both train parts of "
                    f"{_label(outer_root, outer)}", source,
                )
            if not outer and not outer_root:  # fine when every other network lives outside the model
                return _whole(model, optimizers, f"the parameters of optimizer {labels[i]} span the whole model", source)
            if not outer or inner.startswith(outer + "."):
                return _whole(
                    model, optimizers, f"the network of optimizer {labels[j]} ({_label(inner_root, inner)}) lies "
                    f"inside the network of optimizer {labels[i]} ({_label(outer_root, outer)})", source,
                )
    names = _unique(keys if keys is not None else [_label(root, holder) for root, holder in holders])
    return Split([
        NetworkPart(name, roots[root].get_submodule(holder), optimizer)
        for name, (root, holder), optimizer in zip(names, holders, optimizers)
    ])


def network_note(name: str, names: list[str], source: str) -> str:
    """The note in each network's record saying which it is and that the others have their own."""
    others = ", ".join(other for other in names if other != name)
    return (
        f"{source} returned one optimizer per network: this is the record of {name}, watched with its own "
        f"optimizer; {others} {'has' if len(names) == 2 else 'have'} a record of {'its' if len(names) == 2 else 'their'} own."
    )


def _label(root: str, holder: str) -> str:
    """"generator" in the model, "netD" or "netD.main" in a module-level variable, "model" for the model."""
    return ".".join(part for part in (root, holder) if part) or "model"


def _whole(model: nn.Module, optimizers: list[torch.optim.Optimizer], why: str, source: str) -> Split:
    note = (
        f"{source} returned {len(optimizers)} optimizers, but they could not be split into one network each: "
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
