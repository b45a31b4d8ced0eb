"""Train a model file for a few steps with `gradscope.watch` attached and return the RunRecord.

This is what `gradscope analyze model.py` runs; it is a library function so tests and
notebooks can call it too. It prints nothing: progress goes to an optional callback.
The loop is the plain one the hook API expects:

    forward -> loss -> backward -> optimizer.step() -> zero_grad -> run.log(loss=..., val_loss=...)

with the validation loss (when the model file defines `val_data()`) computed at every recorded
step under `torch.no_grad()` and `model.eval()`, then `model.train()` again.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..capture import watch
from ..errors import ConfigError, GradscopeError, ModelFileError
from ..record import RunRecord
from .batches import (
    BatchSource,
    batch_weight,
    call_model,
    check_loss,
    make_loss,
    to_device,
)
from .modelfile import ModelFile, exception_summary, load_model_file, user_code, user_location

OPTIMIZERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3}
DEFAULT_SGD_MOMENTUM = 0.9

Progress = Callable[[int], None]
_END = object()


@dataclass
class AnalyzeConfig:
    """How `gradscope analyze` trains the model. `None` means "the model file decides, else the default"."""

    steps: int = 50
    batch_size: int = 32
    lr: Optional[float] = None  # None: make_optimizer's, else 0.01 for SGD and 1e-3 for Adam
    optimizer: Optional[str] = None  # "sgd" | "adam"; None: make_optimizer from the file, else SGD (momentum 0.9)
    seed: int = 0
    device: str = "cpu"
    every: int = 1  # record every Nth step (and evaluate val_data there)
    input_shape: Optional[tuple[int, ...]] = None  # one sample, without the batch dimension
    config_path: Optional[str] = None  # diagnosis thresholds (YAML); used by the caller, kept for the record

    def validate(self) -> None:
        for name in ("steps", "batch_size", "every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.lr is not None and not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"`lr` must be a positive number, got {self.lr!r}.")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"`optimizer` must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}.")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"`seed` must be a non-negative integer, got {self.seed!r}.")
        resolve_device(self.device)


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"`device` {name!r} is not a device; use cpu or cuda.") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("`device=cuda` was requested, but this PyTorch build sees no CUDA GPU. Use `device=cpu`.")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"`device` {name!r} is not supported; use cpu or cuda.")
    return device


class TrainingChanges:
    """What a variant of the analyze run changes, at the three places a training recipe can change.

    The plain run uses this base class, which changes nothing. A fix trial (gradscope.fixes)
    overrides the hooks to rewrite the model, adjust the optimizer, or act between backward()
    and step(), so a trial trains with exactly the loop, batches and settings of the run it
    is compared with.
    """

    def edit_model(self, model: nn.Module) -> nn.Module:
        """Called once on the freshly built model (on the CPU, before `.to(device)`)."""
        return model

    def edit_optimizer(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Called once on the optimizer, created after `edit_model` so it sees any new parameters."""
        return optimizer

    def before_step(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called every step between `loss.backward()` and `optimizer.step()`."""


NO_CHANGES = TrainingChanges()


def analyze_file(
    path: str | os.PathLike[str],
    config: Optional[AnalyzeConfig] = None,
    progress: Optional[Progress] = None,
    changes: TrainingChanges = NO_CHANGES,
) -> RunRecord:
    """Load the model file, train it `config.steps` steps under `gradscope.watch`, return the record.

    Raises `ModelFileError` for anything wrong with the file or its model, `ConfigError` for bad
    options. A NaN loss is not an error: the run completes and the record shows it.
    """
    config = config or AnalyzeConfig()
    config.validate()
    seed_everything(config.seed)  # before loading: a module-level `model` is built while the file runs
    model_file = load_model_file(path)
    return train_model_file(model_file, config, progress, changes)


def train_model_file(
    model_file: ModelFile,
    config: AnalyzeConfig,
    progress: Optional[Progress] = None,
    changes: TrainingChanges = NO_CHANGES,
) -> RunRecord:
    """Train an already loaded model file as `analyze_file` does. The caller seeds (`seed_everything`)."""
    config.validate()
    device = resolve_device(config.device)
    model = model_file.instantiate()
    # Batches are planned from the model as built, so a variant trains on exactly the same inputs.
    source = BatchSource(model_file, model, config.batch_size, config.seed, device, config.input_shape)
    with torch.random.fork_rng(devices=[]):  # an edit's own draws (a re-init) must not shift make_batch's or dropout's
        model = changes.edit_model(model)
    model = model.to(device)
    model.train()
    notes: list[str] = []
    optimizer, optimizer_label = _make_optimizer(model_file, model, config, notes)
    optimizer = changes.edit_optimizer(model, optimizer)
    loss_fn, loss_name = make_loss(model_file)
    notes.append(f"gradscope analyze trained on {source.describe()}.")
    if source.kind == "synthetic":
        notes.append("Targets were random (see gradscope.analyze.batches): the losses say nothing about generalization.")

    with watch(model, optimizer=optimizer, every=config.every) as run:
        for step in range(config.steps):
            batch = source.next(step)
            outputs = _forward(model, batch.inputs, step, model_file, source)
            targets = batch.targets if batch.targets is not None else source.make_targets(outputs)
            loss = check_loss(loss_fn(outputs, targets), loss_name, step)
            with user_code(f"The backward pass at step {step}", model_file.path):
                loss.backward()
            changes.before_step(model, optimizer)
            with user_code(f"optimizer.step() at step {step}", model_file.path):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scalars = {"loss": loss.item()}
            if model_file.val_data is not None and step % config.every == 0:
                scalars["val_loss"] = _validation_loss(model, model_file, loss_fn, loss_name, device)
            run.log(**scalars)
            if progress is not None:
                progress(1)

    record = run.record
    record.meta.options.update(_options_for_record(model_file, config, optimizer_label, loss_name, source))
    record.meta.notes.extend(notes)
    return record


def seed_everything(seed: int) -> None:
    """Seed Python, torch (every device) and numpy: what makes two runs with one seed identical."""
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    try:
        import numpy

        numpy.random.seed(seed)
    except ImportError:  # numpy is a dependency, but a model file must not need it to be seeded
        pass


def _make_optimizer(
    model_file: ModelFile, model: nn.Module, config: AnalyzeConfig, notes: list[str]
) -> tuple[torch.optim.Optimizer, str]:
    """`optimizer` wins over the file's make_optimizer; `lr` alone overrides its learning rate."""
    if config.optimizer is None and model_file.make_optimizer is not None:
        with user_code("make_optimizer(parameters)", model_file.path):
            optimizer = model_file.make_optimizer(model.parameters())
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ModelFileError(
                f"make_optimizer(parameters) in {model_file.name} returned a {type(optimizer).__name__}, not a "
                "torch.optim.Optimizer. Return e.g. `torch.optim.Adam(parameters, lr=1e-3)`."
            )
        if config.lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = config.lr
            notes.append(f"lr={config.lr} replaced the learning rate of make_optimizer's optimizer.")
        return optimizer, f"{type(optimizer).__name__} from make_optimizer"

    if model_file.make_optimizer is not None:
        notes.append(f"optimizer={config.optimizer} was used instead of make_optimizer in {model_file.name}.")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ModelFileError(
            f"The model in {model_file.name} has no trainable parameters (none with requires_grad=True), so there "
            "are no gradients to diagnose."
        )
    name = config.optimizer or "sgd"
    lr = config.lr if config.lr is not None else DEFAULT_LR[name]
    if name == "adam":
        return torch.optim.Adam(trainable, lr=lr), f"Adam(lr={lr})"
    return torch.optim.SGD(trainable, lr=lr, momentum=DEFAULT_SGD_MOMENTUM), f"SGD(lr={lr}, momentum=0.9)"


def _forward(model: nn.Module, inputs: Any, step: int, model_file: ModelFile, source: BatchSource) -> Any:
    try:
        return call_model(model, inputs)
    except GradscopeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's forward: any failure becomes one paragraph
        places = []
        location = user_location(exc, model_file.path)
        if location:
            places.append(f"at {location}")
        failing = _failing_module(model, inputs)
        if failing:
            places.append(f"in module {failing}")
        where = f" ({'; '.join(places)})" if places else ""
        raise ModelFileError(
            f"The model's forward pass raised {exception_summary(exc)} at step {step}{where}. "
            f"The inputs were {source.describe(inputs)}. {source.fix_hint()}"
        ) from exc


def _failing_module(model: nn.Module, inputs: Any) -> Optional[str]:
    """Name the innermost submodule whose forward raised, by re-running the forward with probes.

    Only used after a failure, so the normal path carries no extra hooks. A module that raised
    has entered (pre-hook fired) but not exited (forward hook never fired).
    """
    entered: list[tuple[str, nn.Module]] = []

    def probe_enter(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            entered.append((name, module))

        return hook

    def probe_exit(module: nn.Module, args: Any, output: Any) -> None:  # returns None: the output is kept
        if entered:
            entered.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(probe_enter(name)))
        handles.append(module.register_forward_hook(probe_exit))
    try:
        with torch.no_grad():
            call_model(model, inputs)
    except Exception:  # noqa: BLE001 - the same failure again is what we expect
        pass
    else:
        return None  # it did not fail again: do not guess
    finally:
        for handle in handles:
            handle.remove()
    if not entered or not entered[-1][0]:
        return None  # the root's own forward raised; the user-file location says where
    name, module = entered[-1]
    return f"{name!r} ({_module_repr(module)})"


def _module_repr(module: nn.Module) -> str:
    extra = module.extra_repr()
    text = f"{type(module).__name__}({extra})"
    return text if len(text) <= 80 else type(module).__name__


def _validation_loss(model: nn.Module, model_file: ModelFile, loss_fn: Any, loss_name: str, device: torch.device) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            with user_code("val_data()", model_file.path):
                batches = iter(model_file.val_data())
            while True:
                with user_code("Iterating val_data()", model_file.path):
                    batch = next(batches, _END)
                if batch is _END:
                    break
                if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                    raise ModelFileError(
                        f"val_data() in {model_file.name} yielded a {type(batch).__name__}; each batch must be a "
                        "pair (inputs, targets)."
                    )
                inputs, targets = to_device(batch[0], device), to_device(batch[1], device)
                with user_code("The forward pass on a val_data() batch", model_file.path):
                    outputs = call_model(model, inputs)
                value = loss_fn(outputs, targets)
                if not isinstance(value, torch.Tensor) or value.numel() != 1:
                    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise ModelFileError(
                        f"{loss_name} returned {shape} on a val_data() batch, but the loss must be a scalar "
                        "tensor. Reduce it, e.g. `loss.mean()`."
                    )
                weight = batch_weight(targets)
                total += float(value) * weight
                count += weight
    finally:
        model.train(was_training)
    if count == 0:
        raise ModelFileError(f"val_data() in {model_file.name} yielded no batches. Return a non-empty iterable.")
    return total / count


def _options_for_record(
    model_file: ModelFile, config: AnalyzeConfig, optimizer_label: str, loss_name: str, source: BatchSource
) -> dict[str, Any]:
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}
    options.update(
        command="analyze",
        model_file=str(model_file.path),
        optimizer_used=optimizer_label,
        loss=loss_name,
        data=source.kind,
    )
    return options
