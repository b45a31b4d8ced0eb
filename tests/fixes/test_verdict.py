"""Verdicts from the numbers: each threshold of the `fixes:` config decides what it says it decides."""

from __future__ import annotations

import pytest

from gradscope.diagnose import load_config
from gradscope.errors import ConfigError
from gradscope.fixes.dead_relu import METRICS as DEAD  # linear, lower is better
from gradscope.fixes.trial import judge
from gradscope.fixes.vanishing import METRICS as RATIO  # log scale, higher is better

SETTINGS = load_config().section("fixes")


def numbers(key, value, loss=1.0, finding="error"):
    return {key: value, "final_loss": loss, "finding": finding}


@pytest.mark.parametrize(
    ("metrics", "before", "after", "verdict"),
    [
        (RATIO, numbers("first_last_ratio", 1e-6), numbers("first_last_ratio", 0.3, finding=None), "fixed"),
        (RATIO, numbers("first_last_ratio", 1e-6), numbers("first_last_ratio", 1e-4), "improved"),
        (RATIO, numbers("first_last_ratio", 1e-6), numbers("first_last_ratio", 1.5e-6), "no effect"),
        (RATIO, numbers("first_last_ratio", 1e-6), numbers("first_last_ratio", 1e-8), "worse"),
        (RATIO, numbers("first_last_ratio", 1e-6), numbers("first_last_ratio", 0.3, loss=1.5, finding=None), "worse"),
        (RATIO, numbers("first_last_ratio", 1e-6), numbers("first_last_ratio", 1e-6, finding="warning"), "improved"),
        (DEAD, numbers("dead_fraction", 0.95), numbers("dead_fraction", 0.5), "improved"),
        (DEAD, numbers("dead_fraction", 0.95), numbers("dead_fraction", 0.9), "no effect"),
        (DEAD, numbers("dead_fraction", 0.95), numbers("dead_fraction", 0.5, loss=float("nan")), "failed"),
    ],
)
def test_verdicts(metrics, before, after, verdict):
    assert judge(metrics, before, after, SETTINGS)[0] == verdict


def test_fixes_section_is_validated_like_the_rest():
    assert load_config().section("fixes")["worse_loss"] == 0.1
    with pytest.raises(ConfigError, match="unknown key 'worse'.*fixes"):
        load_config().merged({"fixes": {"worse": 1}})
    with pytest.raises(ConfigError, match="fixes.improve_decades must be a number"):
        load_config().merged({"fixes": {"improve_decades": "lots"}})
