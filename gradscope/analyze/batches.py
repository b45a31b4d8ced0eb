"""Where `gradscope analyze` gets its training batches, and the loss it uses by default.

Three sources, in order of preference:

1. `train_data()` from the model file: an iterable of `(inputs, targets)` batches (a DataLoader
   is fine), re-iterated from the start (a new epoch) whenever it is exhausted;
2. `make_batch(batch_size)` from the model file, called once per step;
3. synthesized random data, when the file defines neither. Inputs come from the first layer
   with weights in definition order (`model.modules()`), one sample's shape being:

   - `Linear(in_features)`            -> `(in_features,)`
   - `Conv1d(C, ...)`                 -> `(C, 32)`
   - `Conv2d(C, ...)`                 -> `(C, 32, 32)`
   - `Conv3d(C, ...)`                 -> `(C, 16, 16, 16)`
   - `Embedding(num_embeddings, ...)` -> `(16,)` integer tokens below `num_embeddings`
   - `BatchNorm1d/LayerNorm`          -> `(num_features,)` / `normalized_shape`

   `--input-shape` (one sample, without the batch dimension) overrides the shape; floating
   inputs are standard normal. Targets are drawn after the forward pass from the output's
   shape `(B, ..., C)`: random class indices below `C` for cross-entropy when `C > 1`, standard
   normal values for a mean-squared error when `C == 1` or the output is `(B,)`.

Random data says nothing about generalization, but gradient flow at this stage of training is
a property of the architecture and its initialization, which is what gradscope diagnoses.
Data is drawn from its own seeded generator, so the model's initialization is unaffected.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import _pytree as pytree

from ..errors import ConfigError, ModelFileError
from .modelfile import ModelFile, exception_summary, user_code

DEFAULT_SPATIAL = {1: (32,), 2: (32, 32), 3: (16, 16, 16)}  # Conv1d / Conv2d / Conv3d
DEFAULT_SEQUENCE_LENGTH = 16  # tokens per sample for an Embedding first layer

_END_OF_EPOCH = object()  # `next(iterator, default)`: a StopIteration must not cross a context manager

LossFunction = Callable[[Any, Any], torch.Tensor]


@dataclass
class Batch:
    inputs: Any
    targets: Any  # None: synthesize from the output's shape after the forward pass


def parse_input_shape(text: Optional[str]) -> Optional[tuple[int, ...]]:
    """'3x32x32', '3,32,32' or '(3, 32, 32)' -> (3, 32, 32); None stays None."""
    if text is None or str(text).strip() == "":
        return None
    parts = [p for p in re.split(r"[x×,\s()\[\]]+", str(text).strip().lower()) if p]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(n <= 0 for n in shape):
        raise ConfigError(
            f"`input_shape` {text!r} is not a shape. Give one sample's shape without the batch dimension as "
            "positive integers, e.g. `input_shape=784` or `input_shape=3x32x32`."
        )
    return shape


def call_model(model: nn.Module, inputs: Any) -> Any:
    """A tuple/list of inputs is passed as positional arguments, a dict as keyword arguments."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def to_device(value: Any, device: torch.device) -> Any:
    return pytree.tree_map(lambda v: v.to(device) if isinstance(v, torch.Tensor) else v, value)


def describe_shapes(value: Any) -> str:
    """'(32, 10)' for a tensor, '[(32, 10), (32,)]' for a structure of tensors."""
    leaves = [leaf for leaf in pytree.tree_leaves(value) if isinstance(leaf, torch.Tensor)]
    shapes = [str(tuple(leaf.shape)) for leaf in leaves]
    if isinstance(value, torch.Tensor):
        return shapes[0]
    return "[" + ", ".join(shapes) + "]" if shapes else f"a {type(value).__name__} with no tensors"


class BatchSource:
    """Yields one `Batch` per step; `describe()` says where the data comes from (for errors and notes)."""

    def __init__(
        self,
        model_file: ModelFile,
        model: nn.Module,
        batch_size: int,
        seed: int,
        device: torch.device,
        input_shape: Optional[tuple[int, ...]] = None,
    ) -> None:
        self.model_file = model_file
        self.batch_size = batch_size
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self._epoch_iter: Optional[Iterator[Any]] = None
        self._epochs = 0
        self.synthesized_from: Optional[str] = None
        self.sample_shape: Optional[tuple[int, ...]] = None
        self._input_dtype = _floating_dtype(model)
        self._token_limit: Optional[int] = None
        if model_file.train_data is None and model_file.make_batch is None:
            self._plan_synthetic_inputs(model, input_shape)

    @property
    def kind(self) -> str:
        if self.model_file.train_data is not None:
            return "train_data"
        if self.model_file.make_batch is not None:
            return "make_batch"
        return "synthetic"

    def describe(self, inputs: Any = None) -> str:
        """Where the data comes from; with `inputs`, also their shapes (for error messages)."""
        if self.kind == "synthetic":
            kind = "integer tokens" if self._token_limit is not None else "random inputs"
            return (
                f"{kind} of shape {(self.batch_size,) + tuple(self.sample_shape or ())} "
                f"synthesized for {self.synthesized_from}"
            )
        origin = f"{self.kind}() in {self.model_file.name}"
        return f"inputs of shape {describe_shapes(inputs)} from {origin}" if inputs is not None else f"batches from {origin}"

    def fix_hint(self) -> str:
        if self.kind == "synthetic":
            return (
                "If the model expects another input, pass `input_shape` (one sample without the batch dimension, "
                "e.g. `input_shape=3x64x64`) or define make_batch(batch_size) in the model file."
            )
        return f"Check that {self.kind}() returns (inputs, targets) batches the model accepts."

    def next(self, step: int) -> Batch:
        if self.kind == "synthetic":
            return Batch(self._synthetic_inputs(), None)
        if self.kind == "make_batch":
            with user_code(f"make_batch({self.batch_size}) at step {step}", self.model_file.path):
                batch = self.model_file.make_batch(self.batch_size)
            return self._unpack(batch, f"make_batch({self.batch_size})")
        return self._unpack(self._next_from_train_data(step), "train_data()")

    def next_raw(self, step: int) -> Any:
        """The batch exactly as the model file made it (any structure), moved to the device: what a
        train_step receives. Synthesized data is the inputs alone."""
        if self.kind == "synthetic":
            return self._synthetic_inputs()
        if self.kind == "make_batch":
            with user_code(f"make_batch({self.batch_size}) at step {step}", self.model_file.path):
                batch = self.model_file.make_batch(self.batch_size)
        else:
            batch = self._next_from_train_data(step)
        return to_device(batch, self.device)

    def make_targets(self, outputs: Any) -> Any:
        """Random targets matching the output of a synthesized batch (see the module docstring)."""
        if not isinstance(outputs, torch.Tensor) or not outputs.is_floating_point():
            raise ModelFileError(
                f"The model returned {_describe_output(outputs)}, so gradscope cannot make up targets for it. "
                "Define make_batch(batch_size) returning (inputs, targets) and loss_fn(outputs, targets) in the "
                "model file."
            )
        if outputs.dim() >= 2 and outputs.shape[-1] > 1:
            classes = outputs.shape[-1]
            return torch.randint(classes, tuple(outputs.shape[:-1]), generator=self.generator).to(outputs.device)
        return torch.randn(tuple(outputs.shape), generator=self.generator, dtype=outputs.dtype).to(outputs.device)

    # ---- internals ------------------------------------------------------------------------
    def _next_from_train_data(self, step: int) -> Any:
        for _ in range(2):  # at most one fresh epoch per step: an empty iterable must not loop forever
            if self._epoch_iter is None:
                with user_code("train_data()", self.model_file.path):
                    self._epoch_iter = iter(self.model_file.train_data())
                self._epochs += 1
            with user_code(f"Iterating train_data() at step {step}", self.model_file.path):
                batch = next(self._epoch_iter, _END_OF_EPOCH)
            if batch is not _END_OF_EPOCH:
                return batch
            self._epoch_iter = None
        raise ModelFileError(
            f"train_data() in {self.model_file.name} yielded no batches. Return a non-empty iterable of "
            "(inputs, targets) batches, e.g. a DataLoader."
        )

    def _unpack(self, batch: Any, origin: str) -> Batch:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise ModelFileError(
                f"{origin} in {self.model_file.name} produced {_describe_output(batch)}; a batch must be a pair "
                "(inputs, targets), e.g. `return x, y`."
            )
        inputs, targets = batch
        return Batch(to_device(inputs, self.device), to_device(targets, self.device))

    def _plan_synthetic_inputs(self, model: nn.Module, input_shape: Optional[tuple[int, ...]]) -> None:
        first = _first_layer(model)
        if first is None:
            if input_shape is None:
                raise ModelFileError(
                    f"Cannot infer the input shape: the model in {self.model_file.name} has no Linear, Conv, "
                    "Embedding or normalization layer to read it from. Pass `input_shape` (one sample without "
                    "the batch dimension, e.g. `input_shape=3x32x32`) or define make_batch(batch_size)."
                )
            self.synthesized_from = "`input_shape`"
            self.sample_shape = input_shape
            return
        name, layer = first
        label = f"the first layer {name!r} ({type(layer).__name__})" if name else f"the model ({type(layer).__name__})"
        if isinstance(layer, nn.Embedding):
            self._token_limit = layer.num_embeddings
            self.sample_shape = input_shape or (DEFAULT_SEQUENCE_LENGTH,)
        else:
            inferred = _sample_shape(layer)
            if inferred is None and input_shape is None:
                raise ModelFileError(
                    f"Cannot infer the input shape from the first layer {label} of the model in "
                    f"{self.model_file.name}. Pass `input_shape` (one sample without the batch dimension, "
                    "e.g. `input_shape=3x32x32`) or define make_batch(batch_size)."
                )
            self.sample_shape = input_shape or inferred
        self.synthesized_from = label + (" with `input_shape`" if input_shape else "")

    def _synthetic_inputs(self) -> torch.Tensor:
        shape = (self.batch_size,) + tuple(self.sample_shape or ())
        if self._token_limit is not None:
            tokens = torch.randint(self._token_limit, shape, generator=self.generator)
            return tokens.to(self.device)
        return torch.randn(shape, generator=self.generator, dtype=self._input_dtype).to(self.device)


def make_loss(model_file: ModelFile) -> tuple[LossFunction, str]:
    """The user's `loss_fn`, or gradscope's default; plus a name for messages."""
    if model_file.loss_fn is not None:
        user_fn = model_file.loss_fn

        def user_loss(outputs: Any, targets: Any) -> torch.Tensor:
            with user_code("loss_fn(outputs, targets)", model_file.path):
                return user_fn(outputs, targets)

        return user_loss, f"loss_fn in {model_file.name}"
    return default_loss, "the default loss"


def default_loss(outputs: Any, targets: Any) -> torch.Tensor:
    """Cross-entropy for integer targets, mean-squared error for floating ones.

    Cross-entropy reads the classes from the last dimension when `outputs.shape[:-1] ==
    targets.shape` (e.g. a language model's `(B, T, vocab)`), else from dimension 1 as
    `torch.nn.functional.cross_entropy` does.
    """
    if not isinstance(outputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise ModelFileError(
            f"The default loss needs tensors, but the model returned {_describe_output(outputs)} and the targets "
            f"are {_describe_output(targets)}. Define loss_fn(outputs, targets) in the model file."
        )
    try:
        if not targets.is_floating_point() and not targets.is_complex():
            if outputs.dim() >= 2 and tuple(outputs.shape[:-1]) == tuple(targets.shape):
                return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1).long())
            return F.cross_entropy(outputs, targets.long())
        if outputs.shape != targets.shape:
            raise ModelFileError(
                f"The default loss (mean-squared error, because the targets are floating point) needs outputs and "
                f"targets of the same shape, but they are {tuple(outputs.shape)} and {tuple(targets.shape)}. "
                "Make the targets match, or define loss_fn(outputs, targets) in the model file."
            )
        return F.mse_loss(outputs, targets)
    except ModelFileError:
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ModelFileError(
            f"The default loss could not compare outputs of shape {tuple(outputs.shape)} with targets of shape "
            f"{tuple(targets.shape)} ({exception_summary(exc)}). Integer targets get cross-entropy (classes on the "
            "last dimension), floating targets mean-squared error; define loss_fn(outputs, targets) in the model "
            "file for anything else."
        ) from exc


def check_loss(loss: Any, loss_name: str, step: int) -> torch.Tensor:
    """The loss must be one differentiable number; NaN is allowed (a finding, not a user error)."""
    if not isinstance(loss, torch.Tensor):
        raise ModelFileError(
            f"{loss_name} returned {_describe_output(loss)} at step {step}, not a tensor. Return the loss tensor "
            "itself (not loss.item()), e.g. `return F.cross_entropy(outputs, targets)`."
        )
    if loss.numel() != 1:
        raise ModelFileError(
            f"{loss_name} returned a tensor of shape {tuple(loss.shape)} at step {step}, but the loss must be a "
            "scalar. Reduce it, e.g. `loss.mean()`, or use reduction='mean' in the loss function."
        )
    if not (loss.is_floating_point() or loss.is_complex()):
        raise ModelFileError(f"{loss_name} returned an integer tensor ({loss.dtype}); the loss must be floating point.")
    if not loss.requires_grad:
        raise ModelFileError(
            f"{loss_name} returned a loss that does not require grad at step {step}, so there is no gradient "
            "to diagnose. Compute it from the model's outputs without .detach(), .item() or torch.no_grad()."
        )
    return loss.reshape(())


def batch_weight(targets: Any) -> int:
    """How many samples a batch counts for when averaging a validation loss."""
    leaves = [t for t in pytree.tree_leaves(targets) if isinstance(t, torch.Tensor) and t.dim() > 0]
    return int(leaves[0].shape[0]) if leaves else 1


def _first_layer(model: nn.Module) -> Optional[tuple[str, nn.Module]]:
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Bilinear, nn.Embedding, nn.modules.conv._ConvNd, nn.LayerNorm)):
            return name, module
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return name, module
        if isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
            return name, module
    return None


def _sample_shape(layer: nn.Module) -> Optional[tuple[int, ...]]:
    if isinstance(layer, nn.modules.lazy.LazyModuleMixin):
        return None  # a lazy layer has no shape until it has seen an input
    if isinstance(layer, nn.Linear):
        return (layer.in_features,)
    if isinstance(layer, nn.modules.conv._ConvNd):
        dims = len(layer.kernel_size)
        return (layer.in_channels,) + DEFAULT_SPATIAL.get(dims, (16,) * dims)
    if isinstance(layer, nn.LayerNorm):
        return tuple(layer.normalized_shape)
    if isinstance(layer, nn.BatchNorm1d):
        return (layer.num_features,)
    if isinstance(layer, nn.BatchNorm2d):
        return (layer.num_features,) + DEFAULT_SPATIAL[2]
    if isinstance(layer, nn.BatchNorm3d):
        return (layer.num_features,) + DEFAULT_SPATIAL[3]
    if isinstance(layer, (nn.LSTM, nn.GRU, nn.RNN)):
        return (DEFAULT_SEQUENCE_LENGTH, layer.input_size) if layer.batch_first else None
    return None


def _floating_dtype(model: nn.Module) -> torch.dtype:
    for parameter in itertools.chain(model.parameters(), model.buffers()):
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.get_default_dtype()


def _describe_output(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:5])
        return f"a dict (keys {keys})"
    if isinstance(value, float) and math.isnan(value):
        return "the float nan"
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"

