"""Thin I/O wrappers: each stage reads its inputs from disk, calls the pure code in analysis/, mining/ or a
runner, and writes its outputs into the scratch dir the engine gives it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deft_aoi.loop.stage_contract import Stage


def build_stages() -> dict[str, Stage]:
    from deft_aoi.loop.stages.data import AssembleStage, IngestStage, MineStage, RouteStage, ValidateStage
    from deft_aoi.loop.stages.decision import GateStage, HandoffStage
    from deft_aoi.loop.stages.model import EvaluateStage, InferenceStage, RcaStage, TrainStage
    from deft_aoi.loop.stages.synth import StageSynthPool

    stages: list[Stage] = [
        StageSynthPool(), TrainStage(), InferenceStage(), EvaluateStage(), RcaStage(), GateStage(),
        RouteStage(), IngestStage(), MineStage(), AssembleStage(), ValidateStage(), HandoffStage(),
    ]
    return {s.name: s for s in stages}
