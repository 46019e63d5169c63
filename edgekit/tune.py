"""`edgekit tune`: the fastest quantized model inside an accuracy / latency / size budget.

    report = tune("model.keras", "digits", budget=TuneBudget(max_accuracy_drop=0.5))

1. Candidates: the float TFLite model, every post-training mode of the converter (dynamic,
   float16, int8, int16x8), and full int8 by ai-edge-quantizer (edgekit.export.mixed), the start
   of the mixed-precision search.
2. Sensitivity, by Keras layer: for each layer with weights, the top-1 agreement with the Keras
   model lost when only that layer is quantized to int8 (a probe: one candidate each, as many as
   half the trials left allow, in per-tensor-error order), and the per-tensor error of the
   layer's output in the full-int8 model (per channel; no extra model).
3. Greedy fallback: keep the most sensitive layers in higher precision, one more per trial, until
   the accuracy budget holds or --max-trials is spent.
4. Latency of every candidate: interleaved LiteRT runs on this CPU (p50, ratio to float with a
   paired-bootstrap interval), or instructions per invoke on an emulated device (--target PROFILE).
5. The Pareto front (top-1 up, latency down, size down) and the chosen model: the fastest inside
   every budget, verified like any export (edgekit.export.convert.verify_one), with the precision
   of each op.

Every candidate is cached in OUT/cache by sha256(model, data, candidate, settings): a re-run (or a
run killed half way) measures only what is missing. Latency on this CPU is measured again each run,
all candidates interleaved (times taken minutes apart are not comparable).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import ui
from edgekit.errors import UnsupportedModelError, UsageError

MODES = ("dynamic", "float16", "int8", "int16x8")
SCHEMA = "edgekit.tune/1"
_VERSION = 1  # bump to invalidate the cache when what a candidate measures changes


@dataclass(frozen=True)
class TuneBudget:
    """What the chosen model must meet; None: no limit. Accuracy in points of top-1 against the
    Keras model (of agreement when the data has no labels)."""

    max_accuracy_drop: float | None = 1.0
    max_latency_ms: float | None = None
    max_size_mb: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_accuracy_drop", "max_latency_ms", "max_size_mb"):
            v = getattr(self, name)
            if v is None:
                continue
            option = "--" + name.replace("_", "-")
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise UsageError(f"{option} must be a number. Received: {v!r}")
            if v < 0 or (v == 0 and name != "max_accuracy_drop"):
                raise UsageError(f"{option} must be a positive number. Received: {v!r}")


@dataclass(frozen=True)
class TunePlan:
    """How the search runs."""

    target: str = "cpu"  # "cpu" (interleaved LiteRT here) or an emulated device profile
    max_trials: int = 30  # candidate models built and measured, all kinds together
    modes: tuple[str, ...] = MODES
    keep: str = "float"  # what a kept layer runs in: "float" or "int16" (16-bit activations)
    calibration_samples: int = 200
    eval_samples: int | None = None  # None: the whole eval split
    latency_seconds: float = 4.0  # interleaved timing of all candidates together (cpu)
    threads: int = 1
    seed: int = 0
    mean: float = 0.0
    std: float = 255.0

    def __post_init__(self) -> None:
        t = self.max_trials
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise UsageError(f"--max-trials must be an integer of at least 1. Received: {t!r}")
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise UsageError(f"--modes takes {', '.join(MODES)}. Received: {', '.join(bad)}")
        if self.keep not in ("float", "int16"):
            raise UsageError(f"--keep must be float or int16. Received: {self.keep!r}")
        for name in ("calibration_samples", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"{name} must be an integer of at least 1. Received: {v!r}")
        if self.eval_samples is not None and self.eval_samples < 1:
            raise UsageError(f"eval_samples must be at least 1. Received: {self.eval_samples!r}")
        if not self.latency_seconds > 0:
            raise UsageError(f"latency_seconds must be > 0. Received: {self.latency_seconds!r}")


@dataclass
class Candidate:
    name: str
    kind: str  # float / mode / mixed / probe
    spec: dict[str, Any]
    path: str = ""
    precision: str = "int8"
    size_bytes: int = 0
    top1: float | None = None  # percent
    agreement: float = 0.0  # percent of top-1 equal to the Keras model's
    drop: float = 0.0  # points against the Keras model
    latency: dict[str, Any] = field(default_factory=dict)
    cached: bool = False

    def row(self) -> dict[str, Any]:
        d = asdict(self)
        d["size_mb"] = round(self.size_bytes / 1e6, 4)
        return d


def resolve_target(target: str) -> Any:
    """None for "cpu"; the device profile of an emulated target, which must be provisioned
    (TargetUnavailableError, exit 2, names `edgekit devices setup`)."""
    if target in ("cpu", None):
        return None
    from edgekit.check.instructions import resolve_target as resolve
    from edgekit.targets.emulated import cache

    profile = resolve(target)
    cache.require()
    return profile


def tune(
    model: str | os.PathLike,
    data: Any,
    *,
    budget: TuneBudget | None = None,
    plan: TunePlan | None = None,
    out: str | os.PathLike | None = None,
    unsafe: bool = False,
    splits: dict[str, Any] | None = None,
    preprocessing: Any = None,
    verify: Any = None,
) -> dict[str, Any]:
    """Search quantization candidates of `model` for the fastest one inside `budget`.

    model: a Keras 3 .keras, tf-keras .keras/.h5 or SavedModel. data: a data set spec or Dataset
    (split into calib 30% and eval 70%, seed plan.seed). out: the run folder (candidates, cache,
    tune.json, tune.md) [default: ./tune-<model stem>]. Returns the report (kind "tune"); `verdict` is
    "met" or "not met" (the CLI exits 1 on "not met", with the front shown).
    """
    from edgekit.artifacts import (
        RUNTIME_FORMATS,
        ModelArtifact,
        lock_folder,
        write_json_atomic,
        write_text_atomic,
    )
    from edgekit.report.tune import render_markdown

    budget = budget or TuneBudget()
    plan = plan or TunePlan()
    profile = resolve_target(plan.target)
    if budget.max_latency_ms is not None and profile is not None and not _calibrated(profile):
        raise UsageError(
            f"--max-latency-ms needs milliseconds, and {profile.name} has no calibration to turn "
            "instructions into them. Use --target cpu, or a calibrated profile."
        )
    art = ModelArtifact.open(model)
    if art.format in RUNTIME_FORMATS:
        raise UsageError(
            f"edgekit tune starts from the Keras model, not a {art.format} file. "
            f"Received: {art.path}. Pass the .keras/.h5/SavedModel it was exported from."
        )
    out_dir = Path(out) if out else Path(f"tune-{Path(art.path).stem}")
    lock = lock_folder(out_dir, what="edgekit tune")
    try:
        setup = _Setup(data, splits, preprocessing, verify)
        report = _tune(art, setup, budget, plan, profile, out_dir, unsafe)
        write_json_atomic(out_dir / "tune.json", report)
        write_text_atomic(out_dir / "tune.md", render_markdown(report))
    finally:
        lock.release()
    return report


def _calibrated(profile: Any) -> bool:
    cal = getattr(profile, "calibration", None)
    return bool(getattr(getattr(cal, "cpi", None), "int8", None))


@dataclass
class _Setup:
    data: Any
    splits: dict[str, Any] | None
    preprocessing: Any
    verify: Any


def _tune(art, setup, budget, plan, profile, out_dir, unsafe) -> dict[str, Any]:
    from edgekit.data import Dataset
    from edgekit.export import mixed
    from edgekit.keras_compat import load_model

    ui.info(f"tune: loading {art.name}")
    loaded = load_model(art.path, unsafe=unsafe)
    shape = loaded.input_shape
    data = setup.data
    parts, ev, pre = _tune_splits(setup, plan, shape[:2])
    calib = pre.apply(parts["calib"].x[: plan.calibration_samples])
    x = pre.apply(ev.x)
    y = ev.y if ev.labeled else None
    ref = _class_output(loaded.predict(x))
    ref_top1 = ref.argmax(1)
    keras_top1 = float((ref_top1 == y).mean() * 100) if y is not None else 100.0
    layer_names = _layer_names(loaded)

    cand_dir, cache_dir = out_dir / "candidates", out_dir / "cache"
    cand_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key_base = {
        "v": _VERSION,
        "model": art.digest(),
        "data": [parts["calib"].fingerprint(), ev.fingerprint()],
        "seed": plan.seed,
        "calib": plan.calibration_samples,
        "eval": len(ev),
        "pre": [str(pre.mean), str(pre.std)],
    }
    search = _Search(loaded, calib, x, y, ref_top1, keras_top1, plan, cand_dir, cache_dir, key_base)

    # 1. float and the converter's modes
    float_c = search.convert("float32", "float", {"mode": "none"})
    ops = mixed.quantizable_ops(float_c.path, layer_names)
    layers = mixed.layers_of(ops)
    if not layers:
        raise UnsupportedModelError(
            f"{art.name} has no quantizable layer (no convolution, dense or matmul op in its "
            "TFLite graph): there is nothing for tune to search. Export it in float "
            "(edgekit export) instead."
        )
    for mode in plan.modes:
        if search.left() <= 0:
            break
        search.convert(mode, "mode", {"mode": mode})
    # 2. full int8 by the quantizer, sensitivity probes, per-tensor error
    calib_result = None
    sensitivity: list[dict[str, Any]] = []
    full = None
    if search.left() > 0:
        calib_result = mixed.calibrate(float_c.path, calib, mixed.recipe(ops, keep={}))
        full = search.mixed("int8-mixed", "mixed", ops, {}, calib_result, float_c.path)
        sensitivity = _sensitivity(search, ops, layers, full, float_c, calib_result, x, plan)
    # 3. greedy fallback in sensitivity order
    kept: dict[str, str] = {}
    greedy: list[str] = []
    if full is not None and not _meets_accuracy(full, budget):
        for s in sensitivity:
            if search.left() <= 0:
                break
            kept[s["layer"]] = plan.keep
            name = f"int8-keep{len(kept)}"
            c = search.mixed(name, "mixed", ops, dict(kept), calib_result, float_c.path)
            greedy.append(c.name)
            if _meets_accuracy(c, budget):
                break
    cands = search.candidates
    # 4. latency
    latency_info = _latency(cands, x, plan, profile, search)
    # 5. front and choice
    front = _pareto(cands)
    inside = [c for c in cands if _meets(c, budget, profile)]
    chosen, verification, unverified = _choose(inside, loaded, x, y, ev, setup.verify)
    precisions = mixed.op_precisions(chosen.path, layer_names) if chosen else []
    by_name = {c.name: c for c in cands}
    return {
        "kind": "tune",
        "schema": SCHEMA,
        "model": {"path": str(art.path), "name": art.name, "sha256": art.digest()},
        "data": {
            "spec": ev.name if data is None or isinstance(data, Dataset) else str(data),
            "calib": len(calib),
            "eval": len(ev),
            "labeled": y is not None,
        },
        "budget": asdict(budget),
        "plan": {**asdict(plan), "modes": list(plan.modes)},
        "target": plan.target,
        "keras": {"top1": keras_top1 if y is not None else None},
        "trials": {
            "used": len(cands),
            "max": plan.max_trials,
            "cached": sum(c.cached for c in cands),
        },
        "candidates": [c.row() for c in cands],
        "sensitivity": sensitivity,
        "layers": [{k: o[k] for k in ("op", "layer", "tensor", "ambiguous")} for o in ops],
        "greedy": {"kept": kept, "steps": greedy},
        "latency": latency_info,
        "front": [c.name for c in front],
        "chosen": by_name[chosen.name].row() if chosen else None,
        "verification": verification,
        "unverified": unverified,
        "op_precisions": precisions,
        "verdict": "met" if chosen else "not met",
        "out": str(out_dir),
    }


def _tune_splits(setup, plan, size) -> tuple[dict[str, Any], Any, Any]:
    """The calibration and evaluation parts (the recipe's splits, or 30/70 of the data) and the
    preprocessing."""
    from edgekit.data import Dataset, Preprocessing, load_dataset

    if setup.splits is not None:
        parts = setup.splits
    else:
        data = setup.data
        ds = data if isinstance(data, Dataset) else load_dataset(data, image_size=size)
        if ds.image_shape[:2] != tuple(size):
            ds = ds.resized(tuple(size))
        parts = ds.split({"calib": 0.3, "eval": 0.7}, seed=plan.seed)
    ev = parts["eval"]
    if plan.eval_samples is not None:
        ev = ev.subset(slice(0, plan.eval_samples))
    return parts, ev, setup.preprocessing or Preprocessing(mean=plan.mean, std=plan.std)


def _choose(inside, loaded, x, y, ev, verify) -> tuple[Any, Any, list[dict[str, str]]]:
    """The fastest candidate inside every budget that also passes verification: one that fails
    it (a loose accuracy budget lets in a model whose top-1 agreement is under verify's floor)
    is recorded and the next one is tried."""
    from edgekit.errors import ExportMismatch

    unverified = []
    for c in sorted(inside, key=lambda c: (_lat(c), c.size_bytes)):
        try:
            return c, _verify(c, loaded, x, y, ev, verify), unverified
        except ExportMismatch as e:
            unverified.append({"candidate": c.name, "reason": str(e)})
    return None, None, unverified


def _class_output(out: Any) -> np.ndarray:
    return np.asarray(out[0] if isinstance(out, list) else out, dtype=np.float32)


def _layer_names(loaded: Any) -> list[str] | None:
    model = getattr(loaded, "model", None)
    try:
        return [layer.name for layer in model.layers] if model is not None else None
    except AttributeError:
        return None


class _Search:
    """Builds and measures candidates (accuracy on the eval split), cached by key."""

    def __init__(self, loaded, calib, x, y, ref_top1, keras_top1, plan, cand_dir, cache_dir, key):
        self.loaded, self.calib, self.x, self.y = loaded, calib, x, y
        self.ref_top1, self.keras_top1, self.plan = ref_top1, keras_top1, plan
        self.cand_dir, self.cache_dir, self.key = cand_dir, cache_dir, key
        self.candidates: list[Candidate] = []

    def left(self) -> int:
        return self.plan.max_trials - len(self.candidates)

    def _cached(self, name: str, kind: str, spec: dict[str, Any]) -> tuple[Candidate | None, str]:
        blob = json.dumps({**self.key, "spec": spec}, sort_keys=True, default=str)
        key = hashlib.sha256(blob.encode()).hexdigest()[:16]
        f = self.cache_dir / f"{key}.json"
        if f.exists():
            try:
                d = json.loads(f.read_text())
                c = Candidate(**{k: v for k, v in d.items() if k in Candidate.__dataclass_fields__})
                if Path(c.path).is_file() and c.size_bytes == Path(c.path).stat().st_size:
                    c.name, c.cached = name, True
                    ui.info(f"tune: {name}: cached")
                    return c, key
            except (ValueError, TypeError):
                pass  # a damaged cache entry is measured again
        return None, key

    def _finish(self, c: Candidate, key: str) -> Candidate:
        from edgekit.artifacts import write_json_atomic

        if not c.cached:
            self._measure(c)
            write_json_atomic(self.cache_dir / f"{key}.json", {**asdict(c), "cached": False})
        self.candidates.append(c)
        return c

    def convert(self, name: str, kind: str, spec: dict[str, Any]) -> Candidate:
        from edgekit.export.convert import convert_one

        c, key = self._cached(name, kind, spec)
        if c is None:
            ui.info(f"tune: converting {name} ({len(self.candidates) + 1}/{self.plan.max_trials})")
            path = self.cand_dir / f"{key}_{name}.tflite"
            mode = spec["mode"]
            _, precision = convert_one(
                self.loaded,
                "tflite",
                mode,
                path,
                calibration=self.calib if mode in ("int8", "int16x8") else None,
                calibration_samples=len(self.calib),
            )
            c = Candidate(name, kind, spec, str(path), precision, path.stat().st_size)
        return self._finish(c, key)

    def mixed(self, name, kind, ops, keep, calib_result, float_path, only=None) -> Candidate:
        from edgekit.export import mixed

        spec = {"mixed": "ai-edge-quantizer", "keep": keep, "only": only}
        c, key = self._cached(name, kind, spec)
        if c is None:
            ui.info(f"tune: quantizing {name} ({len(self.candidates) + 1}/{self.plan.max_trials})")
            path = self.cand_dir / f"{key}_{name}.tflite"
            r = mixed.recipe(ops, keep=keep, only=only)
            mixed.quantize_mixed(float_path, path, r, calib_result)
            c = Candidate(name, kind, spec, str(path), "int8", path.stat().st_size)
        return self._finish(c, key)

    def _measure(self, c: Candidate) -> None:
        from edgekit.runtimes import open_runner

        runner = open_runner(c.path, threads=self.plan.threads)
        try:
            got = runner.run(self.x)[0].argmax(1)
        finally:
            runner.close()
        c.agreement = float((got == self.ref_top1).mean() * 100)
        if self.y is not None:
            c.top1 = float((got == self.y).mean() * 100)
            c.drop = round(self.keras_top1 - c.top1, 6)
        else:
            c.drop = round(100.0 - c.agreement, 6)


def _sensitivity(search, ops, layers, full, float_c, calib_result, x, plan) -> list[dict]:
    """One row per layer with weights, most sensitive first."""
    from edgekit.export import mixed

    # the tensor each layer hands on: the output of its last op in graph order
    last = {o["layer"]: o["tensor"] for o in ops}
    errors = mixed.tensor_errors(float_c.path, full.path, x[:16], {k: last[k] for k in layers})
    order = sorted(layers, key=lambda k: -(errors.get(k) or 0.0))
    # probes: as many as leave the greedy steps at least as many trials
    probes = max(0, min(len(order), search.left() // 2))
    rows = []
    for i, layer in enumerate(order):
        row = {
            "layer": layer,
            "ops": [o["op"] for o in ops if o["layer"] == layer],
            "ambiguous": any(o["ambiguous"] for o in ops if o["layer"] == layer),
            "tensor_error": errors.get(layer),
            "only_quantized_agreement": None,
            "lost_points": None,
        }
        if i < probes:
            c = search.mixed(
                f"only-{layer}", "probe", ops, {}, calib_result, float_c.path, only=[layer]
            )
            row["only_quantized_agreement"] = c.agreement
            row["lost_points"] = round(100.0 - c.agreement, 4)
            row["candidate"] = c.name
        rows.append(row)
    rows.sort(
        key=lambda r: (
            -(r["lost_points"] if r["lost_points"] is not None else -1.0),
            -(r["tensor_error"] or 0.0),
        )
    )
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


def _meets_accuracy(c: Candidate, budget: TuneBudget) -> bool:
    return budget.max_accuracy_drop is None or c.drop <= budget.max_accuracy_drop + 1e-9


def _lat(c: Candidate) -> float:
    v = c.latency.get("value")
    return float(v) if v is not None else math.inf


def _meets(c: Candidate, budget: TuneBudget, profile: Any) -> bool:
    if not _meets_accuracy(c, budget):
        return False
    if budget.max_size_mb is not None and c.size_bytes > budget.max_size_mb * 1e6:
        return False
    if budget.max_latency_ms is not None:
        ms = c.latency.get("ms")
        if ms is None or ms > budget.max_latency_ms:
            return False
    return True


def _latency(cands, x, plan, profile, search) -> dict[str, Any]:
    """Fill each candidate's `latency`: value (what the choice minimises), ms, ratio to float."""
    if profile is None:
        from edgekit.bench.latency import measure_interleaved
        from edgekit.runtimes import open_runner

        ui.info(f"tune: timing {len(cands)} candidates interleaved for {plan.latency_seconds:g} s")
        runners = [open_runner(c.path, threads=plan.threads) for c in cands]
        try:
            comp = measure_interleaved(
                runners, x[:1], warmup=5, runs=None, min_seconds=plan.latency_seconds
            )
        finally:
            for r in runners:
                r.close()
        for c, st, ratio in zip(cands, comp.stats, comp.ratios, strict=True):
            c.latency = {
                "value": st.p50,
                "ms": st.p50,
                "p90_ms": st.p90,
                "count": st.count,
                "ratio_to_float": ratio["ratio"],
                "ratio_ci": [ratio["ci_low"], ratio["ci_high"]],
                "speedup": 1.0 / ratio["ratio"] if ratio["ratio"] else None,
            }
        return {
            "metric": "p50 ms, LiteRT (XNNPACK) on this CPU, all candidates interleaved",
            "threads": plan.threads,
            "rounds": comp.stats[0].count,
            "confidence": comp.confidence,
        }
    from edgekit.check.instructions import estimate_ms, measure_instructions

    base = None
    for c in cands:
        f = Path(c.path).with_suffix(f".{profile.name}.instructions.json")
        if f.exists():
            m = json.loads(f.read_text())
        else:
            ui.info(f"tune: counting instructions of {c.name} on the emulated {profile.name}")
            m = measure_instructions(c.path, profile, threads=plan.threads, runs=3)
            from edgekit.artifacts import write_json_atomic

            write_json_atomic(f, m)
        est = estimate_ms(c.path, m, profile)
        base = base or m["median"]
        c.latency = {
            "value": m["median"],
            "instructions": m["median"],
            "ms": est.get("ms"),
            "ratio_to_float": m["median"] / base,
            "speedup": base / m["median"],
        }
    return {
        "metric": f"instructions per invoke on the emulated {profile.name} ({profile.cpu.qemu_cpu})",
        "threads": plan.threads,
    }


def _pareto(cands: list[Candidate]) -> list[Candidate]:
    """Candidates no other beats or equals on all of top-1 (agreement without labels), latency and
    size while beating it on one."""

    def acc(c: Candidate) -> float:
        return -c.drop

    front = []
    for c in cands:
        dominated = any(
            acc(o) >= acc(c)
            and _lat(o) <= _lat(c)
            and o.size_bytes <= c.size_bytes
            and (acc(o) > acc(c) or _lat(o) < _lat(c) or o.size_bytes < c.size_bytes)
            for o in cands
            if o is not c
        )
        if not dominated:
            front.append(c)
    return sorted(front, key=_lat)


def _verify(c: Candidate, loaded, x, y, ev, verify) -> dict[str, Any]:
    from edgekit.export.convert import verify_one

    if verify is None:
        from edgekit.recipes import Verification

        verify = Verification()
    n = min(len(x), verify.samples)
    ref_all = loaded.predict(x[:n])
    return verify_one(
        c.path, ref_all, x[:n], y[:n] if y is not None else None,
        precision=c.precision, verify=verify, labels=ev.labels, loaded=loaded,
    )  # fmt: skip
