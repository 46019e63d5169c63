"""Check settings kept in the user's repository, so that the CI line stays `edgekit check MODEL`.

Either `edgekit.yaml`:

    check:
      baseline: ci/baseline.json
      max_accuracy_drop: 0.5

or `pyproject.toml`:

    [tool.edgekit.check]
    baseline = "ci/baseline.json"
    max_accuracy_drop = 0.5

`latency_metric: instructions` and `target: pixel-4` select the instruction-count latency
(they must match the baseline's). Found by walking up from the working directory to the repository root (the first folder holding
.git); the first folder with either file wins, and edgekit.yaml before pyproject.toml. Paths in the
file are relative to the file. Command-line options override the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekit.errors import UsageError

CONFIG_NAMES = ("edgekit.yaml", "edgekit.yml")


class CheckSettings(BaseModel):
    """The `check` section. Every key is optional; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    baseline: str | None = Field(None, description="Baseline file (relative to this file).")
    data: str | None = Field(None, description="Data spec or path; default: the baseline's.")
    max_accuracy_drop: float | None = Field(None, ge=0, description="Points of top-1.")
    max_class_drop: float | None = Field(None, ge=0, description="Points of a class's top-1.")
    max_latency_increase: float | None = Field(None, ge=0, description="Percent.")
    significance: float | None = Field(None, gt=0, lt=1, description="Test level (0.05).")
    latency: bool | None = Field(None, description="false: skip the latency criterion.")
    latency_seconds: float | None = Field(None, gt=0, description="Timed seconds.")
    latency_metric: Literal["time", "instructions"] | None = Field(
        None, description="time or instructions; default: the baseline's."
    )
    target: str | None = Field(
        None, description="Emulated device for instructions; default: the baseline's."
    )
    junit: str | None = Field(None, description="JUnit XML output file.")


class EdgekitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    check: CheckSettings = CheckSettings()


class LoadedConfig:
    """Settings and the file they came from (None when no file was found)."""

    def __init__(self, settings: CheckSettings, path: Path | None) -> None:
        self.settings = settings
        self.path = path

    @property
    def source(self) -> str:
        return f"config {self.path}" if self.path else "default"

    def resolve(self, value: str | None, *, spec: bool = False) -> str | None:
        """A path from the file, made relative to the file's folder. With spec=True (--data) a
        value that names no file there (a built-in set such as "digits") stays as written."""
        if value is None or self.path is None or Path(value).is_absolute():
            return value
        candidate = self.path.parent / value
        return value if spec and not candidate.exists() else str(candidate)


def find_config(start: str | os.PathLike | None = None) -> Path | None:
    """The config file that applies to `start` (default: the working directory), or None."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        for name in CONFIG_NAMES:
            if (folder / name).is_file():
                return folder / name
        py = folder / "pyproject.toml"
        if py.is_file() and _pyproject_section(py) is not None:
            return py
        if (folder / ".git").exists():
            break
    return None


def _pyproject_section(path: Path) -> dict[str, Any] | None:
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"{path} is not valid TOML ({e}). Fix the file.") from None
    tool = data.get("tool", {})
    return tool.get("edgekit") if isinstance(tool, dict) else None


def load_config(path: str | os.PathLike | None = None, *, discover: bool = True) -> LoadedConfig:
    """Read a config file (edgekit.yaml or a pyproject.toml with [tool.edgekit]).

    path: the file; None finds one from the working directory when `discover` is true.
    """
    if path is None:
        found = find_config() if discover else None
        if found is None:
            return LoadedConfig(CheckSettings(), None)
        path = found
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"Config file {p} does not exist. Pass an edgekit.yaml or pyproject.toml.")
    if p.name == "pyproject.toml" or p.suffix == ".toml":
        raw = _pyproject_section(p)
        if raw is None:
            raise UsageError(f"{p} has no [tool.edgekit] table. Add [tool.edgekit.check].")
        where = "[tool.edgekit]"
    else:
        import yaml

        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            msg = " ".join(str(e).split())
            raise UsageError(f"{p} is not valid YAML ({msg}). Fix the file.") from None
        raw = {} if raw is None else raw
        where = ""
    if not isinstance(raw, dict):
        raise UsageError(f"{p}{where}: expected a mapping with a 'check' section.")
    try:
        cfg = EdgekitConfig.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        got = f" (received {err['input']!r})" if err["type"] != "extra_forbidden" else ""
        hint = ""
        if err["type"] == "extra_forbidden":
            known = ", ".join(
                CheckSettings.model_fields
                if key.startswith("check.")
                else EdgekitConfig.model_fields
            )
            hint = f" Known keys: {known}."
        raise UsageError(f"{p}{where}: {key}: {err['msg']}{got}.{hint}") from None
    return LoadedConfig(cfg.check, p)
