"""Runs the rules over a record and orders their findings."""

from __future__ import annotations

from typing import Sequence

from ..record import RunRecord
from .config import Config
from .finding import SKIPPED, Diagnosis, Finding, severity_rank
from .reading import has_scalar, has_stat
from .rule import Need, Rule

# How each statistic gets into a record, for the "skipped" findings.
_HOW_TO_RECORD = {
    "update_ratio": "it is recorded only when the optimizer is passed: gradscope.watch(model, optimizer=opt)",
    "backprop_norm": "it is recorded with activations=True (the default) in gradscope.watch",
    "act_": "activation statistics are recorded with activations=True (the default) in gradscope.watch",
    "grad_": "gradient statistics are recorded with gradients=True (the default) and need loss.backward()",
}


def run_rules(record: RunRecord, config: Config, rules: Sequence[Rule]) -> Diagnosis:
    findings: list[tuple[int, int, Finding]] = []
    for position, rule in enumerate(rules):
        settings = config.section(rule.name)
        if not settings.get("enabled", True) or not rule.applies_to(record):
            continue
        missing = _missing_stats(record, rule.needs)
        missing_scalars = [s for s in rule.needs_scalars if not has_scalar(record, s)]
        if missing or missing_scalars:
            produced = [_skipped(rule, missing, missing_scalars, record)]
        else:
            produced = rule.check_after(record, settings, [f for _, _, f in findings])
        findings.extend((position, order, finding) for order, finding in enumerate(produced))
    # Most severe first; within a severity, "not checked" notes last, then rules in their listed order.
    findings.sort(key=lambda item: (-severity_rank(item[2].severity), item[2].code == SKIPPED, item[0], item[1]))
    return Diagnosis([f for _, _, f in findings])


def _missing_stats(record: RunRecord, needs: Sequence[Need]) -> list[str]:
    missing = []
    for need in needs:
        options = (need,) if isinstance(need, str) else tuple(need)
        if not any(has_stat(record, stat) for stat in options):
            missing.append(" or ".join(options))
    return missing


def _skipped(rule: Rule, missing: list[str], missing_scalars: list[str], record: RunRecord) -> Finding:
    reasons = []
    if missing:
        wanted = ", ".join(f"'{m}'" for m in missing)
        stats = [stat for m in missing for stat in m.split(" or ")]
        hints = sorted({hint for stat in stats for key, hint in _HOW_TO_RECORD.items() if stat.startswith(key)})
        reasons.append(f"the record has no values of {wanted}" + (f" ({'; '.join(hints)})" if hints else ""))
    if missing_scalars:
        logged = ", ".join(f"'{s}'" for s in sorted(record.scalars)) or "none"
        wanted = ", ".join(missing_scalars)
        call = ", ".join(f"{s}=..." for s in missing_scalars)
        reasons.append(
            f"no {wanted} was logged (logged scalars: {logged}); log it with run.log({call}) in the training loop"
            + (", or define val_data() in the model file for `gradscope analyze`" if "val_loss" in missing_scalars else "")
        )
    return Finding(
        code=SKIPPED,
        severity="info",
        title=f"{rule.label}: not checked",
        message=f"{rule.label} were not checked because " + "; and ".join(reasons) + ".",
        recommendation="",
        evidence={"rule": rule.name, "missing_statistics": missing, "missing_scalars": missing_scalars},
    )
