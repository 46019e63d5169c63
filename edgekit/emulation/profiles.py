"""Device profiles: frozen pydantic models for `devices/*.yaml`, found by name or path.

A profile says what a target is (CPU cores and clocks, ISA features, memory, accelerators), the
published latency figures that calibrate edgekit's estimate for it, and where every number comes
from: each number, feature list and MIDR must be covered by an entry in `sources` (a URL or a
document). No TensorFlow here: the emulated targets run without it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekit.errors import RecipeError

Arch = Literal["aarch64", "x86_64"]
Kind = Literal["desktop", "phone", "board"]
Accelerator = Literal["xnnpack", "gpu", "nnapi"]
Precision = Literal["float32", "int8"]
Basis = Literal["fitted", "core-class", "extrapolated"]

# /proc/cpuinfo "Features" words each qemu-aarch64 (7.2) CPU model provides, decoded from the
# ID_AA64ISAR0/ISAR1/PFR0 values in qemu's target/arm/cpu64.c. The guest's XNNPACK reads these
# (as hwcaps), not the profile's Features: what the device has beyond them is not emulated
# (Cpu.not_emulated), and SDOT must agree with the device (Cpu._same_int8_kernels_as_the_device).
# "evtstrm" is the kernel's timer event stream, not an instruction. None: not checked.
_ARMV8_0_CRYPTO = frozenset({"fp", "asimd", "aes", "pmull", "sha1", "sha2", "crc32", "cpuid"})
_ARMV8_2_DOTPROD = _ARMV8_0_CRYPTO | {
    "atomics",
    "fphp",
    "asimdhp",
    "asimdrdm",
    "lrcpc",
    "dcpop",
    "asimddp",
}
QEMU_CPU_FEATURES: dict[str, frozenset[str] | None] = {
    "cortex-a35": _ARMV8_0_CRYPTO,
    "cortex-a53": _ARMV8_0_CRYPTO,
    "cortex-a57": _ARMV8_0_CRYPTO,
    "cortex-a72": _ARMV8_0_CRYPTO,
    "cortex-a76": _ARMV8_2_DOTPROD,
    "neoverse-n1": _ARMV8_2_DOTPROD,
    "a64fx": None,
    "max": None,
}
_KERNEL_ONLY_FEATURES = frozenset({"evtstrm"})
_HEX = re.compile(r"^0x[0-9a-f]+$")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __getitem__(self, key: str) -> Any:
        # Lets callers read nested entries as the YAML's mappings too: cluster["max_ghz"].
        return getattr(self, key)


class Cluster(_Strict):
    """Identical cores sharing a clock."""

    core: str = Field(description="The Arm core, lower case: cortex-a76, cortex-a53 ...")
    name: str | None = Field(None, description="The vendor's name for it: 'Kryo 485 Gold'.")
    count: int = Field(gt=0)
    max_ghz: float | None = Field(
        None, gt=0, description="Highest clock in GHz; null: detected at run time (desktop)."
    )


class Cpu(_Strict):
    arch: Arch
    qemu_cpu: str | None = Field(
        None, description="qemu-aarch64 -cpu model; required for aarch64, null for x86_64."
    )
    features: list[str] = Field(
        default_factory=list, description="/proc/cpuinfo 'Features' of the big cores."
    )
    midr: dict[str, str] | None = Field(
        None,
        description="implementer, variant, part (hex) and revision (decimal) of the big cores.",
    )
    clusters: list[Cluster] = Field(default_factory=list, description="Fastest first.")

    @field_validator("features")
    @classmethod
    def _feature_words(cls, v: list[str]) -> list[str]:
        bad = [f for f in v if not re.fullmatch(r"[a-z0-9]+", f)]
        if bad:
            raise ValueError(
                f"Expected lower-case /proc/cpuinfo feature words. Received: {', '.join(bad)}"
            )
        return v

    @field_validator("midr")
    @classmethod
    def _midr_fields(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        keys = {"implementer", "variant", "part", "revision"}
        if set(v) != keys:
            raise ValueError(
                f"Expected midr keys {', '.join(sorted(keys))}. Received: {', '.join(sorted(v))}"
            )
        for k in ("implementer", "variant", "part"):
            if not _HEX.match(v[k]):
                raise ValueError(
                    f"Expected midr.{k} as lower-case hex like 0x41. Received: {v[k]!r}"
                )
        if not v["revision"].isdigit():
            raise ValueError(f"Expected midr.revision as a decimal. Received: {v['revision']!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Cpu:
        if self.arch == "aarch64":
            if not self.qemu_cpu:
                raise ValueError("qemu_cpu is required for arch aarch64 (e.g. cortex-a76)")
            if self.qemu_cpu not in QEMU_CPU_FEATURES:
                known = ", ".join(QEMU_CPU_FEATURES)
                raise ValueError(
                    f"Expected qemu_cpu one of {known}. Received: qemu_cpu={self.qemu_cpu!r}"
                )
            self._same_int8_kernels_as_the_device()
        elif self.qemu_cpu is not None or self.midr is not None:
            raise ValueError(
                "qemu_cpu and midr describe aarch64 cores; set them to null for arch x86_64"
            )
        clocks = [c.max_ghz for c in self.clusters if c.max_ghz is not None]
        if clocks != sorted(clocks, reverse=True):
            raise ValueError(f"clusters must be listed fastest first. Received max_ghz {clocks}")
        return self

    def _same_int8_kernels_as_the_device(self) -> None:
        """XNNPACK under qemu-user reads the ISA from the emulated CPU's hwcaps (getauxval), not
        from the Features line of /proc/cpuinfo (measured: claiming asimddp on -cpu cortex-a53
        changes nothing), and its cpuinfo turns SDOT on by MIDR for some parts. So the emulated
        int8 kernels follow qemu_cpu and the MIDR, and must be the device's."""
        from edgekit.emulation.cores import int8_kernels

        allowed = QEMU_CPU_FEATURES[self.qemu_cpu or ""]
        if allowed is None:
            return
        qemu_dot = "asimddp" in allowed
        by_midr = int8_kernels(self.midr, []) == "dotprod"
        device_dot = self.int8_kernels == "dotprod"
        part = self.midr["part"] if self.midr else "?"
        if by_midr and not qemu_dot:
            raise ValueError(
                f"MIDR part {part} has SDOT/UDOT for XNNPACK's cpuinfo, which picks dot-product "
                f"kernels whatever Features says, and qemu cpu {self.qemu_cpu} has none: they "
                "would die with SIGILL. Use qemu_cpu cortex-a76"
            )
        if device_dot and not qemu_dot:
            raise ValueError(
                f"the device has asimddp (SDOT/UDOT) but qemu cpu {self.qemu_cpu} has none: "
                "XNNPACK reads the emulated CPU, so the int8 count would be of kernels without "
                "SDOT that the device does not run. Use qemu_cpu cortex-a76"
            )
        if qemu_dot and not device_dot:
            raise ValueError(
                f"qemu cpu {self.qemu_cpu} reports SDOT/UDOT to the guest, and XNNPACK reads the "
                f"emulated CPU, not Features: the int8 count would be of dot-product kernels this "
                f"device (no asimddp; MIDR part {part} not on XNNPACK's SDOT list) never runs. "
                "Use qemu_cpu cortex-a72 (Armv8.0, no SDOT)"
            )

    @property
    def not_emulated(self) -> list[str]:
        """Features the device has that its qemu model lacks (XNNPACK will not see them)."""
        allowed = QEMU_CPU_FEATURES.get(self.qemu_cpu or "")
        if allowed is None:
            return []
        return [f for f in self.features if f not in allowed | _KERNEL_ONLY_FEATURES]

    @property
    def dotprod(self) -> bool:
        """The big cores have the Armv8.2 dot-product instructions (SDOT/UDOT)."""
        return "asimddp" in self.features

    @property
    def int8_kernels(self) -> str:
        """'dotprod' when XNNPACK runs SDOT/UDOT int8 kernels on the big cores: the kernel reports
        asimddp, or XNNPACK's cpuinfo knows the MIDR has them (Kryo 485 Gold reports no asimddp)."""
        from edgekit.emulation.cores import int8_kernels

        return int8_kernels(self.midr, list(self.features))

    @property
    def fp16(self) -> bool:
        """The big cores have half-precision SIMD arithmetic."""
        return "asimdhp" in self.features

    @property
    def max_ghz(self) -> float | None:
        """The fastest cluster's clock (the estimate's clock)."""
        return self.clusters[0].max_ghz if self.clusters else None

    @property
    def big_cores(self) -> int | None:
        """Cores of the fastest cluster's core type (SD855: 1 prime + 3 gold = 4)."""
        if not self.clusters:
            return None
        core = self.clusters[0].core
        return sum(c.count for c in self.clusters if c.core == core)


class Memory(_Strict):
    ram_mb: int | None = Field(None, gt=0, description="Installed RAM; null: detected or unknown.")
    app_memory_mb: int | None = Field(
        None, gt=0, description="What one app/process can use before it is killed; null: unknown."
    )
    bandwidth_gbps: float | None = Field(
        None, gt=0, description="DRAM bandwidth in GB/s (peak from the bus, or measured)."
    )
    note: str = ""


class Calibration(_Strict):
    """Constants of the latency estimate, fitted by the calibration script; null until then.

    status: `calibrated` (some precision was fitted to this device's own figures), `extrapolated`
    (no figure of its own: the constants come from its core class or the nearest calibrated one,
    `edgekit devices new` makes these) or `uncalibrated` (no constants: counts only).
    """

    status: Literal["uncalibrated", "calibrated", "extrapolated"] = "uncalibrated"
    cpi: dict[Precision, float] | None = Field(
        None, description="Cycles per aarch64 instruction, per precision."
    )
    parallel_efficiency: float | None = Field(None, ge=0, le=1)
    expected_error: float | dict[Precision, float] | None = Field(
        None,
        description="The estimate's error band per precision: the published figure lies within a "
        "factor 1 + expected_error of it (80th percentile of held-out errors). A number applies "
        "to both precisions.",
    )
    basis: dict[Precision, Basis] | None = Field(
        None,
        description="Per precision: fitted (this device's figures), core-class (other devices of "
        "its core class) or extrapolated (another class, or a stated rule).",
    )
    method: str = Field("", description="How the constants were fitted (script, date, figures).")

    @field_validator("cpi")
    @classmethod
    def _positive_cpi(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None and any(x <= 0 for x in v.values()):
            raise ValueError(f"Expected cpi values > 0. Received: {v}")
        return v

    @field_validator("expected_error")
    @classmethod
    def _nonnegative_error(cls, v: Any) -> Any:
        values = v.values() if isinstance(v, dict) else [] if v is None else [v]
        if any(x < 0 for x in values):
            raise ValueError(f"Expected expected_error values >= 0. Received: {v}")
        return v

    @model_validator(mode="after")
    def _status_matches(self) -> Calibration:
        numbers = (self.cpi, self.parallel_efficiency, self.expected_error)
        if self.status == "uncalibrated" and any(n is not None for n in (*numbers, self.basis)):
            raise ValueError(
                "status is 'uncalibrated' but constants are set: set status: calibrated"
            )
        if self.status != "uncalibrated" and any(n is None for n in numbers):
            raise ValueError(
                f"status {self.status!r} needs cpi, parallel_efficiency and expected_error"
            )
        if self.status == "extrapolated" and self.basis and "fitted" in self.basis.values():
            raise ValueError(
                "status 'extrapolated' means no figure of its own was fitted, but basis says "
                "'fitted': set status: calibrated"
            )
        return self

    @property
    def calibrated(self) -> bool:
        """The profile has constants (fitted or extrapolated): estimates give milliseconds."""
        return self.status != "uncalibrated"

    @property
    def extrapolated(self) -> bool:
        return self.status == "extrapolated"

    def error_for(self, precision: str) -> float | None:
        """The expected error of an estimate at this precision."""
        e = self.expected_error
        return e.get(precision) if isinstance(e, dict) else e

    def basis_for(self, precision: str) -> str | None:
        if self.basis and precision in self.basis:
            return self.basis[precision]
        return {"calibrated": "fitted", "extrapolated": "extrapolated"}.get(self.status)


class PublishedFigure(_Strict):
    """A latency someone published for this device; the calibration script fits against these."""

    model: str = Field(description="Normalized: mobilenet_v2_1.0_224, mobilenet_v3_small_1.0_224.")
    precision: Precision
    threads: int = Field(ge=1)
    ms: float = Field(gt=0)
    source: str = Field(min_length=1, description="URL (or document) the figure is quoted from.")
    delegate: Literal["cpu", "gpu", "nnapi"] = "cpu"
    abi: Literal["aarch64", "armv7"] = Field(
        "aarch64",
        description="armv7: a 32-bit build on a 64-bit core; its instruction mix differs from "
        "the aarch64 one edgekit counts, so it only bounds the estimate.",
    )
    runtime: str = Field("", description="What ran it: 'XNNPACK end2end_bench', ...")
    note: str = ""

    @field_validator("model")
    @classmethod
    def _normalized(cls, v: str) -> str:
        if not _MODEL_NAME.match(v):
            raise ValueError(
                f"Expected a normalized model name like mobilenet_v2_1.0_224. Received: {v!r}"
            )
        return v


class DeviceProfile(_Strict):
    name: str
    title: str
    kind: Kind
    description: str = ""
    host: bool = Field(
        False,
        description="The profile describes the machine edgekit runs on: null numbers are "
        "detected at run time.",
    )
    cpu: Cpu
    memory: Memory = Memory()
    accelerators: list[Accelerator] = Field(min_length=1)
    calibration: Calibration = Calibration()
    published: list[PublishedFigure] = Field(default_factory=list)
    sources: dict[str, str] = Field(
        default_factory=dict,
        description="Dotted field path (or a prefix of it) -> URL or document.",
    )

    @model_validator(mode="after")
    def _targets_are_described(self) -> DeviceProfile:
        if not self.host:
            if not self.cpu.clusters or any(c.max_ghz is None for c in self.cpu.clusters):
                raise ValueError(
                    "cpu.clusters with max_ghz are required for a device that is not the host"
                )
            if self.cpu.arch == "aarch64" and (not self.cpu.features or self.cpu.midr is None):
                raise ValueError("cpu.features and cpu.midr are required for an aarch64 device")
            if self.cpu.arch == "aarch64":
                from edgekit.emulation.cores import catalogue

                core = self.cpu.clusters[0].core
                if core not in catalogue():
                    known = ", ".join(sorted(catalogue()))
                    raise ValueError(
                        f"cpu.clusters.0.core {core!r} has no core class (devices/cores/): its "
                        f"issue width bounds every estimate. Expected one of {known}"
                    )
        if len(set(self.accelerators)) != len(self.accelerators):
            raise ValueError(f"accelerators repeat an entry. Received: {self.accelerators}")
        return self

    @model_validator(mode="after")
    def _every_fact_sourced(self) -> DeviceProfile:
        data = self.model_dump(exclude={"sources", "published"})
        valid = set(_paths(data)) | {"calibration"}
        unknown = [k for k in self.sources if k not in valid]
        if unknown:
            raise ValueError(f"sources name fields the profile does not have: {', '.join(unknown)}")
        for path in _facts(data):
            if self.source_for(path) is None:
                prefix = ".".join(path.split(".")[:2])
                raise ValueError(
                    f"{path} has no source: add sources['{path}'] (or a prefix such as "
                    f"'{prefix}') with a URL or document"
                )
        return self

    def source_for(self, path: str) -> str | None:
        """The source covering a dotted field path (the longest matching prefix), if any."""
        parts = path.split(".")
        for n in range(len(parts), 0, -1):
            key = ".".join(parts[:n])
            if key in self.sources:
                return self.sources[key]
        return None

    def summary(self) -> dict[str, Any]:
        """One line's worth: name, title, kind, cpu, accelerators, calibrated."""
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "cpu": describe_cpu(self.cpu),
            "accelerators": list(self.accelerators),
            "calibrated": self.calibration.calibrated,
            "calibration": self.calibration.status,
            "published_figures": len(self.published),
        }

    def resolved(self) -> dict[str, Any]:
        """Every field, defaults filled in, plus the derived values under `derived`."""
        out = self.model_dump(mode="json")
        out["derived"] = {
            "dotprod": self.cpu.dotprod,
            "fp16": self.cpu.fp16,
            "max_ghz": self.cpu.max_ghz,
            "big_cores": self.cpu.big_cores,
            "calibrated": self.calibration.calibrated,
            "int8_kernels": self.cpu.int8_kernels if self.cpu.arch == "aarch64" else None,
            "not_emulated": self.cpu.not_emulated,
            "bounds": _bounds(self.cpu),
        }
        return out


def _bounds(cpu: Cpu) -> dict[str, Any] | None:
    from edgekit.emulation.cores import bounds

    return bounds(cpu.clusters[0].core) if cpu.clusters else None


def _paths(data: Any, prefix: str = "") -> list[str]:
    """Every dotted path in a nested dump (list items by index), containers included."""
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            p = f"{prefix}.{k}" if prefix else str(k)
            out.append(p)
            out.extend(_paths(v, p))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            p = f"{prefix}.{i}"
            out.append(p)
            out.extend(_paths(v, p))
    return out


def _facts(data: dict[str, Any]) -> list[str]:
    """Paths that need a source: every number, the feature list and the MIDR when given.

    Calibration constants count as numbers (their source is the fit); published figures carry
    their own `source` and are excluded by the caller.
    """
    out = []

    def walk(v: Any, p: str) -> None:
        if p in ("cpu.features", "cpu.midr"):
            if v:
                out.append(p)
            return
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{p}.{k}" if p else str(k))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{p}.{i}")
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out.append(p)

    walk(data, "")
    return out


def describe_cpu(cpu: Cpu) -> str:
    """'4x cortex-a72 @1.5GHz (aarch64)' or 'x86_64 (detected)'."""
    if not cpu.clusters:
        return f"{cpu.arch} (detected)"
    parts = []
    for c in cpu.clusters:
        clock = f" @{c.max_ghz:g}GHz" if c.max_ghz else ""
        parts.append(f"{c.count}x {c.core}{clock}")
    return " + ".join(parts) + f" ({cpu.arch})"


def bundled_profiles() -> dict[str, Path]:
    """Bundled profile names (file stems) and their files."""
    from edgekit.resources import bundled

    return bundled("devices")


def list_profiles() -> list[str]:
    """Names of the bundled profiles, sorted."""
    return sorted(bundled_profiles())


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A bundled profile by name (`pixel-4`) or a profile YAML file by path, validated."""
    from edgekit.schema import read_yaml_mapping

    text = str(name_or_path)
    known = bundled_profiles()
    p = Path(text)
    if text in known:
        p = known[text]
    elif not (p.suffix in (".yaml", ".yml") and p.is_file()):
        names = ", ".join(sorted(known)) or "(none found)"
        if p.suffix in (".yaml", ".yml"):
            raise RecipeError(f"Device profile file {p} does not exist. Bundled profiles: {names}.")
        raise RecipeError(
            f"Unknown device profile '{text}'. Known profiles: {names}; or pass a .yaml path."
        )
    raw = read_yaml_mapping(p, "Device profile", "'title', 'kind', 'cpu' and 'accelerators'")
    raw.setdefault("name", p.stem)
    return validate_profile(raw, str(p))


def validate_profile(raw: dict[str, Any], source: str = "<dict>") -> DeviceProfile:
    """Validate a profile mapping; RecipeError with the key path, expectation and value."""
    from edgekit.schema import format_validation_error

    try:
        return DeviceProfile.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(format_validation_error("device profile", source, e)) from None
