"""BatchNorm pitfalls the record can show: batches too small, and layers never in training mode.

BatchNorm normalises with the batch's mean and variance in train() mode; with a handful of
samples those estimates are noise. In eval() mode it uses running statistics instead, which
only train() mode updates, so a BatchNorm that trained in eval() mode never adapts them.
"""

from __future__ import annotations

from statistics import median
from typing import Any, Mapping

from ...record import RunRecord
from ..advice import code, groupnorm_lines
from ..finding import Finding
from ..numbers import compact, name_list
from ..reading import is_batchnorm, points
from ..rule import Rule


class BatchNormPitfalls(Rule):
    name = "batchnorm"
    code = "batchnorm"  # its findings are "batchnorm-small-batch" and "batchnorm-eval-only"
    label = "BatchNorm pitfalls"
    needs = (("act_batch", "act_calls", "act_eval_calls"),)
    config_keys = ("min_batch_size",)

    def applies_to(self, record: RunRecord) -> bool:
        return any(is_batchnorm(m) for m in record.modules)

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        eval_only, eval_only_frozen, small = [], [], {}
        eval_calls_of: dict[str, float] = {}
        for info in record.modules:
            if not is_batchnorm(info):
                continue
            train_calls = sum(v for _, v in points(record, "act_calls", info.name))
            eval_calls = sum(v for _, v in points(record, "act_eval_calls", info.name))
            if train_calls == 0 and eval_calls > 0:
                eval_calls_of[info.name] = eval_calls
                (eval_only_frozen if info.trainable_params == 0 else eval_only).append(info.name)
                continue
            batches = [v for _, v in points(record, "act_batch", info.name)]
            if batches and median(batches) < settings["min_batch_size"]:
                small[info.name] = median(batches)
        findings = []
        if small:
            findings.append(
                Finding(
                    code="batchnorm-small-batch",
                    severity="warning",
                    title=f"BatchNorm with batches of {compact(min(small.values()))} sample(s)",
                    message=(
                        f"{name_list(list(small))} normalised batches of about {compact(min(small.values()))} "
                        f"samples (below {settings['min_batch_size']}): the batch mean and variance are too noisy "
                        "to normalise with, and they differ from the running statistics used in eval() mode."
                    ),
                    recommendation=(
                        "Use larger batches (gradient accumulation keeps the memory the same only for the gradients, "
                        "not for BatchNorm's statistics), or replace these layers with GroupNorm or LayerNorm, which "
                        "do not depend on the batch."
                    ),
                    snippet=code("\n".join(groupnorm_lines(list(small)))),
                    layers=list(small),
                    steps=list(record.steps),
                    evidence={"median_batch": small, "min_batch_size": settings["min_batch_size"]},
                )
            )
        for names, frozen in ((eval_only, False), (eval_only_frozen, True)):
            if not names:
                continue
            severity = "info" if frozen else "warning"
            findings.append(
                Finding(
                    code="batchnorm-eval-only",
                    severity=severity,
                    title=f"{len(names)} BatchNorm layer(s) never ran in training mode",
                    message=(
                        f"{name_list(names)} ran only in eval() mode while gradients were on, so they normalised "
                        "with fixed running statistics that never updated."
                        + (" Their parameters are frozen too, so this looks deliberate (fine-tuning)." if frozen else "")
                    ),
                    recommendation=(
                        "Call model.train() before the training steps (and model.eval() only for validation). If "
                        "frozen BatchNorm is intended, nothing to do."
                    ),
                    snippet="model.train()  # before the training loop\n...\nmodel.eval()  # only around validation",
                    layers=names,
                    steps=list(record.steps),
                    evidence={"train_calls": 0, "eval_calls": {n: eval_calls_of[n] for n in names}},
                )
            )
        return findings
