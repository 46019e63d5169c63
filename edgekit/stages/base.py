"""Stage protocol and registry.

A stage is one file in `edgekit/stages/`: a pydantic config (its entry in a recipe, `stage: NAME`
plus fields with descriptions) and a `Stage` subclass registered by name that runs it. The recipe
schema's stage union and the stage names (`--set distill.epochs=3`, error messages) are built from
this registry; the pipeline asks each stage what it needs (labels, unlabeled images, teacher
outputs) and never branches on a stage's name.

A stage receives the current model artifact and the run context, writes new files only inside its
own working folder, and returns a StageOutput. It never mutates its input; the pipeline keys its
output by sha256(stage, config, input), so a re-run with the same inputs skips it and a killed run
resumes after the last completed stage.

Every module of this package is imported the first time the registry is read, so a file here that
defines a `@register`ed stage is all it takes to add one; a stage defined elsewhere (a plugin, a
test) is registered when its module is imported.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgekit.artifacts import ModelArtifact
from edgekit.schema import Strict

if TYPE_CHECKING:
    from edgekit.stages.context import RunContext

_REGISTRY: dict[str, type[Stage]] = {}
_discovered = False


class StageConfig(Strict):
    """Base of every stage's config: one entry of a recipe's `stages:` list. A subclass declares
    `stage: Literal["NAME"] = "NAME"` (the tag recipes are read by) and its fields, each with a
    description."""

    stage: str


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
    """One compression step. Subclasses set `name` and `config_type` and implement `run`; the
    other methods and attributes say what the step needs from the run (the defaults: nothing)."""

    name: ClassVar[str]
    config_type: ClassVar[type[StageConfig]]
    # Where the stage usually sits in a recipe (smaller first): the order in which stage names are
    # listed in messages. Ties are listed by name.
    position: ClassVar[int] = 100
    # Ordering rule: a stage that trains the model's float weights (distill, prune) cannot come
    # after one whose output is trained for quantization (qat): it would undo the quantization.
    trains_float_weights: ClassVar[bool] = False
    quantization_aware: ClassVar[bool] = False

    def __init__(self, config: Any):
        self.config = config

    def needs_labels(self) -> str | None:
        """None when this stage runs on unlabeled data; otherwise how the error names it
        ("prune", "distill (alpha > 0)")."""
        return None

    def uses_unlabeled(self) -> bool:
        """True when the stage learns from the run's unlabeled images (compress --unlabeled)."""
        return False

    def teacher_splits(self) -> tuple[str, ...]:
        """The data splits whose teacher outputs the stage reads from `ctx.teacher_outputs`
        (computed once, before any stage runs; "eval" always is, for the report)."""
        return ()

    def preflight(self, teacher: ModelArtifact) -> None:
        """Refuse settings this stage cannot run with this teacher (UsageError, one line), before
        the run does any work. The default: nothing to refuse."""
        return None

    def plan(self, teacher: ModelArtifact) -> str | None:
        """One line for the run's first lines on how the stage will run (where it trains), or
        None. Called after `preflight`."""
        return None

    @abstractmethod
    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        """Produce new artifacts from `model` inside `workdir` (a fresh, empty folder)."""


def register(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make `cls` the stage recipes name `cls.name`."""
    tag = cls.config_type.model_fields["stage"].default
    if tag != cls.name:
        raise TypeError(
            f"Stage {cls.__name__}: its config {cls.config_type.__name__} must declare "
            f'stage: Literal["{cls.name}"] = "{cls.name}" (found the default {tag!r}).'
        )
    _REGISTRY[cls.name] = cls
    return cls


def stage_classes() -> list[type[Stage]]:
    """Every registered stage, in listing order (`position`, then name)."""
    _discover()
    return sorted(_REGISTRY.values(), key=lambda c: (c.position, c.name))


def stage_names() -> tuple[str, ...]:
    return tuple(c.name for c in stage_classes())


def stage_class(name: str) -> type[Stage]:
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"No stage registered under {name!r}; known: {', '.join(stage_names())}"
        ) from None


def get_stage(config: Any) -> Stage:
    """The stage object for one recipe stage config."""
    return stage_class(config.stage)(config)


def _discover() -> None:
    """Import every module of edgekit.stages once: those that define a stage register it."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import importlib
    import pkgutil

    import edgekit.stages as package

    try:
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
    except BaseException:
        _discovered = False  # the next read tries again (and raises again)
        raise
