"""Train a model file for a few steps with `gradscope.watch` attached and return the RunRecord.

This is what `gradscope analyze model.py` runs; it is a library function so tests and
notebooks can call it too. It prints nothing: progress goes to an optional callback.
`train_watched` is the loop, one function, so other callers (fix trials) train exactly alike:

    forward -> loss -> backward -> clip (clip_grad_norm / `clip`) -> optimizer.step() -> zero_grad
    or the model file's own train_step(model, batch, optimizer[, state])
    -> scheduler.step() (make_scheduler) -> run.log(loss=..., val_loss=...)

with the validation loss (when the model file defines `val_data()`) computed at about ten evenly
spaced steps (`val_every` changes that) under `torch.no_grad()` and `model.eval()`, then
`model.train()` again. When make_optimizer returns an optimizer per network (a GAN), each
network is watched with its own optimizer and has its own record (`analyze_networks`).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from ..capture import watch
from ..capture.clock import check_budget
from ..errors import ConfigError, GradscopeError, ModelFileError
from ..network_runs import NetworkRun
from ..network_split import network_note, split_networks
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
    every: int = 1  # record every Nth step (with budget: the shortest interval)
    budget: Optional[float] = None  # record as often as costs at most this fraction of the step time
    val_every: Optional[int] = None  # evaluate val_data every Nth step; None: about ten times, evenly spaced
    clip: Optional[float] = None  # clip the gradient norm at this; None: the file's clip_grad_norm, else no clipping
    input_shape: Optional[tuple[int, ...]] = None  # one sample, without the batch dimension
    config_path: Optional[str] = None  # diagnosis thresholds (YAML); used by the caller, kept for the record

    def validate(self) -> None:
        for name in ("steps", "batch_size", "every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"`{name}` must be a positive integer, got {value!r}.")
        check_budget(self.budget)
        if self.val_every is not None and (
            not isinstance(self.val_every, int) or isinstance(self.val_every, bool) or self.val_every < 1
        ):
            raise ConfigError(f"`val_every` must be a positive integer, got {self.val_every!r}.")
        for name in ("lr", "clip"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
            ):
                raise ConfigError(f"`{name}` must be a positive number, got {value!r}.")
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
        """Called every step between `loss.backward()` and `optimizer.step()` (with a model file's own
        train_step: right before each of its optimizer steps)."""


NO_CHANGES = TrainingChanges()


def analyze_file(
    path: str | os.PathLike[str],
    config: Optional[AnalyzeConfig] = None,
    progress: Optional[Progress] = None,
    changes: TrainingChanges = NO_CHANGES,
) -> RunRecord:
    """Load the model file, train it `config.steps` steps under `gradscope.watch`, return the record.

    Raises `ModelFileError` for anything wrong with the file or its model, `ConfigError` for bad
    options or for a file that trains several networks (use `analyze_networks`). A NaN loss is not
    an error: the run completes and the record shows it.
    """
    config = config or AnalyzeConfig()
    config.validate()
    seed_everything(config.seed)  # before loading: a module-level `model` is built while the file runs
    model_file = load_model_file(path)
    return train_model_file(model_file, config, progress, changes)


def analyze_networks(
    path: str | os.PathLike[str],
    config: Optional[AnalyzeConfig] = None,
    progress: Optional[Progress] = None,
    before_training: Optional[Callable[[list[str]], None]] = None,
) -> list[NetworkRun]:
    """`analyze_file` with one record per network: one `NetworkRun` when one optimizer trains the
    model, one per network when `make_optimizer` returns an optimizer for each (a GAN).

    `before_training(names)` is called with the networks' names once they are known, before the
    first step: a caller that cannot handle several raises there, before any training time is spent.
    """
    config = config or AnalyzeConfig()
    config.validate()
    seed_everything(config.seed)
    return train_networks(load_model_file(path), config, progress, before_training=before_training)


def train_model_file(
    model_file: ModelFile,
    config: AnalyzeConfig,
    progress: Optional[Progress] = None,
    changes: TrainingChanges = NO_CHANGES,
) -> RunRecord:
    """Train an already loaded model file as `analyze_file` does. The caller seeds (`seed_everything`)."""

    def one_network(names: list[str]) -> None:
        if len(names) > 1:
            raise ConfigError(
                f"{model_file.name} trains {len(names)} networks ({', '.join(names)}), each with its own optimizer, "
                "so there is one record per network, not one for the model. Call "
                "gradscope.analyze.analyze_networks (or train_networks) to get each network's record."
            )

    return train_networks(model_file, config, progress, changes, one_network)[0].record


def train_networks(
    model_file: ModelFile,
    config: AnalyzeConfig,
    progress: Optional[Progress] = None,
    changes: TrainingChanges = NO_CHANGES,
    before_training: Optional[Callable[[list[str]], None]] = None,
) -> list[NetworkRun]:
    """Train an already loaded model file with one watcher per network (see `analyze_networks`)."""
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
    recipe = make_recipe(model_file, model, config, notes, changes)
    if recipe.train_step is not None and source.kind == "synthetic":
        notes.append("train_step received synthesized inputs (no make_batch or train_data): a tensor, not a pair.")
    loss = make_loss(model_file)
    notes.append(f"gradscope analyze trained on {source.describe()}.")
    if source.kind == "synthetic":
        notes.append("Targets were random (see gradscope.analyze.batches): the losses say nothing about generalization.")
    split = split_networks(model, recipe.optimizer, recipe.optimizers, _module_level_modules(model_file))
    if split.note:
        notes.append(split.note)
        recipe.unsplit = split.note
    names = [part.name for part in split.parts]
    if before_training is not None:
        before_training(names)

    with contextlib.ExitStack() as stack:
        runs = [
            stack.enter_context(watch(part.module, optimizer=part.optimizer, every=config.every, budget=config.budget))
            for part in split.parts
        ]
        train_watched(model, model_file, source, recipe, loss, config, runs, progress, changes, names)

    several = len(split.parts) > 1
    results = []
    for part, run in zip(split.parts, runs):
        record = run.record
        options = _options_for_record(model_file, config, recipe.label, loss[1], source)
        if several:
            options.update(network=part.name, optimizer_used=f"{type(part.optimizer).__name__} from make_optimizer")
        record.meta.options.update(options)
        record.meta.notes.extend(notes)
        if several:
            record.meta.notes.append(network_note(part.name, [p.name for p in split.parts], "make_optimizer"))
        results.append(NetworkRun(part.name, record))
    return results


def _module_level_modules(model_file: ModelFile) -> dict[str, nn.Module]:
    """The modules a model file keeps in module-level variables: where a network the model does not
    hold (a GAN's `netD = Discriminator()` next to `build_model()` returning the generator) is."""
    return {name: value for name, value in vars(model_file.namespace).items() if isinstance(value, nn.Module)}


@dataclass
class Recipe:
    """How each step trains, as the model file and the options chose it."""

    optimizer: Any  # what make_optimizer returned (one optimizer, or a tuple/list/dict for train_step)
    optimizers: list[torch.optim.Optimizer]  # the optimizers in it, in order
    label: str  # "AdamW from make_optimizer", for the record
    scheduler: Any = None  # has .step(); called after every training step
    clip: Optional[float] = None
    train_step: Optional[Callable[..., Any]] = None
    state: Optional[dict[str, Any]] = None  # train_step's 4th argument, kept across steps
    # why several optimizers are watched as one (network_split's note), for train_step's errors
    unsplit: Optional[str] = None


def make_recipe(
    model_file: ModelFile,
    model: nn.Module,
    config: AnalyzeConfig,
    notes: list[str],
    changes: TrainingChanges = NO_CHANGES,
) -> Recipe:
    """The optimizer(s), scheduler, clipping and step function for this model file and these options;
    `changes.edit_optimizer` is applied to each optimizer before the scheduler is made."""
    optimizer, optimizers, label = _make_optimizer(model_file, model, config, notes)
    edited = [changes.edit_optimizer(model, o) for o in optimizers]
    if any(new is not old for new, old in zip(edited, optimizers)):
        optimizer = _replace(optimizer, dict(zip(map(id, optimizers), edited)))
        optimizers = edited
    if len(optimizers) > 1 and model_file.train_step is None:
        raise ModelFileError(
            f"make_optimizer in {model_file.name} returned {len(optimizers)} optimizers, but without a train_step "
            "gradscope would not know which one steps when. Define train_step(model, batch, optimizers) that runs "
            "each network's step, or return a single optimizer."
        )
    if config.clip is not None and model_file.train_step is not None:
        raise ConfigError(
            f"`clip` cannot apply: {model_file.name} defines train_step, which runs the step itself. Clip inside "
            "train_step with torch.nn.utils.clip_grad_norm_, between backward() and step()."
        )
    scheduler = None
    if model_file.make_scheduler is not None:
        with user_code("make_scheduler(optimizer)", model_file.path):
            scheduler = model_file.make_scheduler(optimizer)
        steppers = scheduler if isinstance(scheduler, (tuple, list)) else [scheduler]
        if not steppers or not all(callable(getattr(s, "step", None)) for s in steppers):
            raise ModelFileError(
                f"make_scheduler(optimizer) in {model_file.name} returned {_describe(scheduler)}, which has no step() "
                "method. Return a learning-rate scheduler, e.g. "
                "`torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 10))`."
            )
    clip = config.clip if config.clip is not None else model_file.clip_grad_norm
    if config.clip is not None and model_file.clip_grad_norm is not None:
        notes.append(f"clip={config.clip} replaced clip_grad_norm = {model_file.clip_grad_norm} of {model_file.name}.")
    return Recipe(
        optimizer=optimizer,
        optimizers=optimizers,
        label=label + (f", gradient norm clipped at {clip:g}" if clip is not None else ""),
        scheduler=scheduler,
        clip=clip,
        train_step=model_file.train_step,
        state={} if model_file.train_step_takes_state else None,
    )


def _replace(made: Any, new: dict[int, torch.optim.Optimizer]) -> Any:
    """make_optimizer's object with each optimizer swapped for its edited one (same container type)."""
    if isinstance(made, dict):
        return {k: new.get(id(v), v) for k, v in made.items()}
    if isinstance(made, (tuple, list)):
        return type(made)(new.get(id(v), v) for v in made)
    return new.get(id(made), made)


def validation_steps(steps: int, val_every: Optional[int]) -> set[int]:
    """The steps after which val_data is evaluated: every `val_every`-th, or about ten evenly spaced
    ones ending at the last step (evaluating at every step can cost more than the training)."""
    every = val_every if val_every is not None else max(1, round(steps / 10))
    return {step for step in range(steps) if (step + 1) % every == 0 or step == steps - 1}


def train_watched(
    model: nn.Module,
    model_file: ModelFile,
    source: BatchSource,
    recipe: Recipe,
    loss: tuple[Any, str],
    config: AnalyzeConfig,
    runs: list[Any],
    progress: Optional[Progress] = None,
    changes: TrainingChanges = NO_CHANGES,
    names: Optional[list[str]] = None,
) -> None:
    """Train `config.steps` steps while `runs` (attached watchers, of the networks `names`) record; log
    the loss to each: train_step's one loss to every network, or each network's own from its dict."""
    loss_fn, loss_name = loss
    evaluate = validation_steps(config.steps, config.val_every) if model_file.val_data is not None else set()
    device = next((p.device for p in model.parameters()), torch.device(config.device))
    schedulers = recipe.scheduler if isinstance(recipe.scheduler, (tuple, list)) else [recipe.scheduler]
    handles = []
    if recipe.train_step is not None and type(changes).before_step is not TrainingChanges.before_step:
        # The user's step calls optimizer.step() itself: act right before it, after its own clipping.
        for optimizer in recipe.optimizers:
            handles.append(optimizer.register_step_pre_hook(lambda opt, args, kwargs: changes.before_step(model, opt)))
    try:
        for step in range(config.steps):
            if recipe.train_step is not None:
                losses = _user_step(model, model_file, source, recipe, step, runs, names)
            else:
                losses = [_plain_step(model, model_file, source, recipe, loss, step, changes)] * len(runs)
            if recipe.scheduler is not None:
                with user_code(f"scheduler.step() at step {step}", model_file.path):
                    for scheduler in schedulers:
                        scheduler.step()
            validation = {}
            if step in evaluate:
                validation["val_loss"] = _validation_loss(model, model_file, loss_fn, loss_name, device)
            for run, value in zip(runs, losses):
                run.log(loss=value, **validation)
            if progress is not None:
                progress(1)
    finally:
        for handle in handles:
            handle.remove()


def _plain_step(
    model: nn.Module,
    model_file: ModelFile,
    source: BatchSource,
    recipe: Recipe,
    loss: tuple[Any, str],
    step: int,
    changes: TrainingChanges,
) -> float:
    loss_fn, loss_name = loss
    optimizer = recipe.optimizers[0]
    batch = source.next(step)
    outputs = _forward(model, batch.inputs, step, model_file, source)
    targets = batch.targets if batch.targets is not None else source.make_targets(outputs)
    value = check_loss(loss_fn(outputs, targets), loss_name, step)
    with user_code(f"The backward pass at step {step}", model_file.path):
        value.backward()
    if recipe.clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
    changes.before_step(model, optimizer)
    with user_code(f"optimizer.step() at step {step}", model_file.path):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return value.item()


def _user_step(
    model: nn.Module,
    model_file: ModelFile,
    source: BatchSource,
    recipe: Recipe,
    step: int,
    runs: list[Any],
    names: Optional[list[str]],
) -> list[float]:
    """Run train_step once; the loss of each of `runs`."""
    batch = source.next_raw(step)
    arguments = (model, batch, recipe.optimizer) + ((recipe.state,) if recipe.state is not None else ())
    with user_code(f"train_step(model, batch, optimizer) at step {step}", model_file.path):
        value = recipe.train_step(*arguments)
    if isinstance(value, dict) and names is not None and len(names) > 1 and set(map(str, value)) == set(names):
        by_name = {str(key): loss for key, loss in value.items()}
        losses = [_loss_value(by_name[name], model_file, step) for name in names]
    else:
        losses = [_loss_value(value, model_file, step, names, recipe.unsplit)] * len(runs)
    if step == 0 and any(run.step == 0 for run in runs):
        raise ModelFileError(
            f"train_step in {model_file.name} returned without calling optimizer.step() at step 0, so no training "
            "step happened and there is nothing to record. Call loss.backward() and optimizer.step() (for several "
            "optimizers, each one's step()) inside train_step."
        )
    return losses


def _loss_value(
    value: Any, model_file: ModelFile, step: int, names: Optional[list[str]] = None, unsplit: Optional[str] = None
) -> float:
    """train_step's return value as a float: a one-element tensor or a number (NaN allowed).
    `unsplit`: why the optimizers are watched as one network, said when a dict of losses comes back."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and (value.is_floating_point() or value.is_complex()):
        return float(value.detach().float().item())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    shown = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else _describe(value)
    if isinstance(value, dict):
        shown += f" with keys {', '.join(map(repr, value))}"
    several = (
        f", or a dict giving each network its own loss, keyed {', '.join(map(repr, names))}"
        if names is not None and len(names) > 1 else ""
    )
    if isinstance(value, dict) and unsplit is not None:
        raise ModelFileError(
            f"train_step in {model_file.name} returned {shown} at step {step}: one loss per network, but gradscope "
            f"watches the whole model as one network, because {unsplit[0].lower()}{unsplit[1:]} Until then, return one "
            "loss (e.g. the sum of the networks' losses)."
        )
    raise ModelFileError(
        f"train_step in {model_file.name} returned {shown} at step {step}; it must return the step's loss, a scalar "
        f"tensor or a float (e.g. `return loss` after `optimizer.step()`){several}, which gradscope logs as `loss`."
    )


def _describe(value: Any) -> str:
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


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
) -> tuple[Any, list[torch.optim.Optimizer], str]:
    """`optimizer` wins over the file's make_optimizer; `lr` alone overrides its learning rate(s)."""
    if config.optimizer is None and model_file.make_optimizer is not None:
        takes = model_file.optimizer_takes
        call = f"make_optimizer({takes})"
        with user_code(call, model_file.path):
            made = model_file.make_optimizer(model if takes == "model" else model.parameters())
        parts = list(made.values()) if isinstance(made, dict) else list(made) if isinstance(made, (tuple, list)) else [made]
        wrong = next((p for p in parts if not isinstance(p, torch.optim.Optimizer)), None) if parts else made
        if wrong is not None or not parts:
            raise ModelFileError(
                f"{call} in {model_file.name} returned {_describe(wrong)}, not a torch.optim.Optimizer. Return e.g. "
                f"`torch.optim.Adam({'model.parameters()' if takes == 'model' else 'parameters'}, lr=1e-3)` (or, "
                "with a train_step that drives several networks, a tuple, list or dict of optimizers)."
            )
        if config.lr is not None:
            for optimizer in parts:
                for group in optimizer.param_groups:
                    group["lr"] = config.lr
            notes.append(f"lr={config.lr} replaced the learning rate of make_optimizer's optimizer.")
        return made, parts, ", ".join(type(p).__name__ for p in parts) + " from make_optimizer"

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
        optimizer: torch.optim.Optimizer = torch.optim.Adam(trainable, lr=lr)
        return optimizer, [optimizer], f"Adam(lr={lr})"
    optimizer = torch.optim.SGD(trainable, lr=lr, momentum=DEFAULT_SGD_MOMENTUM)
    return optimizer, [optimizer], f"SGD(lr={lr}, momentum=0.9)"


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
