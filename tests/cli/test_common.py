"""What every command shares: library messages put in the CLI's words."""

from __future__ import annotations

from gradscope.errors import ConfigError
from gradscope_cli.common import FLAG_OF_FIELD, in_flags


def test_fields_become_flags_and_other_backticked_names_stay():
    message = "`input_shape` '3xbig' is not a shape, e.g. `input_shape=3x32x32`; use `device=cpu`; define `model`."
    assert in_flags(message) == (
        "--input-shape '3xbig' is not a shape, e.g. --input-shape 3x32x32; use --device cpu; define `model`."
    )
    assert in_flags("Re-create it with `gradscope analyze --json`.") == "Re-create it with `gradscope analyze --json`."


def test_every_field_the_analyze_config_checks_has_a_flag():
    from gradscope.analyze import AnalyzeConfig

    for bad in (dict(steps=0), dict(batch_size=0), dict(every=0), dict(budget=0), dict(lr=-1.0), dict(seed=-1), dict(device="tpu")):
        try:
            AnalyzeConfig(**bad).validate()
        except ConfigError as exc:
            shown = in_flags(str(exc))
            assert "`" not in shown and shown.startswith(FLAG_OF_FIELD[next(iter(bad))]), shown
        else:
            raise AssertionError(f"{bad} was accepted")
