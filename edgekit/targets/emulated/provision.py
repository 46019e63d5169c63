"""Provisioning of the emulated arm64 targets: qemu-user, an arm64 Python sysroot, aarch64 wheels
and the instruction-counting plugin, all in a cache folder outside the repository.

    from edgekit.targets.emulated import provision
    provision.setup()     # idempotent; "already provisioned" in well under a second

(edgekit.targets.emulated.cache says what is there: `status()`, `require()`.)

Layout of `<cache>/emulation/` (cache: $EDGEKIT_CACHE, else $XDG_CACHE_HOME/edgekit, else
~/.cache/edgekit):

    state.json            versions and hashes of every part (written last, atomically)
    sysroot/              Debian bookworm arm64: python3.11, its stdlib, libstdc++ (dpkg -x)
    site/                 numpy and ai-edge-litert aarch64 wheels, unpacked
    plugin/insn_count-<sha256[:16]>.so
    cpus/<key>/           one small overlay per emulated core (see edgekit.targets.emulated.qemu)

The sysroot comes from a private apt state (its own lists, cache and sources; the host's dpkg
architecture list and apt lists are never touched), so it needs no root and is the same on any
host. Only installing qemu-user itself needs root. Each part is built in a temporary folder and
renamed into place, so a killed setup never leaves a half part that looks done.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.errors import TargetUnavailableError
from edgekit.targets.emulated.cache import (
    FORMAT,
    QEMU,
    SETUP_COMMAND,
    _check_parts,
    _read_state,
    _sha256,
    _smoke_key,
    emulation_dir,
    plugin_path,
    plugin_source,
    status,
    wanted_wheels,
)

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# What the guest needs: the interpreter, its standard library, and the C++ runtime LiteRT links.
PACKAGES = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6")
# Pulled into the closure by python3.11-minimal's maintainer scripts only; the guest never runs them.
SKIP_PACKAGES = ("dpkg", "tar")
GLIBC_MINOR = 36  # bookworm's glibc 2.36: the newest manylinux tag its wheels may carry
PART_NAMES = ("qemu", "sysroot", "wheels", "plugin", "smoke")


def _write_state(root: Path, state: dict[str, Any]) -> None:
    from edgekit.artifacts import write_json_atomic

    write_json_atomic(root / "state.json", state)


@contextlib.contextmanager
def _lock(root: Path, wait: bool = True) -> Iterator[None]:
    """One setup at a time (parallel test workers, two CI jobs, two terminals): a second one
    waits for the first, saying whom it waits for (or, wait=False, is refused at once), then
    finds the parts built. A lock left by a killed setup is taken over with a note."""
    from edgekit import ui
    from edgekit.artifacts import RunLock

    root.mkdir(parents=True, exist_ok=True)
    lock = RunLock(
        root / ".lock",
        what=f"The emulator cache {root}",
        hint="Wait for that setup to finish (or run without --no-wait to wait for it).",
    )
    lock.acquire(wait=wait, note=ui.info)
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _building(dest: Path) -> Iterator[Path]:
    """A fresh temporary folder beside `dest`, renamed to `dest` when the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(argv: list[str], *, what: str, timeout: float = 1800, **kw: Any) -> str:
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw
        )
    except FileNotFoundError:
        raise TargetUnavailableError(f"{what}: `{argv[0]}` is not installed.") from None
    except subprocess.TimeoutExpired:
        raise TargetUnavailableError(
            f"{what}: `{argv[0]}` did not finish in {timeout:g} s."
        ) from None
    if proc.returncode != 0:
        text = " ".join((proc.stderr or proc.stdout or "").split())
        raise TargetUnavailableError(f"{what} failed (exit {proc.returncode}): {text[-300:]}")
    return proc.stdout


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


# --- the parts ---------------------------------------------------------------------------------


def _ensure_qemu() -> dict[str, Any]:
    from edgekit import ui

    exe = shutil.which(QEMU)
    if exe is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise TargetUnavailableError(
                f"{QEMU} is missing: run `sudo apt-get install -y qemu-user` (Debian/Ubuntu; the "
                f"dynamic build, not qemu-user-static, which cannot load plugins), then "
                f"`{SETUP_COMMAND}`."
            )
        ui.info("emulation: installing qemu-user with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run(["apt-get", "update", "-q"], what="apt-get update", env=env)
        _run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "qemu-user"],
            what="apt-get install qemu-user",
            env=env,
        )
        exe = shutil.which(QEMU)
        if exe is None:
            raise TargetUnavailableError(f"apt-get installed qemu-user but {QEMU} is not on PATH.")
    version = _run([exe, "--version"], what=f"{QEMU} --version").splitlines()[0]
    return {"path": exe, "version": version}


def _apt_options(apt: Path) -> list[str]:
    """A private apt: its own sources, lists, cache and (empty) dpkg status, arm64 only."""
    opts = {
        "Dir::State": apt / "state",
        "Dir::State::status": apt / "state" / "status",
        "Dir::Cache": apt / "cache",
        "Dir::Etc::sourcelist": apt / "sources.list",
        "Dir::Etc::sourceparts": apt / "sources.list.d",
        "APT::Architecture": "arm64",
        "APT::Architectures::": "arm64",
        "Acquire::Languages": "none",
        "Debug::NoLocking": "1",
    }
    if os.geteuid() == 0:
        opts["APT::Sandbox::User"] = "root"  # the private folders are not readable by _apt
    return [x for k, v in opts.items() for x in ("-o", f"{k}={v}")]


def _build_sysroot(root: Path) -> dict[str, Any]:
    from edgekit import ui

    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise TargetUnavailableError(
                f"`{tool}` is missing: the arm64 sysroot is built from Debian packages with apt "
                "(Debian or Ubuntu hosts)."
            )
    if not Path(KEYRING).is_file():
        raise TargetUnavailableError(
            f"{KEYRING} is missing (it verifies the Debian packages of the arm64 sysroot): "
            "run `sudo apt-get install -y debian-archive-keyring`."
        )
    with tempfile.TemporaryDirectory(prefix=".apt.", dir=root) as tmp:
        apt = Path(tmp)
        for d in ("state/lists/partial", "cache/archives/partial", "sources.list.d", "debs"):
            (apt / d).mkdir(parents=True)
        (apt / "state" / "status").write_text("")
        (apt / "sources.list").write_text(
            f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main\n"
            f"deb [signed-by={KEYRING}] {MIRROR} {SUITE}-updates main\n"
            f"deb [signed-by={KEYRING}] {SECURITY} {SUITE}-security main\n"
        )
        opts = _apt_options(apt)
        ui.info(f"emulation: reading the Debian {SUITE} arm64 package lists")
        _run(["apt-get", *opts, "update", "-q"], what="apt-get update (private arm64 lists)")
        # Simulating an install against an empty dpkg status yields the whole closure.
        sim = _run(
            ["apt-get", *opts, "install", "-s", "--no-install-recommends", *PACKAGES],
            what="resolving the arm64 sysroot packages",
        )
        pins = {}
        for m in re.finditer(r"^Inst (\S+) \((\S+) ", sim, re.M):
            if m.group(1) not in SKIP_PACKAGES:
                pins[m.group(1)] = m.group(2)
        ui.info(f"emulation: downloading {len(pins)} Debian arm64 packages")
        _run(
            ["apt-get", *opts, "download", *(f"{n}={v}" for n, v in sorted(pins.items()))],
            what="apt-get download (arm64 sysroot)",
            cwd=apt / "debs",
        )
        debs = sorted((apt / "debs").glob("*.deb"))
        size = sum(d.stat().st_size for d in debs)
        ui.info(
            f"emulation: unpacking {len(debs)} packages ({size / 2**20:.1f} MB) into the sysroot"
        )
        with _building(root / "sysroot") as dest:
            for deb in debs:
                _run(["dpkg-deb", "-x", str(deb), str(dest)], what=f"dpkg-deb -x {deb.name}")
            if not (dest / "usr" / "bin" / "python3.11").is_file():
                raise TargetUnavailableError("The arm64 sysroot has no usr/bin/python3.11.")
    return {"suite": SUITE, "packages": pins, "download_bytes": size}


def _build_wheels(root: Path) -> dict[str, Any]:
    import importlib.util
    import zipfile

    from edgekit import ui

    if importlib.util.find_spec("pip") is None:
        raise TargetUnavailableError(
            f"pip is not available to {sys.executable}; it downloads the aarch64 wheels. "
            f"Run `{sys.executable} -m ensurepip`, then `{SETUP_COMMAND}`."
        )
    want = wanted_wheels()
    # pip matches --platform tags exactly, so every manylinux level the sysroot's glibc meets.
    platforms = ["manylinux2014_aarch64"] + [
        f"manylinux_2_{m}_aarch64" for m in range(17, GLIBC_MINOR + 1)
    ]
    with tempfile.TemporaryDirectory(prefix=".wheels.", dir=root) as tmp:
        ui.info(
            f"emulation: downloading aarch64 wheels {', '.join(f'{k}=={v}' for k, v in want.items())}"
        )
        argv = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
        argv += ["--python-version", "3.11", "--implementation", "cp", "-d", tmp]
        argv += [x for p in platforms for x in ("--platform", p)]
        _run(argv + [f"{k}=={v}" for k, v in want.items()], what="pip download (aarch64 wheels)")
        wheels = sorted(Path(tmp).glob("*.whl"))
        size = sum(w.stat().st_size for w in wheels)
        ui.info(f"emulation: unpacking {len(wheels)} wheels ({size / 2**20:.1f} MB)")
        with _building(root / "site") as dest:
            for w in wheels:
                with zipfile.ZipFile(w) as z:
                    z.extractall(dest)
                # zipfile drops the permission bits; shared objects load without them, but keep
                # scripts and libraries readable and executable as pip would install them.
                for p in dest.rglob("*.so*"):
                    p.chmod(0o755)
    return {"versions": want, "files": [w.name for w in wheels], "download_bytes": size}


def _build_plugin(root: Path) -> dict[str, Any]:
    from edgekit import ui

    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise TargetUnavailableError(
            "No C compiler for the instruction-counting plugin: run `sudo apt-get install -y gcc`, "
            f"then `{SETUP_COMMAND}`."
        )
    src = plugin_source()
    dest = plugin_path(root)
    ui.info(f"emulation: compiling {src.name} with {cc}")
    with _building(dest.parent / (dest.name + ".d")) as tmp:
        out = tmp / dest.name
        _run(
            [cc, "-shared", "-fPIC", "-O2", "-fvisibility=hidden", "-o", str(out), str(src)],
            what=f"compiling {src.name}",
        )
        os.replace(out, dest)  # same folder tree, so the rename is atomic
    shutil.rmtree(dest.parent / (dest.name + ".d"), ignore_errors=True)
    for old in dest.parent.glob("insn_count-*.so"):
        if old != dest:
            old.unlink(missing_ok=True)
    return {"path": str(dest), "source_sha256": _sha256(src), "compiler": cc}


def _smoke(state: dict[str, Any]) -> dict[str, Any]:
    """One int8 model on an emulated Cortex-A76 with the plugin: proves every part together."""
    from edgekit import ui
    from edgekit.resources import asset
    from edgekit.targets.emulated import qemu

    ui.info("emulation: smoke test (LiteRT on an emulated Cortex-A76, instructions counted)")
    t0 = time.monotonic()
    a76 = qemu.CORTEX_A76
    res = qemu.count_instructions(
        asset("check_reference_int8.tflite"),
        qemu_cpu="cortex-a76",
        features=a76["features"],
        midr=a76["midr"],
        cores=4,
        runs=2,
        _state=state,
    )
    if not res["median"] or res["median"] <= 0:
        raise TargetUnavailableError("Smoke test: the plugin counted no instructions.")
    return {
        "key": _smoke_key(state),
        "seconds": round(time.monotonic() - t0, 1),
        "instructions_per_invoke": res["median"],
        "runtime_version": res["runtime_version"],
        "python": res["python"],
    }


def setup(force: bool = False, wait: bool = True) -> dict[str, Any]:
    """Provision everything the emulated targets need (idempotent); return status() plus what
    this call did ("already provisioned" when nothing was missing). Another setup running on
    the same cache is waited for (wait=False: refused at once, RunLocked)."""
    from edgekit import ui

    t0 = time.monotonic()
    root = emulation_dir()
    if not force:
        state = _read_state(root)
        if all(p["ok"] for p in _check_parts(root, state).values()):
            ui.info(f"emulation: already provisioned in {root}")
            return {**status(), "did": "already provisioned", "seconds": time.monotonic() - t0}
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TargetUnavailableError(
            f"Cannot create the cache folder {root} ({e.strerror}). Set EDGEKIT_CACHE to a "
            "writable folder."
        ) from None
    built = []
    with _lock(root, wait=wait):
        state = {} if force else _read_state(root)
        state["format"] = FORMAT
        if force:
            shutil.rmtree(root / "cpus", ignore_errors=True)
        parts = _check_parts(root, state)
        steps = (
            ("qemu", lambda: _ensure_qemu()),
            ("sysroot", lambda: _build_sysroot(root)),
            ("wheels", lambda: _build_wheels(root)),
            ("plugin", lambda: _build_plugin(root)),
        )
        for name, build in steps:
            if force or not parts[name]["ok"]:
                state[name] = build()
                _write_state(root, state)
                built.append(name)
        if built or not _check_parts(root, state)["smoke"]["ok"]:
            state["smoke"] = _smoke(state)
            _write_state(root, state)
            built.append("smoke")
    seconds = time.monotonic() - t0
    ui.info(
        f"emulation: provisioned in {root} ({', '.join(built) or 'nothing'} in {seconds:.0f} s)"
    )
    return {
        **status(),
        "did": "built " + ", ".join(built) if built else "already provisioned",
        "seconds": seconds,
    }
