"""Errors inside gradscope's own hooks: training went on, but some statistics may be missing."""

from __future__ import annotations

from typing import Any, Mapping

from ...record import RunRecord
from ..finding import Finding
from ..rule import Rule


class HookErrors(Rule):
    name = "hook_errors"
    code = "hook-errors"
    label = "gradscope hook errors"
    config_keys = ()

    def check(self, record: RunRecord, settings: Mapping[str, Any]) -> list[Finding]:
        if not record.hook_errors:
            return []
        total = sum(e.count for e in record.hook_errors)
        listed = "; ".join(
            f"{e.where}: {e.error} (x{e.count}, first at step {e.first_step})" for e in record.hook_errors[:5]
        )
        return [
            Finding(
                code=self.code,
                severity="info",
                title=f"gradscope's hooks failed {total} time(s); some statistics are missing",
                message=f"Training was not affected, but these hooks raised and their statistics are missing: {listed}.",
                recommendation=(
                    "Please report this with the model's structure; meanwhile leave the failing modules out with "
                    "watch(..., exclude=[...])."
                ),
                steps=sorted({e.first_step for e in record.hook_errors}),
                evidence={"errors": total, "where": [e.where for e in record.hook_errors]},
            )
        ]
