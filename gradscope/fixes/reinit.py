"""Re-initialising the layers that feed a finding's activations: Kaiming for ReLUs, Xavier with the gain otherwise."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from ..diagnose.advice import feeding_layers, init_snippet, xavier_gain_name
from ..diagnose.config import Config
from ..diagnose.finding import Finding
from ..diagnose.numbers import name_list
from ..record import RunRecord
from .fix import Fix
from .plan import FixPlan, NotApplicable


class ReinitFeedingLayers(Fix):
    """The Linear/Conv layers right before the activations the finding names, re-initialised."""

    scheme: ClassVar[str]  # "kaiming" | "xavier"

    def plan(self, record: RunRecord, finding: Finding, config: Config, model: nn.Module) -> FixPlan:
        feeding = feeding_layers(record, list(finding.layers))
        if not feeding:
            raise NotApplicable("no Linear/Conv layer feeds these activations, so there is nothing to re-initialise")
        names = name_list([m.name for m in feeding])
        if self.scheme == "kaiming":
            description, snippet = f"Re-initialise {names} with Kaiming (He) init and zero biases.", init_snippet(feeding)
        else:
            gain = xavier_gain_name([m for m in record.modules if m.name in set(finding.layers)])
            description = f"Re-initialise {names} with Xavier (Glorot) init and the {gain} gain, zero biases."
            snippet = init_snippet(feeding, scheme="xavier", activation=gain)
        return self.new_plan(description, model_code=snippet, layers=[m.name for m in feeding])
