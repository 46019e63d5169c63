"""distill.distribute=multi_worker with real worker processes on localhost ports (TF_CONFIG):
a worker that never joins times out with its address; two workers distill end to end, one is
SIGKILLed mid-run, both restart and the run resumes after its last finished epoch."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_compress import digits_npz, teacher_keras3  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
RECIPE = """name: mw
seed: 0
data:
  split: {train: 0.7, val: 0.1, calib: 0.1, eval: 0.1}
  seed: 0
  preprocessing: {mean: 0.0, std: 255.0}
stages:
  - stage: distill
    student: {arch: mobilenet_v2, width: 0.35, input_size: 32}
    epochs: 4
    batch_size: 16
    distribute: multi_worker
    join_timeout_s: JOIN
  - stage: export
    formats: [tflite]
"""


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _start(index, ports, teacher, data, recipe, out, logs):
    config = {
        "cluster": {"worker": [f"localhost:{p}" for p in ports]},
        "task": {"type": "worker", "index": index},
    }
    env = {**os.environ, "TF_CONFIG": json.dumps(config), "EDGEKIT_QUIET": "1",
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}  # fmt: skip
    args = [sys.executable, "-m", "edgekit", "compress", str(teacher), "--recipe", str(recipe),
            "--data", str(data), "--out", str(out), "--json", "--set", "latency_runs=3",
            "--set", "verify.samples=64"]  # fmt: skip
    logs.mkdir(parents=True, exist_ok=True)
    n = len(list(logs.glob(f"w{index}-*.out")))
    stdout = open(logs / f"w{index}-{n}.out", "w")  # noqa: SIM115 - closed with the process
    stderr = open(logs / f"w{index}-{n}.err", "w")  # noqa: SIM115
    return subprocess.Popen(args, env=env, stdout=stdout, stderr=stderr)


def _recipe(tmp_path, join_timeout_s):
    path = tmp_path / "mw.yaml"
    path.write_text(RECIPE.replace("JOIN", str(join_timeout_s)))
    return path


def _wait_for(path: Path, text: str, procs, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text():
            return
        if any(p.poll() is not None for p in procs):
            raise AssertionError(f"a worker ended before '{text}' appeared in {path}")
        time.sleep(0.2)
    raise AssertionError(f"'{text}' did not appear in {path} within {seconds} s")


@pytest.mark.slow
def test_a_silent_worker_times_out(tmp_path, teacher_keras3, digits_npz):  # noqa: F811
    """Worker 1 never starts: worker 0 stops after join_timeout_s with one line naming worker
    1's address, exit 2, before anything is written."""
    ports = _free_ports(2)
    out, logs = tmp_path / "run", tmp_path / "logs"
    p = _start(0, ports, teacher_keras3, digits_npz, _recipe(tmp_path, 3), out, logs)
    assert p.wait(timeout=180) == 2
    err = (logs / "w0-0.err").read_text()
    lines = [ln for ln in err.splitlines() if ln.startswith(("error:", "Traceback"))]
    assert len(lines) == 1, err[-2000:]
    assert "the workers did not all join within 3 s" in lines[0]
    assert f"no answer from localhost:{ports[1]}" in lines[0]
    assert not out.exists()  # stopped before the run folder was made


@pytest.mark.slow
@pytest.mark.xdist_group("distribute")
@pytest.mark.skipif(
    not os.environ.get("EDGEKIT_DISTRIBUTED_TESTS"),
    reason="two TensorFlow processes, about 2 min on 2 cores, over make test's budget: "
    "`make test-distributed` runs it",
)
def test_two_workers_resume_after_one_is_killed(tmp_path, teacher_keras3, digits_npz):  # noqa: F811
    """Two workers distill; worker 1 is SIGKILLed in epoch 3; the chief stops with one line;
    both restart with the same command, resume after epoch 2 and finish; only the chief wrote
    the run folder's report."""
    ports = _free_ports(2)
    out, logs = tmp_path / "run", tmp_path / "logs"
    recipe = _recipe(tmp_path, 300)
    chief, worker = (
        _start(i, ports, teacher_keras3, digits_npz, recipe, out, logs) for i in (0, 1)
    )
    try:
        _wait_for(out / "run.log", "distill: epoch 2/4", [chief, worker], 420)
        worker.send_signal(signal.SIGKILL)  # lost in epoch 3
        worker.wait()
        # the chief notices (heartbeats) and stops with one line saying how to go on
        assert chief.wait(timeout=180) == 1
        err = (logs / "w0-0.err").read_text()
        lines = [ln for ln in err.splitlines() if ln.startswith(("error:", "internal error"))]
        assert len(lines) == 1 and "a task of the multi_worker run stopped" in lines[0], err[-3000:]
        assert "Start every task again with the same command" in lines[0]

        # every task restarted with the same command: both resume after epoch 2
        chief, worker = (
            _start(i, ports, teacher_keras3, digits_npz, recipe, out, logs) for i in (0, 1)
        )
        assert chief.wait(timeout=480) == 0, (logs / "w0-1.err").read_text()[-3000:]
        assert worker.wait(timeout=120) == 0, (logs / "w1-1.err").read_text()[-3000:]
    finally:
        for p in (chief, worker):
            if p.poll() is None:
                p.kill()
    for log in (out / "run.log", out / "workers" / "worker-1" / "run.log"):
        text = log.read_text()
        second = text[text.rindex("distill: 4 epoch(s)") :]
        assert "distill: resuming after epoch 2/4 from the checkpoint" in second, text
        assert "distill: epoch 3/4" in second and "distill: epoch 2/4" not in second
    report = json.loads((out / "report.json").read_text())
    stage = report["stages"][0]
    assert stage["distribution"]["strategy"] == "multi_worker"
    assert stage["distribution"]["workers"] == stage["distribution"]["replicas"] == 2
    assert stage["epochs_run"] == 4 and len(stage["history"]["loss"]) == 4
    assert any(a["format"] == "tflite" for a in report["artifacts"])
    worker_report = json.loads((logs / "w1-1.out").read_text())
    assert worker_report["role"] == "worker" and worker_report["task"] == "worker:1"
    # only the chief wrote the run folder's report; the worker kept to its own folder
    assert not list((out / "workers").rglob("report.json"))
    assert not (out / "cache" / "checkpoints").exists()
