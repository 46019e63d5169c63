"""arm64 LiteRT under user-mode QEMU (qemu-aarch64), with an optional instruction count.

    from edgekit.targets.emulated import qemu
    res = qemu.run_job({"model0.tflite": path}, job, qemu_cpu="cortex-a76",
                       features=[...], midr={...}, cores=8)
    counts = qemu.count_instructions(path, qemu_cpu="cortex-a76", features=[...], midr={...},
                                     cores=8, threads=1, runs=3)

The job is the one edgekit's remote runner runs over ssh (edgekit/runtimes/remote_runner.py),
here run by the arm64 Python of the provisioned sysroot. QEMU shows the guest the host's
/proc/cpuinfo unless the -L prefix holds one, and LiteRT's CPU detection crashes on an x86 one;
so every emulated core gets a small overlay folder: symlinks into the shared sysroot plus its own
proc/cpuinfo and sys/devices/system/cpu/{possible,present,online}. QEMU 7.2 looks every absolute
path the guest opens up under -L first and falls back to the host's, so the guest sees the
overlay's cpuinfo and the host's /tmp, where the job folder lives.

Wall time under QEMU is not a latency: it runs the arm64 code 30-300x slower than the host, at a
rate that depends on the instruction mix. The instruction count is the portable figure.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgekit.errors import TargetUnavailableError, UsageError
from edgekit.targets.jobs import last_line, read_output, stage_job

# QEMU's own models (target/arm/cpu64.c) and the /proc/cpuinfo a Linux kernel prints for them.
# Profiles bring their own; these serve the smoke test and the tests.
CORTEX_A76 = {
    "features": [
        "fp",
        "asimd",
        "evtstrm",
        "aes",
        "pmull",
        "sha1",
        "sha2",
        "crc32",
        "atomics",
        "fphp",
        "asimdhp",
        "cpuid",
        "asimdrdm",
        "lrcpc",
        "dcpop",
        "asimddp",
    ],
    "midr": {"implementer": "0x41", "variant": "0x4", "part": "0xd0b", "revision": "1"},
}
CORTEX_A53 = {
    "features": ["fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "cpuid"],
    "midr": {"implementer": "0x41", "variant": "0x0", "part": "0xd03", "revision": "4"},
}
_SIGNALS = {
    signal.SIGILL: "illegal instruction: the code used an instruction this core lacks; check "
    "that the profile's cpu.features (e.g. asimddp, asimdhp) match what {cpu} implements",
    signal.SIGSEGV: "segmentation fault inside the guest (LiteRT or numpy); a /proc/cpuinfo that "
    "does not describe the core can cause it",
    signal.SIGBUS: "bus error inside the guest",
    signal.SIGABRT: "the guest aborted",
}


def cpuinfo_text(features: list[str], midr: Mapping[str, Any] | None, cores: int) -> str:
    """/proc/cpuinfo as an arm64 Linux kernel prints it, `cores` identical cores."""
    if not isinstance(cores, int) or isinstance(cores, bool) or not 1 <= cores <= 256:
        raise UsageError(f"Expected cores between 1 and 256. Received: {cores!r}")
    bad = [f for f in features if not f or not str(f).isalnum() or str(f) != str(f).lower()]
    if bad:
        raise UsageError(f"Expected lower-case /proc/cpuinfo feature words. Received: {bad!r}")
    midr = dict(midr or {})
    block = ["BogoMIPS\t: 50.00", f"Features\t: {' '.join(features)}"]
    if midr:
        block += [
            f"CPU implementer\t: {midr.get('implementer', '0x41')}",
            "CPU architecture: 8",
            f"CPU variant\t: {midr.get('variant', '0x0')}",
            f"CPU part\t: {midr.get('part', '0x000')}",
            f"CPU revision\t: {midr.get('revision', '0')}",
        ]
    body = "\n".join(block)
    return "".join(f"processor\t: {i}\n{body}\n\n" for i in range(cores))


def overlay(root: Path, features: list[str], midr: Mapping[str, Any] | None, cores: int) -> Path:
    """The -L folder for one emulated core: the shared sysroot plus its own cpuinfo."""
    text = cpuinfo_text(features, midr, cores)
    key = hashlib.sha256(f"{text}\0{cores}".encode()).hexdigest()[:16]
    dest = root / "cpus" / key
    if (dest / "proc" / "cpuinfo").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=dest.parent))
    try:
        sysroot = (root / "sysroot").resolve()
        for entry in sysroot.iterdir():
            if entry.name not in ("proc", "sys"):
                (tmp / entry.name).symlink_to(entry)
        (tmp / "proc").mkdir()
        (tmp / "proc" / "cpuinfo").write_text(text)
        cpu = tmp / "sys" / "devices" / "system" / "cpu"
        cpu.mkdir(parents=True)
        span = "0" if cores == 1 else f"0-{cores - 1}"
        for name in ("possible", "present", "online"):
            (cpu / name).write_text(span + "\n")
        try:
            os.replace(tmp, dest)
        except OSError:  # another process made the same overlay first
            if not (dest / "proc" / "cpuinfo").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def run_job(
    files: Mapping[str, Path],
    job: dict[str, Any],
    *,
    qemu_cpu: str,
    features: list[str],
    midr: Mapping[str, Any] | None,
    cores: int,
    count_instructions: bool = False,
    timeout: float = 1800.0,
    _state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run a remote-runner job (files: name in the job -> local path) on an emulated arm64 core;
    the runner's result, plus "instruction_counts" (the plugin's raw pairs) when counting."""
    from edgekit.targets.emulated import cache

    state = _state if _state is not None else cache.require()
    root = cache.emulation_dir()
    qemu_exe = state["qemu"]["path"]
    lroot = overlay(root, list(features), midr, cores)
    if not qemu_cpu or not all(c.isalnum() or c in "-_." for c in qemu_cpu):
        raise UsageError(f"Expected a qemu-aarch64 -cpu model name. Received: {qemu_cpu!r}")
    if count_instructions:
        job = {**job, "markers": True}
    with tempfile.TemporaryDirectory(prefix="edgekit-qemu-") as tmp:
        stage = Path(tmp)
        stage_job(stage, files, job)
        argv = [qemu_exe, "-cpu", qemu_cpu, "-L", str(lroot)]
        counts_file = stage / "insn_counts.txt"
        if count_instructions:
            argv += ["-plugin", f"{state['plugin']['path']},out={counts_file}"]
        # The guest gets only these variables: QEMU hands its own environment to the guest, and
        # the host's (PYTHONPATH, LD_PRELOAD, a venv's) mean nothing to an arm64 Python.
        argv += ["-E", f"PYTHONPATH={root / 'site'}", "-E", "OPENBLAS_NUM_THREADS=1"]
        argv += [str(lroot / "usr" / "bin" / "python3.11"), str(stage / "remote_runner.py")]
        argv += [str(stage / "job.json")]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(stage)}
        try:
            proc = subprocess.run(
                argv,
                cwd=stage,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                preexec_fn=_no_core_dumps,
            )
        except subprocess.TimeoutExpired:
            raise TargetUnavailableError(
                f"The emulated {qemu_cpu} did not finish within {timeout:g} s (QEMU runs arm64 "
                "code 30-300x slower than this machine): use fewer runs or a smaller model."
            ) from None
        counts = _read_counts(counts_file) if count_instructions else None
    result = _parse(proc, qemu_cpu)
    if counts is not None:
        result["instruction_counts"] = counts
    return result


def _no_core_dumps() -> None:
    # A crashing guest would otherwise leave a qemu_*.core file of its whole address space.
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _parse(proc: subprocess.CompletedProcess, qemu_cpu: str) -> dict[str, Any]:
    out = read_output(proc.stdout)
    if out is not None:
        kind, body = out
        if kind == "result":
            return body
        if body["kind"] in ("no_runtime", "no_numpy"):
            raise TargetUnavailableError(
                f"The emulated {qemu_cpu} has a broken provision ({body['message']}). Run "
                "`edgekit devices setup --force`."
            )
        if body["kind"] == "batch":
            raise UsageError(f"{body['message']}. Use --batch to match the model.")
        raise TargetUnavailableError(f"LiteRT on the emulated {qemu_cpu} failed: {body['message']}")
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode)
        why = _SIGNALS.get(sig, "the guest was killed").format(cpu=qemu_cpu)
        raise TargetUnavailableError(
            f"The emulated {qemu_cpu} died with {sig.name}: {why}. ({last_line(proc.stderr)[:160]})"
        )
    raise TargetUnavailableError(
        f"qemu-aarch64 -cpu {qemu_cpu} ended without a result (exit {proc.returncode}): "
        f"{last_line(proc.stderr)[:200] or 'no message'}"
    )


def _read_counts(path: Path) -> dict[str, Any] | None:
    """The plugin's file: {"pairs": [{"vcpu", "counts": [per vCPU]}], "total", "lost"}."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    pairs, total, lost = [], [], 0
    for line in lines:
        word, *rest = line.split()
        if word == "pair":
            pairs.append({"vcpu": int(rest[0]), "counts": [int(x) for x in rest[1:]]})
        elif word == "total":
            total = [int(x) for x in rest]
        elif word == "lost":
            lost = int(rest[0])
    return {"pairs": pairs, "total": total, "lost": lost}


def count_instructions(
    model_path: str | os.PathLike,
    *,
    qemu_cpu: str,
    features: list[str],
    midr: Mapping[str, Any] | None,
    cores: int,
    threads: int = 1,
    runs: int = 3,
    timeout: float = 1800.0,
    _state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Guest instructions per invoke() of a .tflite on an emulated core (XNNPACK, random input):
    each of `runs` invokes counted alone, the markers' own cost subtracted."""
    from edgekit.artifacts import ModelArtifact

    path = Path(model_path)  # a path or a ModelArtifact
    if not path.is_file() or ModelArtifact.open(model_path).format != "tflite":
        raise UsageError(f"Expected a .tflite model file. Received: {model_path}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UsageError(f"Expected threads >= 1. Received: {threads!r}")
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise UsageError(f"Expected runs >= 1. Received: {runs!r}")
    job = {
        "mode": "bench",
        "models": ["model0.tflite"],
        "threads": threads,
        "batch": 1,
        "xnnpack": True,
        "warmup": 2,
        "warmup_seconds": 0.0,
        "runs": runs,
        "min_seconds": None,
        "seed": 0,
    }
    res = run_job(
        {"model0.tflite": path},
        job,
        qemu_cpu=qemu_cpu,
        features=features,
        midr=midr,
        cores=cores,
        count_instructions=True,
        timeout=timeout,
        _state=_state,
    )
    split = split_counts(res, qemu_cpu, n_models=1)
    c = split["models"][0]
    model = res["models"][0]
    return {
        "model": str(path),
        "qemu_cpu": qemu_cpu,
        "threads": threads,
        "runs": runs,
        **c,
        "marker_overhead": split["marker_overhead"],
        "marker_vcpu": split["marker_vcpu"],
        "delegate": model.get("delegate"),
        "emulated_ms": res["samples_ms"][0],
        "runtime": res.get("runtime"),
        "runtime_version": res.get("runtime_version"),
        "python": res.get("machine", {}).get("python"),
        "source": "emulated",
    }


def split_counts(res: dict[str, Any], qemu_cpu: str, *, n_models: int) -> dict[str, Any]:
    """Per-model instruction counts per invoke from a counted bench job's result: each marker
    pair's count minus the median of the empty pairs (per vCPU), summed over vCPUs."""
    raw = res.get("instruction_counts")
    labels = res.get("marker_pairs") or []
    if not raw or len(raw["pairs"]) != len(labels):
        raise TargetUnavailableError(
            f"The instruction counter on the emulated {qemu_cpu} recorded "
            f"{len(raw['pairs']) if raw else 'no'} marker pairs; the runner emitted {len(labels)}."
        )
    width = max(len(p["counts"]) for p in raw["pairs"])
    rows = [p["counts"] + [0] * (width - len(p["counts"])) for p in raw["pairs"]]
    empty = [r for r, lab in zip(rows, labels, strict=True) if lab < 0]
    overhead = (
        [statistics.median(r[v] for r in empty) for v in range(width)] if empty else [0] * width
    )
    models = []
    for m in range(n_models):
        timed = [r for r, lab in zip(rows, labels, strict=True) if lab == m]
        per_invoke_threads = [[max(0, r[v] - overhead[v]) for v in range(width)] for r in timed]
        per_invoke = [sum(r) for r in per_invoke_threads]
        median = statistics.median(per_invoke)
        models.append(
            {
                "per_invoke": per_invoke,
                "median": median,
                "spread": (max(per_invoke) - min(per_invoke)) / median if median else None,
                "per_thread": [
                    {"vcpu": v, "median": statistics.median(r[v] for r in per_invoke_threads)}
                    for v in range(width)
                    if any(r[v] for r in per_invoke_threads)
                ],
            }
        )
    return {
        "models": models,
        "marker_overhead": sum(overhead),
        "marker_vcpu": raw["pairs"][-1]["vcpu"],
        "lost": raw.get("lost", 0),
    }
