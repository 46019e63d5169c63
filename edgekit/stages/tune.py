"""The tune stage: a compress recipe that ends in a search (edgekit.tune, docs/tune.md).

    stages:
      - stage: distill ...
      - stage: tune
        max_accuracy_drop: 0.5
        max_trials: 20

It searches the current model (the teacher, or what distill / prune made) on the run's calib and
eval splits and exports the chosen model, verified with the recipe's `verify:` tolerances. A
budget nothing meets stops the run (exit 1) with the front in the message.

The search itself lives in edgekit.tune, which times candidates through the runtimes: the one stage
that reaches past export/ to what measures (docs/architecture.md says so).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from edgekit.artifacts import ModelArtifact, write_bytes_atomic
from edgekit.errors import BudgetExceeded
from edgekit.stages.base import Stage, StageConfig, StageOutput, register
from edgekit.stages.model_io import export_record

if TYPE_CHECKING:
    from edgekit.stages.context import RunContext

Mode = Literal["dynamic", "float16", "int8", "int16x8"]


class TuneConfig(StageConfig):
    """Accuracy-aware search over quantizations of the current model (docs/tune.md)."""

    stage: Literal["tune"] = "tune"
    max_accuracy_drop: float | None = Field(
        1.0, ge=0, description="Points of top-1 the chosen model may lose against the model."
    )
    max_latency_ms: float | None = Field(None, gt=0, description="p50 (or estimated) ms budget.")
    max_size_mb: float | None = Field(None, gt=0, description="Size budget of the .tflite (MB).")
    max_trials: int = Field(30, ge=1, description="Candidate models built and measured, at most.")
    modes: list[Mode] = Field(
        default_factory=lambda: ["dynamic", "float16", "int8", "int16x8"],
        description="The converter's modes tried before the mixed-precision search.",
    )
    keep: Literal["float", "int16"] = Field(
        "float", description="What the sensitive layers kept out of int8 run in."
    )
    target: str = Field("cpu", description="cpu, or an emulated device profile (instructions).")
    calibration_samples: int = Field(200, ge=1, description="Samples from the calib split.")
    latency_seconds: float = Field(4.0, gt=0, description="Interleaved timing of all candidates.")


@register
class Tune(Stage):
    """Search quantizations of the current model; export the fastest inside the budget."""

    name = "tune"
    config_type = TuneConfig
    position = 47  # after quantize (40) and before export (50)

    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        c = self.config
        from edgekit import tune as search  # the search; it times through the runtimes

        report = search.tune(
            model.path,
            None,
            budget=search.TuneBudget(
                max_accuracy_drop=c.max_accuracy_drop,
                max_latency_ms=c.max_latency_ms,
                max_size_mb=c.max_size_mb,
            ),
            plan=search.TunePlan(
                target=c.target,
                max_trials=c.max_trials,
                modes=tuple(c.modes),
                keep=c.keep,
                calibration_samples=c.calibration_samples,
                latency_seconds=c.latency_seconds,
                seed=ctx.recipe.seed,
            ),
            out=workdir,
            unsafe=ctx.unsafe,
            splits={"calib": ctx.splits["calib"], "eval": ctx.splits["eval"]},
            preprocessing=ctx.preprocessing,
            verify=ctx.recipe.verify,
        )
        if report["verdict"] != "met":
            front = ", ".join(
                f"{x['name']} ({x['drop']:.2f} pts)"
                for x in report["candidates"]
                if x["name"] in report["front"]
            )
            raise BudgetExceeded(
                f"tune: no candidate meets the budget in {report['trials']['used']} trials; "
                f"front: {front}. Loosen the budget or raise max_trials."
            )
        chosen = report["chosen"]
        path = workdir / f"{Path(model.path).stem}_tuned.tflite"
        write_bytes_atomic(path, Path(chosen["path"]).read_bytes())
        info = {"route": "edgekit tune", "candidate": chosen["name"], "spec": chosen["spec"]}
        art = export_record(path, info, report["verification"], model, chosen["precision"])
        summary = {
            k: report[k] for k in ("front", "sensitivity", "trials", "budget", "op_precisions")
        }
        # the stage's folder is renamed when it completes: name files relative to it
        summary["chosen"] = {**chosen, "path": f"candidates/{Path(chosen['path']).name}"}
        return StageOutput(exports=[art], report=summary)
