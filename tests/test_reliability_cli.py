"""Locks, interrupts and full disks outside `compress`: the RunLock itself, `baseline create` on
one file, the emulator cache of `devices setup`, `bench` and `eval` stopped by a signal, and the
label-range message. Real processes and signals; ONNX models built with onnx.helper (no TF).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from check_models import build_onnx_models, labels_for, make_pixels, save_npz
from reliability_helpers import (
    SIGCONT,
    SIGINT,
    SIGKILL,
    SIGSTOP,
    SIGTERM,
    Edgekit,
    assert_interrupted,
    edgekit_lines,
    env,
    fill,
    mount_small_disk,
    run,
    snapshot,
)

from edgekit.artifacts import LockHolder, RunLock, _start_ticks
from edgekit.errors import RunLocked

pytestmark = pytest.mark.xdist_group("reliability")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return build_onnx_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def data(models, tmp_path_factory):
    pixels = make_pixels(200)
    return save_npz(
        tmp_path_factory.mktemp("data") / "eval.npz", pixels, labels_for(models["base"], pixels)
    )


HOLD = textwrap.dedent(
    """
    import sys, time
    from edgekit.artifacts import RunLock
    lock = RunLock(sys.argv[1], what="test")
    lock.acquire()
    print("held", flush=True)
    time.sleep(120)
    """
)


def hold(path: Path) -> subprocess.Popen:
    """Another process that takes the RunLock at `path` and keeps it."""
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True, env=env()
    )
    assert p.stdout.readline().strip() == "held"
    return p


def test_lock_refuses_a_second_holder_and_takes_over_from_a_killed_one(tmp_path):
    path = tmp_path / ".edgekit.lock"
    holder = hold(path)
    try:
        with pytest.raises(RunLocked) as e:
            RunLock(path, what="Run folder x", hint="Pass another --out.").acquire()
        msg = str(e.value)
        host = socket.gethostname()
        assert msg.startswith(f"Run folder x is in use by pid {holder.pid} on {host}, started ")
        assert msg.endswith("nothing was touched. Pass another --out.") and "\n" not in msg
    finally:
        holder.send_signal(SIGKILL)
        holder.wait()
    # kill -9 leaves the file; the kernel released the lock with the process
    assert json.loads(path.read_text())["pid"] == holder.pid
    notes: list[str] = []
    lock = RunLock(path, what="Run folder x")
    lock.acquire(note=notes.append)
    assert len(notes) == 1 and f"from pid {holder.pid} on {socket.gethostname()}" in notes[0]
    assert "no longer running" in notes[0]
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not path.exists()


def _write_holder(path: Path, **fields) -> None:
    holder = {"pid": 1, "host": socket.gethostname(), "started": "2026-01-01T00:00:00+0000"}
    holder.update(fields)
    path.write_text(json.dumps(holder))


def test_lock_file_without_flock_is_judged_by_its_pid(tmp_path):
    """A lock file written where flock() does not exclude (or by hand): a live pid on this host
    holds it, a dead or reused pid does not, another host's is left alone."""
    path = tmp_path / ".edgekit.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_holder(path, pid=sleeper.pid, ticks=_start_ticks(sleeper.pid))
        with pytest.raises(RunLocked, match=f"in use by pid {sleeper.pid}"):
            RunLock(path, what="x").acquire()
        # the same pid with another start time is another process: the holder is gone
        _write_holder(path, pid=sleeper.pid, ticks=(_start_ticks(sleeper.pid) or 0) + 1)
        notes: list[str] = []
        lock = RunLock(path, what="x")
        lock.acquire(note=notes.append)
        assert "no longer running" in notes[0]
        lock.release()
    finally:
        sleeper.kill()
        sleeper.wait()
    _write_holder(path, pid=sleeper.pid)  # dead now
    lock = RunLock(path, what="x")
    lock.acquire()
    lock.release()
    _write_holder(path, pid=os.getpid(), host="build-agent-7")
    with pytest.raises(RunLocked, match=r"another machine.*delete .*\.edgekit\.lock"):
        RunLock(path, what="x").acquire()
    assert LockHolder(pid=os.getpid(), host="h", started="t").alive()


def test_second_baseline_create_on_one_file_is_refused(tmp_path, models, data):
    out = tmp_path / "ci" / "baseline.json"
    args = ["baseline", "create", models["base"], "--data", data, "--out", out]
    first = Edgekit([*args, "--latency-seconds", "4"], tmp_path, "first")
    lock = out.with_name(".baseline.json.lock")
    t_end = time.monotonic() + 60
    while not (lock.exists() and lock.read_text()) and time.monotonic() < t_end:
        time.sleep(0.05)
    first.signal(SIGSTOP)
    try:
        before = snapshot(out.parent)
        second = run([*args, "--latency-seconds", "1"], tmp_path, "second", 60)
        after = snapshot(out.parent)
    finally:
        first.signal(SIGCONT)
    assert second.proc.returncode == 2
    lines = edgekit_lines(second.stderr)
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith(f"error: Baseline file {out} is in use by pid {first.pid} on ")
    assert before == after
    assert first.wait(120) == 0, first.stderr
    doc = json.loads(out.read_text())
    assert doc["format"] == "edgekit-baseline" and doc["latency"]["seconds"] == 4
    assert not lock.exists()


def test_devices_setup_waits_for_another_setup_or_refuses(tmp_path):
    cache = tmp_path / "cache"
    (cache / "emulation").mkdir(parents=True)
    holder = hold(cache / "emulation" / ".lock")
    try:
        p = run(["devices", "setup", "--no-wait"], tmp_path, "nowait", 60, EDGEKIT_CACHE=str(cache))
        assert p.proc.returncode == 2
        lines = edgekit_lines(p.stderr)
        assert len(lines) == 1 and lines[0].startswith(
            f"error: The emulator cache {cache / 'emulation'} is in use by pid {holder.pid}"
        ), p.stderr
        waiting = Edgekit(
            ["devices", "setup"], tmp_path, "wait", EDGEKIT_CACHE=str(cache), EDGEKIT_QUIET="0"
        )
        t_end = time.monotonic() + 60
        while "waiting for" not in waiting.stderr and time.monotonic() < t_end:
            assert waiting.running(), waiting.stderr
            time.sleep(0.05)
        assert f"waiting for pid {holder.pid} on " in waiting.stderr
        time.sleep(0.3)
        assert waiting.running()  # it waits, it does not fail
        waiting.signal(SIGINT)
        assert_interrupted(
            waiting,
            SIGINT,
            r"interrupted during edgekit devices setup; rerun the same command to continue "
            r"\(finished parts are kept\)",
        )
    finally:
        holder.kill()
        holder.wait()
    assert not list((cache / "emulation").glob("*edgekit-tmp"))


@pytest.mark.parametrize("sig", [SIGINT, SIGTERM])
def test_bench_and_eval_stop_on_a_signal_in_one_line(tmp_path, models, data, sig):
    bench = Edgekit(["bench", models["heavy"], "--min-seconds", "60", "--json"], tmp_path, "bench")
    time.sleep(3)  # loading, warming up or timing: all the same to a signal
    bench.signal(sig)
    by = " by SIGTERM" if sig == SIGTERM else ""
    assert_interrupted(
        bench, sig, rf"interrupted{by} during .*; nothing is half-written; rerun the same command"
    )
    assert bench.stdout == ""  # no half a JSON report
    many = tmp_path / "many.npz"
    np.savez(many, x=make_pixels(20000), y=np.arange(20000) % 4)
    ev = Edgekit(
        ["eval", models["heavy"], "--data", many, "--batch-size", "1"],
        tmp_path,
        "eval",
        EDGEKIT_QUIET="0",
    )
    t_end = time.monotonic() + 60
    while "eval heavy.onnx: " not in ev.stderr and time.monotonic() < t_end:
        assert ev.running(), ev.stderr
        time.sleep(0.05)
    ev.signal(sig)
    assert_interrupted(
        ev, sig, rf"interrupted{by} during eval heavy.onnx; nothing is half-written; rerun .*"
    )


def test_labels_beyond_the_model_are_reported_as_the_labels_go(tmp_path, models):
    pixels = make_pixels(40)
    y = np.arange(40) % 10
    y[0] = 99  # labels 0..99 for a 4-class model: "labels go up to 99", not "100 classes"
    data = save_npz(tmp_path / "d.npz", pixels, y, classes=100)
    np.savez(tmp_path / "nolabels.npz", x=pixels, y=y)
    for cmd in (["eval", models["base"], "--data", tmp_path / "nolabels.npz"],
                ["baseline", "create", models["base"], "--data", tmp_path / "nolabels.npz",
                 "--out", tmp_path / "b.json", "--no-latency"]):  # fmt: skip
        p = run(cmd, tmp_path, "labels", 60)
        assert p.proc.returncode == 2
        (line,) = edgekit_lines(p.stderr)
        assert "has 4 outputs (labels 0 to 3) but the data's labels go up to 99" in line, line
        assert "100 classes" not in line
    p = run(["eval", models["base"], "--data", data], tmp_path, "named", 60)
    (line,) = edgekit_lines(p.stderr)
    assert "the data names 100 classes" in line, line


@pytest.fixture
def small_disk(tmp_path):
    yield from mount_small_disk(tmp_path, "1m")


def test_baseline_create_on_a_full_disk_is_one_line(tmp_path, models, data, small_disk):
    out = small_disk / "baseline.json"
    filler = fill(small_disk, leave=4096)  # one page: the lock file fits, the baseline does not
    p = run(["baseline", "create", models["base"], "--data", data, "--out", out,
             "--latency-seconds", "0.3"], tmp_path, "full", 60)  # fmt: skip
    assert p.proc.returncode == 2, p.stderr
    (line,) = edgekit_lines(p.stderr)
    assert line.startswith(f"error: No space left in {small_disk} while writing baseline.json: ")
    assert " needed" in line
    assert sorted(q.name for q in small_disk.iterdir()) == ["filler"]
    filler.unlink()
