"""What every diagnosis rule declares, so the engine can run any rule the same way."""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence, Union

from ..record import RunRecord
from .finding import Finding

# A needed statistic: one name, or a tuple of names of which any one will do.
Need = Union[str, tuple[str, ...]]


class Rule:
    """One check. Subclasses set the class attributes and implement `check`.

    The engine only calls `check` when every statistic in `needs` and every scalar in
    `needs_scalars` is in the record; otherwise it reports the rule as skipped, so `check`
    never has to guess about missing data.
    """

    name: ClassVar[str]  # its section in the config, e.g. "dead_relu"
    code: ClassVar[str]  # the code of its main finding, e.g. "dead-relu"
    label: ClassVar[str]  # what it checks, for people: "Dead ReLU units"
    needs: ClassVar[tuple[Need, ...]] = ()
    needs_scalars: ClassVar[tuple[str, ...]] = ()  # names logged with run.log(...)
    config_keys: ClassVar[tuple[str, ...]] = ()  # the keys of its config section besides "enabled"

    def applies_to(self, record: RunRecord) -> bool:
        """False when the model has nothing this rule looks at (no BatchNorm for a BatchNorm rule):
        then it produces no finding at all, not even "skipped"."""
        return True

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        raise NotImplementedError

    def check_after(self, record: RunRecord, settings: Mapping[str, Any], earlier: Sequence[Finding]) -> list[Finding]:
        """What the engine calls. A rule whose advice points at other findings ("see the dead-relu
        finding") overrides this to point only at findings that exist: `earlier` holds those of
        the rules listed before it in `rules.ALL_RULES`."""
        return self.check(record, settings)
