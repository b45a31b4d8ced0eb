"""Diagnosis thresholds: the shipped YAML defaults, with a user's YAML merged over them.

The defaults file is the single list of valid keys: a user file may only change values that
exist there, with a value of the same kind, so a typo is an error instead of a silently
ignored threshold.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from ..errors import ConfigError

ConfigSource = Union["Config", str, os.PathLike, Mapping[str, Any], None]

_DEFAULTS_FILE = "defaults.yaml"


@dataclass(frozen=True)
class Config:
    """Validated thresholds, one section per rule. Read with `config.section("dead_relu")`."""

    sections: Mapping[str, Mapping[str, Any]]
    sources: tuple[str, ...] = ("defaults",)  # where the values came from, later ones win

    def section(self, name: str) -> dict[str, Any]:
        if name not in self.sections:
            raise ConfigError(f"The config has no section {name!r}. Sections: {', '.join(self.sections)}.")
        return dict(self.sections[name])

    def merged(self, overrides: Mapping[str, Any], source: str = "overrides") -> "Config":
        """A new Config with `overrides` ({section: {key: value}}) applied and checked."""
        sections = {name: dict(values) for name, values in self.sections.items()}
        _merge_into(sections, overrides, source)
        return Config(sections, self.sources + (source,))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dict(values) for name, values in self.sections.items()}


def default_config() -> Config:
    text = resources.files(__package__).joinpath(_DEFAULTS_FILE).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    return Config({name: dict(values) for name, values in data.items()})


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """The defaults, with the YAML file at `path` (if given) merged over them."""
    config = default_config()
    if path is None:
        return config
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"Config file {str(path)!r} does not exist. Check the path, or leave `config` out to use the defaults."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read config file {str(path)!r}: {exc}.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"Config file {str(path)!r} is not valid YAML{where} ({problem}). It should map rule sections to "
            "keys, e.g. 'dead_relu:' followed by an indented 'warn_fraction: 0.5'."
        ) from None
    if data is None:  # an empty file (or only comments) changes nothing
        return config
    return config.merged(data, source=str(path))


def resolve_config(config: ConfigSource) -> Config:
    """What `gradscope.diagnose` accepts: a Config, a YAML path, a {section: {key: value}} dict, or None."""
    if config is None:
        return default_config()
    if isinstance(config, Config):
        return config
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    if isinstance(config, Mapping):
        return default_config().merged(config)
    raise ConfigError(
        f"config must be a gradscope Config (from gradscope.load_config), a path to a YAML file, a dict of "
        f"{{section: {{key: value}}}} or None, not {type(config).__name__}."
    )


def _merge_into(sections: dict[str, dict[str, Any]], overrides: Any, source: str) -> None:
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"{source}: the top level must map rule sections to their keys (e.g. 'dead_relu:' then an indented "
            f"'warn_fraction: 0.5'), not a {_kind(overrides)}. Sections: {', '.join(sections)}."
        )
    for name, values in overrides.items():
        if name not in sections:
            raise ConfigError(
                f"{source}: unknown section {name!r}. Valid sections: {', '.join(sections)}. "
                "Each section is one diagnosis rule; check the spelling."
            )
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"{source}: section {name!r} must map keys to values (e.g. 'enabled: false'), not a {_kind(values)}. "
                f"Valid keys: {', '.join(sections[name])}."
            )
        for key, value in values.items():
            if key not in sections[name]:
                raise ConfigError(
                    f"{source}: unknown key {key!r} in section {name!r}. Valid keys of {name!r}: "
                    f"{', '.join(sections[name])}."
                )
            sections[name][key] = _checked(value, sections[name][key], f"{name}.{key}", source)


def _checked(value: Any, default: Any, where: str, source: str) -> Any:
    """`value` if it is of the kind of `default`; ints are fine where floats are expected."""
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: {where} must be true or false, not {value!r} ({_kind(value)}).")
    if isinstance(default, (int, float)):
        whole = isinstance(default, int)
        ok = isinstance(value, int) if whole else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            wanted = "a whole number" if whole else "a number"
            hint = " (YAML reads 1e-3 as text; write 1.0e-3)" if isinstance(value, str) and _looks_numeric(value) else ""
            raise ConfigError(
                f"{source}: {where} must be {wanted}, like the default {default!r}, not {value!r} ({_kind(value)}){hint}."
            )
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{source}: {where} must be a finite number >= 0, not {value!r}.")
        return value if whole else float(value)
    raise ConfigError(f"{source}: {where} has a default of unsupported kind {_kind(default)}.")  # a defaults.yaml bug


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _kind(value: Any) -> str:
    return {
        bool: "true/false",
        int: "whole number",
        float: "number",
        str: "text",
        list: "list",
        dict: "mapping",
        type(None): "empty value",
    }.get(type(value), type(value).__name__)
