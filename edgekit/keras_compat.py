"""The one module that imports `keras` (Keras 3) and `tf_keras` (Keras 2).

It loads every Keras model format users bring (Keras 3 `.keras`, tf-keras `.keras` / `.h5`,
SavedModel folders) into a `LoadedModel` with one interface, and rebuilds Keras 3 models as
equivalent tf_keras models (`to_tf_keras`) because tfmot only works on tf_keras.

The top level imports nothing heavy: TensorFlow and both Keras packages are imported inside the
functions that need them, so `import edgekit.keras_compat` stays cheap.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifacts import atomic_path, detect_format, sha256_path
from edgekit.errors import (
    DataError,
    EdgekitError,
    ModelLoadError,
    StageError,
    UnsupportedModelError,
    UsageError,
)

__all__ = [
    "BridgeResult",
    "LoadedModel",
    "keras",
    "load_model",
    "save_model",
    "tf_keras",
    "to_tf_keras",
    "wrap",
]

FLAVORS = ("keras3", "tf_keras", "savedmodel")

_UNSAFE_HINT = "Pass --unsafe (CLI) or unsafe=True (Python) only for files you trust."


# --------------------------------------------------------------------------------------------
# Lazy imports, with TF's log noise turned down


# Native start-up lines TF, XLA and CUDA stubs print on every CPU-only import, whatever
# TF_CPP_MIN_LOG_LEVEL says (absl logs before InitializeLog() go straight to stderr).
_BENIGN_NATIVE_LOG = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|cudart_stub|Could not find cuda drivers"
    r"|cuInit|rebuild TensorFlow with the appropriate compiler flags|TF-TRT Warning"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions"
)


@contextlib.contextmanager
def _native_stderr_filtered() -> Iterator[None]:
    """Hold back the known, harmless native start-up lines while TF / Keras import.

    Everything else written to stderr meanwhile (real errors) is passed on afterwards. With
    TF_CPP_MIN_LOG_LEVEL=0 nothing is filtered.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            text = buf.read().decode(errors="replace")
            kept = [
                ln for ln in text.splitlines() if ln.strip() and not _BENIGN_NATIVE_LOG.search(ln)
            ]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


def _filtered_unless_imported(module: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext() if module in sys.modules else _native_stderr_filtered()


def _tf() -> Any:
    """Import TensorFlow with its C++ and Python logs limited to errors (unless the user chose)."""
    if "tensorflow" in sys.modules and _tf_ready:
        return sys.modules["tensorflow"]
    # Only effective before TF's first import; a user's own TF_CPP_MIN_LOG_LEVEL wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _native_stderr_filtered():
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA probing logs now, inside the filter
    _quiet_python_logs(tf)
    return tf


def _quiet_python_logs(tf: Any) -> None:
    global _tf_ready
    _tf_ready = True
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    tf.get_logger().setLevel("ERROR")
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with TF; be tolerant anyway
        pass


_tf_ready = False


def keras() -> Any:
    """The Keras 3 module (`import keras`), for edgekit modules that need layers or applications."""
    _tf()
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    wrong = UsageError(
        "edgekit needs Keras 3 on the TensorFlow backend, but KERAS_BACKEND="
        f"{os.environ['KERAS_BACKEND']}. Unset KERAS_BACKEND or set it to tensorflow."
    )
    try:
        with _filtered_unless_imported("keras"):
            import keras as _keras
    except ImportError:
        if os.environ["KERAS_BACKEND"] != "tensorflow":
            raise wrong from None
        raise
    if _keras.backend.backend() != "tensorflow":
        raise wrong
    return _keras


def tf_keras() -> Any:
    """The tf_keras (Keras 2) module, which tfmot needs."""
    _tf()
    with _filtered_unless_imported("tf_keras"):
        import tf_keras as _tf_keras

    _register_bridge_activations(_tf_keras)
    _bridge_layer_classes(_tf_keras)
    return _tf_keras


# --------------------------------------------------------------------------------------------
# LoadedModel


def _natural_key(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _spec_name(name: str) -> str:
    """A name TF accepts for a TensorSpec / op (and so for TFLite and ONNX inputs)."""
    clean = re.sub(r"[^A-Za-z0-9_.\-]", "_", name or "input")
    return clean if clean[:1].isalnum() else f"x{clean}"


def _dims(shape: Any) -> tuple[int | None, ...]:
    return tuple(None if d is None else int(d) for d in shape)


class LoadedModel:
    """A loaded image classifier with one interface for every flavor.

    flavor: "keras3" (a Keras 3 model), "tf_keras" (a tf_keras model) or "savedmodel" (a plain TF
    SavedModel run through its serving signature). Outputs always come in `output_names` order.
    """

    def __init__(self, model: Any, flavor: str, path: str | os.PathLike | None = None):
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
        self.model = model
        self.flavor = flavor
        self.path = Path(path) if path is not None else None
        self._sha256: str | None = None
        self._fn: Any = None
        if flavor == "savedmodel":
            self._inspect_savedmodel()
        else:
            self._inspect_keras()

    # -- inspection ------------------------------------------------------------------------

    def _where(self) -> str:
        return str(self.path) if self.path else f"model '{getattr(self.model, 'name', '?')}'"

    def _inspect_keras(self) -> None:
        m = self.model
        try:
            inputs = list(m.inputs or [])
            outputs = list(m.outputs or [])
        except (AttributeError, ValueError):
            inputs, outputs = [], []
        if (not inputs or not outputs) and self.flavor == "keras3":
            wrapped = _functional_wrapper(m)
            if wrapped is not None:
                # A subclassed model that was built (its build config records the input shape):
                # called once on a keras.Input it becomes one node of a functional model, which
                # every stage takes. Its own class does the computing.
                self.model = m = wrapped
                inputs, outputs = list(m.inputs), list(m.outputs)
        if not inputs or not outputs:
            raise UnsupportedModelError(
                f"{self._where()} has no defined inputs (a subclassed or unbuilt model). "
                "Expected a functional or Sequential model that starts with keras.Input(shape=...)."
            )
        if self.flavor == "keras3":
            in_names = [_history_name(t) for t in inputs]
            out_names = list(
                getattr(m, "output_names", None) or [_history_name(t) for t in outputs]
            )
        else:
            in_names = list(getattr(m, "input_names", None) or [t.name for t in inputs])
            out_names = list(getattr(m, "output_names", None) or [t.name for t in outputs])
        self._check_one_image_input(in_names, [_dims(t.shape) for t in inputs])
        self.input_name = _spec_name(in_names[0])
        self.output_names = _dedupe([str(n) for n in out_names])
        self._out_shapes = [_dims(t.shape) for t in outputs]
        self._signature = None

    def _inspect_savedmodel(self) -> None:
        sigs = getattr(self.model, "signatures", {}) or {}
        key = "serving_default" if "serving_default" in sigs else next(iter(sigs), None)
        if key is None:
            raise UnsupportedModelError(
                f"{self._where()} is a SavedModel without a serving signature. "
                "Re-export it with a signature (Keras 3: model.export(path); TF: "
                "tf.saved_model.save(obj, path, signatures=...))."
            )
        sig = sigs[key]
        args, kwargs = sig.structured_input_signature
        specs = dict(kwargs)
        if args:
            specs.update({s.name: s for s in args})
        self._check_one_image_input(list(specs), [_dims(s.shape) for s in specs.values()])
        (self._sig_input,) = specs  # the signature's own keyword
        self.input_name = _spec_name(self._sig_input)
        outs = sig.structured_outputs
        if not isinstance(outs, dict):
            outs = {f"output_{i}": t for i, t in enumerate(_flatten(outs))}
        self.output_names = sorted(outs, key=_natural_key)
        self._out_shapes = [_dims(outs[k].shape) for k in self.output_names]
        self._signature = sig
        self._in_shape = _dims(next(iter(specs.values())).shape)

    def _check_one_image_input(self, names: list[str], shapes: list[tuple]) -> None:
        if len(names) != 1:
            raise UnsupportedModelError(
                f"{self._where()} has {len(names)} inputs ({', '.join(map(str, names))}); edgekit "
                "handles image classifiers with exactly one image input (N, H, W, C)."
            )
        if len(shapes[0]) != 4:
            raise UnsupportedModelError(
                f"{self._where()} takes input of shape {shapes[0]}; expected one image input "
                "(N, H, W, C)."
            )
        self._in_shape = shapes[0]

    # -- public properties -----------------------------------------------------------------

    @property
    def input_shape(self) -> tuple[int | None, int | None, int | None]:
        """(H, W, C) of the image input, None for a dimension the model leaves open."""
        return self._in_shape[1:]  # type: ignore[return-value]

    @property
    def batch_dim(self) -> int | None:
        """The batch size the model is fixed to, or None when any batch size works."""
        return self._in_shape[0]

    @property
    def output_shapes(self) -> list[tuple[int | None, ...]]:
        return list(self._out_shapes)

    @property
    def num_classes(self) -> int | None:
        """Size of the last axis of the first output."""
        last = self._out_shapes[0][-1] if self._out_shapes[0] else None
        return None if last is None else int(last)

    @property
    def name(self) -> str:
        if self.flavor == "savedmodel":
            return self.path.name if self.path else "savedmodel"
        return str(self.model.name)

    @property
    def sha256(self) -> str | None:
        """sha256 of the file or folder the model was loaded from (None for in-memory models)."""
        if self._sha256 is None and self.path is not None:
            self._sha256 = sha256_path(self.path)
        return self._sha256

    def count_params(self) -> int | None:
        """Number of weights (trainable and not); None when it cannot be told."""
        if self.flavor != "savedmodel":
            return int(self.model.count_params())
        variables = getattr(self._signature, "variables", None)
        if not variables:
            return None
        return int(sum(int(np.prod(v.shape)) for v in variables))

    def __repr__(self) -> str:
        return (
            f"LoadedModel(flavor={self.flavor!r}, name={self.name!r}, "
            f"input_shape={self.input_shape}, outputs={self.output_names})"
        )

    # -- running -----------------------------------------------------------------------------

    def __call__(self, x: Any) -> Any:
        """The model on a tensor in inference mode, inside a tf.function too (the online
        teacher): a tensor, or a list in output order."""
        return self._call(x)

    def _call(self, x: Any) -> Any:
        """Call the model on a tensor in inference mode; a tensor or a list in output order."""
        if self.flavor == "savedmodel":
            out = self._signature(**{self._sig_input: x})
            outs = [out[k] for k in self.output_names]
        else:
            outs = _flatten(self.model(x, training=False))
        return outs[0] if len(outs) == 1 else outs

    def tf_function(self) -> Any:
        """A `tf.function` taking one float32 NHWC tensor (for `tf2onnx.convert.from_function`).

        Pass `input_signature=self.input_signature(batch_size)` alongside it.
        """
        if self._fn is None:
            tf = _tf()
            self._fn = tf.function(self._call, reduce_retracing=True)
        return self._fn

    def input_signature(self, batch_size: int | None = None) -> list[Any]:
        """`[tf.TensorSpec]` for the image input, named after the model's input."""
        tf = _tf()
        batch = self.batch_dim if batch_size is None else int(batch_size)
        shape = (batch, *self.input_shape)
        return [tf.TensorSpec(shape, tf.float32, name=self.input_name)]

    def concrete_function(self, batch_size: int | None = None) -> Any:
        """A ConcreteFunction with an explicit input TensorSpec named after the model input.

        The weights are frozen into constants, so it needs no trackable object: feed it to
        `tf.lite.TFLiteConverter.from_concrete_functions([fn])`. Outputs are one tensor, or a
        list in `output_names` order.
        """
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        tf = _tf()
        spec = self.input_signature(batch_size)
        # Frozen: weights become constants. TFLite otherwise keeps Keras 3 variables as
        # VAR_HANDLE ops that nothing initializes, and the converted model outputs NaN.
        frozen = convert_variables_to_constants_v2(self.tf_function().get_concrete_function(*spec))
        n_out = len(self.output_names)

        # Freezing drops the structured signature; wrap it again so the input TensorSpec (and
        # its name) and the output structure are explicit.
        @tf.function(input_signature=spec)
        def serve(x):
            outs = _flatten(frozen(x))
            return outs[0] if n_out == 1 else outs

        return serve.get_concrete_function()

    def _check_x(self, x: Any) -> np.ndarray:
        streamed = getattr(x, "streamed", False)  # edgekit.data.stream: decoded per slice
        x = x if streamed else np.asarray(x)
        want = self.input_shape
        ok = x.ndim == 4 and all(
            w is None or w == g for w, g in zip(want, x.shape[1:], strict=True)
        )
        if not ok:
            shown = ", ".join("?" if d is None else str(d) for d in want)
            raise DataError(
                f"Expected input of shape (N, {shown}) for {self.name}; received {x.shape}. "
                "Resize the images or pass the model that matches them."
            )
        return x if streamed else x.astype(np.float32, copy=False)

    def predict(self, x: Any, batch_size: int = 64) -> np.ndarray | list[np.ndarray]:
        """Run the model on float32 NHWC input in inference mode, in batches, without progress bars.

        Returns one array for a single-output model, else a list in `output_names` order.
        """
        tf = _tf()
        x = self._check_x(x)
        n = len(x)
        fixed = self.batch_dim
        step = fixed if fixed else max(1, int(batch_size))
        fn = self.tf_function()
        parts: list[list[np.ndarray]] = [[] for _ in self.output_names]
        for start in range(0, n, step):
            chunk = x[start : start + step]
            real = len(chunk)
            if fixed and real < fixed:  # a model with a fixed batch: pad the last batch
                pad = np.zeros((fixed - real, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            outs = _flatten(fn(tf.constant(chunk)))
            for i, o in enumerate(outs):
                parts[i].append(np.asarray(o)[:real])
        if n == 0:
            res = [np.zeros((0, *s[1:]), np.float32) for s in self._out_shapes]
        else:
            res = [np.concatenate(p) for p in parts]
        return res[0] if len(res) == 1 else res


def _functional_wrapper(m: Any) -> Any:
    """A functional model around a built subclassed Keras 3 model, or None when it was never
    built with one image input."""
    try:
        cfg = m.get_build_config() or {}
    except Exception:
        return None
    shape = cfg.get("input_shape")
    if not isinstance(shape, list | tuple) or len(shape) != 4:
        return None
    if not all(isinstance(d, int) or d is None for d in shape):
        return None
    k = keras()
    try:
        # Built on one sample or one batch: the batch dimension stays open.
        inp = k.Input(shape=tuple(shape[1:]), name="image")
        return k.Model(inp, m(inp), name=m.name)
    except Exception:
        return None


def _history_name(t: Any) -> str:
    """The name of the layer that made a Keras 3 tensor (the InputLayer's name for inputs)."""
    hist = getattr(t, "_keras_history", None)
    op = getattr(hist, "operation", None)
    return str(getattr(op, "name", None) or t.name)


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            n = f"{n}_{seen[n]}"
        seen.setdefault(n, 0)
        out.append(n)
    return out


def _flatten(x: Any) -> list[Any]:
    if isinstance(x, dict):
        return [v for _, v in x.items()]
    if isinstance(x, (list, tuple)):
        return [v for item in x for v in _flatten(item)]
    return [x]


# --------------------------------------------------------------------------------------------
# wrap / load / save


def _flavor_of(model: Any) -> str | None:
    for cls in type(model).__mro__:
        mod = cls.__module__ or ""
        if mod.startswith("tf_keras."):
            return "tf_keras" if isinstance(model, tf_keras().Model) else None
        if mod.startswith("keras."):
            return "keras3" if isinstance(model, keras().Model) else None
    if hasattr(model, "signatures"):
        return "savedmodel"
    return None


def wrap(model: Any) -> LoadedModel:
    """Wrap an in-memory Keras 3 or tf_keras model (or a tf.saved_model.load result)."""
    if isinstance(model, LoadedModel):
        return model
    flavor = _flavor_of(model)
    if flavor is None:
        raise UnsupportedModelError(
            f"Expected a Keras 3 or tf_keras Model; received {type(model).__module__}."
            f"{type(model).__name__}. Load files with edgekit.keras_compat.load_model(path)."
        )
    return LoadedModel(model, flavor)


def load_model(
    path: str | os.PathLike,
    *,
    unsafe: bool = False,
    custom_objects: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load a Keras 3 `.keras`, tf-keras `.keras` / `.h5` or SavedModel folder as a LoadedModel.

    Lambda layers (code inside the file) are refused unless `unsafe=True`. Custom layer classes need
    `custom_objects={"Name": cls}`. Every failure is a one-line ModelLoadError.
    """
    p = Path(path)
    fmt = detect_format(p)
    if fmt in ("tflite", "onnx"):
        raise ModelLoadError(
            f"{p} is a {fmt.upper()} model; this step needs the Keras model it came from "
            "(.keras, .h5 or a SavedModel folder)."
        )
    h5_keras_version = _check_h5(p) if fmt == "h5" else ""
    config = _read_config(p, fmt)
    if config is not None:
        _refuse_unsafe(p, config, unsafe=unsafe, custom_objects=custom_objects or {})
    if fmt == "savedmodel" and not unsafe:
        _refuse_file_ops(p)  # a graph that reads or writes files is refused before it can run
    custom_objects = dict(custom_objects or {})
    is_tf_keras_savedmodel = fmt == "savedmodel" and (p / "keras_metadata.pb").is_file()
    flavor = "savedmodel"
    if fmt == "keras3" or h5_keras_version.startswith("3"):  # Keras 3 also writes legacy .h5
        flavor = "keras3"
    elif fmt in ("tf_keras", "h5") or is_tf_keras_savedmodel:
        flavor = "tf_keras"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if flavor == "keras3":
                model = keras().saving.load_model(
                    p, custom_objects=custom_objects, compile=False, safe_mode=not unsafe
                )
            elif flavor == "tf_keras":
                model = tf_keras().models.load_model(
                    str(p), custom_objects=custom_objects, compile=False, safe_mode=not unsafe
                )
            else:
                model = _tf().saved_model.load(str(p))
    except EdgekitError:
        raise
    except Exception as e:  # anything from TF / Keras: turn it into one clean line
        raise _load_error(p, fmt, e, config) from None
    return LoadedModel(model, flavor, p)


def save_model(model: Any, path: str | os.PathLike) -> Path:
    """Save a Keras 3 / tf_keras model (or a LoadedModel) atomically; the suffix picks the format.

    `.keras` for both; `.h5` for tf_keras only; a path without suffix becomes a SavedModel folder
    (tf_keras: a Keras SavedModel; Keras 3: `model.export`, a plain TF SavedModel).
    """
    loaded = wrap(model)
    dest = Path(path)
    suffix = dest.suffix.lower()
    m = loaded.model
    if suffix not in ("", ".keras", ".h5", ".hdf5"):
        raise UsageError(
            f"Cannot save a model to {dest}: expected a .keras or .h5 file name, or a folder "
            "name without suffix for a SavedModel."
        )
    if loaded.flavor == "savedmodel" and suffix:
        raise UsageError(
            f"{loaded.name} is a plain SavedModel; it can only be saved as a SavedModel folder "
            f"(a path without suffix), not {dest.name}."
        )
    if loaded.flavor == "keras3" and suffix in (".h5", ".hdf5"):
        raise UsageError(
            f"Keras 3 models are saved as .keras, not {suffix}; use {dest.with_suffix('.keras')}."
        )
    try:
        with atomic_path(dest) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if loaded.flavor == "savedmodel":
                tf = _tf()
                tf.saved_model.save(m, str(tmp), signatures=dict(m.signatures))
            elif not suffix and loaded.flavor == "keras3":
                m.export(str(tmp), verbose=False)
            elif not suffix:
                m.save(str(tmp), save_format="tf")
            else:
                m.save(str(tmp))
    except OSError as e:
        raise UsageError(f"Cannot write the model to {dest} ({e.strerror or e}).") from e
    except Exception as e:  # nothing half-written is left (atomic_path); say why in one line
        raise StageError(
            f"Could not save {loaded.name} to {dest}: {type(e).__name__}: {_first_line(e)}"
        ) from e
    return dest


# -- load helpers ------------------------------------------------------------------------------


def _check_h5(p: Path) -> str:
    """Check an .h5 file opens and holds a model; returns the Keras version that wrote it."""
    import h5py

    try:
        with h5py.File(p, "r") as f:
            has_config = "model_config" in f.attrs
            version = f.attrs.get("keras_version", "")
    except OSError as e:
        reason = str(e).split("(", 1)[-1].rstrip(")") if "(" in str(e) else str(e)
        raise ModelLoadError(
            f"{p} is a damaged or truncated .h5 file ({reason}). Save or copy the model again."
        ) from None
    if not has_config:
        raise ModelLoadError(
            f"{p} holds only weights (no model architecture). Save the whole model with "
            "model.save('model.keras'), or load these weights into the model in its own code."
        )
    return version.decode() if isinstance(version, bytes) else str(version)


def _read_config(p: Path, fmt: str) -> dict | None:
    """The model's Keras config as saved in the file, or None (plain SavedModel, unreadable)."""
    try:
        if fmt in ("keras3", "tf_keras"):
            with zipfile.ZipFile(p) as z:
                return json.loads(z.read("config.json"))
        if fmt == "h5":
            import h5py

            with h5py.File(p, "r") as f:
                raw = f.attrs["model_config"]
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        meta = p / "keras_metadata.pb"
        if fmt == "savedmodel" and meta.is_file():
            tf_keras()
            from tf_keras.protobuf import saved_metadata_pb2

            proto = saved_metadata_pb2.SavedMetadata()
            proto.ParseFromString(meta.read_bytes())
            return {"layers": [json.loads(n.metadata) for n in proto.nodes if n.metadata]}
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
        if fmt in ("keras3", "tf_keras"):
            raise ModelLoadError(
                f"{p} is a damaged or truncated .keras file ({_first_line(e)}). "
                "Save or copy the model again."
            ) from None
        raise ModelLoadError(f"Cannot read the model config in {p} ({_first_line(e)}).") from None
    return None


_LAYER_KEYS = {"layers", "layer", "forward_layer", "backward_layer"}


def _layer_dicts(node: Any, key: str | None = None) -> Iterator[dict]:
    """Every serialized layer in a Keras config, nested models and wrappers included."""
    if isinstance(node, dict):
        if key in _LAYER_KEYS and "class_name" in node:
            yield node
        for k, v in node.items():
            yield from _layer_dicts(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _layer_dicts(v, key)


def _layer_name(d: dict) -> str:
    cfg = d.get("config")
    return str((cfg.get("name") if isinstance(cfg, dict) else None) or d.get("name") or "?")


def _refuse_unsafe(p: Path, config: dict, *, unsafe: bool, custom_objects: dict[str, Any]) -> None:
    if unsafe:
        return
    for d in _layer_dicts(config):
        if d.get("class_name") != "Lambda":
            continue
        cfg = d.get("config") if isinstance(d.get("config"), dict) else {}
        fn = cfg.get("function")
        fn_name = fn.get("config") if isinstance(fn, dict) else fn
        is_code = (
            cfg.get("function_type") == "lambda"
            or isinstance(fn, list)
            or (isinstance(fn, dict) and fn.get("class_name") == "__lambda__")
        )
        if not is_code and isinstance(fn_name, str) and fn_name in custom_objects:
            continue  # a named function the caller supplied: no code comes from the file
        raise ModelLoadError(
            f"{p.name} contains a Lambda layer '{_layer_name(d)}' with Python code inside; "
            f"loading it would run that code. {_UNSAFE_HINT}"
        )


def _refuse_file_ops(p: Path) -> None:
    from edgekit.modelscan import file_ops

    try:
        found = file_ops(p)
    except Exception as e:  # an unreadable graph: the load below says what is wrong
        if isinstance(e, EdgekitError):
            raise
        return
    if found:
        ops = ", ".join(sorted({op for op, _ in found}))
        raise ModelLoadError(
            f"{p.name} is a SavedModel whose graph can run {ops} (ops that read or write files "
            f"or run code outside the model); running it could touch this machine. {_UNSAFE_HINT}"
        )


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    line = s[0] if s else type(e).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _exception_chain(e: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    return chain


_UNKNOWN_CLASS = [
    re.compile(r"Could not locate class '([^']+)'"),
    re.compile(r"Unknown layer: '?([\w>.]+)'?"),
]
_UNKNOWN_FUNC = [
    re.compile(r"Could not locate function '([^']+)'"),
    re.compile(
        r"Unknown (?:activation|initializer|regularizer|constraint|loss|metric)"
        r"(?: function)?:? '?([\w>.]+)'?"
    ),
]


def _load_error(p: Path, fmt: str, e: BaseException, config: dict | None) -> ModelLoadError:
    texts = [str(x) for x in _exception_chain(e)]
    for text in texts:
        for rx in _UNKNOWN_CLASS:
            m = rx.search(text)
            if m:
                cls = m.group(1).split(">")[-1]
                names = [
                    _layer_name(d)
                    for d in _layer_dicts(config or {})
                    if str(d.get("class_name", "")).split(">")[-1] == cls
                ]
                where = f" (layer '{names[0]}')" if names else ""
                return ModelLoadError(
                    f"{p.name} uses the custom layer class '{cls}'{where}, which Keras does not "
                    f"know. Pass custom_objects={{'{cls}': {cls}}} with the class from the code "
                    "that trained the model."
                )
        for rx in _UNKNOWN_FUNC:
            m = rx.search(text)
            if m:
                fn = m.group(1).split(">")[-1]
                return ModelLoadError(
                    f"{p.name} uses the custom function '{fn}', which Keras does not know. Pass "
                    f"custom_objects={{'{fn}': {fn}}} with the function from the training code."
                )
        if "__lambda__" in text or ("Lambda" in text and "safe_mode" in text):
            return ModelLoadError(
                f"{p.name} contains a Lambda layer with Python code. {_UNSAFE_HINT}"
            )
    joined = " ".join(texts)
    kind = {
        "keras3": "Keras 3 .keras",
        "tf_keras": "tf-keras .keras",
        "h5": "tf-keras .h5",
        "savedmodel": "SavedModel",
    }[fmt]
    if any(
        s in joined
        for s in (
            "truncated",
            "File is not a zip file",
            "Unable to open",
            "Unable to synchronously open",
            "corrupt",
            "Bad magic",
        )
    ):
        return ModelLoadError(
            f"{p} is a damaged or truncated {kind} model ({_first_line(e)}). "
            "Save or copy the model again."
        )
    return ModelLoadError(
        f"Could not load {p} as a {kind} model: {type(e).__name__}: {_first_line(e)}"
    )


# --------------------------------------------------------------------------------------------
# Keras 3 -> tf_keras bridge


@dataclass
class BridgeResult:
    """A tf_keras rebuild of a Keras 3 model, with the evidence that it computes the same thing."""

    model: Any  # tf_keras.Model
    max_abs_diff: float
    n_layers: int  # layers rebuilt (weights copied) — nested models counted by their layers
    n_weights: int  # weight arrays copied
    source_flavor: str
    flattened: bool = False
    output_diffs: list[float] = field(default_factory=list)  # max abs diff per output
    n_samples: int = 0

    @property
    def loaded(self) -> LoadedModel:
        return wrap(self.model)


def to_tf_keras(
    loaded: LoadedModel | Any,
    sample_x: np.ndarray | None,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    flatten: bool = False,
) -> BridgeResult:
    """Rebuild a Keras 3 model as an equivalent tf_keras model, copy its weights and verify.

    sample_x: preprocessed float32 NHWC inputs both models are run on (None: 4 random images in
    [0, 1)). flatten=True inlines nested sub-models into one flat functional model (tfmot's
    quantization wants that). tf_keras inputs pass through unchanged. Raises StageError when the
    outputs differ by more than `atol + rtol * max|output|`, UnsupportedModelError for layers
    tf_keras lacks. rtol keeps large logits from failing on float32 rounding, which a deep
    network carries forward: Keras 3 and tf_keras run some layers through different kernels
    (BatchNormalization fused or not), and a random-weight MobileNet (0.25, 32x32) ends 1.6e-5
    of its largest logit apart. A wrong rebuild (a layer's setting or weights lost) differs by
    1e-2 of the outputs or more.
    """
    src = wrap(loaded)
    if src.flavor == "tf_keras":
        n_w = len(src.model.weights)
        n_l = sum(1 for layer in _tfk_leaf_layers(src.model) if layer.weights)
        return BridgeResult(src.model, 0.0, n_l, n_w, "tf_keras", output_diffs=[0.0])
    if src.flavor == "savedmodel":
        raise UnsupportedModelError(
            f"{src.name} is a plain TF SavedModel without Keras layers, so it cannot be rebuilt as "
            "a tf_keras model for pruning/QAT. Pass the .keras or .h5 file it was exported from."
        )
    if sample_x is None:
        shape = tuple(d or 32 for d in src.input_shape)
        sample_x = np.random.default_rng(0).random((4, *shape), dtype=np.float32)
    x = src._check_x(sample_x)
    if len(x) == 0:
        raise DataError("sample_x holds no images; the bridge needs at least one to verify.")
    bridge = _Bridge(flatten=flatten)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bridge.build(src.model)
    n_weights = bridge.copy_weights()
    ref = [np.asarray(a, np.float64) for a in _flatten(src.predict(x))]
    got = [np.asarray(b, np.float64) for b in _flatten(LoadedModel(model, "tf_keras").predict(x))]
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(ref, got, strict=True)]
    # NaN anywhere (or a NaN only on one side) is a mismatch too
    diffs = [d if np.isfinite(d) else float("inf") for d in diffs]
    scale = max(float(np.max(np.abs(a))) if np.isfinite(a).all() else 0.0 for a in ref)
    limit = atol + rtol * scale
    worst = max(diffs)
    if worst > limit:
        i = diffs.index(worst)
        raise StageError(
            f"The tf_keras rebuild of {src.name} does not match the Keras 3 model: max abs diff "
            f"{worst:.3g} on output '{src.output_names[i]}' (allowed {limit:.3g} = atol {atol:g} "
            f"+ rtol {rtol:g} x max |output| {scale:.3g}; {len(x)} samples). Please report this "
            "model's layer types; meanwhile use a tf_keras (.h5) model."
        )
    return BridgeResult(
        model, worst, len(bridge.pairs), n_weights, "keras3", flatten, diffs, len(x)
    )


def _tfk_leaf_layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.__class__.__name__ in ("Functional", "Sequential"):
            yield from _tfk_leaf_layers(layer)
        else:
            yield layer


# Keras 3 activations tf_keras lacks or defines differently (tf_keras's hard_sigmoid is
# 0.2x + 0.5; Keras 3's is relu6(x + 3) / 6). Registered under "edgekit>" so tf_keras can clone
# and save bridged models.
_SAME_ACTIVATIONS = {
    "relu",
    "sigmoid",
    "softmax",
    "softplus",
    "softsign",
    "tanh",
    "elu",
    "selu",
    "exponential",
    "linear",
    "gelu",
    "mish",
    "swish",
    "silu",
    "relu6",
}
_BRIDGE_ACTIVATIONS = {
    "hard_sigmoid",
    "hard_silu",
    "hard_swish",
    "leaky_relu",
    "log_softmax",
    "hard_tanh",
}
_registered = False


def _register_bridge_activations(tfk: Any) -> None:
    global _registered
    if _registered:
        return
    _registered = True
    import tensorflow as tf

    reg = tfk.saving.register_keras_serializable

    @reg(package="edgekit", name="hard_sigmoid")
    def hard_sigmoid(x):  # Keras 3 semantics
        return tf.nn.relu6(x + 3.0) / 6.0

    @reg(package="edgekit", name="hard_silu")
    def hard_silu(x):
        return x * tf.nn.relu6(x + 3.0) / 6.0

    @reg(package="edgekit", name="leaky_relu")
    def leaky_relu(x):  # Keras 3's default negative_slope
        return tf.nn.leaky_relu(x, alpha=0.2)

    @reg(package="edgekit", name="log_softmax")
    def log_softmax(x):
        return tf.nn.log_softmax(x, axis=-1)

    @reg(package="edgekit", name="hard_tanh")
    def hard_tanh(x):
        return tf.clip_by_value(x, -1.0, 1.0)


# Keras 3 argument names that tf_keras spells differently, per layer class.
_RENAMED_ARGS = {"LeakyReLU": {"negative_slope": "alpha"}}
# Keras 3 initializer class names that tf_keras spells differently.
_RENAMED_INITIALIZERS = {"IdentityInitializer": "Identity"}
# Keras 3 ops recorded in a functional graph (`x * 2.0`, `x / 255.0` ...) and their TF twins;
# tf_keras records a call to these as a TFOpLambda layer.
_OPS = {
    "Add": "add",
    "Subtract": "subtract",
    "Multiply": "multiply",
    "Divide": "divide",
    "TrueDivide": "truediv",
}
# Keyword arguments every tf_keras layer accepts through **kwargs.
_BASE_KWARGS = {
    "input_dim",
    "input_shape",
    "batch_input_shape",
    "batch_size",
    "weights",
    "activity_regularizer",
    "autocast",
    "implementation",
    "dynamic",
    "trainable",
    "name",
    "dtype",
}


def _init_params(cls: type) -> tuple[set[str], dict[str, Any]]:
    """Names of every __init__ parameter along the MRO, and their defaults."""
    names: set[str] = set()
    defaults: dict[str, Any] = {}
    for c in reversed(cls.__mro__):
        init = c.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        for prm in params:
            if prm.kind in (prm.VAR_POSITIONAL, prm.VAR_KEYWORD) or prm.name == "self":
                continue
            names.add(prm.name)
            if prm.default is not prm.empty:
                defaults[prm.name] = prm.default
    return names, defaults


def _same_value(a: Any, b: Any) -> bool:
    try:
        if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
            return list(a) == list(b)  # type: ignore[arg-type]
        return bool(a == b)
    except Exception:
        return False


class _Bridge:
    """Walks a Keras 3 model's graph and calls equivalent tf_keras layers on tf_keras tensors."""

    def __init__(self, *, flatten: bool):
        self.keras = keras()
        self.tfk = tf_keras()
        self.tf = _tf()
        self.flatten = flatten
        self.layers: dict[int, Any] = {}  # id(Keras 3 layer) -> tf_keras layer
        self.models: dict[int, Any] = {}  # id(Keras 3 sub-model) -> tf_keras sub-model
        self.pairs: list[tuple[Any, Any]] = []  # (Keras 3 layer, tf_keras layer) with weights
        self.used_names: set[str] = set()
        self.scope: list[str] = []  # enclosing sub-model names while flattening

    # -- structure ----------------------------------------------------------------------------

    def _is_model(self, op: Any) -> bool:
        return isinstance(op, self.keras.Model)

    def _is_sequential(self, op: Any) -> bool:
        return isinstance(op, self.keras.Sequential)

    def _check_graph(self, m: Any) -> None:
        if not self._is_sequential(m) and not hasattr(m, "_nodes_by_depth"):
            raise UnsupportedModelError(
                f"Model '{m.name}' ({type(m).__name__}) is a subclassed Keras 3 model; tfmot "
                "(prune, qat) needs it rebuilt layer by layer for tf_keras, which only works for "
                "functional and Sequential models. Rebuild it with the functional API, or use "
                "the quantize recipe (no tfmot)."
            )
        try:
            ok = bool(m.inputs)
        except (AttributeError, ValueError):
            ok = False
        if not ok:
            raise UnsupportedModelError(
                f"Model '{m.name}' is not built (no inputs). Start it with keras.Input(shape=...)."
            )

    def _input(self, m: Any) -> Any:
        if len(m.inputs) != 1:
            raise UnsupportedModelError(
                f"Sub-model '{m.name}' has {len(m.inputs)} inputs; the bridge handles one input."
            )
        t = m.inputs[0]
        return self.tfk.Input(
            batch_shape=_dims(t.shape), dtype=str(t.dtype), name=_spec_name(_history_name(t))
        )

    def build(self, m: Any) -> Any:
        """A tf_keras model equivalent to the Keras 3 model `m` (weights not copied yet)."""
        self._check_graph(m)
        inp = self._input(m)
        if self._is_sequential(m) and not self.flatten:
            seq = self.tfk.Sequential(name=m.name)
            seq.add(inp)
            for layer in m.layers:
                seq.add(self._submodel(layer) if self._is_model(layer) else self._layer(layer))
            out = seq
        else:
            outs = self._apply_model(m, [inp])
            out = self.tfk.Model(inp, outs[0] if len(outs) == 1 else outs, name=m.name)
        if not m.trainable:
            out.trainable = False
        return out

    def _submodel(self, m: Any) -> Any:
        if id(m) not in self.models:
            self.models[id(m)] = self.build(m)
        return self.models[id(m)]

    def _apply_model(self, m: Any, inputs: list[Any]) -> list[Any]:
        """Run the Keras 3 model's graph on tf_keras tensors; the outputs in order."""
        self._check_graph(m)
        if self._is_sequential(m):
            x = inputs[0]
            for layer in m.layers:
                x = self._apply(layer, (x,), {})
            return [x]
        tensors = {id(k): v for k, v in zip(m.inputs, inputs, strict=True)}
        for depth in sorted(m._nodes_by_depth, reverse=True):
            for node in m._nodes_by_depth[depth]:
                if node.operation is None or node.is_input:
                    continue
                if any(id(t) not in tensors for t in node.input_tensors):
                    continue  # not connected to this model's inputs (Keras skips these too)
                args, kwargs = node.arguments.fill_in(tensors)
                # Keras 3 records training=False on every node it builds symbolically (even
                # when the user passed nothing) and overrides it whenever the model is called
                # with training=...; kept in tf_keras it would freeze Dropout and BatchNorm in
                # inference mode for good, also while tfmot fine-tunes.
                kwargs = {k: v for k, v in kwargs.items() if k != "training"}
                outs = _flatten(self._apply(node.operation, args, kwargs))
                for k, v in zip(node.outputs, outs, strict=True):
                    tensors[id(k)] = v
        return [tensors[id(t)] for t in m.outputs]

    def _apply(self, op: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        if self._is_model(op):
            if not self.flatten:
                return self._submodel(op)(*args, **kwargs)
            self.scope.append(op.name)
            try:
                outs = self._apply_model(op, _flatten(list(args)))
            finally:
                self.scope.pop()
            return outs[0] if len(outs) == 1 else outs
        if isinstance(op, self.keras.layers.Layer):
            return self._layer(op)(*args, **kwargs)
        fn_name = _OPS.get(type(op).__name__)
        if fn_name is not None and type(op).__module__.startswith("keras."):
            return getattr(self.tf.math, fn_name)(*args, **kwargs)
        raise UnsupportedModelError(
            f"Operation '{getattr(op, 'name', '?')}' ({type(op).__name__}) has no tf_keras "
            "equivalent. Use a keras.layers layer for it (e.g. layers.Add, layers.Rescaling)."
        )

    # -- layers ---------------------------------------------------------------------------------

    def _unique_name(self, name: str) -> str:
        if not self.flatten:
            return name
        if name in self.used_names:
            base = "_".join([*self.scope, name]) if self.scope else name
            name, i = base, 1
            while name in self.used_names:
                name, i = f"{base}_{i}", i + 1
        self.used_names.add(name)
        return name

    def _unsupported(self, op: Any, why: str) -> UnsupportedModelError:
        return UnsupportedModelError(
            f"Layer '{op.name}' ({type(op).__name__}) cannot be rebuilt for tf_keras: {why}."
        )

    def _layer(self, op: Any) -> Any:
        if id(op) in self.layers:
            return self.layers[id(op)]  # a shared layer: reuse it (and its weights)
        cls_name = type(op).__name__
        if not type(op).__module__.startswith("keras."):
            raise self._unsupported(
                op,
                "it is a custom layer class, which tfmot's tf_keras cannot run (tfmot needs "
                "Keras 2 layers); write the layer for tf_keras and pass a tf-keras model, or use "
                "the quantize recipe (no tfmot)",
            )
        name = self._unique_name(op.name)
        bridged = _bridge_layer_classes(self.tfk).get(cls_name)
        if bridged is not None:
            try:
                layer = bridged.from_keras3(op, name)
            except Exception as e:
                raise self._unsupported(
                    op, f"its config does not fit edgekit's tf_keras twin ({_first_line(e)})"
                ) from None
        elif cls_name == "Lambda":
            layer = self.tfk.layers.Lambda(
                op.function, arguments=dict(op.arguments or {}), name=name
            )
        else:
            tcls = getattr(self.tfk.layers, cls_name, None)
            if tcls is None or cls_name in (
                "InputLayer",
                "Wrapper",
                "TimeDistributed",
                "Bidirectional",
            ):
                raise self._unsupported(op, "tf_keras has no equivalent layer")
            cfg = self._translate_config(op, tcls, op.get_config())
            cfg["name"] = name
            try:
                layer = tcls.from_config(cfg)
            except Exception as e:
                raise self._unsupported(
                    op, f"tf_keras rejected its config ({_first_line(e)})"
                ) from None
        self.layers[id(op)] = layer
        if op.weights:
            self.pairs.append((op, layer))
        return layer

    def _translate_config(self, op: Any, tcls: type, cfg: dict) -> dict:
        renames = _RENAMED_ARGS.get(type(op).__name__, {})
        allowed, _ = _init_params(tcls)
        allowed |= _BASE_KWARGS
        _, k3_defaults = _init_params(type(op))
        out = {}
        for key, value in cfg.items():
            new_key = renames.get(key, key)
            if new_key not in allowed:
                unused = (
                    value is None
                    or value is False
                    or (key in k3_defaults and _same_value(k3_defaults[key], value))
                    or (key == "data_format" and value == "channels_last")
                )
                if unused:
                    continue  # a Keras 3 feature this layer does not use
                raise self._unsupported(op, f"tf_keras has no option {key}={value!r}")
            out[new_key] = self._translate_value(op, new_key, value)
        return out

    def _translate_value(self, op: Any, key: str, value: Any) -> Any:
        if key in ("activation", "recurrent_activation"):
            return self._activation(op, value)
        if not (isinstance(value, dict) and "class_name" in value and "config" in value):
            return value
        cls_name = value["class_name"]
        module = str(value.get("module") or "")
        if cls_name in ("DTypePolicy", "FloatDTypePolicy"):
            return value["config"]["name"]
        if "DTypePolicy" in cls_name:
            raise self._unsupported(op, f"its dtype policy {cls_name} (quantized) is Keras 3 only")
        for kind in ("initializer", "regularizer", "constraint"):
            if key.endswith(f"_{kind}") or f"{kind}s" in module:
                return self._object(op, key, kind, value)
        raise self._unsupported(op, f"option {key} holds a {cls_name} object")

    def _object(self, op: Any, key: str, kind: str, value: dict) -> dict:
        tfk_module = getattr(self.tfk, f"{kind}s")
        cls_name = value["class_name"]
        if kind == "initializer":
            cls_name = _RENAMED_INITIALIZERS.get(cls_name, cls_name)
        cls = getattr(tfk_module, cls_name, None)
        if cls is None or not inspect.isclass(cls):
            if kind == "initializer":
                # Weights are copied over anyway; the initializer matters only if re-initialized.
                return {"class_name": "GlorotUniform", "config": {"seed": None}}
            raise self._unsupported(op, f"{key} uses {cls_name}, which tf_keras lacks")
        allowed, _ = _init_params(cls)
        cfg = {
            k: v for k, v in (value.get("config") or {}).items() if k in allowed or v is not None
        }
        unknown = [k for k in cfg if k not in allowed]
        if unknown:
            raise self._unsupported(op, f"{key} ({cls_name}) uses {unknown}, unknown to tf_keras")
        return {"class_name": cls_name, "config": cfg}

    def _activation(self, op: Any, value: Any) -> Any:
        if value is None:
            return None
        name = value
        if isinstance(value, dict):  # a serialized function
            name = value.get("config") if value.get("class_name") == "function" else None
        if not isinstance(name, str):
            raise self._unsupported(op, f"its activation {value!r} is not a built-in function")
        if name in _SAME_ACTIVATIONS:
            return name
        if name in _BRIDGE_ACTIVATIONS:
            return f"edgekit>{'hard_silu' if name == 'hard_swish' else name}"
        raise self._unsupported(op, f"activation '{name}' has no tf_keras equivalent")

    # -- weights --------------------------------------------------------------------------------

    def copy_weights(self) -> int:
        """Copy each Keras 3 layer's weights into its twin, matched by name, checking shapes."""
        n = 0
        for op, layer in self.pairs:
            src = list(op.weights)
            dst = list(layer.weights)
            if len(src) != len(dst):
                raise self._unsupported(
                    op, f"it has {len(src)} weights in Keras 3 but {len(dst)} in tf_keras"
                )
            src_names = [str(v.name).split("/")[-1] for v in src]
            dst_names = [str(v.name).split("/")[-1].split(":")[0] for v in dst]
            if sorted(src_names) == sorted(dst_names) and len(set(src_names)) == len(src_names):
                by_name = dict(zip(dst_names, dst, strict=True))
                dst = [by_name[s] for s in src_names]
            for s, d in zip(src, dst, strict=True):
                value = np.asarray(s.numpy())
                if tuple(value.shape) != tuple(d.shape):
                    raise self._unsupported(
                        op,
                        f"weight {s.name} has shape {value.shape} in Keras 3 but "
                        f"{tuple(d.shape)} in tf_keras",
                    )
                d.assign(value)
                n += 1
        return n


# Keras 3 layers that tf_keras lacks (Keras Applications define them in their own modules:
# ConvNeXt's LayerScale and StochasticDepth, InceptionResNetV2's CustomScaleLayer), rebuilt as
# tf_keras layers with the same config, weights and arithmetic. Registered as "edgekit>Name" so
# that bridged (pruned) models save and load again as tf_keras models.
_bridge_classes: dict[str, type] = {}


def _bridge_layer_classes(tfk: Any) -> dict[str, type]:
    if _bridge_classes:
        return _bridge_classes
    import tensorflow as tf

    reg = tfk.saving.register_keras_serializable

    @reg(package="edgekit", name="LayerScale")
    class LayerScale(tfk.layers.Layer):
        """x * gamma, one learned scale per channel (ConvNeXt)."""

        def __init__(self, init_values: float, projection_dim: int, **kwargs: Any):
            super().__init__(**kwargs)
            self.init_values = float(init_values)
            self.projection_dim = int(projection_dim)

        @classmethod
        def from_keras3(cls, op: Any, name: str) -> Any:
            return cls(op.init_values, op.projection_dim, name=name, trainable=op.trainable)

        def build(self, input_shape: Any) -> None:
            self.gamma = self.add_weight(
                name="gamma",
                shape=(self.projection_dim,),
                initializer=tfk.initializers.Constant(self.init_values),
                trainable=True,
            )
            super().build(input_shape)

        def call(self, x: Any) -> Any:
            return x * self.gamma

        def get_config(self) -> dict[str, Any]:
            return {
                **super().get_config(),
                "init_values": self.init_values,
                "projection_dim": self.projection_dim,
            }

    @reg(package="edgekit", name="StochasticDepth")
    class StochasticDepth(tfk.layers.Layer):
        """Drops the whole residual branch of a random share of the batch while training."""

        def __init__(self, drop_path_rate: float, **kwargs: Any):
            super().__init__(**kwargs)
            self.drop_path_rate = float(drop_path_rate)

        @classmethod
        def from_keras3(cls, op: Any, name: str) -> Any:
            return cls(op.drop_path_rate, name=name, trainable=op.trainable)

        def call(self, x: Any, training: Any = None) -> Any:
            keep = 1.0 - self.drop_path_rate

            def dropped() -> Any:
                shape = tf.concat([tf.shape(x)[:1], tf.ones([tf.rank(x) - 1], tf.int32)], 0)
                return (x / keep) * tf.floor(keep + tf.random.uniform(shape, 0, 1, x.dtype))

            if training is None:
                training = tfk.backend.learning_phase()
            return tfk.backend.in_train_phase(dropped, x, training=training)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "drop_path_rate": self.drop_path_rate}

    @reg(package="edgekit", name="CustomScaleLayer")
    class CustomScaleLayer(tfk.layers.Layer):
        """inputs[0] + inputs[1] * scale: InceptionResNetV2's scaled residual."""

        def __init__(self, scale: float, **kwargs: Any):
            super().__init__(**kwargs)
            self.scale = float(scale)

        @classmethod
        def from_keras3(cls, op: Any, name: str) -> Any:
            return cls(op.scale, name=name, trainable=op.trainable)

        def call(self, inputs: Any) -> Any:
            return inputs[0] + inputs[1] * self.scale

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "scale": self.scale}

    _bridge_classes.update(
        LayerScale=LayerScale, StochasticDepth=StochasticDepth, CustomScaleLayer=CustomScaleLayer
    )
    return _bridge_classes
