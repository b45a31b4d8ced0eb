"""Recommendation building blocks shared by rules: which modules to change, and PyTorch code for it.

Snippets reach modules through their qualified names (`model.layers[3]`), so they can be
pasted after the model is built without knowing how the user's class is written. The same
functions write the code that `gradscope.fixes` executes in its trial runs (with `limit=None`,
so every module is listed): a recommendation and its trial share one source.
"""

from __future__ import annotations

from typing import Optional

from ..record import ModuleInfo, RunRecord
from .reading import is_functional, is_linear_or_conv, is_norm, module_expr

MAX_SNIPPET_LINES = 12  # beyond this, a loop over names reads better than a list of lines


def unnormalized_pairs(record: RunRecord) -> list[tuple[ModuleInfo, ModuleInfo]]:
    """(Linear/Conv, activation) pairs where the activation follows the layer with no norm between.

    These are the places where BatchNorm "after the layer, before the activation" would go.
    """
    pairs = []
    pending: ModuleInfo | None = None
    for info in record.modules:
        if is_linear_or_conv(info):
            pending = info
        elif is_norm(info):
            pending = None
        elif info.activation is not None and pending is not None:
            pairs.append((pending, info))
            pending = None
        elif info.num_params > 0:
            pending = None  # some other parametrised layer sits between them
    return pairs


def feeding_layers(record: RunRecord, activations: list[str]) -> list[ModuleInfo]:
    """The Linear/Conv module that runs last before each named activation, in forward order."""
    feeding: list[ModuleInfo] = []
    previous: ModuleInfo | None = None
    for info in record.modules:
        if info.name in activations and previous is not None and previous not in feeding:
            feeding.append(previous)
        if is_linear_or_conv(info):
            previous = info
    return feeding


def batchnorm_class(layer: ModuleInfo) -> tuple[str, str]:
    """(BatchNorm class, attribute holding its feature count) for a Linear/Conv module type."""
    if layer.type.endswith("Linear"):
        return "nn.BatchNorm1d", "out_features"
    for dims in ("1d", "2d", "3d"):
        if layer.type.endswith(dims):
            return f"nn.BatchNorm{dims}", "out_channels"
    return "nn.BatchNorm2d", "out_channels"


def batchnorm_snippet(pairs: list[tuple[ModuleInfo, ModuleInfo]], limit: Optional[int] = MAX_SNIPPET_LINES) -> str:
    lines = ["# BatchNorm after each layer, before its activation:"]
    for layer, _activation in pairs[:limit]:
        expr = module_expr(layer.name)
        cls, attr = batchnorm_class(layer)
        lines.append(f"{expr} = nn.Sequential({expr}, {cls}({expr}.{attr}))")
    if limit is not None and len(pairs) > limit:
        lines.append(f"# ... and the same for the other {len(pairs) - limit} layers listed above")
    lines.append("# then create the optimizer again so it sees the new BatchNorm parameters")
    return "\n".join(lines)


# The function to call in forward() instead of an activation module a snippet would put in.
_AS_FUNCTION = {"nn.ReLU()": "F.relu(x)", "nn.LeakyReLU(0.01)": "F.leaky_relu(x, 0.01)", "nn.GELU()": "F.gelu(x)"}


def activation_swap_snippet(
    activations: list[ModuleInfo], new: str = "nn.ReLU()", limit: Optional[int] = MAX_SNIPPET_LINES
) -> str:
    lines = []
    for info in activations[:limit]:
        if is_functional(info):  # called in forward(): the change is in the model's code
            call = _AS_FUNCTION.get(new, new)
            lines.append(f"# in forward(): {call} instead of {info.type}(x) at `{info.name}`")
            continue
        lines.append(f"{module_expr(info.name)} = {new}  # was {info.type}")
    if limit is not None and len(activations) > limit:
        lines.append(f"# ... and the other {len(activations) - limit} {activations[0].type} modules")
    return "\n".join(lines)


def init_snippet(layers: list[ModuleInfo], scheme: str = "kaiming", activation: str = "tanh") -> str:
    """Re-initialise the weights of `layers`: Kaiming for ReLU, Xavier with `activation`'s gain otherwise."""
    if scheme == "kaiming":
        call = 'nn.init.kaiming_normal_(module.weight, nonlinearity="relu")'
    else:
        call = f'nn.init.xavier_uniform_(module.weight, gain=nn.init.calculate_gain("{activation}"))'
    names = [layer.name for layer in layers]
    lines = [
        f"for name in {names!r}:",
        "    module = model.get_submodule(name)",
        f"    {call}",
        "    if module.bias is not None:",
        "        nn.init.zeros_(module.bias)",
    ]
    return "\n".join(lines)


def xavier_gain_name(activations: list[ModuleInfo]) -> str:
    """The `nn.init.calculate_gain` name for these activations: "sigmoid" when all are sigmoid-like, else "tanh"."""
    kinds = {m.activation for m in activations}
    return "sigmoid" if kinds and kinds <= {"sigmoid", "hardsigmoid"} else "tanh"


def code(*parts: str) -> str:
    """Snippets joined into one block, with the imports they use stated once at the top."""
    body = "\n\n".join(p for p in parts if p)
    return "import torch\nimport torch.nn as nn\n\n" + body if body else ""


def residual_snippet(record: RunRecord) -> str:
    pairs = unnormalized_pairs(record)
    example = ""
    if len(pairs) > 1:  # the second pair: its input has the width of the stack, not of the data
        example = "\n\n# e.g. where the layer keeps the width:\n" + "\n".join(residual_wrap_lines(pairs[1:2]))
    return RESIDUAL_SNIPPET + example


RESIDUAL_SNIPPET = """class Residual(nn.Module):
    \"\"\"x + f(x): the identity path carries the gradient past f unchanged.\"\"\"

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return x + self.inner(x)  # f must keep the shape of x"""

def clip_line(max_norm: float = 1.0) -> str:
    return f"torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={max_norm:g})"


CLIP_SNIPPET = f"""loss.backward()
{clip_line()}  # between backward() and step()
optimizer.step()"""


def clip_snippet(max_norm: float = 1.0) -> str:
    """The clipping call in its place, at `max_norm` (the exploding rule picks it on the model's own scale)."""
    return f"loss.backward()\n{clip_line(max_norm)}  # between backward() and step()\noptimizer.step()"


def lr_scale_snippet(factor: float) -> str:
    """Scale every parameter group's learning rate of an existing `optimizer`."""
    return f'for group in optimizer.param_groups:\n    group["lr"] *= {factor:g}'


def weight_decay_snippet(decay: float) -> str:
    """Set the L2 penalty of an existing `optimizer` (for Adam this is the coupled L2, not AdamW's)."""
    return f'for group in optimizer.param_groups:\n    group["weight_decay"] = {decay:g}'


def slow_params_snippet(params: list[str], factor: float) -> str:
    """Move the named parameters of an existing `optimizer` into their own group with `factor` x the learning rate."""
    return "\n".join(
        [
            f"slow = [model.get_parameter(name) for name in {params!r}]",
            "for group in optimizer.param_groups:",
            '    group["params"] = [p for p in group["params"] if all(p is not s for s in slow)]',
            f'optimizer.add_param_group({{"params": slow, "lr": {factor:g} * optimizer.param_groups[0]["lr"]}})',
        ]
    )


def dropout_lines(places: list[ModuleInfo], p: float, limit: Optional[int] = 12) -> list[str]:
    """`nn.Dropout(p)` right after each of `places` (PyTorch's p drops; keep_prob = 1 - p)."""
    lines = []
    for m in places[:limit]:
        expr = module_expr(m.name)
        lines.append(f"{expr} = nn.Sequential({expr}, nn.Dropout(p={p:g}))  # keep_prob = {1 - p:g}")
    return lines


def groupnorm_lines(names: list[str], limit: Optional[int] = 12) -> list[str]:
    """GroupNorm (one group: normalise each sample over all its channels) in place of each BatchNorm."""
    return [
        f"{module_expr(n)} = nn.GroupNorm(num_groups=1, num_channels={module_expr(n)}.num_features)"
        for n in names[:limit]
    ]


def residual_wrap_lines(pairs: list[tuple[ModuleInfo, ModuleInfo]]) -> list[str]:
    """Each (layer, activation) becomes one `Residual` block; the activation's slot becomes an Identity."""
    lines = []
    for layer, act in pairs:
        layer_expr, act_expr = module_expr(layer.name), module_expr(act.name)
        lines += [f"{layer_expr} = Residual(nn.Sequential({layer_expr}, {act_expr}))", f"{act_expr} = nn.Identity()"]
    return lines


def optimizer_expr(record: RunRecord) -> str:
    """`torch.optim.Adam` for the optimizer class the run used, or a generic one."""
    name = record.meta.optimizer or ""
    name = name.rsplit(".", 1)[-1]
    return f"torch.optim.{name}" if name.isidentifier() else "torch.optim.AdamW"
