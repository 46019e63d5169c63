"""Where the training stages train: one device, or several replicas through `tf.distribute`.

`plan_distribution(mode, devices)` resolves a recipe's `distribute` setting into a
`Distribution`: the `tf.distribute` strategy, its replicas and devices. Training code builds and
compiles its model inside `Distribution.scope()` and feeds batches of `global_batch(per_replica)`
images; Keras splits each batch over the replicas.

Modes:
- `none`: TensorFlow's default strategy, one device (the first GPU when there is one, else CPU).
- `mirrored`: `MirroredStrategy` over the GPUs of this machine, or over `devices` when named
  (e.g. ``["/cpu:0", "/cpu:1"]`` with logical CPU devices, as the tests do).
- `multi_worker`: `MultiWorkerMirroredStrategy` from the `TF_CONFIG` environment variable.
  TensorFlow wants it created at program startup, before any other op, and its creation waits
  for every worker: `start_multi_worker` (the distill stage's preflight calls it before the run
  does anything) creates it once, with a time-out that names the workers that did not answer.
- `auto`: `mirrored` with 2+ GPUs, `none` otherwise.

Batch and learning rate: the recipe's `batch_size` is per replica, the global batch is
`batch_size x replicas`, and the learning rate is scaled linearly with the replicas
(`scaled_learning_rate`), the rule of Goyal et al. 2017 ("Accurate, large minibatch SGD"): with
N times the images per step and N times fewer steps, each image keeps about the same weight in
the updates. With one replica nothing changes.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from edgekit.errors import UsageError

Mode = Literal["auto", "none", "mirrored", "multi_worker"]
MODES = ("auto", "none", "mirrored", "multi_worker")


@dataclass
class Distribution:
    """A resolved strategy: what the report says about it, and the strategy itself."""

    strategy_name: str  # none | mirrored | multi_worker
    replicas: int
    devices: list[str]
    workers: int = 1
    strategy: Any = field(default=None, repr=False)

    def record(self) -> dict[str, Any]:
        """The stage record's `distribution` entry (report.json and the manifest)."""
        return {
            "strategy": self.strategy_name,
            "replicas": self.replicas,
            "devices": list(self.devices),
            "workers": self.workers,
        }

    def global_batch(self, per_replica: int) -> int:
        """Images per training step over all replicas."""
        return int(per_replica) * self.replicas

    def scaled_learning_rate(self, learning_rate: float) -> float:
        """The learning rate for the global batch: linear in the replicas (see module doc)."""
        return float(learning_rate) * self.replicas

    def describe(self) -> str:
        """One line for the run's first lines: which devices it trains on."""
        where = ", ".join(self.devices)
        if self.strategy_name == "none":
            gpu = any("GPU" in d.upper() for d in self.devices)
            return f"Training on 1 device ({where}){'' if gpu else '; no GPU found'}"
        return (
            f"Training on {self.replicas} replica(s) with {self.strategy_name} "
            f"({where}; {self.workers} worker(s))"
        )

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Build and compile models inside this (a no-op for one device)."""
        if self.strategy is None:
            yield
            return
        with self.strategy.scope():
            yield


def gpus() -> list[str]:
    """This machine's GPUs as TensorFlow names them (logical devices)."""
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("GPU")]


def _gpu_count() -> int:
    """The GPUs TensorFlow sees, as physical devices: the runtime is not started, so logical
    devices can still be configured afterwards."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def has_gpu() -> bool:
    """True when TensorFlow sees a GPU (without starting its runtime)."""
    return _gpu_count() > 0


def _training_tasks(cluster: dict[str, list[str]]) -> list[str]:
    """The addresses of a TF_CONFIG cluster's tasks that train: its chief and workers."""
    return [a for kind in ("chief", "worker") for a in cluster.get(kind, [])]


def where_it_trains(mode: str = "auto", devices: Sequence[str] | None = None) -> str:
    """Where `plan_distribution(mode, devices)` will train, in words, for the run's first lines,
    without building a strategy or starting TensorFlow's devices (physical devices are read):
    "1 device (the CPU; no GPU found)", "mirrored over 2 GPUs", "multi_worker, 2 workers from
    TF_CONFIG". A multi_worker mode without a usable TF_CONFIG is refused here (UsageError)."""
    found = _gpu_count()
    if mode == "multi_worker":
        cluster = check_tf_config(os.environ.get("TF_CONFIG"))
        return f"multi_worker, {len(_training_tasks(cluster))} workers from TF_CONFIG"
    if mode == "mirrored" and devices:
        return f"mirrored over {', '.join(devices)}"
    if mode in ("mirrored", "auto") and found >= 2:
        return f"mirrored over {found} GPUs"
    if found:
        return "1 device (GPU 0)"
    return "1 device (the CPU; no GPU found)"


def resolve_precision(mode: str = "auto") -> str:
    """ "float32" or "mixed_float16": auto is mixed_float16 when a GPU is present (float16
    compute, float32 weights: about 2x the throughput on tensor-core GPUs), float32 on a CPU."""
    if mode not in ("auto", "float32", "mixed_float16"):
        raise UsageError(
            f"Expected precision auto, float32 or mixed_float16. Received: precision={mode!r}"
        )
    if mode == "auto":
        return "mixed_float16" if has_gpu() else "float32"
    return mode


@contextmanager
def precision_policy(name: str) -> Iterator[None]:
    """tf_keras' global dtype policy set to `name` inside the block (layers built there compute
    in it; `compile` adds loss scaling for mixed_float16), put back afterwards."""
    from edgekit.keras_compat import tf_keras

    mp = tf_keras().mixed_precision
    previous = mp.global_policy()
    mp.set_global_policy(name)
    try:
        yield
    finally:
        mp.set_global_policy(previous)


def _default_device() -> str:
    import tensorflow as tf

    found = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return found[0].name


def plan_distribution(mode: str = "auto", devices: Sequence[str] | None = None) -> Distribution:
    """Resolve `mode` (see module doc) into a `Distribution`, building its strategy.

    Args:
        mode: auto, none, mirrored or multi_worker.
        devices: for mirrored only, the devices to replicate over (TensorFlow names such as
            "/gpu:0" or "/cpu:1"); default all GPUs.

    Returns:
        The Distribution (its `strategy` None for one device).

    Raises:
        UsageError: an unknown mode, devices with another mode than mirrored, a device this
            machine does not have, or multi_worker without a usable TF_CONFIG.
    """
    import tensorflow as tf

    if mode not in MODES:
        raise UsageError(
            f"Expected distribute in {', '.join(MODES)}. Received: distribute={mode!r}"
        )
    if devices and mode != "mirrored":
        raise UsageError(
            f"distribute.devices applies to distribute=mirrored only. Received: distribute={mode}, "
            f"devices={list(devices)}. Set --set distill.distribute=mirrored or drop the devices."
        )
    if mode == "auto":
        mode = "mirrored" if len(gpus()) >= 2 else "none"
    if mode == "none":
        return Distribution("none", 1, [_default_device()])
    if mode == "multi_worker":
        return start_multi_worker()
    names = list(devices) if devices else gpus()
    known = {_full_name(d.name).lower() for d in tf.config.list_logical_devices()}
    missing = [d for d in names if _full_name(d).lower() not in known]
    if missing:
        have = ", ".join(sorted(known))
        raise UsageError(
            f"distill.devices names {', '.join(missing)}, which this machine does not have "
            f"(it has {have}). Name devices from that list, or leave devices empty for all GPUs."
        )
    if not names:
        return Distribution("none", 1, [_default_device()])
    strategy = tf.distribute.MirroredStrategy(devices=names)
    return Distribution(
        "mirrored", int(strategy.num_replicas_in_sync), [_full_name(d) for d in names], 1, strategy
    )


_MULTI_WORKER: Distribution | None = None


def start_multi_worker(join_timeout_s: float = 300.0) -> Distribution:
    """The process's MultiWorkerMirroredStrategy from TF_CONFIG, created on the first call.

    TensorFlow configures collective ops when the strategy is created, which it allows only
    before any other op ran: call this at program startup (the distill stage's preflight does).
    Creation blocks until every worker of TF_CONFIG has joined: the tasks meet first
    (`_rendezvous`), and one that does not answer within `join_timeout_s` is named in a one-line
    UsageError (exit 2), before TensorFlow starts.

    Raises:
        UsageError: a bad TF_CONFIG, a task that did not join in time, or TensorFlow already
            ran an op in this process.
    """
    global _MULTI_WORKER
    if _MULTI_WORKER is not None:
        return _MULTI_WORKER
    raw = os.environ.get("TF_CONFIG")
    cluster = check_tf_config(raw)
    task = json.loads(raw or "{}")["task"]
    me = cluster[task["type"]][task["index"]]
    tasks = _training_tasks(cluster)
    others = [a for a in tasks if a != me]
    _rendezvous(f"{task['type']}:{task['index']}", me, others, join_timeout_s)
    import tensorflow as tf

    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as exc:
        if "startup" not in str(exc):
            raise
        raise UsageError(
            "distribute=multi_worker must start before TensorFlow runs anything in the process "
            "(TensorFlow configures collective ops once, at startup). From Python, call "
            "edgekit.stages.distribute.start_multi_worker() first."
        ) from None
    _MULTI_WORKER = Distribution(
        "multi_worker",
        int(strategy.num_replicas_in_sync),
        list(strategy.extended.worker_devices),
        len(tasks),
        strategy,
    )
    return _MULTI_WORKER


def _rendezvous(task: str, me: str, others: list[str], timeout_s: float) -> None:
    """Wait until every other task answers on its port, before TensorFlow starts.

    TensorFlow's own wait for the workers cannot be interrupted (it holds the interpreter) and
    has no time-out, so the tasks meet here first: each listens on its own TF_CONFIG port and
    polls the others' until all answer, then closes its listener and lets TensorFlow take the
    port (a task that went ahead answers through TensorFlow's server). A task still silent after
    `timeout_s` is named in a one-line UsageError."""
    port = me.rpartition(":")[2]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("", int(port)))
        listener.listen(64)
    except OSError as exc:
        listener.close()
        raise UsageError(
            f"distribute=multi_worker: this task's address {me} (TF_CONFIG {task}) cannot be "
            f"listened on ({exc.strerror}). Give this task a free port in TF_CONFIG."
        ) from None
    deadline = time.monotonic() + timeout_s
    waiting = list(others)
    try:
        while waiting:
            waiting = [a for a in waiting if not _answers(a)]
            if not waiting or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
    finally:
        listener.close()
    if waiting:
        raise UsageError(
            f"distribute=multi_worker: the workers did not all join within {timeout_s:g} s "
            f"(this task {task} at {me}; no answer from {', '.join(waiting)}). Start every task "
            "of TF_CONFIG, check the addresses and that the ports are open, or raise "
            "distill.join_timeout_s."
        )


def _answers(address: str) -> bool:
    """True when something accepts a TCP connection at host:port."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def worker_task() -> str | None:
    """ "worker:1" for a task of TF_CONFIG that is not the chief; None for the chief or without
    TF_CONFIG."""
    if is_chief():
        return None
    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    return f"{task.get('type')}:{task.get('index', 0)}"


def _full_name(device: str) -> str:
    """ "/cpu:1", "CPU:1" or "/device:CPU:1" -> "/device:CPU:1" (how TensorFlow lists them)."""
    name = device.strip().lstrip("/").removeprefix("device:")
    kind, _, index = name.partition(":")
    return f"/device:{kind.upper()}:{index or 0}"


def check_tf_config(raw: str | None) -> dict[str, list[str]]:
    """Validate the TF_CONFIG of a multi_worker run; return its cluster.

    Raises:
        UsageError: TF_CONFIG missing or not JSON, no cluster, an address named twice, no chief
            (neither a "chief" task nor worker 0), or this task not in the cluster.
    """
    if not raw:
        raise UsageError(
            "distribute=multi_worker needs the TF_CONFIG environment variable (the cluster and "
            "this task; see docs/distributed.md), and it is not set. Set it on every worker, or "
            "use distribute=auto on one machine."
        )
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise UsageError(f"TF_CONFIG is not valid JSON ({exc}). See docs/distributed.md.") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise UsageError(
            'TF_CONFIG has no "cluster" (e.g. {"cluster": {"worker": ["host1:12345", '
            '"host2:12345"]}, "task": {"type": "worker", "index": 0}}).'
        )
    seen: dict[str, str] = {}
    for kind, addresses in cluster.items():
        if not isinstance(addresses, list):
            raise UsageError(f"TF_CONFIG cluster.{kind} must be a list of host:port addresses.")
        for i, address in enumerate(addresses):
            where = f"{kind}[{i}]"
            if address in seen:
                raise UsageError(
                    f"TF_CONFIG names {address} twice ({seen[address]} and {where}); give each "
                    "task its own host:port."
                )
            seen[address] = where
    if not cluster.get("chief") and not cluster.get("worker"):
        raise UsageError(
            'TF_CONFIG has no chief: its cluster needs a "chief" task or at least one "worker" '
            "(worker 0 then acts as chief)."
        )
    task = config.get("task") or {}
    kind, index = task.get("type"), task.get("index")
    tasks = cluster.get(kind) if isinstance(kind, str) else None
    if not tasks or not isinstance(index, int) or not 0 <= index < len(tasks):
        raise UsageError(
            f"TF_CONFIG's task ({kind}, index {index}) is not in its cluster "
            f"({', '.join(f'{k} x{len(v)}' for k, v in cluster.items())}). Set task.type and "
            "task.index to this machine's entry."
        )
    return cluster


def is_chief() -> bool:
    """True unless TF_CONFIG says this process is a non-chief task: only the chief writes
    artifacts and reports."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    try:
        config = json.loads(raw)
        cluster, task = config.get("cluster", {}), config.get("task", {})
    except (ValueError, AttributeError):
        return True
    kind, index = task.get("type"), task.get("index", 0)
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and not cluster.get("chief")
