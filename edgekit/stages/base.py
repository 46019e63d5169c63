"""Stage protocol and registry.

A stage is a small class bound to one recipe config type. It receives the current model artifact and
the run context, writes new files only inside its own working folder, and returns a StageOutput. It
never mutates its input; the pipeline keys its output by sha256(stage, config, input), so a re-run
with the same inputs skips it and a killed run resumes after the last completed stage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgekit.artifacts import ModelArtifact

if TYPE_CHECKING:
    from edgekit.stages.context import RunContext

_REGISTRY: dict[str, type[Stage]] = {}


@dataclass
class StageOutput:
    """What a stage produced: a new current model (or None to keep the input), exports, figures."""

    model: ModelArtifact | None = None
    exports: list[ModelArtifact] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict() if self.model else None,
            "exports": [a.to_dict() for a in self.exports],
            "report": self.report,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageOutput:
        return cls(
            model=ModelArtifact.from_dict(d["model"]) if d.get("model") else None,
            exports=[ModelArtifact.from_dict(a) for a in d.get("exports", [])],
            report=d.get("report", {}),
        )


class Stage(ABC):
    name: ClassVar[str]

    def __init__(self, config: Any):
        self.config = config

    @abstractmethod
    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        """Produce new artifacts from `model` inside `workdir` (a fresh, empty folder)."""


def register(cls: type[Stage]) -> type[Stage]:
    _REGISTRY[cls.name] = cls
    return cls


def get_stage(config: Any) -> Stage:
    """The stage object for one recipe stage config."""
    _load_builtin_stages()
    try:
        return _REGISTRY[config.stage](config)
    except KeyError:
        raise KeyError(
            f"No stage registered under {config.stage!r}; known: {sorted(_REGISTRY)}"
        ) from None


def registered() -> list[str]:
    _load_builtin_stages()
    return sorted(_REGISTRY)


def _load_builtin_stages() -> None:
    from edgekit.stages import builtin  # noqa: F401  (registers the stages)
