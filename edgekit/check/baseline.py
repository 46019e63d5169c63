"""The baseline file: what a later `edgekit check` needs to compare a candidate model with.

A JSON object with `"format": "edgekit-baseline"` and a `format_version`, written atomically. It
holds the model's fingerprint and accuracy (top-1, top-k, per class), every image's top-1 prediction
and correctness (so that a check can pair samples), the data fingerprint, the preprocessing, the
runtime versions and machine, and the latency: by default (metric "time") the ratio to a reference
network with the per-invoke times it came from; with metric "instructions" the instructions per
invoke counted on an emulated device and the setup that counted them. Arrays are stored as zlib-compressed little-endian bytes in base64.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import os
import zlib
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from edgekit.errors import BaselineError, UsageError

FORMAT = "edgekit-baseline"
FORMAT_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncodedArray(_Strict):
    dtype: Literal["int32", "bool", "float32"]
    count: int = Field(ge=0)
    encoding: Literal["zlib+base64"]
    data: str


class ModelInfo(_Strict):
    path: str
    name: str
    sha256: str
    size_bytes: int
    format: str
    runtime: str
    runtime_version: str
    output: str
    num_classes: int = Field(ge=1)


class DataInfo(_Strict):
    spec: str | None  # what --data said; None for an in-memory Dataset
    name: str
    source: str
    limit: int | None
    count: int = Field(ge=1)
    sha256: str
    image_shape: list[int]
    num_classes: int
    labels: list[str]
    # images a streamed set could not decode and left out (data.on_corrupt=skip): not predicted
    skipped: list[str] = Field(default_factory=list)


class ClassAccuracy(_Strict):
    label: str
    count: int
    correct: int
    accuracy: float | None


class AccuracyInfo(_Strict):
    count: int
    top1: float
    topk: float
    k: int
    nonfinite: int
    per_class: list[ClassAccuracy]


class Predictions(_Strict):
    top1: EncodedArray  # int32 class per image, -1 where the scores were NaN/inf
    correct: EncodedArray  # bool per image


class ReferenceInfo(_Strict):
    name: str
    path: str  # "bundled" for edgekit's own reference network, else the path as given
    sha256: str
    format: str


class LatencyInfo(_Strict):
    """metric "time": the CPU-time ratio to a reference network (edgekit.check.latency)."""

    metric: Literal["time"] = "time"
    reference: ReferenceInfo
    threads: int
    seconds: float
    warmup_seconds: float
    quantile: float
    rounds: int
    ratio: float
    ci_low: float
    ci_high: float
    clock: Literal["cpu", "wall"]
    model_p50_ms: float
    reference_p50_ms: float
    runtime: str
    runtime_version: str
    reference_runtime: str
    delegate: str | None
    model_ms: EncodedArray
    reference_ms: EncodedArray


class InstructionLatencyInfo(_Strict):
    """metric "instructions": instructions per invoke on an emulated device
    (edgekit.check.instructions)."""

    metric: Literal["instructions"]
    target: str  # the device profile's name
    target_title: str
    qemu_cpu: str
    features: list[str]
    threads: int = Field(ge=1)
    runs: int = Field(ge=1)
    per_invoke: list[int] = Field(min_length=1)
    median: float = Field(gt=0)
    spread: float = Field(ge=0)
    marker_overhead: float
    delegate: str | None
    runtime_version: str | None
    precision: str
    litert_version: str | None
    plugin_sha256: str | None
    qemu_version: str | None
    estimate: dict[str, Any] | None = None


def _metric(v: Any) -> str:
    m = v.get("metric", "time") if isinstance(v, dict) else getattr(v, "metric", "time")
    return "instructions" if m == "instructions" else "time"


AnyLatency = Annotated[
    Annotated[LatencyInfo, Tag("time")] | Annotated[InstructionLatencyInfo, Tag("instructions")],
    Discriminator(_metric),
]


class Baseline(_Strict):
    format: Literal["edgekit-baseline"]
    format_version: int
    created: str
    edgekit_version: str
    model: ModelInfo
    data: DataInfo
    preprocessing: dict[str, Any]
    batch_size: int
    accuracy: AccuracyInfo
    predictions: Predictions
    latency: AnyLatency | None
    versions: dict[str, str | None]
    machine: dict[str, Any]

    def top1(self) -> np.ndarray:
        return decode_array(self.predictions.top1)

    def correct(self) -> np.ndarray:
        return decode_array(self.predictions.correct)

    @property
    def latency_metric(self) -> str | None:
        """ "time", "instructions", or None when the baseline holds no latency."""
        return None if self.latency is None else self.latency.metric

    def latency_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """(model_ms, reference_ms) paired by round (metric "time")."""
        assert isinstance(self.latency, LatencyInfo)
        return decode_array(self.latency.model_ms), decode_array(self.latency.reference_ms)


# --- arrays ---------------------------------------------------------------------------------


def encode_array(a: Any, dtype: str) -> dict[str, Any]:
    """{"dtype", "count", "encoding": "zlib+base64", "data"}: little-endian bytes, compressed."""
    arr = np.asarray(a)
    raw = np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return {
        "dtype": dtype,
        "count": int(arr.shape[0]),
        "encoding": "zlib+base64",
        "data": base64.b64encode(zlib.compress(raw, 9)).decode("ascii"),
    }


def decode_array(d: EncodedArray | dict[str, Any]) -> np.ndarray:
    """Inverse of encode_array; ValueError when the data does not hold `count` values."""
    if isinstance(d, EncodedArray):
        d = d.model_dump()
    dt = np.dtype(d["dtype"]).newbyteorder("<")
    try:
        raw = zlib.decompress(base64.b64decode(d["data"], validate=True))
    except (ValueError, zlib.error) as e:
        raise ValueError(f"undecodable array data ({e})") from None
    if len(raw) != d["count"] * dt.itemsize:
        raise ValueError(f"array holds {len(raw) // dt.itemsize} values, expected {d['count']}")
    return np.frombuffer(raw, dtype=dt).astype(dt.newbyteorder("="))


# --- reading ----------------------------------------------------------------------------------


def skipped_images(ds: Any) -> list[str]:
    """The images a streamed data set left out so far (data.on_corrupt=skip), by name."""
    return list(getattr(ds.x, "skipped", None) or [])


def recreate_hint(path: str | os.PathLike) -> str:
    return f"Create it with `edgekit baseline create MODEL --data DATA --out {path}`."


def read_baseline(path: str | os.PathLike) -> Baseline:
    """Load and validate a baseline file; BaselineError (one line) for anything unusable."""
    p = Path(path)
    if not p.is_file():
        what = "is a folder" if p.is_dir() else "does not exist"
        raise BaselineError(f"Baseline file {p} {what}. {recreate_hint(p)}")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BaselineError(
            f"{p} is not an edgekit baseline (not JSON: {e}). {recreate_hint(p)}"
        ) from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise BaselineError(
            f'{p} is not an edgekit baseline (no "format": "{FORMAT}"). {recreate_hint(p)}'
        )
    version = obj.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BaselineError(
            f"{p} is a damaged edgekit baseline (format_version {version!r}). {recreate_hint(p)}"
        )
    if version > FORMAT_VERSION:
        from edgekit import __version__

        raise BaselineError(
            f"{p} has baseline format version {version}, newer than this edgekit "
            f"({__version__}) reads (up to {FORMAT_VERSION}). Upgrade edgekit "
            "(pip install -U edgekit) or recreate the baseline with this version."
        )
    try:
        b = Baseline.model_validate(obj)
        top1, correct = b.top1(), b.correct()
        samples = b.latency_samples() if b.latency_metric == "time" else None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise BaselineError(
            f"{p} is a damaged edgekit baseline ({where}: {err['msg']}). {recreate_hint(p)}"
        ) from None
    except (ValueError, TypeError) as e:
        raise BaselineError(
            f"{p} is a damaged edgekit baseline ({e}). {recreate_hint(p)}"
        ) from None
    n = b.data.count - len(b.data.skipped)
    if len(top1) != n or len(correct) != n:
        raise BaselineError(
            f"{p} is a damaged edgekit baseline ({len(top1)} predictions for {n} images). "
            f"{recreate_hint(p)}"
        )
    if samples is not None and len(samples[0]) != len(samples[1]):
        raise BaselineError(f"{p} is a damaged edgekit baseline (latency samples unpaired).")
    return b


# --- creating ---------------------------------------------------------------------------------


def resolve_reference(
    reference: str | os.PathLike | None, model: Any, model_format: str
) -> tuple[Any, dict[str, Any]]:
    """The reference network (a ModelArtifact) and its ReferenceInfo fields: `reference`, or the
    bundled one for the model's runtime and compute precision."""
    from edgekit.artifacts import ModelArtifact
    from edgekit.check.latency import bundled_reference, compute_precision

    if reference is None:
        path = bundled_reference(model_format, compute_precision(model))
        shown = "bundled"
    else:
        path, shown = Path(reference), str(reference)
    ref = ModelArtifact.open(path)
    info = {"name": ref.name, "path": shown, "sha256": ref.digest(), "format": ref.format}
    return ref, info


def load_data(data: Any, limit: int | None) -> tuple[Any, str | None]:
    """(Dataset, spec string or None) from a spec or a Dataset, cut to `limit` images."""
    from edgekit.data import Dataset, load_dataset

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise UsageError(f"--limit must be an integer of at least 1. Received: {limit!r}")
    if isinstance(data, Dataset):
        ds, spec = data, None
    else:
        if data is None:
            raise UsageError("No data given. Pass --data (digits, an image folder, a .npz ...).")
        ds, spec = load_dataset(str(data)), str(data)
    if limit is not None:
        ds = ds.take(limit)
    return ds, spec


def create_baseline(
    model: str | os.PathLike,
    data: Any,
    out: str | os.PathLike,
    *,
    reference: str | os.PathLike | None = None,
    top_k: int = 5,
    batch_size: int = 64,
    mean: float | tuple[float, ...] = 0.0,
    std: float | tuple[float, ...] = 255.0,
    threads: int | None = None,
    output: int | str | None = None,
    limit: int | None = None,
    latency: bool = True,
    latency_seconds: float = 3.0,
    latency_threads: int = 1,
    latency_metric: str = "time",
    target: str | None = None,
) -> dict[str, Any]:
    """Evaluate `model` on `data`, measure its latency and write `out`.

    latency_metric: "time" (CPU time against the reference network) or "instructions"
        (instructions per invoke on the emulated device `target`; .tflite models only).
    Returns the baseline as written (a JSON-ready dict).
    """
    from edgekit.artifacts import ModelArtifact, write_json_atomic
    from edgekit.check.evaluation import evaluate_samples
    from edgekit.data import Preprocessing

    out = Path(out)
    if out.is_dir():
        raise UsageError(
            f"--out {out} is a folder. Pass a file name such as {out / 'baseline.json'}."
        )
    # One writer per baseline file: a second `baseline create --out` the same file is refused.
    lock = _lock(out)
    try:
        # A missing or unreadable model fails here, before any work.
        model = ModelArtifact.open(model)
        timing = _latency_plan(
            model, latency, latency_metric, target, reference, latency_threads, latency_seconds
        )
        pre = Preprocessing(mean=mean, std=std)
        ds, spec = load_data(data, limit)
        res = evaluate_samples(
            model, ds, pre, batch_size=batch_size, top_k=top_k, threads=threads, output=output,
            description=f"baseline {model.name}",
        )  # fmt: skip
        doc = _document(model, ds, spec, limit, pre, batch_size, res)
        if timing is not None:
            doc["latency"] = _measure_latency(model, timing, latency_threads, latency_seconds)
        Baseline.model_validate(doc)  # what we write, we can read back
        try:
            write_json_atomic(out, doc)
        except OSError as e:
            raise UsageError(
                f"Cannot write the baseline to {out} ({e.strerror or e}). Choose a writable --out."
            ) from None
        return doc
    finally:
        lock.release()


def _latency_plan(
    model: Any,
    latency: bool,
    metric: str,
    target: str | None,
    reference: str | os.PathLike | None,
    threads: Any,
    seconds: Any,
) -> dict[str, Any] | None:
    """What `baseline create` will time, checked before the evaluation (bad timing options and
    an unprovisioned emulator fail now, in one line): {"profile"} for instructions on an emulated
    device, {"reference", "info"} for time against a reference network; None: no latency."""
    profile = _instruction_options(model, latency, metric, target, reference)
    if not latency:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(
            f"--latency-threads must be an integer of at least 1. Received: {threads!r}"
        )
    if profile is not None:
        from edgekit.targets.emulated import cache

        cache.require()  # not provisioned: the one-line `edgekit devices setup` error, now
        return {"profile": profile}
    if not isinstance(seconds, int | float) or not seconds > 0:
        raise UsageError(f"--latency-seconds must be more than 0. Received: {seconds!r}")
    ref_path, ref_info = resolve_reference(reference, model, model.format)
    return {"reference": ref_path, "info": ref_info}


def _document(
    model: Any, ds: Any, spec: str | None, limit: int | None, pre: Any, batch_size: int, res: Any
) -> dict[str, Any]:
    """The baseline's fields but its latency: the model, the data, the accuracy and every
    image's prediction, versions and machine."""
    from edgekit import __version__
    from edgekit.artifacts import size_bytes
    from edgekit.bench.machine import machine_info
    from edgekit.versions import runtime_versions

    fp = ds.fingerprint()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "edgekit_version": __version__,
        "model": {
            "path": model.path,
            "name": model.name,
            "sha256": model.digest(),
            "size_bytes": size_bytes(model.path),
            **{k: res.model[k] for k in ("format", "runtime", "runtime_version", "output")},
            "num_classes": res.num_classes,
        },
        "data": {
            "spec": spec,
            "name": ds.name,
            "source": ds.source,
            "limit": limit,
            "count": fp["count"],
            "sha256": fp["sha256"],
            "image_shape": list(ds.image_shape),
            "num_classes": ds.num_classes,
            "labels": list(ds.labels),
            "skipped": skipped_images(ds),
        },
        "preprocessing": pre.to_dict(),
        "batch_size": batch_size,
        "accuracy": res.accuracy(),
        "predictions": {
            "top1": encode_array(res.top1, "int32"),
            "correct": encode_array(res.correct, "bool"),
        },
        "latency": None,
        "versions": runtime_versions(),
        "machine": machine_info(),
    }


def _measure_latency(
    model: Any, timing: dict[str, Any], threads: int, seconds: float
) -> dict[str, Any]:
    """The baseline's latency section: instructions counted on the emulated device, or the
    model's CPU time against the reference network's, every round kept."""
    if "profile" in timing:
        from edgekit.check.instructions import estimate_ms, measure_instructions

        profile = timing["profile"]
        m = measure_instructions(model, profile, threads=threads)
        return {**m, "estimate": estimate_ms(model, m, profile)}
    from edgekit.check.latency import QUANTILE, measure_ratio

    m = measure_ratio(model, timing["reference"], threads=threads, seconds=seconds)
    return {
        "metric": "time",
        "reference": timing["info"],
        "threads": threads,
        "seconds": seconds,
        "quantile": QUANTILE,
        **{k: v for k, v in m.items() if k not in ("model_ms", "reference_ms")},
        "model_ms": encode_array(m["model_ms"], "float32"),
        "reference_ms": encode_array(m["reference_ms"], "float32"),
    }


def _lock(out: Path) -> Any:
    """The RunLock of one baseline file (.NAME.lock beside it), taken; refused at once if held."""
    from edgekit import ui
    from edgekit.artifacts import RunLock, disk_full_from

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_full_from(e, out) or UsageError(
            f"Cannot write the baseline to {out} ({e.strerror}). Choose a writable --out."
        ) from None
    lock = RunLock(
        out.with_name(f".{out.name}.lock"),
        what=f"Baseline file {out}",
        hint="Wait for it to finish, or pass another --out.",
    )
    lock.acquire(note=ui.info)
    return lock


def _instruction_options(
    model: str | os.PathLike,
    latency: bool,
    metric: str,
    target: str | None,
    reference: str | os.PathLike | None,
) -> Any:
    """The target's DeviceProfile for metric "instructions", None for "time"; bad combinations
    of options are UsageErrors before any work."""
    from edgekit.check.instructions import require_tflite, resolve_target, validate_metric

    validate_metric(metric)
    if metric != "instructions":
        if target is not None:
            raise UsageError(
                "--target names the emulated device for --latency-metric instructions; "
                "pass both, or neither."
            )
        return None
    if not latency:
        raise UsageError("--no-latency and --latency-metric instructions contradict; pass one.")
    if reference is not None:
        raise UsageError(
            "--reference is the reference network of --latency-metric time; instruction "
            "counts need none. Drop --reference."
        )
    profile = resolve_target(target)
    require_tflite(model)
    return profile


def summary(doc: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """The baseline without its per-image and per-invoke arrays (for --json and tables)."""
    lat = doc["latency"]
    return {
        "path": str(path),
        "format_version": doc["format_version"],
        "created": doc["created"],
        "model": doc["model"],
        "data": doc["data"],
        "preprocessing": doc["preprocessing"],
        "accuracy": doc["accuracy"],
        "latency": None
        if lat is None
        else {k: v for k, v in lat.items() if k not in ("model_ms", "reference_ms", "features")},
    }
