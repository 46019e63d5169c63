"""Helpers for the reliability tests: real `edgekit` processes, real signals, the run folder.

from reliability_helpers import Edgekit, leftovers, wait_for_line   # tests/ is on sys.path
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import edgekit
from edgekit.artifacts import LOCK_NAME, TMP_SUFFIX

ROOT = Path(edgekit.__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    """The environment of an edgekit child: this tree first on the path, progress silenced."""
    e = dict(os.environ)
    e.update(
        PYTHONPATH=str(ROOT),
        EDGEKIT_QUIET="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",
    )
    e.pop("EDGEKIT_DEBUG", None)
    e.update(extra)
    return e


class Edgekit:
    """`python -m edgekit ARGS` in its own process, stdout and stderr in files under `logs`."""

    def __init__(self, args: list, logs: Path, name: str, cwd: Path | None = None, **extra: str):
        logs.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = logs / f"{name}.out", logs / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edgekit", *map(str, args)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env(**extra),
                cwd=cwd,
            )
        self.pid = self.proc.pid

    def wait(self, timeout: float = 300) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"edgekit did not end within {timeout} s: {self.stderr}") from None

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None


def run(args: list, logs: Path, name: str, timeout: float = 300, **extra: str) -> Edgekit:
    p = Edgekit(args, logs, name, **extra)
    p.wait(timeout)
    return p


def log_size(out: Path) -> int:
    log = out / "run.log"
    return log.stat().st_size if log.exists() else 0


def wait_for_line(
    path: Path, pattern: str, proc: Edgekit, *, offset: int = 0, timeout: float = 240
) -> str:
    """Wait until a line of `path` written after byte `offset` matches `pattern` (a regex)."""
    rx = re.compile(pattern)
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if path.exists():
            with open(path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            for line in text.splitlines():
                if rx.search(line):
                    return line
        if not proc.running():
            raise AssertionError(
                f"edgekit ended (exit {proc.proc.returncode}) before {pattern!r} appeared in "
                f"{path}: {proc.stderr[-2000:]}"
            )
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} did not appear in {path} within {timeout} s")


def leftovers(out: Path) -> list[str]:
    """Half-written things in a run folder: partial stages, temporaries, a lock file."""
    found = []
    for p in out.rglob("*"):
        if p.name.endswith(".partial") or p.name.endswith(TMP_SUFFIX) or p.name == LOCK_NAME:
            found.append(str(p.relative_to(out)))
    return sorted(found)


def edgekit_lines(stderr: str) -> list[str]:
    """The lines edgekit itself wrote on stderr (errors and interrupt lines), none of TF's."""
    return [
        ln
        for ln in stderr.splitlines()
        if ln.startswith(("error:", "interrupted", "internal error", "note:", "Traceback"))
    ]


def assert_interrupted(p: Edgekit, sig: int, pattern: str) -> str:
    """Exit 128 + sig, one edgekit line matching `pattern`, no traceback."""
    rc = p.wait()
    err = p.stderr
    assert rc == 128 + sig, (rc, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    lines = edgekit_lines(err)
    assert len(lines) == 1, lines
    assert re.fullmatch(pattern, lines[0]), lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder` (and the folder) with its kind, size and mtime."""
    out = {}
    for p in [folder, *sorted(folder.rglob("*"))]:
        st = p.lstat()
        out[str(p.relative_to(folder))] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


SIGINT, SIGTERM, SIGKILL, SIGSTOP, SIGCONT = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGKILL,
    signal.SIGSTOP,
    signal.SIGCONT,
)


def mount_small_disk(tmp_path: Path, size: str = "4m"):
    """Yield a small tmpfs (root only); pytest.skip with the reason where none can be mounted."""
    import pytest

    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs for the full-disk test")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}): no full-disk test")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` up to `leave` free bytes with one file."""
    filler = disk / "filler"
    # Unbuffered: the write that meets the full disk fails here, not again when the file closes.
    with open(filler, "wb", buffering=0) as f:
        block = b"\0" * (1 << 16)
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError:
            pass
    size = filler.stat().st_size
    while shutil.disk_usage(disk).free < leave and size > 0:
        size = max(0, size - 4096)
        os.truncate(filler, size)
    return filler
