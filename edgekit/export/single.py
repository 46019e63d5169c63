"""`edgekit export`: one verified conversion of a Keras model, optionally Android-ready.

The same conversion and verification as the compress recipes' export/quantize stages
(`edgekit.export.convert`), with the recipes' defaults for the data split, calibration and
tolerances; no training. With `android=True` the `.tflite` gets TFLite model metadata
(`edgekit.export.android`) and `labels.txt` and `MODEL.md` are written beside it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__, ui
from edgekit.errors import UsageError

QUANTIZE_MODES = ("none", "dynamic", "float16", "int8", "int16x8")
IO_TYPES = ("float32", "int8", "uint8")
FORMATS = ("tflite", "onnx")
CALIBRATED = ("int8", "int16x8")


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
    latency_runs: int = 50,
    output: int | str | None = None,
    route: str = "auto",
) -> dict[str, Any]:
    """Convert, verify and (with android=True) annotate one model; returns the report."""
    from edgekit.artifacts import detect_format

    _check_choices(format, quantize, io_type, android)
    src = Path(model)
    src_format = detect_format(src)
    if src_format == "onnx":
        raise UsageError(
            f"{src.name} is already an ONNX model; `edgekit export` converts Keras models and "
            "SavedModels. Pass the Keras model it came from."
        )
    out_path = _out_path(src, out, format, quantize, io_type, src_format)
    normalization_given = mean is not None or std is not None
    from edgekit.data import Preprocessing

    pre = Preprocessing(mean=0.0 if mean is None else mean, std=255.0 if std is None else std)
    if src_format == "tflite":
        if not android or format != "tflite" or quantize != "none" or io_type != "float32":
            raise UsageError(
                f"{src.name} is already a .tflite model: converting it again is not possible. "
                "Pass --android (alone) to add Android metadata to it, or pass the Keras model."
            )
        if out_path.resolve() == src.resolve():
            raise UsageError("--out must differ from the input model; edgekit never overwrites it.")
    t0 = time.perf_counter()
    loaded = None
    if src_format != "tflite":
        from edgekit.keras_compat import load_model

        loaded = load_model(src, unsafe=unsafe)
    class_output = 0
    if loaded is not None:
        from edgekit.export.convert import class_index

        class_output = class_index(loaded, output)  # a wrong name fails before any work
    elif output is not None:
        raise UsageError(
            "--output names the class output of the Keras model being converted; an existing "
            ".tflite keeps its own outputs. Leave --output out."
        )
    ds, splits = _data(data, src, loaded)
    names = _labels(labels, ds) if android else None  # before any work: a missing file fails fast
    with tempfile.TemporaryDirectory(prefix=".edgekit-export-", dir=_parent(out_path)) as tmp:
        work = Path(tmp) / f"part{out_path.suffix}"
        if src_format == "tflite":
            conv = _copy_tflite(src, work, splits, pre)
        else:
            conv = _convert(
                loaded, src, work, format, quantize, io_type, splits, pre, tmp, class_output, route
            )
        figures = _figures(
            work, splits, pre, conv.get("reference_fn"), latency_runs, conv.get("class_index", 0)
        )
        report: dict[str, Any] = {
            "edgekit_version": __version__,
            "model": str(src),
            "output": str(out_path),
            "format": format,
            "quantization": quantize,
            "precision": conv["precision"],
            "io_type": conv["io_type"],
            "conversion": conv["conversion"],
            "route": conv["conversion"].get("route"),
            "class_output": conv.get("class_output"),
            "verification": conv["verification"],
            "data": ds.describe() if ds is not None else None,
            "preprocessing": pre.to_dict(),
            "accuracy": figures["accuracy"],
            "latency": figures["latency"],
            "android": None,
        }
        files: dict[Path, bytes] = {}
        if android:
            report["android"] = _android(
                work,
                src,
                out_path,
                pre,
                normalization_given,
                names,
                conv,
                name=name,
                description=description,
                version=version,
                author=author,
                license=license,
            )
            files = report["android"].pop("_files")
        if report["verification"].get("artifact"):
            report["verification"]["artifact"] = str(out_path)  # not the temporary name
        report["size_bytes"] = work.stat().st_size
        report["seconds"] = round(time.perf_counter() - t0, 2)
        # Everything was built and checked under a temporary name: only now does it move in.
        from edgekit.artifacts import write_bytes_atomic

        for path, content in files.items():
            if path.name == "MODEL.md":
                from edgekit.export.android import model_card

                content = model_card(report).encode()
            write_bytes_atomic(path, content)
        os.replace(work, out_path)
    ui.info(f"export: wrote {out_path} ({report['size_bytes']} bytes)")
    return report


def _check_choices(format: str, quantize: str, io_type: str, android: bool) -> None:
    if format not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}. Received: {format!r}")
    if quantize not in QUANTIZE_MODES:
        raise UsageError(
            f"--quantize must be one of {', '.join(QUANTIZE_MODES)}. Received: {quantize!r}"
        )
    if io_type not in IO_TYPES:
        raise UsageError(f"--io-type must be one of {', '.join(IO_TYPES)}. Received: {io_type!r}")
    if format == "onnx" and quantize in ("float16", "int16x8"):
        raise UsageError(
            f"ONNX exports are float32, dynamic or int8; {quantize} exists for TFLite only. "
            "Use --format tflite, or --quantize int8 / dynamic."
        )
    if io_type != "float32" and (format != "tflite" or quantize != "int8"):
        raise UsageError(
            f"--io-type {io_type} needs a full-integer TFLite model (--format tflite --quantize "
            "int8). Leave --io-type at float32 otherwise."
        )
    if android and format != "tflite":
        raise UsageError(
            "--android writes TFLite model metadata; it needs --format tflite. Android runs ONNX "
            "models through ONNX Runtime Mobile, which reads no such metadata."
        )


def _out_path(
    src: Path, out: Any, format: str, quantize: str, io_type: str, src_format: str
) -> Path:
    suffix = f".{format}"
    stem = src.stem if src.suffix else src.name
    tag = "float32" if quantize == "none" else quantize
    if io_type != "float32":
        tag += f"_{io_type}io"
    if src_format == "tflite":
        tag = "android"  # metadata added to an existing model
    default_name = f"{stem}_{tag}{suffix}"
    if out is None:
        return Path(default_name)
    p = Path(out)
    if p.is_dir() or str(out).endswith(("/", os.sep)) or not p.suffix:
        return p / default_name  # a folder (made if missing)
    if p.suffix.lower() != suffix:
        raise UsageError(
            f"--out {out} does not end in {suffix} (the format is {format}). Pass a {suffix} path "
            "or a folder."
        )
    return p


def _parent(out_path: Path) -> Path:
    parent = out_path.parent if str(out_path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"Cannot create the output folder {parent} ({e.strerror}).") from None
    if not os.access(parent, os.W_OK):
        raise UsageError(f"Cannot write to {parent}. Choose a writable --out.")
    return parent


def _data(data: Any, src: Path, loaded: Any) -> tuple[Any, dict[str, Any]]:
    """The data set and its split as the compress recipes make it (default split and seed)."""
    if data is None:
        return None, {}
    from edgekit.data import Dataset, load_dataset
    from edgekit.recipes import DataConfig

    shape = _input_shape(src, loaded)
    ds = data if isinstance(data, Dataset) else load_dataset(data, image_size=shape[:2])
    if tuple(ds.image_shape) != tuple(shape):
        from edgekit.errors import DataError

        raise DataError(
            f"Data images are {tuple(ds.image_shape)} but the model expects {tuple(shape)}. Use "
            "data with the model's image size and channels."
        )
    cfg = DataConfig()
    return ds, ds.split(cfg.split.fractions(), seed=cfg.seed)


def _input_shape(src: Path, loaded: Any) -> tuple[int, ...]:
    if loaded is None:
        from edgekit.export.tflite import inspect_tflite

        return tuple(inspect_tflite(src)["inputs"][0]["shape"][1:])
    return tuple(loaded.input_shape)


def _samples(splits: dict[str, Any], split: str, n: int, pre: Any, shape: tuple[int, ...]):
    """Preprocessed samples and labels of a split; seeded random pixels without data."""
    if splits:
        ds = splits[split]
        return np.asarray(pre.apply(ds.x[:n]), dtype=np.float32), (
            ds.y[:n] if ds.y is not None else None
        )
    pixels = np.random.default_rng(0).integers(0, 256, (min(n, 64), *shape)).astype(np.float32)
    return np.asarray(pre.apply(pixels), dtype=np.float32), None


def _convert(
    loaded: Any,
    src: Path,
    work: Path,
    format: str,
    quantize: str,
    io_type: str,
    splits: dict[str, Any],
    pre: Any,
    tmp: str,
    class_output: int = 0,
    route: str = "auto",
) -> dict[str, Any]:
    from edgekit.export.convert import convert_one, verify_one
    from edgekit.recipes import QuantizeStage, Verification

    if quantize in CALIBRATED and not splits:
        raise UsageError(
            f"--quantize {quantize} calibrates on real images: pass --data (the data the model was "
            "trained on, or a sample of it)."
        )
    shape = tuple(loaded.input_shape)
    verify, qdefaults = Verification(), QuantizeStage()
    x, y = _samples(splits, "eval", verify.samples, pre, shape)
    ref = loaded.predict(x)  # every output: each one is verified
    calib = (
        _samples(splits, "calib", qdefaults.calibration_samples, pre, shape)[0] if splits else None
    )
    ui.info(f"export: converting {src.name} to {format} ({quantize})")
    info, precision = convert_one(
        loaded,
        format,
        quantize,
        work,
        calibration=calib,
        calibration_samples=qdefaults.calibration_samples,
        io_type=io_type,
        per_channel=qdefaults.per_channel,
        reduce_range=qdefaults.onnx_reduce_range,
        float_onnx=Path(tmp) / ".float_for_quantization.onnx",
        route=route,
    )
    inputs = (
        "eval split"
        if splits
        else "random pixels (no --data: pass --data to verify on real images)"
    )
    ui.info(f"export: verifying against the Keras model on {len(x)} samples ({inputs})")
    labels = list(splits["eval"].labels) if splits else None
    verification = verify_one(
        work,
        ref,
        x,
        y,
        precision=precision,
        verify=verify,
        labels=labels,
        loaded=loaded,
        class_output=class_output,
    )
    verification["inputs"] = inputs
    return {
        "precision": precision,
        "io_type": info.get("io_type", "float32") if format == "tflite" else "float32",
        "conversion": {k: v for k, v in info.items() if k != "path"},
        "verification": verification,
        "class_output": loaded.output_names[class_output],
        "class_index": class_output,
        "reference_outputs": _pick(ref, class_output),
        "reference_fn": lambda xb: _pick(loaded.predict(xb), class_output),
    }


def _pick(out: Any, index: int) -> np.ndarray:
    return out[index] if isinstance(out, list) else out


def _copy_tflite(src: Path, work: Path, splits: dict[str, Any], pre: Any) -> dict[str, Any]:
    """An existing .tflite: nothing to convert; its outputs are the reference for the metadata
    check (the annotated model must compute exactly the same)."""
    from edgekit.export.tflite import inspect_tflite
    from edgekit.runtimes import open_runner

    shutil.copyfile(src, work)
    info = inspect_tflite(work)
    shape = tuple(info["inputs"][0]["shape"][1:])
    x, _ = _samples(splits, "eval", 64, pre, shape)
    with open_runner(work) as r:
        ref = r.run(x)[0]
    return {
        "precision": _tflite_precision(info),
        "io_type": info["input_dtype"],
        "conversion": {"source": "existing .tflite (not converted)", **info},
        "verification": {"passed": None, "skipped": "not converted by edgekit"},
        "reference_outputs": ref,
        "reference_fn": None,
    }


def _tflite_precision(info: dict[str, Any]) -> str:
    if info["integer_compute_ops"] and not info["float_compute_ops"]:
        return "int8"
    if info["tensor_dtypes"].get("float16"):
        return "float16"
    if info["tensor_dtypes"].get("int8"):
        return "dynamic"
    return "float32"


def _figures(
    path: Path, splits: dict[str, Any], pre: Any, reference_fn: Any, runs: int, index: int = 0
) -> dict[str, Any]:
    """Accuracy on the held-out eval split (with data) and p50 latency, both on this machine."""
    from edgekit.bench.latency import measure
    from edgekit.bench.machine import machine_line
    from edgekit.runtimes import open_runner

    accuracy = None
    with open_runner(path, threads=1) as runner:
        if splits and splits["eval"].labeled:
            from edgekit.bench.metrics import evaluate

            m = evaluate(
                lambda xb: runner.run(xb)[index],
                splits["eval"],
                pre,
                64,
                reference_fn=reference_fn,
                description="export: accuracy on the eval split",
            )
            ref = m.get("reference") or {}
            accuracy = {
                "top1": m["top1"],
                "reference_top1": ref.get("reference_top1"),
                "top1_drop_points": None
                if ref.get("top1_drop") is None
                else round(100 * ref["top1_drop"], 2),
                "top1_agreement": ref.get("top1_agreement"),
                "samples": m["count"],
                "split": "eval (held out, as in the compress recipes)",
                "source": "measured on this machine",
            }
        x = np.asarray(pre.apply(np.full((1, *runner.input.shape[1:]), 128.0)), dtype=np.float32)
        st = measure(runner, x, runs=max(1, int(runs)), warmup=5, warmup_seconds=0.2)
        d = runner.describe()
    latency = {
        "p50_ms": st.p50,
        "mean_ms": st.mean,
        "p90_ms": st.p90,
        "runs": st.count,
        "threads": 1,
        "batch": 1,
        "runtime": f"{d['runtime']} {d['runtime_version']}",
        "delegate": d.get("delegate") or d.get("provider"),
        "machine": machine_line(),
        "source": "measured on this machine",
    }
    return {"accuracy": accuracy, "latency": latency}


def _android(
    work: Path,
    src: Path,
    out_path: Path,
    pre: Any,
    normalization_given: bool,
    names: list[str],
    conv: dict[str, Any],
    **general: Any,
) -> dict[str, Any]:
    from edgekit.bench.metrics import PROB_TOLERANCE
    from edgekit.export import android as A
    from edgekit.export.tflite import inspect_tflite
    from edgekit.runtimes import open_runner

    info = inspect_tflite(work)
    k = len(names)
    outs = info["outputs"]
    wanted = f"output_{conv['class_index']}" if "class_index" in conv else None
    class_output = next(
        (i for i, o in enumerate(outs) if o["name"] == wanted),
        next((i for i, o in enumerate(outs) if o["shape"] and o["shape"][-1] == k), 0),
    )
    ref = np.asarray(conv["reference_outputs"], dtype=np.float64).reshape(
        len(conv["reference_outputs"]), -1
    )
    # The same test as edgekit.bench.metrics.to_probabilities: rows >= 0 that sum to 1.
    is_probs = bool((ref >= 0).all() and np.all(np.abs(ref.sum(axis=1) - 1.0) <= PROB_TOLERANCE))
    shape = info["inputs"][0]["shape"]
    spec = A.AndroidMetadata(
        name=general["name"] or out_path.stem,
        labels=names,
        mean=A._floats(pre.mean),
        std=A._floats(pre.std),
        description=general["description"]
        or (
            f"Image classifier: {shape[2]}x{shape[1]} {'RGB' if shape[3] == 3 else 'greyscale'} "
            f"image -> {k} classes ({', '.join(names[:8])}{', ...' if k > 8 else ''}). "
            f"{conv['precision']} TFLite, exported by edgekit {__version__} from {src.name}."
        ),
        version=str(general["version"]),
        author=str(general["author"]),
        license=str(general["license"]),
        class_output=class_output,
        output_kind="probabilities" if is_probs else "logits",
    )
    A.check_options(info, spec, normalization_given=normalization_given)
    plain = work.read_bytes()
    labels_text = "".join(f"{n}\n" for n in names).encode()
    annotated = A.populate(plain, A.build_metadata(info, spec), {A.LABELS_FILE: labels_text})
    work.write_bytes(annotated)
    # The metadata must not change what the model computes: LiteRT loads it and gives the same
    # outputs as the model without metadata, bit for bit.
    x = _probe(info)
    with open_runner(work) as r1:
        got = r1.run(x)
    tmp_plain = work.with_name("plain.tflite")
    tmp_plain.write_bytes(plain)
    with open_runner(tmp_plain) as r0:
        want = r0.run(x)
    tmp_plain.unlink()
    same = all(np.array_equal(a, b) for a, b in zip(got, want, strict=True))
    if not same:
        from edgekit.errors import StageError

        raise StageError(
            "Adding metadata changed the model's outputs in LiteRT; this is a bug in edgekit. "
            "The model was not written."
        )
    folder = out_path.parent
    return {
        "metadata": A.read_metadata(annotated),
        "associated_files": sorted(A.associated_files(annotated)),
        "labels_file": str(folder / A.LABELS_FILE),
        "model_card": str(folder / "MODEL.md"),
        "litert_check": {
            "loads": True,
            "outputs_identical_to_plain_model": True,
            "samples": len(x),
        },
        "_files": {folder / A.LABELS_FILE: labels_text, folder / "MODEL.md": b""},
    }


def _probe(info: dict[str, Any]) -> np.ndarray:
    shape = tuple(info["inputs"][0]["shape"][1:])
    return np.random.default_rng(1).random((4, *shape), dtype=np.float32)


def _labels(labels: Any, ds: Any) -> list[str]:
    if labels is None:
        if ds is None:
            raise UsageError(
                "--android needs the class labels: pass --data (labels from the data set) or "
                "--labels FILE (one label per line)."
            )
        return [str(n) for n in ds.labels]
    if isinstance(labels, list | tuple):
        return [str(n) for n in labels]
    p = Path(labels)
    if not p.is_file():
        raise UsageError(
            f"--labels file {p} does not exist. Pass a text file with one label per line."
        )
    names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not names:
        raise UsageError(f"--labels file {p} is empty. Put one label per line, in output order.")
    return names
