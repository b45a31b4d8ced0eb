"""The model-file contract: loading a user's `model.py` and finding what it defines.

A model file is an ordinary Python file. `gradscope analyze model.py` executes it the way
`python model.py` would (its top-level code runs, its own directory is first on `sys.path`,
`sys.argv[0]` is the file), with one deliberate difference: it runs as a module named
`__gradscope_model__`, not `__main__`, so a training script guarded by
`if __name__ == "__main__":` does not start training inside gradscope.

The file then provides, by name:

- `build_model()` returning an `nn.Module`, or a module-level `model` (required, one of them);
- `make_batch(batch_size)` returning `(inputs, targets)`, or
  `train_data()` / `val_data()` returning iterables of `(inputs, targets)` batches (optional);
- `loss_fn(outputs, targets)` returning a scalar tensor (optional);
- `make_optimizer(model)` or `make_optimizer(parameters)` returning a `torch.optim.Optimizer`
  (optional; the parameter's name says which it gets: a GPT recipe needs the model to put weight
  decay on matrices only);
- `make_scheduler(optimizer)` returning a learning-rate scheduler, stepped after every optimizer
  step (optional; warm-up, cosine decay);
- `clip_grad_norm = 1.0`: clip the total gradient norm between backward() and step() (optional);
- `train_step(model, batch, optimizer)` or `train_step(model, batch, optimizer, state)` running the
  user's own step (forward, backward, clipping, optimizer steps) and returning the loss (optional;
  for anything the plain loop cannot express: a hidden state carried across batches in `state`, a
  dict kept between calls; several networks and optimizers, which `make_optimizer` then returns
  as a tuple, list or dict and `train_step` receives as such).

Every exception raised by the user's code is turned into a `ModelFileError` that names what
was being done, the exception, and where in the user's file it happened; the original
exception stays attached as `__cause__` for `--debug`.
"""

from __future__ import annotations

import inspect
import linecache
import math
import os
import sys
import traceback
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from torch import nn

from ..errors import GradscopeError, ModelFileError

MODULE_NAME = "__gradscope_model__"

CONTRACT = (
    "A model file must define `build_model()` returning a torch.nn.Module, or a module-level "
    "variable `model` holding one; optionally `make_batch(batch_size)` returning (inputs, targets), or "
    "`train_data()` / `val_data()` returning iterables of (inputs, targets) batches, `loss_fn(outputs, targets)`, "
    "`make_optimizer(model)` or `make_optimizer(parameters)`, `make_scheduler(optimizer)`, `clip_grad_norm = 1.0` "
    "and `train_step(model, batch, optimizer[, state])` returning the loss."
)

_OPTIONAL_FUNCTIONS = ("make_batch", "train_data", "val_data", "loss_fn", "make_optimizer", "make_scheduler", "train_step")
# What make_optimizer's one parameter may be called, by what gradscope passes to it.
_MODEL_NAMES = ("model", "net", "network", "module")
_PARAMETER_NAMES = ("parameters", "params", "param_groups")
_MAX_DETAIL = 400  # characters of a user exception message quoted in an error paragraph


@dataclass
class ModelFile:
    """What a loaded model file defines. Functions it does not define are None."""

    path: Path
    namespace: types.ModuleType
    build_model: Optional[Callable[[], Any]] = None
    model: Optional[nn.Module] = None
    make_batch: Optional[Callable[[int], Any]] = None
    train_data: Optional[Callable[[], Any]] = None
    val_data: Optional[Callable[[], Any]] = None
    loss_fn: Optional[Callable[[Any, Any], Any]] = None
    make_optimizer: Optional[Callable[[Any], Any]] = None
    optimizer_takes: str = "parameters"  # what make_optimizer is given: "model" or "parameters"
    make_scheduler: Optional[Callable[[Any], Any]] = None
    clip_grad_norm: Optional[float] = None
    train_step: Optional[Callable[..., Any]] = None
    train_step_takes_state: bool = False  # train_step(model, batch, optimizer, state)

    @property
    def name(self) -> str:
        return self.path.name

    def instantiate(self) -> nn.Module:
        """The model: `build_model()` when defined, else the module-level `model`."""
        if self.build_model is None:
            assert self.model is not None  # load_model_file guarantees one of the two
            return self.model
        with user_code("build_model()", self.path):
            model = self.build_model()
        if not isinstance(model, nn.Module):
            raise ModelFileError(
                f"build_model() in {self.name} returned {_describe(model)}, not a torch.nn.Module. "
                "Make it return the model instance (e.g. `return nn.Sequential(...)`)."
            )
        return model


def load_model_file(path: str | os.PathLike[str]) -> ModelFile:
    """Execute a model file as `python path` would (but not as `__main__`) and read the contract."""
    path = _check_path(Path(path))
    source = _read_source(path)
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as exc:
        raise ModelFileError(_syntax_message(path, exc)) from exc

    module = types.ModuleType(MODULE_NAME)
    module.__file__ = str(path)
    # Registered while it runs, so dataclasses, pickle and `typing.get_type_hints` can find it.
    sys.modules[MODULE_NAME] = module
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)  # sibling imports work as with `python model.py`; left in place for lazy imports
    saved_argv = sys.argv
    sys.argv = [str(path)]
    try:
        with user_code(f"Executing {path.name}", path, phase="load"):
            exec(code, module.__dict__)
    finally:
        sys.argv = saved_argv
    return _read_contract(path, module)


@contextmanager
def user_code(action: str, path: Path, hint: str = "", phase: str = "call") -> Iterator[None]:
    """Turn any exception raised by the user's code inside the block into a `ModelFileError`.

    `action` names what was being done ("build_model()", "The forward pass at step 0"); `hint`
    is a sentence on how to fix it, appended to the message.
    """
    try:
        yield
    except GradscopeError:
        raise
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        raise ModelFileError(
            f"{action} failed: it imports the module {missing!r}, which is not installed or not on the path"
            f"{_where_suffix(exc, path)}. Install it (e.g. `pip install {missing.split('.')[0]}`) or fix the import; "
            "the model file's own directory is on sys.path, so sibling modules can be imported."
        ) from exc
    except SystemExit as exc:
        raise ModelFileError(
            f"{action} called sys.exit({exc.code!r}){_where_suffix(exc, path)}. A model file must not exit; "
            'put script code under `if __name__ == "__main__":` (gradscope does not run that block).'
        ) from exc
    except Exception as exc:  # noqa: BLE001 - any error in user code becomes one clear paragraph
        sentences = [f"{action} raised {exception_summary(exc)}{_where_suffix(exc, path)}."]
        if phase == "load":
            sentences.append("Fix the error in the model file; gradscope executes it as `python model.py` would.")
        if hint:
            sentences.append(hint)
        raise ModelFileError(" ".join(sentences)) from exc


def exception_summary(exc: BaseException) -> str:
    """`TypeName: message` on one line, shortened: errors must stay one paragraph."""
    text = " ".join(str(exc).split())
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def user_location(exc: BaseException, path: Path) -> Optional[str]:
    """'model.py:12 in forward: `return self.net(x)`' for the innermost frame in the user's file."""
    wanted = _same_file_key(path)
    last = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if _same_file_key(Path(frame.filename)) == wanted:
            last = frame
    if last is None:
        return None
    line = (last.line or linecache.getline(last.filename, last.lineno or 0)).strip()
    where = f"{path.name}:{last.lineno} in {last.name}"
    return f"{where}: `{line}`" if line else where


def _where_suffix(exc: BaseException, path: Path) -> str:
    location = user_location(exc, path)
    return f" (at {location})" if location else ""


def _check_path(path: Path) -> Path:
    if not path.exists():
        raise ModelFileError(
            f"Model file {str(path)!r} does not exist. Check the path; it is resolved against the current "
            f"directory ({os.getcwd()})."
        )
    if path.is_dir():
        raise ModelFileError(
            f"{str(path)!r} is a directory, not a model file. Pass the Python file that defines the model, "
            "e.g. `gradscope analyze path/to/model.py`."
        )
    if path.suffix != ".py":
        raise ModelFileError(
            f"{str(path)!r} is not a Python file (it does not end in .py). gradscope analyze takes a .py file "
            f"that defines the model; to render a saved run use `gradscope report RUN.json`. {CONTRACT}"
        )
    return path.resolve()


def _read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFileError(f"Model file {path.name} is not UTF-8 text ({exc.reason} at byte {exc.start}).") from exc
    except OSError as exc:
        raise ModelFileError(f"Cannot read model file {str(path)!r}: {exc.strerror or exc}.") from exc


def _syntax_message(path: Path, exc: SyntaxError) -> str:
    where = f"line {exc.lineno}" if exc.lineno else "an unknown line"
    if exc.offset:
        where += f", column {exc.offset}"
    text = (exc.text or "").strip()
    shown = f": `{text}`" if text else ""
    return (
        f"Model file {path.name} has a syntax error at {where}{shown} ({exc.msg}). "
        "Fix it; `python -m py_compile` on the file reports the same error."
    )


def _read_contract(path: Path, module: types.ModuleType) -> ModelFile:
    found = ModelFile(path=path, namespace=module)
    for name in ("build_model",) + _OPTIONAL_FUNCTIONS:
        value = getattr(module, name, None)
        if value is None:
            continue
        if not callable(value):
            raise ModelFileError(
                f"{path.name} defines `{name}` as {_describe(value)}, but it must be a function. {CONTRACT}"
            )
        setattr(found, name, value)
    model = getattr(module, "model", None)
    if found.build_model is None:
        if model is None:
            raise ModelFileError(f"{path.name} defines no model: it has neither `build_model()` nor `model`. {CONTRACT}")
        if not isinstance(model, nn.Module):
            raise ModelFileError(
                f"`model` in {path.name} is {_describe(model)}, not a torch.nn.Module instance. "
                f"If it is a class, write `model = {_class_name(model)}()` or define build_model(). {CONTRACT}"
            )
        found.model = model
    _read_recipe(path, module, found)
    if found.make_batch is not None and found.train_data is not None:
        raise ModelFileError(
            f"{path.name} defines both `make_batch` and `train_data`; gradscope would not know which data to train "
            "on. Keep one of them."
        )
    return found


def _read_recipe(path: Path, module: types.ModuleType, found: ModelFile) -> None:
    """Check the signatures of the training-recipe hooks now, so a mistake fails before training."""
    if found.make_optimizer is not None:
        found.optimizer_takes = _optimizer_argument(path, found.make_optimizer)
    if found.make_scheduler is not None:
        _require_arity(path, "make_scheduler", found.make_scheduler, (1,), "make_scheduler(optimizer)")
    if found.train_step is not None:
        count = _require_arity(
            path, "train_step", found.train_step, (3, 4), "train_step(model, batch, optimizer) or train_step(model, batch, optimizer, state)"
        )
        found.train_step_takes_state = count == 4
    clip = getattr(module, "clip_grad_norm", None)
    if clip is not None:
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not math.isfinite(clip) or clip <= 0:
            raise ModelFileError(
                f"{path.name} sets `clip_grad_norm = {clip!r}`, but it must be a positive number: the largest total "
                "gradient norm kept by torch.nn.utils.clip_grad_norm_ (e.g. `clip_grad_norm = 1.0`). Remove it to "
                "train without clipping."
            )
        if found.train_step is not None:
            raise ModelFileError(
                f"{path.name} sets `clip_grad_norm` and defines `train_step`; gradscope does not run the step itself "
                "then, so it cannot clip. Call torch.nn.utils.clip_grad_norm_ inside train_step, between backward() "
                "and step(), and remove `clip_grad_norm`."
            )
        found.clip_grad_norm = float(clip)


def _positional(fn: Callable[..., Any]) -> Optional[tuple[list[inspect.Parameter], bool]]:
    """(positional parameters without defaults, whether it takes *args), or None if unknowable."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C functions have no signature: trust them
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in signature.parameters.values() if p.kind in kinds and p.default is inspect.Parameter.empty]
    star = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values())
    return required, star


def _require_arity(path: Path, name: str, fn: Callable[..., Any], counts: tuple[int, ...], expected: str) -> int:
    found = _positional(fn)
    if found is None:
        return counts[0]
    required, star = found
    if len(required) in counts:
        return len(required)
    if star and len(required) <= counts[0]:
        return counts[0]
    shown = ", ".join(p.name for p in required)
    raise ModelFileError(
        f"`{name}({shown})` in {path.name} takes {len(required)} argument(s) without defaults, but gradscope calls "
        f"it as {expected}. Change its parameters to match. {CONTRACT}"
    )


def _optimizer_argument(path: Path, fn: Callable[..., Any]) -> str:
    """'model' or 'parameters': what make_optimizer wants, read from its one parameter's name or annotation."""
    _require_arity(path, "make_optimizer", fn, (1,), "make_optimizer(model) or make_optimizer(parameters)")
    found = _positional(fn)
    if found is None or not found[0]:
        return "parameters"  # make_optimizer(*args) or no signature: the original contract
    parameter = found[0][0]
    annotation = parameter.annotation
    if isinstance(annotation, type) and issubclass(annotation, nn.Module):
        return "model"
    if isinstance(annotation, str) and annotation.split(".")[-1] in ("Module", "Model"):
        return "model"
    name = parameter.name.lower()
    if name in _MODEL_NAMES or name.endswith("model"):
        return "model"
    if name in _PARAMETER_NAMES or name.endswith(("params", "parameters")):
        return "parameters"
    raise ModelFileError(
        f"`make_optimizer({parameter.name})` in {path.name}: gradscope passes the model when the parameter is named "
        f"`model` and model.parameters() when it is named `parameters`, and cannot tell which `{parameter.name}` "
        "is. Rename it to `model` (to build parameter groups, e.g. weight decay on matrices only) or `parameters`."
    )


def _describe(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__}"
    if value is None:
        return "None"
    name = type(value).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _class_name(value: Any) -> str:
    return value.__name__ if isinstance(value, type) else "MyModel"


def _same_file_key(path: Path) -> str:
    try:
        return os.path.normcase(str(path.resolve()))
    except OSError:
        return os.path.normcase(str(path))
