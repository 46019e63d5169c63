"""The channel_prune stage: structured pruning that removes whole channels, rebuilds a smaller
dense model and recovers it by distillation from the unpruned one.

Magnitude pruning (the `prune` stage) zeroes weights: dense CPU kernels still do the work on the
zeros, so latency does not move. Removing channels gives a smaller dense model, which is faster on
every CPU and phone.

How it works (all of it usable without a run: `channel_prune()`, or `prepare()` once and
`prune_prepared()` per MAC target, `channel_prune_to_latency()`, `recover()`):

1. **Dependency groups** (`analyze`). Every channel of every tensor is traced back to the layer
   that made it. Channels that must go together are joined: a conv's (or dense layer's) filters
   with the input channels of every layer that reads them, batch norm and depthwise convs (their
   output channel is their input channel), every branch of a residual add (and multiply, as in
   squeeze-excite), a concatenation's inputs at their offsets, a flatten's positions for a dense
   head. Channels that reach a model output, the model input, or a layer the stage cannot reason
   about (listed in the report, left whole, never an error) are kept.
2. **Importance** (`criterion`): `l1`, the L1 norm of each filter (default); `bn_scale`, |gamma| of
   the batch norm right after the filter (L1 where there is none); `taylor`, a first-order Taylor
   estimate (sum over a filter's weights of weight x gradient of the distillation loss, squared, on
   calibration images). Scores are divided by their layer's mean so that layers of different
   scales can share a group; a channel of a group scores the sum over the layers that make it.
3. **Budget**: `target_macs` is the fraction of the MACs to keep. One keep ratio for every group is
   found by bisection (each group keeps its best channels, at least `min_channels` and
   `min_fraction` of them, rounded up to `multiple_of`) so that the rebuilt model's MACs are at
   most that fraction, or as close as the minimums allow (said, and reported). The budget the
   rounding leaves goes back to the groups whose channels bring the fewest weights per MAC (the
   high-resolution layers): at batch 1 a low-resolution layer's weights, not its MACs, bound its
   latency. Or `target_latency` (edgekit.stages.latency_budget): the MAC fraction is searched so
   that the estimated latency on an emulated phone is at most that fraction of the unpruned one.
4. **Rebuild**: the model's config with the new channel counts, built again (a new model in the
   input's flavor, Keras 3 or tf-keras), the kept weights copied in. The input model is untouched.
5. **Recover** (`recover`): fine-tuning of the rebuilt model (bridged to tf-keras) with the
   distill stage's loss against the unpruned model's logits (labels optional), a few epochs, early
   stopping with the best epoch's weights kept.
"""

from __future__ import annotations

import copy
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from edgekit import ui
from edgekit.artifacts import ModelArtifact
from edgekit.errors import DataError, UnsupportedModelError, UsageError
from edgekit.stages import training
from edgekit.stages.base import Stage, StageConfig, StageOutput, register
from edgekit.stages.context import as_logits, first_output
from edgekit.stages.model_io import base_name, load, save_keras

if TYPE_CHECKING:
    from edgekit.stages.context import RunContext

CRITERIA = ("l1", "bn_scale", "taylor")

# Layers that make new channels (their filters or units are what is removed).
PRODUCERS = {"Conv1D", "Conv2D", "Conv3D", "Dense", "SeparableConv1D", "SeparableConv2D"}
DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
# Layers that act on each channel alone and keep the channel axis last: channels pass through.
PASS_THROUGH = {
    "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Identity", "ActivityRegularization",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
    "Cropping1D", "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
}  # fmt: skip
ELEMENTWISE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
# Activations that mix the channels of a position (the channels they see must all stay).
COUPLING_ACTIVATIONS = {"softmax", "log_softmax"}


class ChannelPruneConfig(StageConfig):
    """Structured pruning: remove whole channels, rebuild a smaller model, recover by distillation."""

    stage: Literal["channel_prune"] = "channel_prune"
    enabled: bool = Field(
        True, description="Run the stage (false: the model passes through unchanged)."
    )
    target_macs: float = Field(
        0.5,
        description="Fraction of the model's MACs to keep, in (0, 1): 0.5 removes half of them.",
    )
    criterion: Literal["l1", "bn_scale", "taylor"] = Field(
        "l1",
        description="Channel importance: l1 (L1 norm of the filter), bn_scale (|gamma| of the "
        "batch norm after it), taylor (first-order Taylor estimate on calibration images).",
    )
    min_channels: int = Field(8, ge=1, description="Fewest channels any group keeps.")
    min_fraction: float = Field(
        0.1, ge=0, le=1, description="Least fraction of its channels any group keeps."
    )
    multiple_of: int = Field(
        16,
        ge=1,
        description="Kept channel counts are rounded up to a multiple of this (SIMD-friendly "
        "widths run faster: 16 measured faster than 8 on int8 and float32 kernels; 1 keeps the "
        "exact count).",
    )
    calibration_samples: int = Field(
        256, ge=1, description="Images the taylor criterion's gradients are taken on."
    )
    epochs: int = Field(
        3, ge=0, description="Most epochs of recovery by distillation (0: no recovery)."
    )
    batch_size: int = Field(64, ge=1, description="Images per recovery step.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (cosine decay).")
    alpha: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Weight of the label cross-entropy when labels exist (else 0); 1 - alpha "
        "weighs the distillation from the unpruned model.",
    )
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of the distillation.")
    patience: int = Field(
        2, ge=1, description="Recovery epochs without validation gain before stopping."
    )
    target_latency: float | None = Field(
        None,
        description="Fraction of the unpruned model's estimated latency on latency_device to keep, "
        "in (0, 1) (0.625: 1.6x faster); set, it replaces target_macs: the MAC fraction is "
        "searched, each probe's instructions counted on the emulated device.",
    )
    latency_device: str | None = Field(
        None, description="Emulated device profile the latency target is estimated on (pixel-4)."
    )
    latency_precision: Literal["float32", "int8"] = Field(
        "float32", description="TFLite precision the latency target is estimated for."
    )

    @field_validator("target_latency")
    @classmethod
    def _latency_range(cls, v: float | None) -> float | None:
        from edgekit.stages.latency_budget import target_problem

        problem = None if v is None else target_problem(v)
        if problem:
            raise ValueError(problem)
        return v

    @model_validator(mode="after")
    def _latency_device(self) -> ChannelPruneConfig:
        if self.target_latency is not None and not self.latency_device:
            raise ValueError(
                "target_latency needs latency_device, the emulated device to estimate the latency "
                "on (e.g. latency_device: pixel-4)"
            )
        return self

    @field_validator("target_macs")
    @classmethod
    def _target_range(cls, v: float) -> float:
        problem = _target_problem(v)
        if problem:
            raise ValueError(problem)
        return v


def _target_problem(target_macs: Any) -> str | None:
    return training.fraction_problem(
        "target_macs", target_macs, "the fraction of MACs to keep", "e.g. 0.5 to remove half"
    )


def check_target(target_macs: Any) -> None:
    problem = _target_problem(target_macs)
    if problem:
        raise UsageError(problem)


@register
class ChannelPrune(Stage):
    """Remove whole channels from the current model, rebuild it smaller, recover it."""

    name = "channel_prune"
    config_type = ChannelPruneConfig
    position = 15
    trains_float_weights = True

    def teacher_splits(self) -> tuple[str, ...]:
        return ("train", "val") if self.config.enabled and self.config.epochs > 0 else ()

    def preflight(self, teacher: ModelArtifact) -> None:
        c = self.config
        if c.enabled and c.target_latency is not None:
            from edgekit.stages.latency_budget import device_profile

            device_profile(c.latency_device)  # an emulated device, provisioned: else refused now

    def run(self, ctx: RunContext, model: ModelArtifact, workdir: Path) -> StageOutput:
        c = self.config
        if not c.enabled:
            return StageOutput(report={"enabled": False})
        loaded = load(ctx, model)
        if loaded.flavor == "savedmodel":
            raise UnsupportedModelError(
                f"{model.path} is a plain SavedModel without Keras layers; channel pruning rebuilds "
                "the Keras model. Pass the .keras or .h5 file."
            )
        options = {
            "criterion": c.criterion,
            "min_channels": c.min_channels,
            "min_fraction": c.min_fraction,
            "multiple_of": c.multiple_of,
        }
        latency: dict[str, Any] = {}
        if c.target_latency is not None:
            result, search = channel_prune_to_latency(
                loaded.model,
                target_latency=c.target_latency,
                device=str(c.latency_device),
                precision=c.latency_precision,
                x_calib=ctx.x("calib", c.calibration_samples),
                **options,
            )
            latency = {"latency_target": search.summary()}
        else:
            taylor = c.criterion == "taylor"
            x_calib = ctx.x("calib", c.calibration_samples) if taylor else None
            result = channel_prune(
                loaded.model, target_macs=c.target_macs, x_calib=x_calib, **options
            )
        slim = result.model
        recovery: dict[str, Any] = {"epochs": 0}
        if c.epochs > 0:
            teacher_logits = _teacher_logits(ctx, model, loaded)
            y_train = ctx.y("train") if c.alpha > 0 else None
            rec = recover(
                slim,
                ctx.x("train"),
                teacher_logits("train"),
                y_train,
                x_val=ctx.x("val"),
                teacher_val=teacher_logits("val"),
                y_val=ctx.y("val"),
                epochs=c.epochs,
                batch_size=c.batch_size,
                learning_rate=c.learning_rate,
                alpha=c.alpha,
                temperature=c.temperature,
                patience=c.patience,
                seed=ctx.recipe.seed,
            )
            slim, recovery = rec.model, rec.summary()
        art = save_keras(
            slim,
            workdir / f"{base_name(model)}_slim.keras",
            parameters=int(slim.count_params()),
            macs=int(result.macs_after),
        )
        report = {**result.summary(), **latency, "recovery": recovery}
        return StageOutput(model=art, report=report)


def _teacher_logits(ctx: RunContext, model: ModelArtifact, loaded: Any) -> Any:
    """The unpruned model's logits per split: the run's cached teacher outputs when the current
    model is the run's teacher, else computed here (the distilled student of `full`)."""
    cache: dict[str, np.ndarray] = {}

    def get(split: str) -> np.ndarray:
        if split not in cache:
            if model.sha256 == ctx.teacher.sha256 and split in ctx.teacher_outputs:
                cache[split] = ctx.teacher_outputs[split]
            else:
                cache[split] = as_logits(first_output(loaded.predict(ctx.x(split))))
        return cache[split]

    return get


# --------------------------------------------------------------------------- the graph


@dataclass
class _Layer:
    name: str
    kind: str  # class name
    config: dict[str, Any]
    inputs: list[tuple[str, int]]  # (producing layer, tensor index) per input tensor
    nodes: int  # how many times the layer is called


@dataclass
class Group:
    """Channels removed together: the layers that make them and every layer that reads them."""

    id: int
    producers: list[str]
    channels: int  # independent channel sets (a residual add's branches share one)
    members: list[str] = field(default_factory=list)  # producers and the layers tied to them


@dataclass
class ChannelGraph:
    """What `analyze` found: the prunable groups, what is kept whole and why, per-layer figures."""

    groups: list[Group]
    left_whole: list[dict[str, str]]  # layers the stage cannot reason about: {layer, class, reason}
    kept: list[dict[str, str]]  # producers whose channels must all stay: {layer, reason}
    macs: dict[str, int]  # per layer, of the unpruned model
    # internals used by the plan and the rebuild
    layers: list[_Layer] = field(repr=False, default_factory=list)
    atoms_in: dict[str, list[np.ndarray]] = field(repr=False, default_factory=dict)
    atoms_out: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    component: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    group_components: dict[int, np.ndarray] = field(repr=False, default_factory=dict)
    frozen: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, bool))
    sequential: bool = False
    positions: dict[str, int] = field(
        repr=False, default_factory=dict
    )  # output positions (batch 1)

    @property
    def total_macs(self) -> int:
        return int(sum(self.macs.values()))


class _Atoms:
    """Channel atoms (one per channel a layer makes) joined by a union-find."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.producer: list[str | None] = []
        self.index: list[int] = []
        self.frozen: dict[int, str] = {}

    def new(self, n: int, producer: str | None, frozen: str | None = None) -> np.ndarray:
        start = len(self.parent)
        ids = np.arange(start, start + n, dtype=np.int64)
        self.parent.extend(ids.tolist())
        self.producer.extend([producer] * n)
        self.index.extend(range(n))
        if frozen:
            for i in ids.tolist():
                self.frozen[i] = frozen
        return ids

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = p[a]
        return a

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist(), strict=True):
            rx, ry = self.find(x), self.find(y)
            if rx != ry:
                self.parent[ry] = rx

    def freeze(self, ids: np.ndarray, reason: str) -> None:
        for i in ids.tolist():
            self.frozen.setdefault(i, reason)


def _history(obj: Any) -> list[tuple[str, int, int]]:
    """(layer, node, tensor) of every Keras 3 tensor reference in a node's args."""
    out: list[tuple[str, int, int]] = []
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            h = obj["config"]["keras_history"]
            return [(h[0], int(h[1]), int(h[2]))]
        for v in obj.values():
            out.extend(_history(v))
    elif isinstance(obj, list | tuple):
        for v in obj:
            out.extend(_history(v))
    return out


def _graph_layers(model: Any, cfg: dict[str, Any]) -> tuple[list[_Layer], list[str], bool]:
    """The layers of a functional or sequential model's config, their inputs, and the outputs."""
    entries = cfg.get("layers")
    if not isinstance(entries, list):
        raise UnsupportedModelError(
            f"Model {model.name!r} is not a Functional or Sequential Keras model (no layer graph "
            "in its config); channel pruning needs one. Rebuild it with the Functional API."
        )
    layers: list[_Layer] = []
    if "input_layers" not in cfg:  # Sequential: a chain
        prev: str | None = None
        for e in entries:
            name = e["config"]["name"]
            layers.append(
                _Layer(name, e["class_name"], e["config"], [(prev, 0)] if prev else [], 1)
            )
            prev = name
        return layers, [prev] if prev else [], True
    for e in entries:
        nodes = e.get("inbound_nodes") or []
        inputs: list[tuple[str, int]] = []
        calls = len(nodes)
        if nodes:
            node = nodes[0]
            if isinstance(node, dict):  # Keras 3
                refs = _history(node.get("args", []))
                bad = any(n != 0 for _, n, _ in refs)
            else:  # tf-keras: [[name, node, tensor, kwargs], ...]
                refs = [(r[0], int(r[1]), int(r[2])) for r in node]
                bad = any(n != 0 for _, n, _ in refs)
            if bad:
                calls = max(calls, 2)  # reads a shared layer's second call: treated as shared
            inputs = [(name, t) for name, _, t in refs]
        layers.append(
            _Layer(
                e.get("name") or e["config"]["name"], e["class_name"], e["config"], inputs, calls
            )
        )
    outputs = cfg["output_layers"]
    if outputs and isinstance(outputs[0], str):  # a single output written flat
        outputs = [outputs]
    return layers, [o[0] for o in outputs], False


def _last_axis(axis: Any, rank: int) -> bool:
    if isinstance(axis, list | tuple):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis in (-1, rank - 1)


def _channels_last(config: dict[str, Any]) -> bool:
    return config.get("data_format") in (None, "channels_last")


def _layer_macs(layer: Any, kind: str, config: dict[str, Any]) -> int:
    """Multiply-accumulates of one layer, batch 1 (conv, depthwise, separable and dense only)."""
    try:
        out = tuple(layer.output.shape)
        inp = layer.input.shape
    except (AttributeError, ValueError):
        return 0
    if kind not in PRODUCERS | DEPTHWISE or isinstance(inp, list):
        return 0
    cin = int(inp[-1])
    if any(d is None for d in out[1:-1]):
        raise UnsupportedModelError(
            f"Layer {layer.name!r} has an unknown spatial size {out}; channel pruning counts MACs "
            "on a fixed input size. Build the model with one (e.g. Input((224, 224, 3)))."
        )
    positions = _positions(layer)
    if kind == "Dense":
        return positions * cin * int(config["units"])
    kernel = int(np.prod(config["kernel_size"]))
    if kind in DEPTHWISE:
        return positions * kernel * cin * int(config.get("depth_multiplier", 1))
    if kind.startswith("Separable"):
        dm = int(config.get("depth_multiplier", 1))
        return positions * kernel * cin * dm + positions * cin * dm * int(config["filters"])
    groups = int(config.get("groups", 1) or 1)
    return positions * kernel * (cin // groups) * int(config["filters"])


def _positions(layer: Any) -> int:
    """Output positions of a layer at batch 1 (1 for a vector): its MACs over its weights."""
    try:
        spatial = tuple(layer.output.shape)[1:-1]
    except (AttributeError, ValueError):
        return 1
    if any(d is None for d in spatial):
        return 1
    return int(np.prod(spatial)) if spatial else 1


def analyze(model: Any) -> ChannelGraph:
    """The dependency groups of a built Functional or Sequential model (Keras 3 or tf-keras)."""
    cfg = model.get_config()
    layers, outputs, sequential = _graph_layers(model, cfg)
    atoms = _Atoms()
    out: dict[str, np.ndarray] = {}
    ins: dict[str, list[np.ndarray]] = {}
    left_whole: list[dict[str, str]] = []
    macs: dict[str, int] = {}
    positions: dict[str, int] = {}
    by_name = {layer.name: layer for layer in model.layers}
    if sequential and layers and layers[0].kind != "InputLayer":
        first = layers[0]
        c = int(model.inputs[0].shape[-1])
        out["__input__"] = atoms.new(c, None, "the model input")
        first.inputs = [("__input__", 0)]

    for spec in layers:
        layer = by_name.get(spec.name)
        kind, conf = spec.kind, spec.config
        if kind == "InputLayer":
            shape = conf.get("batch_shape") or conf.get("batch_input_shape")
            out[spec.name] = atoms.new(int(shape[-1]), None, "the model input")
            continue
        inputs = [out[name] for name, _ in spec.inputs if name in out]
        if len(inputs) != len(spec.inputs) or any(t != 0 for _, t in spec.inputs):
            inputs = []
        ins[spec.name] = inputs
        if layer is not None:
            macs[spec.name] = _layer_macs(layer, kind, conf)
            positions[spec.name] = _positions(layer)
        reason = _why_whole(spec, layer, inputs)
        if reason is None:
            result = _propagate(spec, layer, inputs, atoms)
            if isinstance(result, str):
                reason = result
            else:
                out[spec.name] = result
                continue
        # Left whole: what it reads keeps every channel, what it makes is new and kept.
        left_whole.append({"layer": spec.name, "class": kind, "reason": reason})
        for a in inputs:
            atoms.freeze(a, f"read by {kind} layer {spec.name!r} (left whole: {reason})")
        try:
            width = int(layer.output.shape[-1]) if layer is not None else 0
        except (AttributeError, ValueError, TypeError):
            width = 0
        out[spec.name] = atoms.new(width, None, f"made by {spec.name!r} (left whole)")
    for name in outputs:
        if name in out:
            atoms.freeze(out[name], "a model output")
    graph = _groups(atoms, out, ins, layers, left_whole, macs, sequential)
    graph.positions = positions
    return graph


def _why_whole(spec: _Layer, layer: Any, inputs: list[np.ndarray]) -> str | None:
    """Why a layer cannot be reasoned about (None when it can)."""
    if layer is None:
        return "not found in the built model"
    if spec.nodes > 1:
        return f"shared layer (called {spec.nodes} times)"
    if not inputs:
        return "its inputs could not be traced"
    if spec.kind in ("Functional", "Sequential", "Model"):
        return "nested model"
    known = PRODUCERS | DEPTHWISE | PASS_THROUGH | ELEMENTWISE
    known |= {"BatchNormalization", "Activation", "PReLU", "Concatenate", "Flatten", "Reshape"}
    if spec.kind not in known:
        return "layer type the stage does not know"
    if not _channels_last(spec.config):
        return "channels_first data format"
    return None


def _propagate(
    spec: _Layer, layer: Any, inputs: list[np.ndarray], atoms: _Atoms
) -> np.ndarray | str:
    """The channel atoms of a layer's output, joining what must go together; a string says why
    the layer is left whole instead."""
    kind, conf = spec.kind, spec.config
    rank = len(layer.output.shape)
    x = inputs[0]
    if kind in PRODUCERS:
        if int(conf.get("groups", 1) or 1) != 1:
            return "grouped convolution"
        if kind.startswith("Separable") and int(conf.get("depth_multiplier", 1)) != 1:
            return "depth_multiplier > 1"
        return atoms.new(int(layer.output.shape[-1]), spec.name)
    if kind in DEPTHWISE:
        if int(conf.get("depth_multiplier", 1)) != 1:
            return "depth_multiplier > 1"
        return x
    if kind in PASS_THROUGH:
        return x
    if kind == "Activation":
        act = conf.get("activation")
        name = act if isinstance(act, str) else (act or {}).get("config", {}).get("name", "")
        return "activation mixing channels" if name in COUPLING_ACTIVATIONS else x
    if kind == "BatchNormalization":
        return x if _last_axis(conf.get("axis", -1), rank) else "normalizes another axis"
    if kind == "PReLU":
        shared = conf.get("shared_axes") or []
        return "alpha shared over channels" if (rank - 1) in shared or -1 in shared else x
    if kind in ELEMENTWISE:
        if any(len(a) != len(x) for a in inputs):
            return "broadcasts over channels"
        for a in inputs[1:]:
            atoms.union(x, a)
        return x
    if kind == "Concatenate":
        if not _last_axis(conf.get("axis", -1), rank):
            return "concatenates another axis"
        return np.concatenate(inputs)
    if kind == "Flatten":
        positions = int(np.prod(layer.input.shape[1:-1]))
        return np.tile(x, positions)
    if kind == "Reshape":
        target = list(conf.get("target_shape") or [])
        same = target and int(target[-1]) == len(x)
        if same and int(np.prod(layer.input.shape[1:])) == int(np.prod(layer.output.shape[1:])):
            return x
        return "reshape moves the channel axis"
    return "layer type the stage does not know"


def _groups(atoms, out, ins, layers, left_whole, macs, sequential) -> ChannelGraph:
    n = len(atoms.parent)
    comp = np.array([atoms.find(i) for i in range(n)], dtype=np.int64)
    out_c = {k: comp[v] for k, v in out.items()}
    ins_c = {k: [comp[a] for a in v] for k, v in ins.items()}
    frozen = np.zeros(n, bool)  # by component root
    frozen_reason: dict[int, str] = {}
    for i, why in sorted(atoms.frozen.items()):
        root = int(comp[i])
        if not frozen[root]:
            frozen_reason[root] = why
        frozen[root] = True
    producers = sorted({p for p in atoms.producer if p is not None})
    # Producers whose channels share components (a residual add, a multiply) form one group.
    parent = {p: p for p in producers}

    def find(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    makers: dict[int, str] = {}
    for i, p in enumerate(atoms.producer):
        if p is None:
            continue
        root = int(comp[i])
        if root in makers:
            a, b = find(makers[root]), find(p)
            if a != b:
                parent[b] = a
        else:
            makers[root] = p
    order = {spec.name: i for i, spec in enumerate(layers)}
    by_root: dict[str, list[str]] = {}
    for p in producers:
        by_root.setdefault(find(p), []).append(p)
    groups: list[Group] = []
    group_components: dict[int, np.ndarray] = {}
    kept: list[dict[str, str]] = []
    for names in sorted(by_root.values(), key=lambda ps: min(order[p] for p in ps)):
        names = sorted(names, key=order.__getitem__)
        comps = np.unique(np.concatenate([out_c[p] for p in names]))
        free = comps[~frozen[comps]]
        if len(free) == 0:
            why = frozen_reason.get(int(comps[0]), "kept") if len(comps) else "no channels"
            kept.extend({"layer": p, "reason": why} for p in names)
            continue
        if len(free) < len(comps):
            why = next(frozen_reason[int(c)] for c in comps if frozen[c])
            ui.info(f"channel_prune: part of {names[0]!r}'s channels are kept ({why})")
        members = [
            s.name
            for s in layers
            if (s.name in out_c and np.isin(out_c[s.name], free).any())
            or any(np.isin(a, free).any() for a in ins_c.get(s.name, []))
        ]
        gid = len(groups)
        groups.append(Group(gid, names, len(free), members))
        group_components[gid] = free
    return ChannelGraph(
        groups=groups, left_whole=left_whole, kept=kept, macs=macs, layers=layers,
        atoms_in=ins_c, atoms_out=out_c, component=comp, group_components=group_components,
        frozen=frozen, sequential=sequential,
    )  # fmt: skip


# --------------------------------------------------------------------------- importance


def _kernel(layer: Any, kind: str) -> np.ndarray:
    """The weights that make each output channel, as (..., channels): a separable conv's
    pointwise kernel, a conv's or dense layer's kernel."""
    weights = layer.get_weights()
    return weights[1] if kind.startswith("Separable") else weights[0]


def _filter_l1(kernel: np.ndarray) -> np.ndarray:
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


def _bn_after(graph: ChannelGraph, producer: str) -> str | None:
    """The batch norm that reads `producer` alone (conv -> BN), if any."""
    for spec in graph.layers:
        if spec.kind == "BatchNormalization" and [n for n, _ in spec.inputs] == [producer]:
            return spec.name
    return None


def _taylor(model: Any, producers: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """(sum over each filter's weights of weight x gradient)^2, summed over calibration batches.
    The loss is the cross-entropy of the model's outputs against its own top-1 class (no labels
    needed)."""
    import tensorflow as tf

    kernels = {}
    for p in producers:
        layer = model.get_layer(p)
        w = layer.pointwise_kernel if hasattr(layer, "pointwise_kernel") else layer.kernel
        kernels[p] = getattr(w, "value", w)
    scores = {p: np.zeros(int(k.shape[-1]), np.float64) for p, k in kernels.items()}
    names = list(kernels)
    for i in range(0, len(x), 32):
        xb = tf.constant(x[i : i + 32])
        with tf.GradientTape() as tape:
            for v in kernels.values():
                tape.watch(v)
            out = first_output(model(xb, training=False))
            out = tf.convert_to_tensor(out)
            is_prob = bool(tf.reduce_all(out >= 0)) and bool(
                tf.reduce_all(tf.abs(tf.reduce_sum(out, -1) - 1) < 1e-3)
            )
            logits = tf.math.log(tf.clip_by_value(out, 1e-7, 1.0)) if is_prob else out
            loss = tf.reduce_sum(
                tf.nn.sparse_softmax_cross_entropy_with_logits(tf.argmax(logits, -1), logits)
            )
        grads = tape.gradient(loss, [kernels[p] for p in names])
        for p, g in zip(names, grads, strict=True):
            if g is None:
                continue
            wg = (np.asarray(kernels[p]) * np.asarray(g)).reshape(-1, int(g.shape[-1]))
            scores[p] += wg.sum(axis=0) ** 2
    return scores


def importance(
    model: Any, graph: ChannelGraph, criterion: str = "l1", x_calib: np.ndarray | None = None
) -> dict[int, np.ndarray]:
    """Per group, one score per channel set (higher: more important), in the order of
    `graph.group_components[gid]`."""
    if criterion not in CRITERIA:
        raise UsageError(
            f"Expected criterion in {list(CRITERIA)}. Received: criterion={criterion!r}"
        )
    producers = [p for g in graph.groups for p in g.producers]
    kinds = {s.name: s.kind for s in graph.layers}
    raw: dict[str, np.ndarray] = {}
    if criterion == "taylor":
        if x_calib is None or len(x_calib) == 0:
            raise DataError(
                "criterion='taylor' needs calibration images (x_calib); pass some, or use "
                "criterion='l1'."
            )
        raw = _taylor(model, producers, np.asarray(x_calib, np.float32))
    for p in producers:
        if p in raw:
            continue
        bn = _bn_after(graph, p) if criterion == "bn_scale" else None
        if bn is not None and model.get_layer(bn).get_config().get("scale", True):
            raw[p] = np.abs(model.get_layer(bn).get_weights()[0]).astype(np.float64)
        else:
            raw[p] = _filter_l1(_kernel(model.get_layer(p), kinds[p])).astype(np.float64)
    out: dict[int, np.ndarray] = {}
    for g in graph.groups:
        comps = graph.group_components[g.id]
        score = np.zeros(len(comps), np.float64)
        for p in g.producers:
            s = raw[p]
            s = s / s.mean() if s.mean() > 0 else s
            idx = np.searchsorted(comps, graph.atoms_out[p])
            hit = (idx < len(comps)) & (
                comps[np.minimum(idx, len(comps) - 1)] == graph.atoms_out[p]
            )
            np.add.at(score, idx[hit], s[hit])
        out[g.id] = score
    return out


# --------------------------------------------------------------------------- budget


def _keep_count(n: int, ratio: float, min_channels: int, min_fraction: float, multiple: int) -> int:
    k = max(math.ceil(ratio * n - 1e-9), min_channels, math.ceil(min_fraction * n - 1e-9), 1)
    k = math.ceil(k / multiple) * multiple
    return min(n, k)


def keep_mask(graph: ChannelGraph, keep: dict[int, np.ndarray]) -> np.ndarray:
    """Per component root: True when its channels stay (frozen ones always do). `keep` maps a
    group to the components it keeps."""
    mask = np.ones(len(graph.component), bool)
    for g in graph.groups:
        comps = graph.group_components[g.id]
        mask[comps] = False
        mask[np.asarray(keep.get(g.id, comps), np.int64)] = True
    return mask


def macs_after(graph: ChannelGraph, mask: np.ndarray) -> dict[str, int]:
    """Per layer, the MACs with the channels of `mask` kept."""
    result = {}
    kinds = {s.name: s for s in graph.layers}
    for name, base in graph.macs.items():
        if not base:
            result[name] = 0
            continue
        spec = kinds[name]
        ins = graph.atoms_in.get(name) or []
        fi = float(mask[ins[0]].mean()) if ins and len(ins[0]) else 1.0
        outs = graph.atoms_out.get(name)
        fo = float(mask[outs].mean()) if outs is not None and len(outs) else 1.0
        if spec.kind in DEPTHWISE:
            result[name] = round(base * fi)
        elif spec.kind.startswith("Separable"):
            k, c = int(np.prod(spec.config["kernel_size"])), int(spec.config["filters"])
            result[name] = round(base * (k / (k + c)) * fi + base * (c / (k + c)) * fi * fo)
        else:
            result[name] = round(base * fi * fo)
    return result


def plan(
    graph: ChannelGraph,
    scores: dict[int, np.ndarray],
    *,
    target_macs: float,
    min_channels: int = 8,
    min_fraction: float = 0.1,
    multiple_of: int = 16,
) -> tuple[dict[int, np.ndarray], float]:
    """The components each group keeps to reach `target_macs` of the MACs, and the keep ratio.

    One keep ratio for every group is found by bisection; then, since rounding to `multiple_of`
    makes the MACs jump, groups take back `multiple_of` channels at a time (their best removed
    ones) while the budget allows, the group whose channels bring the fewest weights per MAC
    first: at batch 1 a low-resolution layer's weights, not its MACs, set its latency."""
    order = {g.id: np.argsort(-scores[g.id], kind="stable") for g in graph.groups}
    sizes = {g.id: len(graph.group_components[g.id]) for g in graph.groups}

    def keep_of(counts: dict[int, int]) -> dict[int, np.ndarray]:
        return {
            gid: np.sort(graph.group_components[gid][order[gid][:k]]) for gid, k in counts.items()
        }

    def counts_at(ratio: float) -> dict[int, int]:
        return {
            gid: _keep_count(n, ratio, min_channels, min_fraction, multiple_of)
            for gid, n in sizes.items()
        }

    def cost(counts: dict[int, int]) -> int:
        return sum(macs_after(graph, keep_mask(graph, keep_of(counts))).values())

    def weights(counts: dict[int, int]) -> float:
        per_layer = macs_after(graph, keep_mask(graph, keep_of(counts)))
        return sum(m / graph.positions.get(name, 1) for name, m in per_layer.items())

    budget = target_macs * graph.total_macs
    lo, hi = 0.0, 1.0
    counts = counts_at(lo)
    if cost(counts) > budget:
        return keep_of(counts), lo
    for _ in range(24):
        mid = (lo + hi) / 2
        if cost(counts_at(mid)) <= budget:
            lo = mid
        else:
            hi = mid
    counts = counts_at(lo)
    spent, held = cost(counts), weights(counts)
    grew = True
    while grew:
        grew = False
        options = []
        for gid, k in counts.items():
            if k < sizes[gid]:
                trial = {**counts, gid: min(sizes[gid], k + multiple_of)}
                c = cost(trial)
                if spent < c <= budget:
                    w = weights(trial)
                    options.append(((w - held) / (c - spent), gid, trial, c, w))
        if options:
            _, _, counts, spent, held = min(options, key=lambda o: (o[0], o[1]))
            grew = True
    return keep_of(counts), lo


# --------------------------------------------------------------------------- rebuild


def _slice(spec: _Layer, weights: list[np.ndarray], fin, fout) -> list[np.ndarray]:
    """A layer's weights with the removed channels cut (fin/fout: kept input/output channels)."""
    kind = spec.kind
    if not weights:
        return weights
    if kind in PRODUCERS and not kind.startswith("Separable"):
        w = [weights[0][..., fin, :][..., fout]]
        return w + [b[fout] for b in weights[1:]]
    if kind.startswith("Separable"):
        dw, pw, *rest = weights
        return [dw[..., fin, :], pw[..., fin, :][..., fout]] + [b[fout] for b in rest]
    if kind in DEPTHWISE:
        return [weights[0][..., fin, :]] + [b[fin] for b in weights[1:]]
    if kind == "BatchNormalization":
        return [w[fin] for w in weights]
    if kind == "PReLU":
        return [w[..., fin] if w.shape[-1] == len(fin) else w for w in weights]
    return weights


def rebuild(model: Any, graph: ChannelGraph, mask: np.ndarray) -> Any:
    """A new model of the same flavor with the channels `mask` removes cut out (weights copied)."""
    cfg = copy.deepcopy(model.get_config())
    cfg.pop("compile_config", None)
    specs = {s.name: s for s in graph.layers}
    kept_in: dict[str, np.ndarray] = {}
    kept_out: dict[str, np.ndarray] = {}
    for name in specs:
        ins = graph.atoms_in.get(name) or []
        if len(ins) == 1:
            kept_in[name] = np.flatnonzero(mask[ins[0]])
        if name in graph.atoms_out:
            kept_out[name] = np.flatnonzero(mask[graph.atoms_out[name]])
    for entry in cfg["layers"]:
        entry.pop("build_config", None)
        conf = entry["config"]
        name = entry.get("name") or conf["name"]
        spec = specs.get(name)
        if spec is None or name not in kept_out:
            continue
        width = len(kept_out[name])
        if spec.kind in PRODUCERS:
            conf["units" if spec.kind == "Dense" else "filters"] = width
        elif spec.kind == "Reshape":
            conf["target_shape"] = [*list(conf["target_shape"])[:-1], width]
    custom = {type(layer).__name__: type(layer) for layer in model.layers}
    new = type(model).from_config(cfg, custom_objects=custom)
    for layer in model.layers:
        spec = specs.get(layer.name)
        weights = layer.get_weights()
        if spec is not None and weights:
            fin = kept_in.get(layer.name)
            fout = kept_out.get(layer.name)
            if fin is not None and fout is not None:
                weights = _slice(spec, weights, fin, fout)
        if weights:
            new.get_layer(layer.name).set_weights(weights)
    return new


# --------------------------------------------------------------------------- the library entry


@dataclass
class ChannelPruneResult:
    """What `channel_prune()` produced; `model` is the rebuilt model (the input's flavor)."""

    model: Any
    graph: ChannelGraph
    target_macs: float
    criterion: str
    keep_ratio: float
    macs_before: int
    macs_after: int
    layers: list[dict[str, Any]]

    @property
    def macs_kept(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    @property
    def target_reached(self) -> bool:
        return self.macs_kept <= self.target_macs + 1e-9

    def summary(self) -> dict[str, Any]:
        g = self.graph
        return {
            "target_macs": self.target_macs,
            "criterion": self.criterion,
            "keep_ratio": round(self.keep_ratio, 4),
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "macs_kept": round(self.macs_kept, 4),
            "target_reached": self.target_reached,
            "groups": [
                {"producers": grp.producers, "channels": grp.channels, "members": grp.members}
                for grp in g.groups
            ],
            "left_whole": g.left_whole,
            "kept_whole": g.kept,
            "layers": self.layers,
        }


@dataclass
class Prepared:
    """A model's channel graph and channel scores: what every MAC target of `prune_prepared`
    shares (a latency search prunes one model to several targets)."""

    model: Any
    graph: ChannelGraph
    scores: dict[int, np.ndarray]
    criterion: str


def _check_minimums(
    *,
    min_channels: int | None = None,
    min_fraction: float | None = None,
    multiple_of: int | None = None,
) -> None:
    """UsageError for a bad minimum among those given (None: not given, its default stands)."""
    for name, value in (("min_channels", min_channels), ("multiple_of", multiple_of)):
        if value is not None:
            training.check_positive(name, value, integer=True)
    if min_fraction is not None and not 0 <= min_fraction <= 1:
        raise UsageError(f"Expected min_fraction in [0, 1]. Received: min_fraction={min_fraction}")


def prepare(model: Any, criterion: str = "l1", x_calib: np.ndarray | None = None) -> Prepared:
    """The dependency groups of `model` and its channels' importance under `criterion`
    (UnsupportedModelError when nothing can be pruned)."""
    graph = analyze(model)
    for w in graph.left_whole:
        ui.info(f"channel_prune: {w['class']} layer {w['layer']!r} left whole ({w['reason']})")
    if not graph.groups:
        raise UnsupportedModelError(_nothing_to_prune(model, graph))
    if not graph.total_macs:
        raise UnsupportedModelError(
            f"Model {model.name!r} has no conv or dense MACs to remove; nothing to prune."
        )
    return Prepared(model, graph, importance(model, graph, criterion, x_calib), criterion)


def channel_prune(
    model: Any,
    *,
    target_macs: float = 0.5,
    criterion: str = "l1",
    min_channels: int = 8,
    min_fraction: float = 0.1,
    multiple_of: int = 16,
    x_calib: np.ndarray | None = None,
) -> ChannelPruneResult:
    """Remove whole channels from `model` (a built Keras 3 or tf-keras Functional/Sequential
    model, left untouched) until at most `target_macs` of its MACs remain; return the rebuilt
    model and per-layer figures. See the module docstring for the groups and the criteria."""
    check_target(target_macs)
    _check_minimums(min_channels=min_channels, min_fraction=min_fraction, multiple_of=multiple_of)
    return prune_prepared(
        prepare(model, criterion, x_calib), target_macs=target_macs, min_channels=min_channels,
        min_fraction=min_fraction, multiple_of=multiple_of,
    )  # fmt: skip


def prune_prepared(
    prepared: Prepared,
    *,
    target_macs: float,
    min_channels: int = 8,
    min_fraction: float = 0.1,
    multiple_of: int = 16,
) -> ChannelPruneResult:
    """`channel_prune` of a prepared model: plan to `target_macs`, rebuild, count."""
    model, graph = prepared.model, prepared.graph
    keep, ratio = plan(
        graph, prepared.scores, target_macs=target_macs, min_channels=min_channels,
        min_fraction=min_fraction, multiple_of=multiple_of,
    )  # fmt: skip
    mask = keep_mask(graph, keep)
    if all(len(keep[g.id]) == g.channels for g in graph.groups):
        raise UnsupportedModelError(
            f"Model {model.name!r}: every prunable group is at its minimum (min_channels="
            f"{min_channels}, min_fraction={min_fraction}, multiple_of={multiple_of}); no channel "
            "can be removed. Lower those minimums."
        )
    new = rebuild(model, graph, mask)
    after = {
        layer.name: _layer_macs(layer, _kind(layer), layer.get_config()) for layer in new.layers
    }
    before = graph.macs
    layers = []
    for spec in graph.layers:
        if spec.name not in before:
            continue
        ch_before = len(graph.atoms_out.get(spec.name, []))
        ch_after = (
            int(mask[graph.atoms_out[spec.name]].sum()) if spec.name in graph.atoms_out else 0
        )
        if before[spec.name] or ch_before != ch_after:
            layers.append(
                {
                    "layer": spec.name,
                    "class": spec.kind,
                    "channels_before": ch_before,
                    "channels_after": ch_after,
                    "macs_before": int(before[spec.name]),
                    "macs_after": int(after.get(spec.name, 0)),
                }
            )
    total_after = int(sum(after.values()))
    result = ChannelPruneResult(
        new, graph, float(target_macs), prepared.criterion, ratio, graph.total_macs, total_after,
        layers,
    )  # fmt: skip
    ui.info(
        f"channel_prune: {len(graph.groups)} group(s), MACs {graph.total_macs:,} -> "
        f"{total_after:,} ({result.macs_kept:.1%} kept, target {target_macs:.0%})"
    )
    if not result.target_reached:
        ui.info(
            f"warning: channel_prune: the minimums and the layers kept whole leave "
            f"{result.macs_kept:.1%} of the MACs, above target_macs={target_macs}; lower "
            "min_channels / min_fraction / multiple_of to go further."
        )
    return result


def channel_prune_to_latency(
    model: Any,
    *,
    target_latency: float,
    device: str,
    precision: str = "float32",
    x_calib: Any = None,
    max_probes: int = 6,
    tolerance: float = 0.03,
    **prune_options: Any,
) -> tuple[ChannelPruneResult, Any]:
    """`channel_prune` to a latency target instead of a MAC target: at most `target_latency` of
    the unpruned model's estimated latency on the emulated `device` (a profile name, e.g.
    "pixel-4") as `precision` TFLite. `prune_options`: channel_prune's (criterion, min_channels,
    min_fraction, multiple_of, x_calib for taylor goes in `x_calib` too). Returns the
    ChannelPruneResult chosen and the LatencySearch (every probe)."""
    from edgekit.stages import latency_budget as lb

    problem = lb.target_problem(target_latency)
    if problem:
        raise UsageError(problem)
    if precision not in lb.PRECISIONS:
        raise UsageError(
            f"Expected latency_precision one of {', '.join(lb.PRECISIONS)}. Received: {precision!r}"
        )
    profile = lb.device_profile(device)
    criterion = prune_options.pop("criterion", "l1")
    _check_minimums(**prune_options)  # before the scores: taylor's gradients cost
    taylor_calib = x_calib if criterion == "taylor" else None
    prepared = prepare(model, criterion, taylor_calib)  # once: every probe shares the scores
    with tempfile.TemporaryDirectory(prefix="edgekit-latency-") as tmp:
        work = Path(tmp)

        def measure(m: Any) -> dict:
            return lb.estimate(m, profile, precision, x_calib, work)

        unpruned = measure(model)
        ui.info(
            f"channel_prune: the unpruned model counts {unpruned['instructions']:,.0f} "
            f"instructions per invoke on {device} ({precision})"
            + (f", {unpruned['ms']:.3g} ms estimated" if unpruned.get("ms") is not None else "")
        )
        return lb.search(
            lambda macs: prune_prepared(prepared, target_macs=macs, **prune_options),
            measure,
            unpruned,
            float(target_latency),
            device=device,
            precision=precision,
            max_probes=max_probes,
            tolerance=tolerance,
        )


def _kind(layer: Any) -> str:
    return type(layer).__name__


def _nothing_to_prune(model: Any, graph: ChannelGraph) -> str:
    if graph.kept:
        first = graph.kept[0]
        why = f"every conv/dense layer's channels must stay (e.g. {first['layer']!r}: {first['reason']})"
    elif graph.left_whole:
        names = ", ".join(f"{w['layer']} ({w['class']})" for w in graph.left_whole[:3])
        why = f"it has no conv or dense layer the stage can reason about (left whole: {names})"
    else:
        why = "it has no Conv or Dense layer"
    return f"Model {model.name!r} has no channel group that can be pruned: {why}."


# --------------------------------------------------------------------------- recovery


def recalibrate_batchnorm(
    model: Any, x: np.ndarray, *, batches: int = 16, batch_size: int = 64
) -> int:
    """Re-estimate every batch norm's moving mean and variance on `x` (the average over up to
    `batches` batches), in place; returns how many layers. Removing channels changes what the
    layers after them see, and with momentum 0.99 the old statistics would outweigh the new
    ones for hundreds of steps: the model would train well and evaluate badly."""
    bns = [layer for layer in _all_layers(model) if type(layer).__name__ == "BatchNormalization"]
    if not bns or len(x) == 0:
        return 0
    saved = [bn.momentum for bn in bns]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    try:
        for i in range(min(batches, math.ceil(len(x) / batch_size))):
            for bn in bns:
                bn.momentum = i / (i + 1)  # a running average over the batches seen
            model(
                np.asarray(x[order[i * batch_size : (i + 1) * batch_size]], np.float32),
                training=True,
            )
    finally:
        for bn, m in zip(bns, saved, strict=True):
            bn.momentum = m
    return len(bns)


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        out.append(layer)
        if hasattr(layer, "layers"):
            out.extend(_all_layers(layer))
    return out


@dataclass
class RecoveryResult:
    model: Any  # tf-keras, best validation epoch's weights
    history: dict[str, list[float]]
    best_epoch: int
    epochs_run: int
    bridge_max_abs_diff: float | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs_run,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "bridge_max_abs_diff": self.bridge_max_abs_diff,
        }


def recover(
    model: Any,
    x_train: np.ndarray,
    teacher_train: np.ndarray,
    y_train: np.ndarray | None = None,
    *,
    x_val: np.ndarray | None = None,
    teacher_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    epochs: int = 3,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    alpha: float = 0.3,
    temperature: float = 2.0,
    patience: int = 2,
    seed: int = 0,
) -> RecoveryResult:
    """Fine-tune a pruned model by distillation from the unpruned model's logits (the distill
    stage's loss; labels optional: without them alpha is 0). A Keras 3 model is bridged to
    tf-keras first (outputs checked); the best validation epoch's weights are kept."""
    import tensorflow as tf

    from edgekit.keras_compat import tf_keras, to_tf_keras, wrap
    from edgekit.stages.distill import _metrics, distillation_loss, pack_targets

    training.check_positive("epochs", epochs, integer=True)
    bridge_diff = None
    tfk = tf_keras()
    if not isinstance(model, tfk.Model):
        bridged = to_tf_keras(wrap(model), np.asarray(x_train[:16], np.float32))
        model, bridge_diff = bridged.model, float(bridged.max_abs_diff)
    moved = recalibrate_batchnorm(model, x_train)
    if moved:
        ui.info(f"channel_prune: batch-norm statistics of {moved} layer(s) re-estimated")
    teacher_train = as_logits(teacher_train)
    if len(teacher_train) != len(x_train):
        raise DataError(
            f"Expected one row of teacher logits per training image ({len(x_train)}). "
            f"Received: {len(teacher_train)}"
        )
    if y_train is None:
        alpha = 0.0
    k = int(teacher_train.shape[-1])
    base = distillation_loss(k, alpha, temperature)
    if training.outputs_are_probabilities(model, np.asarray(x_train[:8], np.float32)):

        def loss(y_true: Any, y_pred: Any) -> Any:  # softmax head: its log is a valid logit
            return base(y_true, tf.math.log(tf.clip_by_value(y_pred, 1e-7, 1.0)))
    else:
        loss = base
    has_val = x_val is not None and teacher_val is not None and len(x_val) > 0
    labeled_val = has_val and y_val is not None and y_train is not None
    callbacks = []
    if has_val:
        monitor = "val_accuracy" if labeled_val else "val_agreement"
        callbacks.append(
            tfk.callbacks.EarlyStopping(
                monitor=monitor, mode="max", patience=patience, restore_best_weights=True
            )
        )
    history = training.fit(
        model,
        np.asarray(x_train, np.float32),
        pack_targets(y_train, teacher_train),
        x_val=x_val if has_val else None,
        y_val=pack_targets(y_val if labeled_val else None, as_logits(teacher_val))
        if has_val
        else None,
        epochs=epochs,
        batch_size=batch_size,
        optimizer="adam",
        learning_rate=learning_rate,
        schedule="cosine",
        loss=loss,
        metrics=_metrics(k, y_train is not None),
        callbacks=callbacks,
        seed=seed,
        description="channel_prune recovery",
        steps_per_execution=8,
    )
    epochs_run = len(next(iter(history.values()))) if history else 0
    best = int(callbacks[0].best_epoch) + 1 if callbacks else epochs_run
    return RecoveryResult(model, history, best, epochs_run, bridge_diff)
