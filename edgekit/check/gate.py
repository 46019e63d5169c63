"""The check itself: evaluate a candidate, compare it with a baseline, judge each criterion.

Criteria (docs/check.md states the rules precisely):
- accuracy: paired top-1 drop; fails when the drop exceeds --max-accuracy-drop AND the exact McNemar
  test is significant at --significance; beyond the tolerance but not significant is a warning that
  says how many images would decide it.
- class_accuracy (with --max-class-drop): the same per class, Holm-corrected across classes.
- latency (when the baseline has it), by the baseline's metric:
  "time": the ratio to the reference network against the baseline's; fails when the whole
  confidence interval of the increase lies above --max-latency-increase.
  "instructions": the median instructions per invoke on the emulated device against the
  baseline's; fails when the increase exceeds --max-latency-increase, and is left undecided (a
  warning) only when the measured run-to-run spread is large and the change lies within it.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import BaselineError, UsageError
from edgekit.plans import LatencyMetric

DEFAULT_MAX_ACCURACY_DROP = 1.0  # points
DEFAULT_MAX_LATENCY_INCREASE = 10.0  # percent
DEFAULT_SIGNIFICANCE = 0.05
EPS = 1e-9  # "exceeds the tolerance" is strict; this keeps 3/300 = 1.0 pts from exceeding 1.0


@dataclass
class Thresholds:
    """What counts as a regression. Points are accuracy percentage points (1.0 = 1% of images)."""

    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    max_class_drop: float | None = None  # None: per-class drops are not checked
    max_latency_increase: float | None = DEFAULT_MAX_LATENCY_INCREASE  # percent; None: off
    significance: float = DEFAULT_SIGNIFICANCE
    sources: dict[str, str] = field(default_factory=dict)  # where each value came from

    def validate(self) -> None:
        for name, unit in (
            ("max_accuracy_drop", "points"),
            ("max_class_drop", "points"),
            ("max_latency_increase", "percent"),
        ):
            v = getattr(self, name)
            if v is None:
                continue
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not math.isfinite(v)
                or v < 0
            ):
                raise UsageError(
                    f"--{name.replace('_', '-')} must be 0 or more ({unit}). Received: {v!r}"
                    f"{self._from(name)}."
                )
        a = self.significance
        if isinstance(a, bool) or not isinstance(a, int | float) or not 0 < a < 1:
            raise UsageError(
                f"--significance must be between 0 and 1 (e.g. 0.05). Received: {a!r}"
                f"{self._from('significance')}."
            )

    def _from(self, name: str) -> str:
        src = self.sources.get(name, "")
        return f" (from {src})" if src.startswith("config") else ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _criterion(name: str, title: str, status: str, message: str, **numbers: Any) -> dict[str, Any]:
    numbers.setdefault("summary", message)
    return {"name": name, "title": title, "status": status, "message": message, **numbers}


def _pts(x: float) -> float:
    return 100.0 * x


def accuracy_criterion(
    base_correct: np.ndarray, cand_correct: np.ndarray, th: Thresholds
) -> dict[str, Any]:
    """Top-1 accuracy: paired drop, exact McNemar, interval, samples needed."""
    from edgekit.check.stats import paired_drop, samples_to_decide

    n = len(base_correct)
    b = int(np.sum(base_correct & ~cand_correct))
    c = int(np.sum(~base_correct & cand_correct))
    pd = paired_drop(b, c, n, alpha=th.significance)
    tol = th.max_accuracy_drop
    beyond = (b - c) * 100.0 > (tol + EPS) * n
    significant = pd.p_value < th.significance
    base_acc, cand_acc = float(base_correct.mean()), float(cand_correct.mean())
    drop, lo, hi = _pts(pd.drop), _pts(pd.ci_low), _pts(pd.ci_high)
    conf = f"{round(pd.confidence * 100)}%"
    what = (
        f"top-1 {base_acc:.2%} -> {cand_acc:.2%}: drop {drop:+.2f} pts "
        f"({conf} CI {lo:+.2f} to {hi:+.2f}; McNemar p = {pd.p_value:.3g}, "
        f"{b} images lost, {c} gained, of {n})"
    )
    needed = None
    short = f"drop {drop:.2f} pts (allowed {tol:.2f}, p = {pd.p_value:.3g})"
    if beyond and significant:
        status = "fail"
        message = (
            f"{what}: more than the allowed {tol:.2f} pts and significant at {th.significance:g}."
        )
    elif beyond:
        status = "warn"
        needed = samples_to_decide(b, c, n, alpha=th.significance)
        message = (
            f"{what}: more than the allowed {tol:.2f} pts but not significant at "
            f"{th.significance:g} on {n} images; about {needed:,} images would be needed to "
            "decide (80% power if this drop is real)."
        )
        short += f", not significant: about {needed:,} images needed to decide"
    else:
        status = "pass"
        message = f"{what}: within the allowed {tol:.2f} pts."
    return _criterion(
        "accuracy",
        "top-1 accuracy",
        status,
        message,
        summary=short,
        baseline=base_acc,
        candidate=cand_acc,
        drop_pts=drop,
        ci_low_pts=lo,
        ci_high_pts=hi,
        confidence=pd.confidence,
        p_value=pd.p_value,
        significant=significant,
        lost=b,
        gained=c,
        count=n,
        threshold_pts=tol,
        samples_needed=needed,
    )


def class_criterion(
    y: np.ndarray,
    base_correct: np.ndarray,
    cand_correct: np.ndarray,
    labels: list[str],
    th: Thresholds,
) -> dict[str, Any]:
    """Per-class top-1: the accuracy rule per class, with Holm's correction across classes."""
    from edgekit.check.stats import samples_to_decide

    tol = th.max_class_drop
    if tol is None:
        return _criterion(
            "class_accuracy", "per-class accuracy", "skipped",
            "Not checked: set --max-class-drop (or max_class_drop in the config) to check it.",
        )  # fmt: skip
    rows = _class_rows(y, base_correct, cand_correct, labels, th, tol)
    failed = [r for r in rows if r["status"] == "fail"]
    warned = [r for r in rows if r["status"] == "warn"]
    worst = max(failed or warned or rows, key=lambda r: r["drop_pts"])
    desc = (
        f"class {worst['label']!r}: {worst['baseline']:.2%} -> {worst['candidate']:.2%}, drop "
        f"{worst['drop_pts']:+.2f} pts (CI {worst['ci_low_pts']:+.2f} to "
        f"{worst['ci_high_pts']:+.2f}, p = {worst['p_value']:.3g}, {worst['count']} images)"
    )
    needed = None
    short = (
        f"class {worst['label']!r} drop {worst['drop_pts']:.2f} pts (allowed {tol:.2f}, "
        f"p = {worst['p_value']:.3g}, Holm over {len(rows)} classes)"
    )
    if failed:
        status = "fail"
        names = ", ".join(repr(r["label"]) for r in failed[:5])
        message = (
            f"{len(failed)} class(es) dropped more than {tol:.2f} pts, significant after Holm's "
            f"correction over {len(rows)} classes ({names}); worst {desc}."
        )
    elif warned:
        status = "warn"
        needed = samples_to_decide(
            worst["lost"], worst["gained"], worst["count"], alpha=th.significance / len(rows)
        )
        message = (
            f"{len(warned)} class(es) dropped more than {tol:.2f} pts without significance after "
            f"Holm's correction over {len(rows)} classes; worst {desc}; about {needed:,} images "
            "of that class would be needed to decide."
        )
        short += f", not significant: about {needed:,} images of it needed to decide"
    else:
        status = "pass"
        message = f"every class within {tol:.2f} pts (or not significantly beyond); worst {desc}."
    for r in rows:
        r.pop("beyond")
    return _criterion(
        "class_accuracy",
        "per-class accuracy",
        status,
        message,
        summary=short,
        worst=worst["label"],
        baseline=worst["baseline"],
        candidate=worst["candidate"],
        drop_pts=worst["drop_pts"],
        ci_low_pts=worst["ci_low_pts"],
        ci_high_pts=worst["ci_high_pts"],
        p_value=worst["p_value"],
        threshold_pts=tol,
        samples_needed=needed,
        classes=rows,
    )


def _class_rows(
    y: np.ndarray,
    base_correct: np.ndarray,
    cand_correct: np.ndarray,
    labels: list[str],
    th: Thresholds,
    tol: float,
) -> list[dict[str, Any]]:
    """Each class's paired drop, its interval and p-value, and its status after Holm's
    correction across the classes (`beyond`: more than the allowed drop `tol`, in points)."""
    from edgekit.check.stats import holm, paired_drop

    rows = []
    for k, label in enumerate(labels):
        m = y == k
        nk = int(m.sum())
        if nk == 0:
            continue
        bk = int(np.sum(base_correct[m] & ~cand_correct[m]))
        ck = int(np.sum(~base_correct[m] & cand_correct[m]))
        pd = paired_drop(bk, ck, nk, alpha=th.significance)
        rows.append(
            {
                "label": label,
                "count": nk,
                "baseline": float(base_correct[m].mean()),
                "candidate": float(cand_correct[m].mean()),
                "drop_pts": _pts(pd.drop),
                "ci_low_pts": _pts(pd.ci_low),
                "ci_high_pts": _pts(pd.ci_high),
                "p_value": pd.p_value,
                "lost": bk,
                "gained": ck,
                "beyond": (bk - ck) * 100.0 > (tol + EPS) * nk,
            }
        )
    reject = holm([r["p_value"] for r in rows], th.significance)
    for r, rej in zip(rows, reject, strict=True):
        r["significant"] = rej
        r["status"] = "fail" if r["beyond"] and rej else "warn" if r["beyond"] else "pass"
    return rows


def latency_criterion(
    baseline: Any,
    model: str | os.PathLike,
    th: Thresholds,
    *,
    enabled: bool,
    seconds: float | None,
    reference: str | os.PathLike | None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Latency ratio to the reference network, against the baseline's. Returns (criterion,
    measurement details or None)."""
    from edgekit.check.latency import compare_ratios, measure_ratio

    tol = th.max_latency_increase
    lat = baseline.latency
    title = "latency"
    if not enabled or tol is None:
        why = "--no-latency" if not enabled else "no --max-latency-increase"
        return _criterion("latency", title, "skipped", f"Not checked ({why})."), None
    if lat is None:
        if th.sources.get("max_latency_increase", "default") != "default":
            raise BaselineError(
                "The baseline holds no latency (it was created with --no-latency), so "
                "--max-latency-increase cannot be checked. Recreate the baseline with latency, "
                "or pass --no-latency."
            )
        return _criterion(
            "latency", title, "skipped",
            "Not checked: the baseline was created with --no-latency.",
        ), None  # fmt: skip
    ref_path = _reference_path(lat.reference, reference)
    m = measure_ratio(
        model, ref_path, threads=lat.threads, seconds=seconds or lat.seconds, clock=lat.clock
    )
    cmp = compare_ratios(baseline.latency_samples(), (m["model_ms"], m["reference_ms"]))
    change, lo, hi = cmp["change"], cmp["ci_low"], cmp["ci_high"]
    limit = 1.0 + tol / 100.0
    pct = lambda r: (r - 1.0) * 100.0  # noqa: E731
    what = (
        f"ratio to the reference {lat.ratio:.3g} -> {m['ratio']:.3g}: {pct(change):+.1f}% "
        f"(95% CI {pct(lo):+.1f}% to {pct(hi):+.1f}%; {m['rounds']} rounds against "
        f"{lat.rounds} in the baseline)"
    )
    short = f"{pct(change):+.1f}% (95% CI {pct(lo):+.1f}% to {pct(hi):+.1f}%, allowed +{tol:g}%)"
    if lo > limit:
        status = "fail"
        message = f"{what}: slower by more than the allowed {tol:g}%, beyond the interval's reach."
    elif change > limit:
        status = "warn"
        message = (
            f"{what}: above the allowed {tol:g}% but the interval reaches below it; re-run with "
            "a longer --latency-seconds to decide."
        )
    else:
        status = "pass"
        message = f"{what}: within the allowed {tol:g}%."
    details = {k: v for k, v in m.items() if k not in ("model_ms", "reference_ms")} | {
        "seconds": seconds or lat.seconds,
        "threads": lat.threads,
        "resamples": cmp["resamples"],
    }
    # How much faster or slower this machine ran the reference than the baseline's machine did:
    # the normalization the ratio removes.
    details["reference_speed_vs_baseline"] = m["reference_p50_ms"] / lat.reference_p50_ms
    crit = _criterion(
        "latency",
        title,
        status,
        message,
        summary=short,
        baseline=lat.ratio,
        candidate=m["ratio"],
        change=change,
        ci_low=lo,
        ci_high=hi,
        confidence=cmp["confidence"],
        threshold_pct=tol,
    )
    return crit, details


def _describe_latency(lat: Any) -> str:
    if lat.metric == "instructions":
        return f"instructions per invoke on the emulated {lat.target} (metric instructions)"
    return "CPU time as a ratio to a reference network (metric time)"


def latency_plan(
    base: Any,
    baseline: str | os.PathLike,
    model: str | os.PathLike,
    *,
    enabled: bool,
    metric: str | None,
    target: str | None,
) -> Any:
    """Check --latency-metric / --target against what the baseline holds, before any work.
    Returns the DeviceProfile to count on (metric "instructions", latency enabled), else None."""
    from edgekit.check.instructions import require_tflite, resolve_target, validate_metric

    validate_metric(metric)
    lat = base.latency
    if lat is None:
        if enabled and (metric is not None or target is not None):
            raise BaselineError(
                f"The baseline {baseline} holds no latency (it was created with --no-latency), "
                "so --latency-metric/--target cannot be checked. Recreate the baseline with "
                "latency, or pass --no-latency."
            )
        return None
    if metric is not None and metric != lat.metric:
        raise UsageError(
            f"The baseline {baseline} holds {_describe_latency(lat)}; --latency-metric {metric} "
            f"does not compare with it. Leave the option out, or create a baseline with "
            f"--latency-metric {metric}."
        )
    if lat.metric != "instructions":
        if target is not None:
            raise UsageError(
                f"--target is for instruction-count baselines; {baseline} holds "
                f"{_describe_latency(lat)}. Drop --target, or create a baseline with "
                "--latency-metric instructions --target DEVICE."
            )
        return None
    profile = resolve_target(target if target is not None else lat.target)
    if profile.name != lat.target:
        raise UsageError(
            f"The baseline {baseline} counted instructions on {lat.target}; --target {target} "
            f"is another device, whose counts do not compare. Pass --target {lat.target} (or "
            "leave it out), or create a baseline for that device."
        )
    if not enabled:
        return None
    from edgekit.targets.emulated import cache

    require_tflite(model)
    cache.require()
    return profile


def instruction_criterion(
    baseline: Any, model: str | os.PathLike, th: Thresholds, profile: Any, *, enabled: bool
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Median instructions per invoke on the emulated device against the baseline's. Returns
    (criterion, measurement details or None)."""
    from edgekit.check.instructions import (
        SPREAD_FRACTION,
        decide,
        estimate_ms,
        measure_instructions,
        setup_changes,
    )
    from edgekit.report.check import short_count

    lat = baseline.latency
    tol = th.max_latency_increase
    title = "latency (instructions)"
    if not enabled or tol is None or profile is None:
        why = "--no-latency" if not enabled else "no --max-latency-increase"
        return _criterion("latency", title, "skipped", f"Not checked ({why})."), None
    m = measure_instructions(model, profile, threads=lat.threads, runs=lat.runs)
    change = m["median"] / lat.median
    pct = (change - 1.0) * 100.0
    # Each median can be off by at most half the range of its runs; their sum bounds the change.
    band = (lat.spread + m["spread"]) / 2 * 100.0
    what = (
        f"{short_count(lat.median)} -> {short_count(m['median'])} instructions per invoke on the "
        f"emulated {lat.target} ({lat.qemu_cpu}, {lat.threads} thread(s)): {pct:+.2f}% "
        f"(run-to-run spread {lat.spread:.2%} in the baseline, {m['spread']:.2%} now, "
        f"{m['runs']} invokes each)"
    )
    status, verdict = decide(pct, band, tol)
    short = f"{pct:+.2f}% instructions (allowed +{tol:g}%, spread +-{band:.2f}%)"
    if status == "warn":
        short += ", not decided"
    message = f"{what}: {verdict}"
    details = {k: v for k, v in m.items() if k != "features"} | {
        "baseline_median": lat.median,
        "baseline_per_invoke": list(lat.per_invoke),
        "baseline_spread": lat.spread,
        "band_pct": band,
        "decisive": band <= SPREAD_FRACTION * tol,
        "setup_changes": setup_changes(lat, m),
        "estimate": estimate_ms(model, m, profile),
    }
    crit = _criterion(
        "latency",
        title,
        status,
        message,
        summary=short,
        metric="instructions",
        target=lat.target,
        baseline=lat.median,
        candidate=m["median"],
        change=change,
        change_pct=pct,
        spread_pct=band,
        decided=status != "warn",
        threshold_pct=tol,
    )
    return crit, details


def _reference_path(info: Any, override: str | os.PathLike | None) -> Any:
    """The reference network (a ModelArtifact) the baseline was timed against, checked by
    sha256."""
    from edgekit.artifacts import ModelArtifact, sha256_path
    from edgekit.check.latency import REFERENCE_FILES

    if override is not None:
        path = Path(override)
    elif info.path == "bundled":
        from edgekit.resources import asset

        if info.name not in set(REFERENCE_FILES.values()):
            raise BaselineError(
                f"The baseline was timed against a bundled reference {info.name!r} that this "
                "edgekit does not ship. Recreate the baseline with this edgekit."
            )
        path = asset(info.name)
    else:
        path = Path(info.path)
    if not path.exists():
        raise BaselineError(
            f"The latency reference model {path} the baseline was timed against does not exist. "
            "Pass its location with --reference, or --no-latency."
        )
    digest = sha256_path(path)
    if digest != info.sha256:
        what = "this edgekit's bundled reference network" if info.path == "bundled" else str(path)
        raise BaselineError(
            f"The baseline's latency was measured against a different reference model than "
            f"{what} (sha256 differs), so the ratios do not compare. Recreate the baseline "
            "(edgekit baseline create ...), or pass --no-latency."
        )
    ref = ModelArtifact.open(path)
    ref.sha256 = digest
    return ref


def run_check(
    model: str | os.PathLike,
    baseline: str | os.PathLike,
    *,
    data: Any = None,
    thresholds: Thresholds | None = None,
    latency: bool = True,
    latency_seconds: float | None = None,
    reference: str | os.PathLike | None = None,
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    output: int | str | None = None,
    latency_metric: LatencyMetric | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """Evaluate `model` and compare it with the baseline file; the report (see docs/check.md).

    latency_metric / target: default to the baseline's; other values are a UsageError.

    data: a spec or Dataset; None uses the spec stored in the baseline. Its fingerprint must
        equal the baseline's. mean/std/batch_size default to the baseline's.
    Raises BaselineError / UsageError (exit 2) when no comparison can be made; a regression is
    reported (verdict "fail"), not raised.
    """
    from edgekit.artifacts import ModelArtifact
    from edgekit.check.baseline import read_baseline
    from edgekit.check.evaluation import evaluate_samples
    from edgekit.data import Preprocessing

    th = thresholds or Thresholds()
    th.validate()
    if latency_seconds is not None and (
        not isinstance(latency_seconds, int | float) or not latency_seconds > 0
    ):
        raise UsageError(f"--latency-seconds must be more than 0. Received: {latency_seconds!r}")
    base = read_baseline(baseline)
    # A missing or unreadable model: one line, exit 2, before loading data. Opened once here,
    # the artifact goes to every step below.
    art = ModelArtifact.open(model)
    lat_enabled = latency and th.max_latency_increase is not None
    profile = latency_plan(
        base, baseline, art, enabled=lat_enabled, metric=latency_metric, target=target
    )
    ds, data, fp = _baseline_data(base, baseline, data)
    pre_b = Preprocessing.from_dict(base.preprocessing)
    pre = Preprocessing(
        mean=pre_b.mean if mean is None else mean, std=pre_b.std if std is None else std
    )
    res = evaluate_samples(
        art, ds, pre, batch_size=batch_size or base.batch_size, top_k=base.accuracy.k,
        threads=threads, output=output, expected_classes=base.model.num_classes,
        description=f"check {art.name}",
    )  # fmt: skip
    from edgekit.check.baseline import skipped_images

    now_skipped = skipped_images(ds)
    if now_skipped != list(base.data.skipped):
        raise BaselineError(
            f"This check left out {len(now_skipped)} image(s) that cannot be decoded "
            f"({', '.join(now_skipped[:3]) or 'none'}) but {baseline} left out "
            f"{len(base.data.skipped)} ({', '.join(base.data.skipped[:3]) or 'none'}): the two "
            "cannot be compared image by image. Repair the files, then recreate the baseline."
        )
    base_correct = base.correct()
    if not np.array_equal(base_correct, base.top1() == res.y):
        raise BaselineError(
            f"{baseline} is inconsistent with its data: its stored correctness does not match "
            "the labels. Recreate the baseline."
        )
    criteria = [
        accuracy_criterion(base_correct, res.correct, th),
        class_criterion(res.y, base_correct, res.correct, res.labels, th),
    ]
    if base.latency_metric == "instructions":
        lat_crit, lat_details = instruction_criterion(base, art, th, profile, enabled=latency)
    else:
        lat_crit, lat_details = latency_criterion(
            base, art, th, enabled=latency, seconds=latency_seconds, reference=reference
        )
    criteria.append(lat_crit)
    return _report(art, base, baseline, res, criteria, lat_details, (ds, data, fp), pre, th)


def _baseline_data(base: Any, baseline: str | os.PathLike, data: Any) -> tuple[Any, Any, Any]:
    """The data set to check on (`data`, else the baseline's spec), the spec and the data's
    fingerprint; a BaselineError when that is not the baseline's."""
    from edgekit.check.baseline import load_data

    if data is None:
        if base.data.spec is None:
            raise UsageError(
                "The baseline was made from in-memory data, so it names no data to reload. "
                "Pass --data."
            )
        data = base.data.spec
    ds, _ = load_data(data, base.data.limit)
    fp = ds.fingerprint()
    if fp["sha256"] != base.data.sha256 or fp["count"] != base.data.count:
        raise BaselineError(
            f"The data is not the data of the baseline: {fp['count']} images, sha256 "
            f"{fp['sha256'][:12]} now; {base.data.count} images, sha256 {base.data.sha256[:12]} "
            f"in {baseline} (made from {base.data.spec or 'in-memory data'}"
            f"{f', first {base.data.limit}' if base.data.limit else ''}). Check against the same "
            "data, or refresh the baseline: edgekit baseline create BASELINE_MODEL --data DATA "
            f"--out {baseline}."
        )
    return ds, data, fp


def _warnings_and_notes(
    art: Any,
    base: Any,
    criteria: list[dict[str, Any]],
    lat_details: dict[str, Any] | None,
    acc: dict[str, Any],
    pre: Any,
    versions: dict[str, Any],
    machine: dict[str, Any],
) -> tuple[list[str], list[str]]:
    """What the reader should know beside the verdict: warned criteria, a changed counting
    setup, NaN scores (warnings); the same file, other preprocessing, runtimes or CPU (notes)."""
    warnings = [c["message"] for c in criteria if c["status"] == "warn"]
    notes = []
    if lat_details and lat_details.get("setup_changes"):
        warnings.append(
            "The instruction-counting setup changed since the baseline ("
            + ", ".join(lat_details["setup_changes"])
            + "): part of the latency change may come from it; recreate the baseline to "
            "separate the two."
        )
    if art.digest() == base.model.sha256:
        notes.append("The candidate is the baseline's model file itself (same sha256).")
    if acc["nonfinite"]:
        warnings.append(
            f"{acc['nonfinite']} of {acc['count']} images got NaN or inf scores; they count as "
            "wrong predictions."
        )
    if pre.to_dict() != base.preprocessing:
        notes.append(
            f"Preprocessing differs from the baseline's: {pre.to_dict()} now, "
            f"{base.preprocessing} then."
        )
    runtime_pkgs = ("ai-edge-litert", "tflite-runtime", "onnxruntime", "tensorflow", "numpy")
    changed = [
        f"{k} {base.versions.get(k)} -> {versions.get(k)}"
        for k in runtime_pkgs
        if k in base.versions and base.versions.get(k) != versions.get(k)
    ]
    if changed:
        notes.append("Runtime versions changed since the baseline: " + ", ".join(changed) + ".")
    if machine.get("cpu") != base.machine.get("cpu"):
        how = (
            f"latency is counted on the emulated {base.latency.target}"
            if base.latency_metric == "instructions"
            else "latency is compared as a ratio to the reference network"
        )
        notes.append(
            f"The baseline was made on another CPU ({base.machine.get('cpu')}); {how}, accuracy "
            "does not depend on it."
        )
    return warnings, notes


def _report(
    art: Any,
    base: Any,
    baseline: str | os.PathLike,
    res: Any,
    criteria: list[dict[str, Any]],
    lat_details: dict[str, Any] | None,
    checked_on: tuple[Any, Any, Any],
    pre: Any,
    th: Thresholds,
) -> dict[str, Any]:
    """The check report: the verdict, the criteria, and what they were measured on
    (`checked_on`: the data set, its spec and its fingerprint)."""
    from edgekit.bench.machine import machine_info
    from edgekit.versions import runtime_versions

    acc = res.accuracy()
    versions = runtime_versions()
    machine = machine_info()
    warnings, notes = _warnings_and_notes(
        art, base, criteria, lat_details, acc, pre, versions, machine
    )
    ds, data, fp = checked_on
    failed = [c["name"] for c in criteria if c["status"] == "fail"]
    return {
        "verdict": "fail" if failed else "pass",
        "exit_code": 1 if failed else 0,
        "failed": failed,
        "warnings": warnings,
        "notes": notes,
        "criteria": criteria,
        "model": {"path": art.path, "sha256": art.digest(), **res.model},
        "baseline": {
            "path": str(baseline),
            "created": base.created,
            "edgekit_version": base.edgekit_version,
            "model": base.model.model_dump(),
        },
        "data": {
            "spec": data if isinstance(data, str) else base.data.spec,
            "name": ds.name,
            "count": fp["count"],
            "sha256": fp["sha256"],
            "limit": base.data.limit,
        },
        "preprocessing": pre.to_dict(),
        "thresholds": th.to_dict(),
        "accuracy": {
            "baseline": base.accuracy.model_dump(),
            "candidate": acc,
            "top1_agreement": float(np.mean(base.top1() == res.top1)),
        },
        "latency_metric": base.latency_metric,
        "latency": lat_details,
        "machine": machine,
        "versions": versions,
    }


def check(
    model: str | os.PathLike,
    baseline: str | os.PathLike | None = None,
    *,
    data: Any = None,
    max_accuracy_drop: float | None = None,
    max_class_drop: float | None = None,
    max_latency_increase: float | None = None,
    significance: float | None = None,
    latency: bool | None = None,
    latency_seconds: float | None = None,
    reference: str | os.PathLike | None = None,
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
    batch_size: int | None = None,
    threads: int | None = None,
    output: int | str | None = None,
    config: str | os.PathLike | bool | None = None,
    junit: str | os.PathLike | None = None,
    github_summary: bool | None = None,
    latency_metric: LatencyMetric | None = None,
    target: str | None = None,
) -> dict[str, Any]:
    """`edgekit check`: settings from arguments, then the config file, then defaults; run the
    check; write JUnit XML and the GitHub step summary (also when the check cannot be made, as an
    error, before the error is raised again).

    config: a file; None finds edgekit.yaml / pyproject.toml from the working directory; False
        reads none. github_summary: None appends when $GITHUB_STEP_SUMMARY is set.
    """
    from edgekit.check.config import load_config
    from edgekit.errors import EdgekitError
    from edgekit.report import check as rep

    summary = (
        bool(os.environ.get("GITHUB_STEP_SUMMARY")) if github_summary is None else github_summary
    )
    junit_path = junit
    try:
        cfg = load_config(
            None if config in (None, True, False) else config, discover=config is not False
        )
        s = cfg.settings
        junit_path = junit if junit is not None else cfg.resolve(s.junit)
        baseline = baseline if baseline is not None else cfg.resolve(s.baseline)
        if baseline is None:
            raise UsageError(
                "No baseline given. Pass --baseline FILE (or set check.baseline in edgekit.yaml "
                "or [tool.edgekit.check] in pyproject.toml)."
            )
        if data is None:
            data = cfg.resolve(s.data, spec=True)
        given = {
            "max_accuracy_drop": max_accuracy_drop,
            "max_class_drop": max_class_drop,
            "max_latency_increase": max_latency_increase,
            "significance": significance,
        }
        th = _thresholds(cfg, given)
        if latency is None:
            latency = s.latency if s.latency is not None else True
        if latency_seconds is None:
            latency_seconds = s.latency_seconds
        if latency_metric is None:
            latency_metric = s.latency_metric
        if target is None:
            target = cfg.resolve(s.target, spec=True)
        report = run_check(
            model, baseline, data=data, thresholds=th, latency=latency,
            latency_seconds=latency_seconds, reference=reference, mean=mean, std=std,
            batch_size=batch_size, threads=threads, output=output,
            latency_metric=latency_metric, target=target,
        )  # fmt: skip
    except EdgekitError as e:
        message = " ".join(str(e).split())
        if junit_path is not None:
            rep.write_junit(junit_path, rep.junit_error_xml(message, str(model)))
        if summary:
            rep.append_step_summary(rep.markdown_error(message, str(model)))
        raise
    report["config"] = str(cfg.path) if cfg.path else None
    if junit_path is not None:
        rep.write_junit(junit_path, rep.junit_xml(report))
        report["junit"] = str(junit_path)
    if summary:
        target = rep.append_step_summary(rep.markdown_summary(report))
        report["github_step_summary"] = str(target) if target else None
    return report


def _thresholds(cfg: Any, given: dict[str, float | None]) -> Thresholds:
    """Each threshold from its option, else the config file, else the default; `sources` says
    which."""
    th = Thresholds()
    s = cfg.settings
    for name, value in given.items():
        if value is not None:
            setattr(th, name, value)
            th.sources[name] = "option"
        elif getattr(s, name) is not None:
            setattr(th, name, getattr(s, name))
            th.sources[name] = cfg.source
        else:
            th.sources[name] = "default"
    return th
