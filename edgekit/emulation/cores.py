"""Core classes: what an Arm core can physically do, and the calibration fitted per class.

`devices/cores/<core>.yaml` (shipped as `edgekit/devices/cores/`) holds one core class each: its
pipeline, decode width, the most instructions per cycle it can issue (`max_ipc`, the bound every
estimate is held to), NEON pipes, L2 size, the MIDR parts that identify it in /proc/cpuinfo
(Qualcomm's Kryo derivatives included) and the qemu-aarch64 model that emulates it; every number
with its source, as in the device profiles. `devices/cores/fit.yaml` holds what
benchmarks/calibrate_devices.py fitted per core class and precision, and the error bands it
measured per precision and basis (fitted, core-class, extrapolated).

No TensorFlow here.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekit.errors import RecipeError

Precision = Literal["float32", "int8"]
Basis = Literal["fitted", "core-class", "extrapolated"]
PRECISIONS: tuple[str, ...] = ("float32", "int8")
BASES: tuple[str, ...] = ("fitted", "core-class", "extrapolated")
FIT_FILE = "fit"  # devices/cores/fit.yaml: the calibration, not a core class


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class L2(_Strict):
    min: int | None = Field(
        None, gt=0, description="Smallest configurable L2 per core or cluster, KB."
    )
    max: int | None = Field(None, gt=0, description="Largest configurable L2, KB.")
    shared: bool | None = Field(None, description="Shared by the cluster (true) or per core.")


class MidrPart(_Strict):
    """One (implementer, part) pair of /proc/cpuinfo that names this core (or a vendor derivative)."""

    implementer: str = Field(pattern=r"^0x[0-9a-f]+$")
    part: str = Field(pattern=r"^0x[0-9a-f]+$")
    name: str
    dotprod_from_variant: int | None = Field(
        description="XNNPACK's cpuinfo treats this part as having SDOT/UDOT from this MIDR variant "
        "on, whatever the kernel reports (0: always); null: only when Features has asimddp."
    )


class CoreClass(_Strict):
    core: str = Field(pattern=r"^[a-z0-9-]+$", description="Lower case: cortex-a76.")
    title: str
    isa: str
    pipeline: Literal["in-order", "out-of-order"]
    decode_width: int | None = Field(None, gt=0, description="Instructions decoded per cycle.")
    max_ipc: float = Field(
        gt=0,
        description="The most instructions per cycle the core can issue (decode, or the macro-op "
        "cache where one feeds dispatch): no estimate may imply more.",
    )
    neon_pipes: int | None = Field(None, gt=0)
    neon_bits: int | None = Field(None, gt=0)
    l2_kb: L2 | None = None
    qemu_cpu: str = Field(description="The qemu-aarch64 7.2 model that emulates it.")
    midr: list[MidrPart] = Field(min_length=1)
    sources: dict[str, str]

    @model_validator(mode="after")
    def _sourced(self) -> CoreClass:
        needs = [
            k
            for k in ("decode_width", "max_ipc", "neon_pipes", "neon_bits", "l2_kb")
            if getattr(self, k) is not None
        ] + ["midr"]
        missing = [k for k in needs if k not in self.sources]
        if missing:
            raise ValueError(
                f"{', '.join(missing)} of core {self.core} have no source: add sources entries"
            )
        unknown = [k for k in self.sources if k not in type(self).model_fields]
        if unknown:
            raise ValueError(f"sources name fields a core class does not have: {unknown}")
        return self

    @property
    def min_cpi(self) -> float:
        """The fewest cycles per instruction the core can sustain: 1 / max_ipc."""
        return 1.0 / self.max_ipc

    def source(self, key: str) -> str | None:
        return self.sources.get(key)


class ClassFit(_Strict):
    """One core class and precision, as the calibration script fitted (or extrapolated) it."""

    cpi: float = Field(gt=0)
    basis: Literal["fitted", "extrapolated"]
    figures: int = Field(0, ge=0, description="Fitted figures of this class and precision.")
    devices: list[str] = Field(default_factory=list)
    kernels: Literal["dotprod", "no-dotprod", "any"] = Field(
        "any", description="int8: the kernels the fitted devices ran (SDOT or not)."
    )
    clamped: bool = Field(False, description="The fit hit the core's max_ipc bound.")
    rule: str = Field("", description="How an extrapolated value was made.")


class Band(_Strict):
    error: float = Field(ge=0, description="80th percentile of the held-out |error| (factor - 1).")
    n: int = Field(ge=0, description="Held-out predictions it was measured on.")
    measured: bool = True
    note: str = ""


class Fit(_Strict):
    """devices/cores/fit.yaml."""

    date: str
    script: str
    parallel_efficiency: float = Field(gt=0, le=1)
    classes: dict[str, dict[Precision, ClassFit]]
    bands: dict[Precision, dict[Basis, Band]]
    int8_ratio: dict[str, float] = Field(
        default_factory=dict, description="cpi int8 / float32 by int8 kernels, geometric mean."
    )
    unseen: list[str] = Field(default_factory=list, description="Devices kept out of the fit.")
    method: str = ""

    @field_validator("bands")
    @classmethod
    def _all_bands(cls, v: dict[str, dict[str, Band]]) -> dict[str, dict[str, Band]]:
        for p in PRECISIONS:
            missing = [b for b in BASES if b not in v.get(p, {})]
            if missing:
                raise ValueError(f"bands.{p} lacks {', '.join(missing)}")
        return v


def cores_dir() -> Path:
    from edgekit.resources import data_dir

    return data_dir("devices") / "cores"


@functools.lru_cache(maxsize=1)
def _catalogue(folder: str) -> dict[str, CoreClass]:
    from edgekit.schema import read_yaml_mapping

    out = {}
    for p in sorted(Path(folder).glob("*.yaml")):
        if p.stem == FIT_FILE:
            continue
        raw = read_yaml_mapping(p, "Core class", "'core', 'max_ipc', 'midr' and 'sources'")
        try:
            c = CoreClass.model_validate(raw)
        except ValidationError as e:
            from edgekit.schema import format_validation_error

            raise RecipeError(format_validation_error("core class", str(p), e)) from None
        if c.core != p.stem:
            raise RecipeError(f"Core class file {p} names core {c.core!r}: rename one of them.")
        out[c.core] = c
    return out


def catalogue() -> dict[str, CoreClass]:
    """Every bundled core class by name (cortex-a76 ...)."""
    return _catalogue(str(cores_dir()))


def core_class(name: str | None) -> CoreClass | None:
    """The bundled core class called `name`, or None."""
    return catalogue().get(str(name)) if name else None


def require_core(name: str) -> CoreClass:
    c = core_class(name)
    if c is None:
        known = ", ".join(sorted(catalogue()))
        raise RecipeError(
            f"Unknown core class {name!r}: expected one of {known} (devices/cores/*.yaml)."
        )
    return c


def by_midr(implementer: str, part: str) -> tuple[CoreClass, MidrPart] | None:
    """The core class whose MIDR list holds (implementer, part), as /proc/cpuinfo prints them."""
    imp, prt = implementer.lower(), part.lower()
    for c in catalogue().values():
        for m in c.midr:
            if int(m.implementer, 16) == int(imp, 16) and int(m.part, 16) == int(prt, 16):
                return c, m
    return None


def int8_kernels(midr: dict[str, str] | None, features: list[str]) -> str:
    """'dotprod' when XNNPACK will use SDOT/UDOT kernels on this core: the kernel reports asimddp,
    or cpuinfo's MIDR list says the part has them (Kryo 485, Cortex-A76/A77, A55r1 ...)."""
    if "asimddp" in features:
        return "dotprod"
    if midr:
        hit = by_midr(midr["implementer"], midr["part"])
        if hit is not None:
            start = hit[1].dotprod_from_variant
            if start is not None and int(midr["variant"], 16) >= start:
                return "dotprod"
    return "no-dotprod"


@functools.lru_cache(maxsize=1)
def _fit(path: str, mtime: float) -> Fit | None:
    from edgekit.schema import read_yaml_mapping

    raw = read_yaml_mapping(Path(path), "Core calibration", "'classes' and 'bands'")
    try:
        return Fit.model_validate(raw)
    except ValidationError as e:
        from edgekit.schema import format_validation_error

        raise RecipeError(format_validation_error("core calibration", path, e)) from None


def load_fit() -> Fit | None:
    """devices/cores/fit.yaml, or None when the calibration script has not written it."""
    p = cores_dir() / f"{FIT_FILE}.yaml"
    if not p.is_file():
        return None
    return _fit(str(p), p.stat().st_mtime)


def _isa_version(c: CoreClass) -> float:
    m = re.match(r"armv(\d+)\.(\d+)", c.isa)
    return int(m.group(1)) + int(m.group(2)) / 10 if m else 0.0


def distance(a: CoreClass, b: CoreClass) -> tuple[int, float, float, float]:
    """How far core class b is from a, compared in order: a different pipeline (in-order vs
    out-of-order), then |log| of the issue-width ratio, then of the decode-width ratio, then the
    distance between their Arm architecture versions (8.0, 8.2, 9.0). The nearest calibrated
    class is the smallest; calibrate_devices.py measures how wrong the constants carried over
    this way are (the 'extrapolated' band)."""
    pipe = int(a.pipeline != b.pipeline)
    ipc = abs(math.log(a.max_ipc / b.max_ipc))
    dec = (
        abs(math.log(a.decode_width / b.decode_width)) if a.decode_width and b.decode_width else 0.0
    )
    isa = abs(_isa_version(a) - _isa_version(b))
    return pipe, round(ipc, 9), round(dec, 9), round(isa, 9)


def nearest(core: str, candidates: list[str]) -> str | None:
    """The candidate core class nearest to `core` (itself when it is a candidate); ties go to the
    alphabetically first, so the choice is reproducible."""
    if core in candidates:
        return core
    here = core_class(core)
    pool = [c for c in candidates if core_class(c) is not None]
    if here is None or not pool:
        return None
    return min(pool, key=lambda c: (distance(here, require_core(c)), c))


def bounds(core: str | None) -> dict[str, Any] | None:
    """max_ipc, min_cpi and the source of the bound for a core, or None if it has no class."""
    c = core_class(core)
    if c is None:
        return None
    return {
        "core": c.core,
        "max_ipc": c.max_ipc,
        "min_cpi": c.min_cpi,
        "pipeline": c.pipeline,
        "source": c.source("max_ipc"),
    }
