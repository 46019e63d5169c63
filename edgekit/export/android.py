"""TFLite model metadata for Android (LiteRT support library, ML Model Binding), without tflite-support.

The metadata is a `ModelMetadata` flatbuffer (schema `metadata_schema.fbs`, file identifier "M001";
bindings in `edgekit/export/_generated`, see their header for the source). It is stored the way the
support library's `MetadataExtractor` looks for it:

- the model flatbuffer gets a `metadata` entry named "TFLITE_METADATA" pointing at a new buffer that
  holds the metadata flatbuffer (the model is re-packed; every other field is kept);
- associated files (the labels) are appended after the model as a zip archive, which TFLite
  readers ignore and the support library opens from the same bytes.

Never imports TensorFlow (LiteRT's generated model schema is enough).
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError

METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MODEL_IDENTIFIER = b"TFL3"
# Every field written here exists in schema 1.0.0 (no subgraph process units, no file versions,
# no tensor groups); the support library refuses metadata that claims a newer parser than it has.
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"

_INT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


@dataclass
class AndroidMetadata:
    """What goes into the metadata of an image classifier.

    mean / std: the preprocessing `(pixels - mean) / std` the model was trained and calibrated
        with; one value, or one per channel.
    class_output: index of the output holding the class scores (labels attach there).
    output_kind: "probabilities" or "logits" for the class output (from the model's outputs).
    """

    name: str
    labels: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str = ""
    version: str = "1"
    author: str = "unknown"
    license: str = "unspecified"
    input_description: str = ""
    class_output: int = 0
    output_kind: str = "probabilities"
    extra: dict[str, Any] = field(default_factory=dict)


def _schema():
    from edgekit.export._generated import metadata_schema_py_generated as md

    return md


def _model_schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _floats(v: float | Sequence[float]) -> tuple[float, ...]:
    if isinstance(v, int | float):
        return (float(v),)
    return tuple(float(a) for a in v)


def normalization_range(
    mean: Sequence[float], std: Sequence[float], channels: int
) -> tuple[list[float], list[float]]:
    """Per-channel [min, max] of `(pixels - mean) / std` for pixels in [0, 255]."""
    m = list(mean) * channels if len(mean) == 1 else list(mean)
    s = list(std) * channels if len(std) == 1 else list(std)
    lo = [min((0.0 - a) / b, (255.0 - a) / b) for a, b in zip(m, s, strict=True)]
    hi = [max((0.0 - a) / b, (255.0 - a) / b) for a, b in zip(m, s, strict=True)]
    return lo, hi


def check_options(
    model_info: dict[str, Any],
    spec: AndroidMetadata,
    *,
    normalization_given: bool,
) -> None:
    """Refuse metadata that contradicts the model, with one line that says why (UsageError).

    model_info: `edgekit.export.tflite.inspect_tflite` of the model.
    normalization_given: whether the user set mean/std explicitly (else they are edgekit's
        defaults or the data's), which changes what the message advises.
    """
    inputs, outputs = model_info["inputs"], model_info["outputs"]
    if len(inputs) != 1:
        raise UsageError(
            f"Android image-classifier metadata needs a model with one image input; this one has "
            f"{len(inputs)}. Export a single-input model."
        )
    shape = inputs[0]["shape"]
    if len(shape) != 4 or any(d is None or d < 1 for d in shape[1:]):
        raise UsageError(
            f"Android image metadata needs an NHWC image input with a fixed size; the input has shape "
            f"{shape}. Export with a fixed image size."
        )
    c = shape[3]
    if c not in (1, 3):
        raise UsageError(
            f"Android image metadata describes RGB (3 channels) or greyscale (1) images; the input has "
            f"{c} channels."
        )
    for name, vals in (("mean", spec.mean), ("std", spec.std)):
        if len(vals) not in (1, c):
            raise UsageError(
                f"--{name} has {len(vals)} values but the model's input has {c} channels. Give one "
                "value, or one per channel."
            )
        if not all(math.isfinite(v) for v in vals):
            raise UsageError(f"--{name} must be finite numbers. Received: {list(vals)}")
    if any(s == 0 for s in spec.std):
        raise UsageError(f"--std must be non-zero. Received: {list(spec.std)}")
    if not spec.labels:
        raise UsageError(
            "Android metadata needs the class labels: pass --data (labels from the data set) or "
            "--labels FILE (one label per line)."
        )
    if not 0 <= spec.class_output < len(outputs):
        raise UsageError(f"The model has no output {spec.class_output}.")
    width = outputs[spec.class_output]["shape"][-1] if outputs[spec.class_output]["shape"] else None
    if width != len(spec.labels):
        raise UsageError(
            f"The model's class output has {width} scores but {len(spec.labels)} labels were given. "
            "Pass the labels the model was trained with."
        )
    q = inputs[0].get("quantization")
    dtype = inputs[0]["dtype"]
    if dtype in _INT_RANGES and q is not None:
        _check_quantized_input(dtype, q, spec, c, normalization_given)


def _check_quantized_input(
    dtype: str, q: dict[str, Any], spec: AndroidMetadata, channels: int, given: bool
) -> None:
    """An integer input already fixes which float range it represents (scale, zero point). Apps
    normalize pixels with the metadata's mean/std and then quantize with those parameters, so
    the normalized pixel range must be the range the input was quantized for."""
    scale, zp = float(q["scale"]), int(q["zero_point"])
    qmin, qmax = _INT_RANGES[dtype]
    rep_lo, rep_hi = (qmin - zp) * scale, (qmax - zp) * scale
    lo, hi = normalization_range(spec.mean, spec.std, channels)
    n_lo, n_hi = min(lo), max(hi)
    span = rep_hi - rep_lo
    # Calibration sees the pixels actually present, so the quantized range can be a little
    # narrower or wider than the full [0, 255] range; a wrong normalization is off by far more.
    slack = 0.25 * span
    fits = n_lo >= rep_lo - slack and n_hi <= rep_hi + slack and (n_hi - n_lo) >= 0.5 * span
    if fits:
        return
    norm = f"mean {_fmt(spec.mean)}, std {_fmt(spec.std)}"
    source = "given" if given else "assumed (edgekit's default, pixels / 255)"
    raise UsageError(
        f"Normalization {norm} ({source}) maps pixels 0..255 to [{n_lo:.4g}, {n_hi:.4g}], but the "
        f"model's {dtype} input is already quantized for [{rep_lo:.4g}, {rep_hi:.4g}] (scale "
        f"{scale:.6g}, zero point {zp}): Android apps would normalize with these values and then "
        "quantize, feeding the model values it was not calibrated for. Pass the --mean/--std the "
        "model was calibrated with, or re-export it from the Keras model with this normalization."
    )


def _fmt(v: Sequence[float]) -> str:
    return ",".join(f"{a:g}" for a in v)


# --- writing -----------------------------------------------------------------------------------


def build_metadata(model_info: dict[str, Any], spec: AndroidMetadata) -> bytes:
    """The ModelMetadata flatbuffer (identifier "M001") for an image classifier."""
    import flatbuffers

    md = _schema()
    inp = model_info["inputs"][0]
    _, h, w, c = inp["shape"]

    image = md.ImagePropertiesT()
    image.colorSpace = md.ColorSpaceType.RGB if c == 3 else md.ColorSpaceType.GRAYSCALE
    image.defaultSize = md.ImageSizeT()
    image.defaultSize.width, image.defaultSize.height = int(w), int(h)
    content = md.ContentT()
    content.contentPropertiesType = md.ContentProperties.ImageProperties
    content.contentProperties = image

    norm = md.NormalizationOptionsT()
    norm.mean, norm.std = list(spec.mean), list(spec.std)
    unit = md.ProcessUnitT()
    unit.optionsType = md.ProcessUnitOptions.NormalizationOptions
    unit.options = norm

    tin = md.TensorMetadataT()
    tin.name = "image"
    tin.description = spec.input_description or _input_description(inp, spec)
    tin.content = content
    tin.processUnits = [unit]
    stats = _input_stats(inp, spec, c)
    if stats is not None:
        tin.stats = md.StatsT()
        tin.stats.min, tin.stats.max = stats

    outs = []
    for i, o in enumerate(model_info["outputs"]):
        t = md.TensorMetadataT()
        t.content = md.ContentT()
        t.content.contentPropertiesType = md.ContentProperties.FeatureProperties
        t.content.contentProperties = md.FeaturePropertiesT()
        if i == spec.class_output:
            probs = spec.output_kind == "probabilities"
            t.name = "probability" if probs else "logits"
            t.description = (
                f"Probabilities of the {len(spec.labels)} labels (softmax; labels in {LABELS_FILE})."
                if probs
                else f"Scores (logits) of the {len(spec.labels)} labels; apply a softmax for "
                f"probabilities (labels in {LABELS_FILE})."
            )
            # The range of the values the tensor holds, as tflite-support's writers record it.
            stats = {"float32": ([0.0], [1.0]), "uint8": ([0.0], [255.0])}.get(o["dtype"])
            if probs and stats is not None:
                t.stats = md.StatsT()
                t.stats.min, t.stats.max = stats
            f = md.AssociatedFileT()
            f.name = LABELS_FILE
            f.description = "Labels for the class scores, one per line, in output order."
            f.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
            t.associatedFiles = [f]
        else:
            t.name = o["name"]
            t.description = f"Model output {i} ('{o['name']}'), shape {o['shape']}."
        outs.append(t)

    sub = md.SubGraphMetadataT()
    sub.name = "image_classifier"
    sub.inputTensorMetadata = [tin]
    sub.outputTensorMetadata = outs

    meta = md.ModelMetadataT()
    meta.name = spec.name
    meta.description = spec.description
    meta.version = spec.version
    meta.author = spec.author
    meta.license = spec.license
    meta.subgraphMetadata = [sub]
    meta.minParserVersion = MIN_PARSER_VERSION

    b = flatbuffers.Builder(1024)
    b.Finish(meta.Pack(b), METADATA_IDENTIFIER)
    return bytes(b.Output())


def _input_description(inp: dict[str, Any], spec: AndroidMetadata) -> str:
    _, h, w, c = inp["shape"]
    colour = "RGB" if c == 3 else "greyscale"
    text = (
        f"{colour} image {w}x{h}, pixels 0..255, normalized as (pixels - mean) / std with "
        f"mean {_fmt(spec.mean)}, std {_fmt(spec.std)}"
    )
    q = inp.get("quantization")
    if inp["dtype"] != "float32" and q is not None:
        zp = int(q["zero_point"])
        shift = f" + {zp}" if zp > 0 else f" - {-zp}" if zp < 0 else ""
        text += f", then quantized to {inp['dtype']} as round(x / {q['scale']:.6g}){shift}"
    return text + "."


def _input_stats(
    inp: dict[str, Any], spec: AndroidMetadata, c: int
) -> tuple[list[float], list[float]] | None:
    # As tflite-support's image writers do: the value range of what the tensor receives.
    if inp["dtype"] == "float32":
        per_channel = len(spec.mean) > 1 or len(spec.std) > 1
        return normalization_range(spec.mean, spec.std, c if per_channel else 1)
    if inp["dtype"] == "uint8":
        return [0.0], [255.0]
    return None


def populate(model: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """The model with `metadata` as its "TFLITE_METADATA" buffer and `files` appended as a zip.

    Any earlier TFLITE_METADATA entry and appended archive are replaced, so populating twice gives
    the same bytes as once.
    """
    import flatbuffers

    schema = _model_schema()
    if len(model) < 8 or model[4:8] != MODEL_IDENTIFIER:
        raise UsageError("Not a TFLite flatbuffer (no 'TFL3' identifier). Pass a .tflite file.")
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    for buf in m.buffers or []:
        if buf.offset and buf.offset > 1:
            raise UsageError(
                "This .tflite keeps its weights outside the flatbuffer (a model over 2 GB); "
                "metadata cannot be added to it."
            )
    m.buffers = [_aligned(b) for b in (m.buffers or [])]
    entry = next((e for e in (m.metadata or []) if _name(e.name) == METADATA_NAME), None)
    data = schema.BufferT()
    data.data = list(metadata)  # small; packed as a byte vector
    if entry is None:
        entry = schema.MetadataT()
        entry.name = METADATA_NAME
        m.metadata = [*(m.metadata or []), entry]
        m.buffers.append(_aligned(data))
        entry.buffer = len(m.buffers) - 1
    else:
        m.buffers[entry.buffer] = _aligned(data)
    b = flatbuffers.Builder(max(1024, len(model) + len(metadata) + 4096))
    b.Finish(m.Pack(b), MODEL_IDENTIFIER)
    out = io.BytesIO(bytes(b.Output()))
    if files:
        out.seek(0, io.SEEK_END)
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as z:
            for name, content in files.items():
                z.writestr(name, content)
    return out.getvalue()


def _name(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v or "")


@functools.cache
def _aligned_buffer_class() -> Any:
    schema = _model_schema()

    class AlignedBuffer(schema.BufferT):
        """BufferT packed with its data 16-byte aligned, as the TFLite schema asks
        (`force_align: 16`); the Python generator ignores that attribute."""

        @classmethod
        def of(cls, b: Any) -> AlignedBuffer:
            a = cls()
            a.data, a.offset, a.size = b.data, b.offset, b.size
            return a

        def Pack(self, builder: Any) -> int:
            import numpy as np

            vec = None
            if self.data is not None and len(self.data):
                payload = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(payload), 16)
                builder.head = builder.head - len(payload)
                builder.Bytes[builder.head : builder.head + len(payload)] = payload
                vec = builder.EndVector()
            schema.BufferStart(builder)
            if vec is not None:
                schema.BufferAddData(builder, vec)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    return AlignedBuffer


def _aligned(b: Any) -> Any:
    return _aligned_buffer_class().of(b)


# --- reading -----------------------------------------------------------------------------------


def metadata_buffer(model: bytes | str | os.PathLike) -> bytes | None:
    """The raw metadata flatbuffer stored in a .tflite, or None when it has none."""
    from edgekit.tflite.reader import TFLiteModel

    return TFLiteModel.read(model).metadata(METADATA_NAME)


def read_metadata(model: bytes | str | os.PathLike) -> dict[str, Any] | None:
    """The metadata as a dict with tflite-support's JSON field names, or None when absent."""
    buf = metadata_buffer(model)
    if buf is None:
        return None
    md = _schema()
    if not md.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0):
        raise UsageError(
            "The model's TFLITE_METADATA buffer is not a metadata flatbuffer (no 'M001')."
        )
    meta = md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAs(buf, 0))
    return _to_json(meta, md)


def associated_files(model: bytes | str | os.PathLike) -> dict[str, bytes]:
    """Files packed after the model (the zip archive), by name."""
    data = _bytes(model)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return {n: z.read(n) for n in z.namelist()}
    except zipfile.BadZipFile:
        return {}


def _bytes(model: bytes | str | os.PathLike) -> bytes:
    return bytes(model) if isinstance(model, bytes | bytearray) else Path(model).read_bytes()


def _snake(name: str) -> str:
    out = []
    for ch in name:
        if ch.isupper():
            out.append("_" + ch.lower())
        else:
            out.append(ch)
    return "".join(out)


def _to_json(obj: Any, md: Any) -> Any:
    """Object-API value -> plain dict/list (enum values as their names, bytes as text)."""
    import numpy as np

    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, bytes):
        return obj.decode()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, list | tuple):
        return [_to_json(v, md) for v in obj]
    enums = {
        "colorSpace": md.ColorSpaceType,
        "type": md.AssociatedFileType,
        "contentPropertiesType": md.ContentProperties,
        "optionsType": md.ProcessUnitOptions,
    }
    out: dict[str, Any] = {}
    for k, v in vars(obj).items():
        if v is None or (isinstance(v, list) and not v):
            continue
        if k in enums and isinstance(v, int):
            names = {val: n for n, val in vars(enums[k]).items() if not n.startswith("_")}
            out[_snake(k)] = names.get(v, v)
        else:
            out[_snake(k)] = _to_json(v, md)
    return out


# --- MODEL.md ----------------------------------------------------------------------------------


def model_card(report: dict[str, Any]) -> str:
    """MODEL.md beside an Android export: inputs, outputs, preprocessing, the run's accuracy and
    latency figures (with where they were measured) and a Kotlin snippet that runs the model."""
    a = report["android"]
    meta = a["metadata"]
    sub = meta["subgraph_metadata"][0]
    tin = sub["input_tensor_metadata"][0]
    conv = report["conversion"]
    inp = conv["inputs"][0]
    outs = conv["outputs"]
    file = Path(report["output"]).name
    _, h, w, c = inp["shape"]
    norm = tin["process_units"][0]["options"]
    mean, std = norm["mean"], norm["std"]
    labels = Path(a["labels_file"]).name
    lines = [
        f"# {meta['name']}",
        "",
        meta.get("description", ""),
        "",
        "| | |",
        "|---|---|",
        f"| file | `{file}` ({report['size_bytes']} bytes, {report['precision']}) |",
        f"| made by | edgekit {report['edgekit_version']} from `{Path(report['model']).name}` |",
        f"| metadata | version {meta.get('version', '-')}, author {meta.get('author', '-')}, "
        f"licence {meta.get('license', '-')}; TFLite model metadata (min parser "
        f"{meta.get('min_parser_version')}) with `{labels}` packed inside the model |",
        "",
        "## Input",
        "",
        f"- `{tin['name']}`: shape {_shape(inp['shape'])}, {inp['dtype']}; "
        f"{'RGB' if c == 3 else 'greyscale'} image, {w}x{h} pixels.",
        f"- Preprocessing: `(pixels - mean) / std` with pixels in 0..255, mean {_fmt(mean)}, "
        f"std {_fmt(std)}.",
    ]
    q = inp.get("quantization")
    if inp["dtype"] != "float32" and q:
        lines.append(
            f"- Then quantized: `q = round(x / {q['scale']:.8g}) + {q['zero_point']}` "
            f"(clamped to {inp['dtype']})."
        )
    lines += ["", "## Outputs", ""]
    for t, o in zip(sub["output_tensor_metadata"], outs, strict=True):
        deq = ""
        oq = o.get("quantization")
        if o["dtype"] != "float32" and oq:
            deq = f" Dequantize: `(q - {oq['zero_point']}) * {oq['scale']:.8g}`."
        lines.append(
            f"- `{t['name']}`: shape {_shape(o['shape'])}, {o['dtype']}. {t.get('description', '')}{deq}"
        )
    lines += ["", "## Figures from this export", ""]
    acc = report.get("accuracy")
    if acc:
        ref = ""
        if acc.get("reference_top1") is not None:
            ref = (
                f"; the source model: {acc['reference_top1'] * 100:.2f}% "
                f"(drop {acc['top1_drop_points']:+.2f} points), top-1 agreement "
                f"{acc['top1_agreement'] * 100:.2f}%"
            )
        lines.append(
            f"- Accuracy: top-1 {acc['top1'] * 100:.2f}% on {acc['samples']} held-out images of "
            f"`{report['data']['name']}`{ref}. Source: {acc['source']}."
        )
    else:
        lines.append("- Accuracy: not measured (no --data given).")
    lat = report["latency"]
    lines.append(
        f"- Latency: p50 {lat['p50_ms']:.3f} ms, mean {lat['mean_ms']:.3f} ms over {lat['runs']} "
        f"runs, batch 1, {lat['threads']} thread, {lat['runtime']} ({lat.get('delegate')}). "
        f"Source: {lat['source']} ({lat['machine']}); not a phone figure: run "
        f"`edgekit bench {file} --target adb` for one."
    )
    v = report.get("verification") or {}
    if v.get("passed"):
        what = (
            f"max abs error {v['max_abs_error']:.2g} on probabilities (tolerance {v['tolerance']:g})"
            if v.get("criterion") == "max_abs_error"
            else f"top-1 agreement {v['top1_agreement']:.3f} (minimum {v['tolerance']:g})"
        )
        lines.append(
            f"- Verification against the source model: passed, {what}, {v['n_samples']} samples "
            f"({v.get('inputs', 'eval split')})."
        )
    lines += [
        "",
        "## Kotlin (LiteRT)",
        "",
        "```kotlin",
        _kotlin(file, labels, inp, outs, mean, std),
    ]
    lines += ["```", ""]
    return "\n".join(lines)


def _shape(shape: list[int]) -> str:
    if shape and shape[0] == -1:
        return f"{[1, *shape[1:]]} (batch dimension dynamic; 1 by default)"
    return str(list(shape))


def _kotlin(
    file: str,
    labels: str,
    inp: dict[str, Any],
    outs: list[dict[str, Any]],
    mean: list[float],
    std: list[float],
) -> str:
    """A Kotlin snippet for the LiteRT Interpreter and support library (one bitmap -> label)."""
    _, h, w, c = inp["shape"]
    k = outs[0]["shape"][-1]
    m = ", ".join(f"{v:g}f" for v in mean)
    s = ", ".join(f"{v:g}f" for v in std)
    q = inp.get("quantization") if inp["dtype"] != "float32" else None
    body = [
        f'val interpreter = Interpreter(FileUtil.loadMappedFile(context, "{file}"),',
        "    Interpreter.Options().setNumThreads(4))",
        f'val labels = FileUtil.loadLabels(context, "{labels}")',
        "val processor = ImageProcessor.Builder()",
        f"    .add(ResizeOp({h}, {w}, ResizeOp.ResizeMethod.BILINEAR))",
    ]
    if c == 1:
        body.append("    .add(TransformToGrayscaleOp())")
    body.append(
        f"    .add(NormalizeOp(floatArrayOf({m}), floatArrayOf({s})))  // (pixels - mean) / std"
    )
    if q and inp["dtype"] == "uint8":
        body += [
            f"    .add(QuantizeOp({q['zero_point']}f, {q['scale']:.8g}f))  // x / scale + zero point",
            "    .add(CastOp(DataType.UINT8))",
        ]
    body += [
        "    .build()",
        "val image = processor.process(TensorImage.fromBitmap(bitmap))  // ARGB_8888",
    ]
    if q and inp["dtype"] == "int8":
        # The support library's CastOp knows UINT8 and FLOAT32 only: int8 is quantized by hand.
        body += [
            "val floats = image.tensorBuffer.floatArray",
            "val input = ByteBuffer.allocateDirect(floats.size).order(ByteOrder.nativeOrder())",
            f"for (v in floats) input.put((Math.round(v / {q['scale']:.8g}f) + "
            f"({q['zero_point']})).coerceIn(-128, 127).toByte())",
            "input.rewind()",
        ]
    else:
        body.append("val input = image.buffer")
    o = outs[0]
    oq = o.get("quantization") if o["dtype"] != "float32" else None
    if oq:
        raw = "output.get().toInt() and 0xFF" if o["dtype"] == "uint8" else "output.get().toInt()"
        body += [
            f"val output = ByteBuffer.allocateDirect({k}).order(ByteOrder.nativeOrder())",
            "interpreter.run(input, output)",
            "output.rewind()",
            f"val scores = FloatArray({k}) {{ (({raw}) - ({oq['zero_point']})) * {oq['scale']:.8g}f }}",
        ]
    else:
        body += [
            f"val output = TensorBuffer.createFixedSize(intArrayOf(1, {k}), DataType.FLOAT32)",
            "interpreter.run(input, output.buffer.rewind())",
            "val scores = output.floatArray",
        ]
    body += [
        "val best = scores.indices.maxByOrNull { scores[it] }!!",
        'Log.i("edgekit", "${labels[best]}: ${scores[best]}")',
    ]
    head = [
        '// build.gradle.kts: implementation("com.google.ai.edge.litert:litert:1.0.1")',
        '//                   implementation("com.google.ai.edge.litert:litert-support:1.0.1")',
        f"// Put {file} and {labels} in app/src/main/assets (keep .tflite uncompressed:",
        '// android { androidResources { noCompress += "tflite" } }).',
        *(f"import {i}" for i in sorted(_kotlin_imports(body))),
        "",
        "// `context`: your Activity or Application; `bitmap`: the image to classify.",
    ]
    return "\n".join(head + body)


_KOTLIN_CLASSES = {
    "Log": "android.util.Log",
    "ByteBuffer": "java.nio.ByteBuffer",
    "ByteOrder": "java.nio.ByteOrder",
    "DataType": "org.tensorflow.lite.DataType",
    "Interpreter": "org.tensorflow.lite.Interpreter",
    "FileUtil": "org.tensorflow.lite.support.common.FileUtil",
    "CastOp": "org.tensorflow.lite.support.common.ops.CastOp",
    "NormalizeOp": "org.tensorflow.lite.support.common.ops.NormalizeOp",
    "QuantizeOp": "org.tensorflow.lite.support.common.ops.QuantizeOp",
    "ImageProcessor": "org.tensorflow.lite.support.image.ImageProcessor",
    "TensorImage": "org.tensorflow.lite.support.image.TensorImage",
    "ResizeOp": "org.tensorflow.lite.support.image.ops.ResizeOp",
    "TransformToGrayscaleOp": "org.tensorflow.lite.support.image.ops.TransformToGrayscaleOp",
    "TensorBuffer": "org.tensorflow.lite.support.tensorbuffer.TensorBuffer",
}


def _kotlin_imports(body: list[str]) -> set[str]:
    text = "\n".join(body)
    return {fq for name, fq in _KOTLIN_CLASSES.items() if re.search(rf"\b{name}\b", text)}
