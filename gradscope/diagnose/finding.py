"""`Finding` and `Diagnosis`: what the rules conclude about a run, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

SEVERITIES: tuple[str, ...] = ("info", "warning", "error")  # in increasing order

# The code of a "this rule could not run on this record" note: it says nothing about the model,
# so renderers list it apart and `--fail-on` never counts it.
SKIPPED = "rule-skipped"


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


@dataclass
class Finding:
    code: str  # stable identifier, e.g. "vanishing-gradients"
    severity: str  # "info" | "warning" | "error"
    title: str  # one line, e.g. "Gradients vanish towards the input (x0.14 per layer)"
    message: str  # what is wrong and why, in plain words
    recommendation: str  # what to change, naming modules
    snippet: str = ""  # PyTorch code showing the change (rendered in <pre>)
    layers: list[str] = field(default_factory=list)  # module names involved, forward order
    steps: list[int] = field(default_factory=list)  # recorded steps involved
    evidence: dict[str, Any] = field(default_factory=dict)  # numbers and the thresholds they were compared with


@dataclass
class Diagnosis:
    """Findings ordered most severe first; iterating yields `Finding`s."""

    findings: list[Finding] = field(default_factory=list)

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def worst_severity(self) -> str | None:
        if not self.findings:
            return None
        return max((f.severity for f in self.findings), key=severity_rank)

    def at_least(self, severity: str) -> list[Finding]:
        rank = severity_rank(severity)
        return [f for f in self.findings if severity_rank(f.severity) >= rank]
