"""Runs the rules over a record and orders their findings."""

from __future__ import annotations

from typing import Sequence

from ..record import RunRecord
from ..statdefs import STATS_BY_NAME
from .config import Config
from .coverage import Coverage, coverage, how_to_record
from .finding import SKIPPED, Diagnosis, Finding, severity_rank
from .reading import has_scalar, has_stat
from .rule import Need, Rule


def run_rules(record: RunRecord, config: Config, rules: Sequence[Rule]) -> Diagnosis:
    findings: list[tuple[int, int, Finding]] = []
    cover = coverage(record)
    for position, rule in enumerate(rules):
        settings = config.section(rule.name)
        if not settings.get("enabled", True):
            continue
        if not rule.applies_to(record):
            # Nothing to look at, unless what it would look at exists but could not be measured
            # (activations inside nn.LSTM): then say so, as the report's table does.
            hidden = _unmeasurable(rule, cover)
            if hidden:
                findings.append((position, 0, _not_checked(rule, hidden, {"rule": rule.name, "not_measured": hidden})))
            continue
        missing = _missing_stats(record, rule.needs)
        missing_scalars = [s for s in rule.needs_scalars if not has_scalar(record, s)]
        if missing or missing_scalars:
            produced = [_skipped(rule, missing, missing_scalars, record, cover)]
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


def _unmeasurable(rule: Rule, cover: Coverage) -> str:
    """Why a rule's activation statistics could not be measured in this model at all, or ""."""
    needed = [stat for need in rule.needs for stat in ((need,) if isinstance(need, str) else need)]
    if not any(stat in ("act_dead_frac", "act_saturation") for stat in needed):
        return ""
    return cover.hidden_activations() or ""


def _skipped(rule: Rule, missing: list[str], missing_scalars: list[str], record: RunRecord, cover: Coverage) -> Finding:
    reasons = []
    if missing:
        wanted = ", ".join(f"'{m}'" for m in missing)
        stats = [stat for m in missing for stat in m.split(" or ")]
        hints = sorted({_why_missing(stat, cover) for stat in stats} - {""})
        reasons.append(f"the record has no values of {wanted}" + (f" ({'; '.join(hints)})" if hints else ""))
    if missing_scalars:
        logged = ", ".join(f"'{s}'" for s in sorted(record.scalars)) or "none"
        wanted = ", ".join(missing_scalars)
        call = ", ".join(f"{s}=..." for s in missing_scalars)
        reasons.append(
            f"no {wanted} was logged (logged scalars: {logged}); log it with run.log({call}) in the training loop"
            + (", or define val_data() in the model file for `gradscope analyze`" if "val_loss" in missing_scalars else "")
        )
    evidence = {"rule": rule.name, "missing_statistics": missing, "missing_scalars": missing_scalars}
    return _not_checked(rule, "; and ".join(reasons), evidence)


def _why_missing(stat: str, cover: Coverage) -> str:
    """What the report's table says about a statistic no layer has: how the run was made, else how to record it."""
    gap = cover.run_gap(stat) if stat in STATS_BY_NAME else None
    return gap.reason if gap is not None else how_to_record(stat)


def _not_checked(rule: Rule, because: str, evidence: dict[str, object]) -> Finding:
    return Finding(
        code=SKIPPED,
        severity="info",
        title=f"{rule.label}: not checked",
        message=f"{rule.label} were not checked because {because}.",
        recommendation="",
        evidence=evidence,
    )
