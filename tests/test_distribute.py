"""distill.distribute: the strategy module's validation (in-process) and MirroredStrategy over 2
logical CPU devices against one device (in its own process: logical devices must be set before
TensorFlow initialises them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.errors import UsageError
from edgekit.stages.distribute import check_tf_config, plan_distribution

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "raw,words",
    [
        (None, "TF_CONFIG environment variable"),
        ("{not json", "not valid JSON"),
        (
            '{"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}',
            "twice",
        ),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "no chief"),
        (
            '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}',
            "not in",
        ),
    ],
)
def test_bad_tf_config_is_one_line_usage_error(raw, words):
    with pytest.raises(UsageError, match=words) as info:
        check_tf_config(raw)
    assert "\n" not in str(info.value)


def test_good_tf_config_returns_its_cluster():
    raw = '{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}'
    assert check_tf_config(raw) == {"worker": ["a:1", "b:1"]}


def test_devices_need_mirrored_and_must_exist():
    with pytest.raises(UsageError, match="mirrored only"):
        plan_distribution("none", ["/cpu:0"])
    with pytest.raises(UsageError, match="does not have"):
        plan_distribution("mirrored", ["/gpu:7"])
    one = plan_distribution("auto")  # no GPU here: one device
    assert one.record()["strategy"] == "none" and one.global_batch(8) == 8


def _run_worker(*args: str) -> tuple[subprocess.CompletedProcess, dict]:
    """tests/distribute_worker.py in its own process (logical devices are set before TensorFlow
    starts): the process, and its RESULT line's figures."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "distribute_worker.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("RESULT "))
    return proc, json.loads(line[len("RESULT ") :])


@pytest.mark.slow
@pytest.mark.xdist_group("distribute")
@pytest.mark.skipif(
    not os.environ.get("EDGEKIT_DISTRIBUTED_TESTS"),
    reason="2 min on 2 cores, over make test's budget: `make test-distributed` runs it",
)
def test_mirrored_over_two_cpus_trains_like_one_device():
    proc, out = _run_worker()
    assert out["none"]["distribution"]["replicas"] == 1
    mirrored = out["mirrored"]["distribution"]
    assert mirrored == {
        "strategy": "mirrored",
        "replicas": 2,
        "devices": ["/device:CPU:0", "/device:CPU:1"],
        "workers": 1,
    }
    assert "Training on 2 replica(s) with mirrored" in proc.stderr  # ui.info: stderr
    # Same global batch (16 = 2 x 8), doubled learning rate: both fit the training set; the
    # final training loss within 0.25 (measured: 0.458 one device, 0.441 mirrored).
    for mode in ("none", "mirrored"):
        assert out[mode]["loss"] < out[mode]["first_loss"] / 3
    assert abs(out["none"]["loss"] - out["mirrored"]["loss"]) < 0.25


@pytest.mark.slow
def test_prune_fine_tunes_under_mirrored_like_one_device():
    """prune of the same trained net on one device and mirrored over 2 logical CPUs (10 s in
    its own process): both reach the sparsity and keep the accuracy, losses within 0.25."""
    _, out = _run_worker("finetune")
    assert out["none"]["distribution"]["replicas"] == 1
    assert out["mirrored"]["distribution"]["replicas"] == 2
    assert out["mirrored"]["distribution"]["strategy"] == "mirrored"
    for mode in ("none", "mirrored"):  # the masks reach the target on the replicas too
        assert abs(out[mode]["sparsity"] - 0.5) < 0.02, out[mode]
        assert out[mode]["accuracy"] > 0.9, out[mode]  # the trained net survives pruning
    assert abs(out["none"]["loss"][-1] - out["mirrored"]["loss"][-1]) < 0.25, out


def test_prune_trains_where_its_config_says_and_qat_on_one_device():
    from edgekit.stages.prune import PruneConfig
    from edgekit.stages.qat import QatConfig

    assert PruneConfig().distribute == "auto" and PruneConfig().devices is None
    with pytest.raises(ValueError, match="distribute"):
        PruneConfig(distribute="multi_worker")  # distill's only: fine-tuning is an epoch or two
    with pytest.raises(ValueError, match="distribute"):
        QatConfig(distribute="mirrored")  # tfmot's QAT has no tf.distribute support


def test_mixed_precision_trains_in_float16_and_saves_a_float32_student():
    """mixed_float16 runs on a CPU too (slowly): the student trains under that policy, with
    loss scaling, and comes back computing in float32 with the trained weights."""
    import numpy as np

    from edgekit.keras_compat import tf_keras
    from edgekit.stages.distill import DistillConfig, distill
    from edgekit.stages.distribute import resolve_precision

    rng = np.random.default_rng(0)
    x = rng.random((48, 32, 32, 3), dtype=np.float32)
    t = rng.normal(size=(48, 4)).astype(np.float32) * 3
    config = DistillConfig(
        student={"arch": "mobilenet_v2", "width": 0.35, "input_size": 32},
        epochs=1,
        batch_size=16,
        alpha=0.0,
        precision="mixed_float16",
        early_stopping={"enabled": False},
    )
    result = distill(config, x, t, x_val=x[:16], teacher_val=t[:16])
    assert result.precision == "mixed_float16"
    assert tf_keras().mixed_precision.global_policy().name == "float32"  # put back
    student = result.model
    assert student.dtype_policy.name == "float32"
    assert all(w.dtype == np.float32 for w in student.get_weights())
    out = student.predict(x[:4], verbose=0)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert np.isfinite(result.history["loss"]).all()
    assert resolve_precision("auto") in ("float32", "mixed_float16")
    with pytest.raises(UsageError, match="precision auto, float32 or mixed_float16"):
        resolve_precision("bfloat8")
