"""Library entry points, one per command. The CLI calls these and only renders their results.

Each imports its implementation lazily so that `import edgekit.api` stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.plans import Delegate, GraphOptimization, LatencyMetric


def compress(
    model: str | os.PathLike | None = None,
    *,
    recipe: str = "distill",
    data: str | None = None,
    out: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    unsafe: bool = False,
    measure_latency: bool = True,
    unlabeled: str | None = None,
    output: int | str | None = None,
) -> dict[str, Any]:
    """Run a compression recipe; returns the report (also written to OUT/report.json).

    model: a Keras 3 .keras, tf-keras .keras/.h5, SavedModel folder (or, as a distillation teacher
        only, a .tflite/.onnx). None: the bundled example teacher.
    recipe: a bundled recipe name (`list_recipes()`) or a YAML path.
    data: "digits", "shapes", "shapes:64", an image folder, a .npz ... None: the example's data.
    unlabeled: extra images without labels, in any `data` form (labels in it are ignored);
        distillation (`distill.use_unlabeled`) teaches them with the teacher's outputs alone.
    overrides: `key=value` strings, as `--set` on the command line (`distill.epochs=3`).
    unsafe: allow Lambda layers and custom objects in the model file (only for files you trust).
    output: a multi-output teacher's class-score output (name or index; the recipe's
        `class_output`, default the first). Every output is verified.
    """
    from edgekit.pipeline import compress as _compress

    return _compress(
        model,
        recipe=recipe,
        data=data,
        out=out,
        overrides=overrides,
        unsafe=unsafe,
        measure_latency=measure_latency,
        unlabeled=unlabeled,
        output=output,
    )


def export(
    model: str | os.PathLike,
    *,
    format: str = "tflite",
    quantize: str = "none",
    data: Any = None,
    out: str | os.PathLike | None = None,
    android: bool = False,
    io_type: str = "float32",
    mean: float | tuple[float, ...] | None = None,
    std: float | tuple[float, ...] | None = None,
    labels: str | os.PathLike | list[str] | None = None,
    name: str | None = None,
    description: str | None = None,
    version: str = "1",
    author: str = "unknown",
    license: str = "unspecified",
    unsafe: bool = False,
    output: int | str | None = None,
    route: str = "auto",
) -> dict[str, Any]:
    """Convert one model to TFLite or ONNX and verify it, as the compress recipes do (no training).

    model: a Keras 3 .keras, tf-keras .keras/.h5 or SavedModel; with android=True also an
        existing .tflite (metadata is added, nothing is converted).
    quantize: "none", "dynamic", "float16", "int8" or "int16x8" (ONNX: none, dynamic, int8).
        int8 / int16x8 calibrate on the data's calib split, so they need `data`.
    data: a spec for edgekit.data.load_dataset or a Dataset: calibration, verification and the
        accuracy figure use its split (the recipes' default split). None: verification on random
        pixels, no accuracy.
    out: the output file, or a folder (default: ./<model>_<quantization>.<format>).
    android: write TFLite model metadata (name, description, version, author, licence, image
        size and colour space, normalization, output descriptions, labels packed inside) and
        labels.txt and MODEL.md beside the model.
    io_type: int8 / uint8 input and output tensors for --quantize int8 TFLite.
    mean / std: the model's preprocessing, (pixels - mean) / std (default 0 and 255: [0, 1]).
    labels: class labels (a file with one per line, or a list); default: the data's labels.
    output: the output (name or index) holding the class scores of a multi-output model:
        accuracy, top-1 agreement and the Android labels concern it (default: the first).
        Every output is verified.
    route: "auto" (edgekit's converter, then Keras 3's own exporter if it fails), "edgekit" or
        "keras"; the report's conversion.route names the one that made the file.
    """
    from edgekit.export_job import export as _export

    return _export(
        model,
        format=format,
        quantize=quantize,
        data=data,
        out=out,
        android=android,
        io_type=io_type,
        mean=mean,
        std=std,
        labels=labels,
        name=name,
        description=description,
        version=version,
        author=author,
        license=license,
        unsafe=unsafe,
        output=output,
        route=route,
    )


def list_recipes() -> list[dict[str, Any]]:
    """Bundled recipes: name, stages, one-line description, file."""
    from edgekit.recipes import bundled_recipes, load_recipe

    out = []
    for name, path in bundled_recipes().items():
        r = load_recipe(name)
        out.append(
            {
                "name": name,
                "stages": [s.stage for s in r.stages],
                "description": " ".join(r.description.split()),
                "path": str(path),
            }
        )
    return out


def show_recipe(name_or_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """A recipe resolved and validated, with every default filled in."""
    from edgekit.recipes import load_recipe

    return load_recipe(name_or_path, overrides).model_dump(mode="json")


def list_devices() -> list[dict[str, Any]]:
    """Bundled device profiles, one summary each: name, title, kind, cpu, accelerators, calibrated."""
    from edgekit.profiles import list_profiles, load_profile

    return [load_profile(name).summary() for name in list_profiles()]


def show_device(name_or_path: str) -> dict[str, Any]:
    """One device profile (bundled name or YAML path), validated, with its derived values."""
    from edgekit.profiles import load_profile

    return load_profile(name_or_path).resolved()


def new_device(
    name: str,
    *,
    cpuinfo: str | os.PathLike | None = None,
    device: str | None = None,
    adb: str | os.PathLike | None = None,
    clusters: str | list[str] | None = None,
    title: str | None = None,
    kind: str = "phone",
    core_class: str | None = None,
    ram_mb: int | None = None,
    out: str | os.PathLike | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """A device profile for your own phone or board, marked extrapolated, written to `out`
    (default NAME.yaml).

    cpuinfo: a /proc/cpuinfo file ("-" for stdin); or device: "adb" / "adb:SERIAL" to read it,
        the clocks (cpufreq) and RAM over adb. clusters: the SoC's clusters fastest first as
        COUNTxGHZ ("1x2.84,3x2.42,4x1.8"); required with a file. core_class: treat the big cores
        as this core class (for a core edgekit does not know).
    """
    import sys
    from pathlib import Path

    from edgekit.errors import UsageError
    from edgekit.targets.emulated import newdevice

    if (cpuinfo is None) == (device is None):
        raise UsageError("Pass exactly one of --cpuinfo FILE (or -) and --device adb[:SERIAL].")
    max_khz = None
    if device is not None:
        got = newdevice.read_adb(device, adb=None if adb is None else str(adb))
        text, max_khz = got["cpuinfo"], got["max_khz"]
        origin = f"/proc/cpuinfo read over adb from {got['serial']}"
        title = title or (f"{got['model']} (extrapolated)" if got["model"] else None)
        ram_mb = ram_mb if ram_mb is not None else got["ram_mb"]
    elif str(cpuinfo) == "-":
        text, origin = sys.stdin.read(), "a /proc/cpuinfo pasted on stdin"
    else:
        path = Path(cpuinfo)
        if not path.is_file():
            raise UsageError(
                f"--cpuinfo {path} does not exist: save `adb shell cat /proc/cpuinfo` to a file."
            )
        text, origin = path.read_text(errors="replace"), f"/proc/cpuinfo saved as {path.name}"
    result = newdevice.new_profile(
        name,
        text,
        clusters=clusters,
        max_khz=max_khz if not clusters else None,
        title=title,
        kind=kind,
        core_class=core_class,
        ram_mb=ram_mb,
        origin=origin,
    )
    from edgekit.profiles import describe_cpu

    written = newdevice.write_new_profile(result, out or f"{name}.yaml", force=force)
    return {
        "path": str(written),
        "cpu": describe_cpu(result["validated"].cpu),
        "core_class": result["core_class"],
        "constants_from": result["constants_from"],
        "basis": result["basis"],
        "expected_error": result["expected_error"],
        "int8_kernels": result["int8_kernels"],
        "qemu_cpu": result["qemu_cpu"],
        "dropped_features": result["dropped_features"],
        "status": "extrapolated",
        "profile": result["validated"].resolved(),
    }


def setup_devices(force: bool = False, wait: bool = True) -> dict[str, Any]:
    """Provision the emulated arm64 targets (qemu-user, an arm64 Python sysroot, the aarch64
    LiteRT wheel, the instruction-counting plugin) in edgekit's cache; idempotent. A setup
    already running on the same cache is waited for (wait=False: RunLocked at once)."""
    from edgekit.targets.emulated.provision import setup

    return setup(force=force, wait=wait)


def devices_status() -> dict[str, Any]:
    """What the emulated targets have provisioned, what is missing and the command that fixes it."""
    from edgekit.targets.emulated.cache import status

    return status()


def bench(
    models: list[str | os.PathLike] | str | os.PathLike,
    *,
    target: str = "cpu",
    threads: int | None = 1,
    batch: int = 1,
    warmup: int | None = None,
    warmup_seconds: float | None = None,
    runs: int | None = None,
    min_seconds: float | None = None,
    xnnpack: bool = True,
    samples: bool = False,
    seed: int = 0,
    graph_optimization: GraphOptimization | None = None,
    xla: bool = False,
    delegate: Delegate | None = None,
    taskset: str | None = None,
    remote_python: str | None = None,
    ssh_key: str | os.PathLike | None = None,
    known_hosts: str | os.PathLike | None = None,
    connect_timeout: int | None = None,
    remote_timeout: float | None = None,
    benchmark_binary: str | os.PathLike | None = None,
    adb: str | os.PathLike | None = None,
    adb_timeout: float | None = None,
    ignore_limits: bool = False,
) -> dict[str, Any]:
    """Latency of one or more models: load and first-inference time, p50/p90/p95/p99, mean, std,
    cv, throughput, memory, runtime, threads, delegate/provider and machine.

    models: .tflite, .onnx, .keras/.h5 files or SavedModel folders; several are measured
        interleaved (A B A B ...) and compared by p50 ratio to the first, with a 95% interval.
    target: "cpu" or "gpu" (TargetUnavailableError when there is none), "ssh://user@host[:port]"
        (a Linux board with numpy + LiteRT: edgekit's runner measures there) or "adb" /
        "adb:SERIAL" (an Android device: LiteRT's benchmark_model measures there), or a device
        profile name / .yaml path (`list_devices()`): static analysis, instruction counts on an
        emulated arm64 core and a latency estimate (docs/bench.md, "Device profiles"). The
        report's `source` says where the figures come from.
    warmup / warmup_seconds: warm-up runs until both this count and this time are reached
        (None: 10 and 0.1 s; device profiles 1 and 0 s).
    runs: timed runs (None: 100; device profiles 5); min_seconds: time for at least this long
        instead of a count.
    xnnpack: LiteRT's XNNPACK delegate (False: builtin reference kernels).
    samples: include every timed run (ms) in the report.
    graph_optimization ("all", "extended", "basic", "disabled"): ONNX Runtime; xla: Keras.
    delegate ("xnnpack", "none", "gpu", "nnapi"), taskset (hex mask), benchmark_binary, adb,
        adb_timeout: adb targets. remote_python, ssh_key, known_hosts, connect_timeout,
        remote_timeout: ssh targets. ignore_limits: device profiles (run despite
        static-analysis errors such as memory). A target refuses the options it does not take.
    """
    from edgekit.bench.benchmark import bench as _bench
    from edgekit.plans import BenchPlan, TargetOptions

    plan = BenchPlan(
        target=target,
        threads=threads,
        batch=batch,
        warmup=warmup,
        warmup_seconds=warmup_seconds,
        runs=runs,
        min_seconds=min_seconds,
        xnnpack=xnnpack,
        samples=samples,
        seed=seed,
        graph_optimization=graph_optimization,
        xla=xla,
        delegate=delegate,
        taskset=taskset,
        options=TargetOptions(
            remote_python=remote_python,
            ssh_key=ssh_key,
            known_hosts=known_hosts,
            connect_timeout=connect_timeout,
            remote_timeout=remote_timeout,
            benchmark_binary=benchmark_binary,
            adb=adb,
            adb_timeout=adb_timeout,
            ignore_limits=ignore_limits,
        ),
    )
    return _bench(models, plan)


def evaluate(
    model: str | os.PathLike,
    data: Any,
    *,
    reference: str | os.PathLike | None = None,
    top_k: int = 5,
    batch_size: int = 64,
    mean: float | tuple[float, ...] = 0.0,
    std: float | tuple[float, ...] = 255.0,
    target: str = "cpu",
    threads: int | None = None,
    output: int | str | None = None,
    limit: int | None = None,
    remote_python: str | None = None,
    ssh_key: str | os.PathLike | None = None,
    known_hosts: str | os.PathLike | None = None,
    connect_timeout: int | None = None,
    remote_timeout: float | None = None,
    ignore_limits: bool = False,
) -> dict[str, Any]:
    """Top-1 and top-k accuracy, per-class accuracy and confusion matrix of a model on a data
    set; with a reference model, top-1 agreement and mean KL divergence of the outputs.

    data: a spec for edgekit.data.load_dataset ("digits", an image folder, a .npz ...) or a
        Dataset. Images are preprocessed as (pixels - mean) / std for every format.
    target: "cpu", "gpu", "ssh://user@host[:port]" or a device profile name / .yaml (the
        model's outputs from aarch64 LiteRT on an emulated core, plus a `numerics` section:
        how they differ from this machine's LiteRT).
    threads: CPU threads (None: every core; device profiles: 1). limit: evaluate the first N
        images only. remote_python ... remote_timeout: ssh targets; ignore_limits: device
        profiles.
    output: the output (name or index) holding class scores, for models with several outputs.
    """
    from edgekit.bench.evaluation import evaluate as _evaluate
    from edgekit.plans import EvalPlan, TargetOptions

    plan = EvalPlan(
        target=target,
        threads=threads,
        batch_size=batch_size,
        options=TargetOptions(
            remote_python=remote_python,
            ssh_key=ssh_key,
            known_hosts=known_hosts,
            connect_timeout=connect_timeout,
            remote_timeout=remote_timeout,
            ignore_limits=ignore_limits,
        ),
    )
    return _evaluate(
        model,
        data,
        reference=reference,
        top_k=top_k,
        mean=mean,
        std=std,
        output=output,
        limit=limit,
        plan=plan,
    )


def create_baseline(
    model: str | os.PathLike,
    data: Any,
    out: str | os.PathLike = "baseline.json",
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
    latency_metric: LatencyMetric = "time",
    target: str | None = None,
) -> dict[str, Any]:
    """Evaluate a model and write the baseline file that `check` compares candidates with.

    Stores top-1/top-k/per-class accuracy, every image's top-1 prediction and correctness, the
    data and model fingerprints, preprocessing, runtime versions, and the latency as a ratio to a
    reference network timed interleaved with the model (see docs/check.md).
    reference: the latency reference model (default: edgekit's bundled reference network in the
        model's runtime). latency=False: no latency (checks then skip the latency criterion).
    latency_seconds / latency_threads: how long and on how many threads to time (batch 1).
    latency_metric="instructions", target=DEVICE: store instructions per invoke counted on the
        emulated device instead of times (.tflite only; needs `edgekit devices setup`).
    """
    from edgekit.check.baseline import create_baseline as _create

    return _create(
        model,
        data,
        out,
        reference=reference,
        top_k=top_k,
        batch_size=batch_size,
        mean=mean,
        std=std,
        threads=threads,
        output=output,
        limit=limit,
        latency=latency,
        latency_seconds=latency_seconds,
        latency_threads=latency_threads,
        latency_metric=latency_metric,
        target=target,
    )


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
    """Compare a candidate model with a baseline; returns the report (verdict "pass" or "fail",
    one entry per criterion with its numbers, warnings, notes).

    Unset thresholds come from the config file (edgekit.yaml or [tool.edgekit.check] in
    pyproject.toml, found from the working directory; config=False: none), then the defaults:
    max_accuracy_drop 1.0 points, max_class_drop off, max_latency_increase 10 percent,
    significance 0.05. data: None reuses the baseline's data spec; its fingerprint must match.
    junit: write JUnit XML there. github_summary: append markdown to $GITHUB_STEP_SUMMARY (None:
    when it is set). latency_metric / target: default to the baseline's (a different value is
    a UsageError). Raises BaselineError/UsageError/EvaluationError (exit 2) when no comparison
    can be made; a regression is the report's verdict, not an exception.
    """
    from edgekit.check.gate import check as _check

    return _check(
        model,
        baseline,
        data=data,
        max_accuracy_drop=max_accuracy_drop,
        max_class_drop=max_class_drop,
        max_latency_increase=max_latency_increase,
        significance=significance,
        latency=latency,
        latency_seconds=latency_seconds,
        reference=reference,
        mean=mean,
        std=std,
        batch_size=batch_size,
        threads=threads,
        output=output,
        config=config,
        junit=junit,
        github_summary=github_summary,
        latency_metric=latency_metric,
        target=target,
    )


def tune(
    model: str | os.PathLike,
    data: Any,
    *,
    max_accuracy_drop: float | None = 1.0,
    max_latency_ms: float | None = None,
    max_size_mb: float | None = None,
    target: str = "cpu",
    max_trials: int = 30,
    modes: list[str] | tuple[str, ...] | None = None,
    keep: str = "float",
    out: str | os.PathLike | None = None,
    calibration_samples: int = 200,
    eval_samples: int | None = None,
    latency_seconds: float = 4.0,
    threads: int = 1,
    seed: int = 0,
    unsafe: bool = False,
) -> dict[str, Any]:
    """The fastest quantized TFLite model of `model` inside an accuracy / latency / size budget
    (docs/tune.md): the converter's modes, then full int8 with the most sensitive Keras layers
    kept in float (keep="float") or 16-bit activations (keep="int16"), the per-layer sensitivity,
    the Pareto front and the chosen model (verified). Returns the report; its verdict is "met" or
    "not met" (the CLI exits 1). max_accuracy_drop: points of top-1 against the Keras model.
    target: "cpu" (interleaved LiteRT here) or an emulated device profile (instructions).
    max_trials: candidate models built and measured, all kinds together (at least 1).
    """
    from edgekit.tune import MODES, TuneBudget, TunePlan
    from edgekit.tune import tune as _tune

    budget = TuneBudget(
        max_accuracy_drop=max_accuracy_drop, max_latency_ms=max_latency_ms, max_size_mb=max_size_mb
    )
    plan = TunePlan(
        target=target,
        max_trials=max_trials,
        modes=tuple(MODES if modes is None else modes),
        keep=keep,
        calibration_samples=calibration_samples,
        eval_samples=eval_samples,
        latency_seconds=latency_seconds,
        threads=threads,
        seed=seed,
    )
    return _tune(model, data, budget=budget, plan=plan, out=out, unsafe=unsafe)


def report_html(
    source: str | os.PathLike | dict[str, Any],
    out: str | os.PathLike | None = None,
    *,
    kind: str | None = None,
) -> Path:
    """Write the self-contained HTML page of a report (plots inline, no network); returns its path.

    source: a compress run folder (its report.json, and manifest.json when present), a report
        JSON file (what bench, eval or check print with --json), or a report dict.
    out: where the page goes (default: report.html in the run folder, or the JSON file's name
        with .html); required for a dict.
    kind: "compress", "bench", "eval" or "check" (None: told from the report's keys).
    """
    from edgekit.errors import UsageError
    from edgekit.report.html import load_report, write_html

    if isinstance(source, dict):
        if out is None:
            raise UsageError("report_html(dict) needs out= (where to write the page).")
        report, extras = source, {}
    else:
        report, extras, default = load_report(source)
        out = default if out is None else out
    return write_html(report, out, kind, extras=extras)
