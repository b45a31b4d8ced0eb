"""Recommendation building blocks shared by rules: which modules to change, and PyTorch code for it.

Snippets reach modules through their qualified names (`model.layers[3]`), so they can be
pasted after the model is built without knowing how the user's class is written.
"""

from __future__ import annotations

from ..record import ModuleInfo, RunRecord
from .reading import is_linear_or_conv, is_norm, module_expr

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


def batchnorm_snippet(pairs: list[tuple[ModuleInfo, ModuleInfo]]) -> str:
    lines = ["# BatchNorm after each layer, before its activation:"]
    for layer, _activation in pairs[:MAX_SNIPPET_LINES]:
        expr = module_expr(layer.name)
        cls, attr = batchnorm_class(layer)
        lines.append(f"{expr} = nn.Sequential({expr}, {cls}({expr}.{attr}))")
    if len(pairs) > MAX_SNIPPET_LINES:
        lines.append(f"# ... and the same for the other {len(pairs) - MAX_SNIPPET_LINES} layers listed above")
    lines.append("# then create the optimizer again so it sees the new BatchNorm parameters")
    return "\n".join(lines)


def activation_swap_snippet(activations: list[ModuleInfo], new: str = "nn.ReLU()") -> str:
    lines = []
    for info in activations[:MAX_SNIPPET_LINES]:
        lines.append(f"{module_expr(info.name)} = {new}  # was {info.type}")
    if len(activations) > MAX_SNIPPET_LINES:
        lines.append(f"# ... and the other {len(activations) - MAX_SNIPPET_LINES} {activations[0].type} modules")
    return "\n".join(lines)


def init_snippet(layers: list[ModuleInfo], scheme: str = "kaiming") -> str:
    """Re-initialise the weights of `layers` (Kaiming for ReLU, Xavier for sigmoid/tanh)."""
    if scheme == "kaiming":
        call = 'nn.init.kaiming_normal_(module.weight, nonlinearity="relu")'
    else:
        call = 'nn.init.xavier_uniform_(module.weight, gain=nn.init.calculate_gain("tanh"))'
    names = [layer.name for layer in layers]
    lines = [
        f"for name in {names!r}:",
        "    module = model.get_submodule(name)",
        f"    {call}",
        "    if module.bias is not None:",
        "        nn.init.zeros_(module.bias)",
    ]
    return "\n".join(lines)


def code(*parts: str) -> str:
    """Snippets joined into one block, with the imports they use stated once at the top."""
    body = "\n\n".join(p for p in parts if p)
    return "import torch\nimport torch.nn as nn\n\n" + body if body else ""


def residual_snippet(record: RunRecord) -> str:
    pairs = unnormalized_pairs(record)
    example = ""
    if len(pairs) > 1:  # the second pair: its input has the width of the stack, not of the data
        layer, act = (module_expr(m.name) for m in pairs[1])
        example = (
            "\n\n# e.g. where the layer keeps the width:"
            f"\n{layer} = Residual(nn.Sequential({layer}, {act}))\n{act} = nn.Identity()"
        )
    return RESIDUAL_SNIPPET + example


RESIDUAL_SNIPPET = """class Residual(nn.Module):
    \"\"\"x + f(x): the identity path carries the gradient past f unchanged.\"\"\"

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return x + self.inner(x)  # f must keep the shape of x"""

CLIP_SNIPPET = """loss.backward()
torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)  # between backward() and step()
optimizer.step()"""


def optimizer_expr(record: RunRecord) -> str:
    """`torch.optim.Adam` for the optimizer class the run used, or a generic one."""
    name = record.meta.optimizer or ""
    name = name.rsplit(".", 1)[-1]
    return f"torch.optim.{name}" if name.isidentifier() else "torch.optim.AdamW"
