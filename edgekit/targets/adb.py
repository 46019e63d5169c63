"""LiteRT's `benchmark_model` on an Android device over adb: commands, output parser, clean-up.

Every adb call is an argument list (no local shell). `adb shell` joins its words into one string
that the device's shell parses, so every word edgekit puts there is quoted with `shlex.quote`
(the device shell is POSIX sh): a serial, path or mask with spaces or `;` stays one word. The
serial goes to `adb -s` as its own argument and never reaches a shell.

    device = AdbDevice.connect("adb:R58M123ABC")
    with device.session(benchmark_binary=None) as s:        # found on the device
        parsed = s.benchmark(Path("m.tflite"), BenchmarkPlan(threads=4, delegate="xnnpack"))

`parse_benchmark_output` reads both the TFLite tool's output ("Inference timings in us: ...")
and the LiteRT CompiledModel tool's ("========== BENCHMARK RESULTS =========="). `AndroidDevice`
is the bench target: benchmark_model measures and reports only its own summary (count, mean,
std, min, max; no percentiles), which fills the fields it has and leaves the others None.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import TargetUnavailableError, UsageError
from edgekit.targets.base import SOURCE_DEVICE, BenchRun, ModelRun, Target, batching, tflite_models

DEVICE_TMP = "/data/local/tmp"
DELEGATES = ("xnnpack", "gpu", "nnapi", "none")
# Where prebuilt binaries are usually pushed (LiteRT's docs use the first; the nightly download
# is named like the second).
SEARCH_PATHS = (
    f"{DEVICE_TMP}/benchmark_model",
    f"{DEVICE_TMP}/android_aarch64_benchmark_model",
    f"{DEVICE_TMP}/android_arm_benchmark_model",
)
DOWNLOAD_HINT = (
    "download LiteRT's prebuilt benchmark_model for Android (android_aarch64_benchmark_model, "
    "https://ai.google.dev/edge/litert/models/measurement) and pass --benchmark-binary PATH "
    "(edgekit pushes it for the run and removes it after)"
)
_OK = "EDGEKIT_OK"


def q(word: Any) -> str:
    """One word for the device shell."""
    return shlex.quote(str(word))


@dataclass
class BenchmarkPlan:
    """benchmark_model options. threads -1: the tool's default. taskset: a CPU affinity mask in
    hex (e.g. f0 for the big cores of many phones). min_seconds: run for this long instead of
    exactly `runs` times."""

    threads: int = 1
    runs: int = 100
    min_seconds: float | None = None
    warmup: int = 10
    warmup_seconds: float = 0.1
    delegate: str = "xnnpack"
    taskset: str | None = None

    def check(self) -> None:
        if self.delegate not in DELEGATES:
            raise UsageError(
                f"--delegate must be one of {', '.join(DELEGATES)}. Received: {self.delegate!r}"
            )
        if self.taskset is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]{1,16}", self.taskset):
            raise UsageError(
                f"--taskset takes a CPU affinity mask in hex, e.g. f0 for cores 4-7. Received: "
                f"{self.taskset!r}"
            )
        if (
            isinstance(self.threads, bool)
            or not isinstance(self.threads, int)
            or (self.threads < 1 and self.threads != -1)
        ):
            raise UsageError(f"--threads must be at least 1. Received: {self.threads!r}")

    def flags(self, graph: str) -> list[str]:
        """benchmark_model's flags (see tensorflow/lite/tools/benchmark/README.md)."""
        self.check()
        f = [f"--graph={graph}", f"--num_threads={self.threads}"]
        if self.min_seconds is not None:
            f += ["--num_runs=1", f"--min_secs={self.min_seconds:g}"]
            f.append(f"--max_secs={max(150.0, 2 * self.min_seconds):g}")
        else:
            # min_secs=0: exactly --runs runs, as edgekit's own --runs means.
            f += [f"--num_runs={self.runs}", "--min_secs=0"]
        f += [f"--warmup_runs={self.warmup}", f"--warmup_min_secs={self.warmup_seconds:g}"]
        f += {
            "xnnpack": ["--use_xnnpack=true"],
            "none": ["--use_xnnpack=false"],
            "gpu": ["--use_gpu=true"],
            "nnapi": ["--use_nnapi=true"],
        }[self.delegate]
        return f


def _adb_exe(adb: str | os.PathLike | None) -> str:
    if adb is not None:
        p = Path(adb)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise UsageError(f"--adb {adb} is not an executable file.")
        return str(p)
    found = shutil.which("adb")
    if found is None:
        raise TargetUnavailableError(
            "adb is not on PATH: install Android platform-tools (Debian/Ubuntu: apt-get install "
            "adb) or pass --adb PATH."
        )
    return found


def parse_devices(text: str) -> list[tuple[str, str]]:
    """(serial, state) pairs from `adb devices` output."""
    out = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line or line.startswith(("List of devices", "*", "adb server")):
            continue
        serial, _, state = line.partition("\t")
        if not state:
            parts = line.split(None, 1)
            if len(parts) != 2:
                continue
            serial, state = parts
        out.append((serial.strip(), state.strip()))
    return out


class AdbDevice:
    """One attached device, addressed by serial in every call (`adb -s SERIAL ...`)."""

    def __init__(self, adb: str, serial: str, target: str, timeout: float) -> None:
        self.adb, self.serial, self.target, self.timeout = adb, serial, target, timeout

    @classmethod
    def connect(
        cls, target: str, *, adb: str | os.PathLike | None = None, timeout: float = 600.0
    ) -> AdbDevice:
        """Resolve `adb` or `adb:SERIAL` to one ready device, or raise a one-line error."""
        exe = _adb_exe(adb)
        t = str(target)
        wanted = t.split(":", 1)[1] if ":" in t else None
        if wanted is not None and not wanted:
            raise UsageError(
                "--target adb:SERIAL needs a serial after the colon (see `adb devices`)."
            )
        proc = _call([exe, "devices"], timeout=60)
        devices = parse_devices(proc.stdout)
        if wanted is None:
            if not devices:
                raise TargetUnavailableError(
                    "No Android device attached (`adb devices` lists none): connect one with USB "
                    "debugging enabled, or start an emulator."
                )
            if len(devices) > 1:
                names = ", ".join(s for s, _ in devices)
                raise UsageError(
                    f"Several Android devices are attached ({names}): pick one with "
                    "--target adb:SERIAL."
                )
            serial, state = devices[0]
        else:
            match = [d for d in devices if d[0] == wanted]
            if not match:
                names = ", ".join(s for s, _ in devices) or "none"
                raise TargetUnavailableError(
                    f"Device {wanted!r} is not attached (attached: {names}). Check `adb devices`."
                )
            serial, state = match[0]
        if state != "device":
            hint = {
                "unauthorized": "accept the 'Allow USB debugging' prompt on the phone",
                "offline": "reconnect it (or `adb kill-server`)",
            }.get(state.split(";")[0].strip(), "check its connection and permissions")
            raise TargetUnavailableError(f"Device {serial} is {state!r}: {hint}.")
        return cls(exe, serial, f"adb:{serial}", timeout)

    def argv(self, *args: str) -> list[str]:
        return [self.adb, "-s", self.serial, *args]

    def shell_argv(self, words: list[Any], raw: str = "") -> list[str]:
        """`adb -s SERIAL shell <quoted words>[ <raw>]`; `raw` is edgekit's own fixed text."""
        text = " ".join(q(w) for w in words)
        if raw:
            text = f"{text} {raw}" if text else raw
        return self.argv("shell", text)

    def shell(self, words: list[Any], raw: str = "", *, timeout: float | None = None) -> str:
        proc = _call(self.shell_argv(words, raw), timeout=timeout or self.timeout)
        if proc.returncode != 0 and not proc.stdout:
            raise TargetUnavailableError(
                f"adb shell on {self.serial} failed (exit {proc.returncode}): "
                f"{_last_line(proc.stderr)}"
            )
        return proc.stdout + proc.stderr

    def push(self, local: Path, remote: str) -> None:
        proc = _call(self.argv("push", str(local), remote), timeout=self.timeout)
        if proc.returncode != 0:
            raise TargetUnavailableError(
                f"adb push to {self.serial} failed: {_last_line(proc.stderr or proc.stdout)}"
            )

    def describe(self) -> str:
        return f"Android device {self.serial}"

    def machine_info(self) -> dict[str, Any]:
        """Device model, SoC, ABI, Android release and core count (getprop, nproc)."""
        props = (
            "ro.product.manufacturer",
            "ro.product.model",
            "ro.soc.model",
            "ro.product.cpu.abi",
            "ro.build.version.release",
        )
        raw = "; ".join(f"getprop {p}" for p in props) + "; nproc"
        lines = [ln.strip() for ln in self.shell([], raw).splitlines()]
        lines += [""] * (len(props) + 1 - len(lines))
        maker, model, soc, abi, release, cores = lines[: len(props) + 1]
        n = int(cores) if cores.isdigit() else None
        return {
            "cpu": soc or abi or "unknown SoC",
            "device": " ".join(x for x in (maker, model) if x) or "unknown device",
            "arch": abi or None,
            "logical_cores": n,
            "physical_cores": None,
            "usable_cores": n,
            "vector_extensions": [],
            "os": f"Android {release}" if release else "Android",
            "serial": self.serial,
        }

    @contextlib.contextmanager
    def session(self, benchmark_binary: str | os.PathLike | None = None) -> Iterator[AdbSession]:
        """A device folder for pushed files; removed again whatever happens."""
        folder = f"{DEVICE_TMP}/edgekit-{secrets.token_hex(4)}"
        self.shell(["mkdir", "-p", folder])
        s = AdbSession(self, folder)
        try:
            s.binary = s.find_binary(benchmark_binary)
            yield s
        finally:
            with contextlib.suppress(TargetUnavailableError, subprocess.SubprocessError):
                self.shell(["rm", "-rf", folder], timeout=60)


class AdbSession:
    def __init__(self, device: AdbDevice, folder: str) -> None:
        self.device, self.folder = device, folder
        self.binary: str = ""

    def find_binary(self, given: str | os.PathLike | None) -> str:
        d = self.device
        if given is not None and Path(given).is_file():
            dest = f"{self.folder}/benchmark_model"
            d.push(Path(given), dest)
            d.shell(["chmod", "755", dest])
            return dest
        if given is not None:
            path = str(given)
            if not path.startswith("/"):
                raise UsageError(
                    f"--benchmark-binary {path}: no such local file, and not an absolute device "
                    f"path. Pass a local benchmark_model to push, or its path on the device."
                )
            out = d.shell(["test", "-x", path], f"&& echo {_OK}")
            if _OK not in out:
                raise TargetUnavailableError(
                    f"{path} is not an executable file on {d.serial}: {DOWNLOAD_HINT}."
                )
            return path
        # Search the usual places, then PATH (fixed text: no user input in it).
        raw = "; ".join(f"test -x {p} && echo {p}" for p in SEARCH_PATHS)
        out = d.shell([], f"{raw}; command -v benchmark_model; true")
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("/") and line.endswith("benchmark_model"):
                return line
        raise TargetUnavailableError(f"benchmark_model is not on {d.serial}: {DOWNLOAD_HINT}.")

    def benchmark_argv(self, graph: str, plan: BenchmarkPlan) -> list[str]:
        words: list[Any] = []
        if plan.taskset:
            words += ["taskset", plan.taskset]
        words += [self.binary, *plan.flags(graph)]
        return self.device.shell_argv(words)

    def benchmark(self, model: Path, plan: BenchmarkPlan) -> dict[str, Any]:
        """Push the model, run benchmark_model, parse its output (the model is removed with the
        session folder)."""
        plan.check()
        graph = f"{self.folder}/model.tflite"
        self.device.push(model, graph)
        proc = _call(self.benchmark_argv(graph, plan), timeout=self.device.timeout)
        text = proc.stdout + "\n" + proc.stderr
        try:
            parsed = parse_benchmark_output(text)
        except BenchmarkOutputError as e:
            raise TargetUnavailableError(
                f"benchmark_model on {self.device.serial} failed for {model.name}: {e}"
            ) from None
        parsed["command"] = shlex.join(["adb", "shell", self.benchmark_argv(graph, plan)[-1]])
        return parsed


def _call(argv: list[str], *, timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise TargetUnavailableError(
            f"adb did not finish within {timeout:g} s ({' '.join(argv[1:4])} ...). Is the device "
            "still attached?"
        ) from None
    except OSError as e:
        raise TargetUnavailableError(f"Cannot run adb ({argv[0]}): {e.strerror}.") from None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no message"


# --- benchmark_model output --------------------------------------------------------------------


class BenchmarkOutputError(ValueError):
    """The output holds no benchmark result (the run failed, or it is not benchmark_model's)."""


_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_SUMMARY = re.compile(
    rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, "
    rf"Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}"
)
_STAT = re.compile(rf"\bcount=(\d+)((?:\s+\w+={_NUM})*)")
_KV = re.compile(rf"(\w+)={_NUM}")
_MEM_DELTA = re.compile(
    rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
    rf"init={_NUM} overall={_NUM}"
)
_MEM_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUM}")
_DELEGATE = re.compile(
    r"Replacing (\d+) out of (\d+) node\(s\) with delegate \((\w+)\) node, yielding (\d+) partitions"
)
# LiteRT CompiledModel benchmark (litert/tools/benchmark_litert_model.h)
_LRT = {
    "init_ms": re.compile(rf"Model initialization:\s+{_NUM} ms"),
    "first_inference_ms": re.compile(rf"Warmup \(first\):\s+{_NUM} ms"),
    "warmup_avg_ms": re.compile(rf"Warmup \(avg\):\s+{_NUM} ms \((\d+) runs\)"),
    "inference_avg_ms": re.compile(rf"Inference \(avg\):\s+{_NUM} ms \((\d+) runs\)"),
    "inference_min_ms": re.compile(rf"Inference \(min\):\s+{_NUM} ms"),
    "inference_max_ms": re.compile(rf"Inference \(max\):\s+{_NUM} ms"),
    "inference_std_ms": re.compile(rf"Inference \(std\):\s+{_NUM}"),
    "memory_init_mb": re.compile(rf"Init footprint:\s+{_NUM} MB"),
    "memory_overall_mb": re.compile(rf"Overall footprint:\s+{_NUM} MB"),
    "peak_memory_mb": re.compile(rf"Peak memory:\s+{_NUM} MB"),
}


def parse_benchmark_output(text: str) -> dict[str, Any]:
    """The figures of one benchmark_model run, in ms and MB.

    Returns init_ms, first_inference_ms, warmup_avg_ms, inference_avg_ms, inference_std_ms,
    inference_min_ms, inference_max_ms, count, warmup_count, inference_p5_ms / _p50_ms / _p95_ms
    (newer builds print them), memory_init_mb, memory_overall_mb (footprint deltas from the tool's
    start), peak_memory_mb (--report_peak_memory_footprint), delegate_line, fallback, tool.
    Raises BenchmarkOutputError (with the tool's own error lines) when there is no result.
    """
    lines = text.splitlines()
    res: dict[str, Any] = {}
    summary_at = None
    for i, line in enumerate(lines):
        m = _SUMMARY.search(line)
        if m:
            summary_at = i
            init, first, warm, inf = (float(v) / 1000.0 for v in m.groups())
            res.update(
                tool="TFLite benchmark_model",
                init_ms=init,
                first_inference_ms=first,
                warmup_avg_ms=warm,
                inference_avg_ms=inf,
            )
    if summary_at is not None:
        stats = [_stat_line(ln) for ln in lines[:summary_at] if "Timings (microseconds)" not in ln]
        stats = [s for s in stats if s is not None]
        regular = _closest(stats, res["inference_avg_ms"])
        before = stats[: stats.index(regular)] if regular is not None else []
        # The warm-up's line comes first; with a single warm-up run it has no avg (count=1 curr=).
        warmup = _closest(before, res["warmup_avg_ms"]) or (before[-1] if before else None)
        if regular is not None:
            res["count"] = regular["count"]
            for key, name in (
                ("std", "inference_std_ms"),
                ("min", "inference_min_ms"),
                ("max", "inference_max_ms"),
                ("p5", "inference_p5_ms"),
                ("median", "inference_p50_ms"),
                ("p95", "inference_p95_ms"),
            ):
                if key in regular:
                    res[name] = regular[key] / 1000.0
        if warmup is not None:
            res["warmup_count"] = warmup["count"]
    elif "BENCHMARK RESULTS" in text:
        res["tool"] = "LiteRT benchmark_model (CompiledModel)"
        for key, rx in _LRT.items():
            m = rx.search(text)
            if m:
                res[key] = float(m.group(1))
                if key == "inference_avg_ms":
                    res["count"] = int(m.group(2))
                if key == "warmup_avg_ms":
                    res["warmup_count"] = int(m.group(2))
        if "inference_avg_ms" not in res:
            raise BenchmarkOutputError("its results block has no 'Inference (avg)' line")
    else:
        errors = [
            " ".join(ln.split())
            for ln in lines
            if ln.strip().startswith(("ERROR", "E ")) or "failed" in ln.lower()
        ]
        reason = "; ".join(dict.fromkeys(errors)) or "no 'Inference timings' line in its output"
        raise BenchmarkOutputError(reason[:400])
    m = _MEM_DELTA.search(text)
    if m:
        res["memory_init_mb"], res["memory_overall_mb"] = float(m.group(1)), float(m.group(2))
    m = _MEM_PEAK.search(text)
    if m:
        res["peak_memory_mb"] = float(m.group(1))
    m = _DELEGATE.search(text)
    if m:
        took, total, name, parts = int(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4))
        res["delegate_line"] = f"{name}: {took} of {total} nodes, {parts} partition(s)"
        if took < total:
            res["fallback"] = f"{total - took} of {total} nodes ran on CPU kernels outside {name}"
    if "will not be executed by the delegate" in text and "fallback" not in res:
        res["fallback"] = "the delegate declined the graph; the model ran on CPU kernels"
    return res


def _stat_line(line: str) -> dict[str, float] | None:
    m = _STAT.search(line)
    if not m:
        return None
    out: dict[str, float] = {"count": int(m.group(1))}
    for k, v in _KV.findall(m.group(2)):
        out[k] = float(v)
    return out


def _closest(stats: list[dict[str, float]], avg_ms: float) -> dict[str, float] | None:
    """The stat line whose avg is the summary's (rounded alike); else the last one with an avg."""
    with_avg = [s for s in stats if "avg" in s]
    for s in reversed(with_avg):
        if abs(s["avg"] / 1000.0 - avg_ms) <= 1e-3 * max(1.0, avg_ms):
            return s
    return with_avg[-1] if with_avg else None


# --- the bench target --------------------------------------------------------------------------


class AndroidDevice(Target):
    """`--target adb` / `adb:SERIAL`: LiteRT's benchmark_model on an Android device, one model
    after the other."""

    kind = "adb"
    takes = ("benchmark_binary", "delegate", "taskset", "adb", "adb_timeout")

    def __init__(self, target: str) -> None:
        self.name = str(target)

    def bench(self, models: list[Any], plan: Any) -> BenchRun:
        from dataclasses import replace

        from edgekit import ui

        o = plan.options
        models = tflite_models(models, "an adb target", batch=plan.batch)
        if plan.batch != 1:
            raise UsageError(
                "benchmark_model feeds the model's own input shape; --batch applies to ssh and "
                "local runs only. Leave --batch at 1 for adb targets."
            )
        if plan.samples:
            raise UsageError(
                "benchmark_model reports no per-run times; --samples needs a local or ssh run."
            )
        delegate = plan.delegate or ("xnnpack" if plan.xnnpack else "none")
        flags = BenchmarkPlan(
            threads=plan.threads if plan.threads is not None else -1,
            runs=plan.runs if plan.runs is not None else 1,
            min_seconds=plan.min_seconds,
            warmup=plan.warmup,
            warmup_seconds=plan.warmup_seconds,
            delegate=delegate,
            taskset=plan.taskset,
        )
        flags.check()  # before anything runs on the device
        device = AdbDevice.connect(self.name, adb=o.adb, timeout=float(o.adb_timeout or 600))
        ui.info(
            f"bench: running {len(models)} model(s) on {device.describe()} with benchmark_model"
        )
        runs = []
        with device.session(o.benchmark_binary) as session:
            for m in models:
                parsed = session.benchmark(Path(m.path), flags)
                runs.append(_model_run(m, parsed, device, flags))
            machine = device.machine_info()
        peaks = [r.peak_rss_mb for r in runs if r.peak_rss_mb is not None]
        return BenchRun(
            models=runs,
            plan=replace(plan, runs=flags.runs, xnnpack=delegate == "xnnpack"),
            target=device.target,
            clock="LiteRT benchmark_model on the device (its own timer around each run)",
            machine=machine,
            source=SOURCE_DEVICE,
            peak_rss_mb=max(peaks) if peaks else None,
            settings={"delegate": delegate, "taskset": flags.taskset},
            interleaved=False,
            comparison_note="benchmark_model runs one model after the other and reports means "
            "only: no interleaved ratio or confidence interval (compare with --target ssh:// or "
            "locally for those).",
        )

    def predictor(self, model: Any, plan: Any) -> Any:
        raise UsageError(
            "eval runs on this machine, on an ssh target or on an emulated device profile: "
            "benchmark_model on a phone times the model but returns no outputs. Use --target "
            "ssh://user@host for a Linux board, or a profile (edgekit devices) such as pixel-4."
        )


def _model_run(m: Any, parsed: dict[str, Any], device: AdbDevice, plan: BenchmarkPlan) -> ModelRun:
    mean, std, n = parsed["inference_avg_ms"], parsed.get("inference_std_ms"), parsed.get("count")
    lat = {
        "count": n,
        "mean": mean,
        "std": std,
        "min": parsed.get("inference_min_ms"),
        "p50": parsed.get("inference_p50_ms"),
        "p90": None,
        "p95": parsed.get("inference_p95_ms"),
        "p99": None,
        "max": parsed.get("inference_max_ms"),
        "cv": (std / mean) if std is not None and mean else None,
        "batch": 1,
        "throughput": 1000.0 / mean if mean else None,
        "warmup_runs": parsed.get("warmup_count"),
        "warmup_seconds": None,
        "warmup_mean_ms": parsed.get("warmup_avg_ms"),
    }
    inp = m.tflite.inputs[0]
    accelerator = {"gpu": "GPU", "nnapi": "NNAPI"}.get(plan.delegate, "CPU")
    runtime = {
        "format": "tflite",
        "runtime": parsed.get("tool", "benchmark_model"),
        "runtime_version": "(version not printed)",
        "target": device.target,
        "threads": plan.threads,
        "accelerator": accelerator,
        "delegate": parsed.get("delegate_line")
        or f"{plan.delegate} (requested; the output does not say how much it took)",
        "fallback": parsed.get("fallback"),
        "batching": batching(inp["shape"]),
        "input": inp,
        "outputs": m.tflite.outputs,
    }
    return ModelRun(
        model=m,
        runtime=runtime,
        load_ms=parsed.get("init_ms"),
        first_inference_ms=parsed.get("first_inference_ms"),
        rss_before_mb=None,
        rss_increase_mb=parsed.get("memory_overall_mb"),
        peak_rss_mb=parsed.get("peak_memory_mb"),
        latency_ms=lat,
        extra={
            "memory_init_mb": parsed.get("memory_init_mb"),
            "benchmark_model": {k: v for k, v in parsed.items() if k != "raw"},
        },
    )
