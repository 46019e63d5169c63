"""edgekit's remote runner: copied to a board over ssh and run there as `python3 remote_runner.py JOB`.

Self-contained on purpose: the standard library, numpy and LiteRT (`ai_edge_litert`, or
`tflite_runtime`) are all it needs on the remote, where edgekit is not installed. It does what
`edgekit bench` does for .tflite models (load, time the first inference, warm up, time interleaved
rounds of invoke() alone, read memory) or runs a batch of inputs for `edgekit eval`, and prints one
line `EDGEKIT-RESULT <json>` (or `EDGEKIT-ERROR <json>`). Statistics are computed by edgekit on
the local side from the raw timings, with the same code as a local run.

Kept to Python 3.8 syntax: boards run older interpreters.
"""

import base64
import io
import json
import os
import platform
import sys
import time

RESULT = "EDGEKIT-RESULT "
ERROR = "EDGEKIT-ERROR "
_VECTOR_FLAGS = ("avx512f", "avx2", "avx", "sse4_2", "neon", "asimd", "sve")
# Markers for edgekit's instruction counter (edgekit/targets/emulated/insn_count.c): the policy argument
# of sched_get_priority_max, which a real kernel refuses with EINVAL.
MARK_START, MARK_STOP = 0x45444B01, 0x45444B02
EMPTY_PAIRS = 5


def _mark(word):
    try:  # noqa: SIM105 - plain try is the cheapest form, and this runs inside the counted region
        os.sched_get_priority_max(word)
    except (OSError, AttributeError):
        pass


def _noop():
    pass


class JobError(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def _fail(kind, message):
    print(ERROR + json.dumps({"kind": kind, "message": message}), flush=True)
    sys.exit(3)


def _interpreter():
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter as mod

        return mod, "litert", str(getattr(ai_edge_litert, "__version__", "unknown"))
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime import interpreter as mod

        return mod, "tflite_runtime", str(getattr(tflite_runtime, "__version__", "unknown"))
    except ImportError:
        raise JobError(
            "no_runtime",
            f"neither ai_edge_litert nor tflite_runtime is importable by {sys.executable} ({platform.python_version()})",
        ) from None


def _cpuinfo():
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k, v = k.strip(), v.strip()
                if k and k not in info:
                    info[k] = v
    except OSError:
        pass
    return info


def machine_info():
    ci = _cpuinfo()
    model = (
        ci.get("model name")
        or ci.get("Model")
        or ci.get("Hardware")
        or platform.processor()
        or platform.machine()
    )
    flags = set((ci.get("flags") or ci.get("Features") or "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    mhz = ci.get("cpu MHz")
    return {
        "cpu": " ".join(model.split()),
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": None,
        "usable_cores": usable,
        "cpu_mhz": float(mhz) if mhz else None,
        "vector_extensions": [f for f in _VECTOR_FLAGS if f in flags],
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "hostname": platform.node(),
    }


def current_rss_mb():
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        return None


def peak_rss_mb():
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 2**10
    except ImportError:
        return current_rss_mb()
    cur = current_rss_mb()
    return max(peak_mb, cur) if cur is not None else peak_mb


class Model:
    """One .tflite on the LiteRT Interpreter (CPU), fed float32 and read back as float32."""

    def __init__(self, mod, path, threads, xnnpack):
        import numpy as np

        self.np = np
        self.path = path
        resolver = mod.OpResolverType
        rtype = resolver.AUTO if xnnpack else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.it = mod.Interpreter(
                model_path=path, num_threads=threads, experimental_op_resolver_type=rtype
            )
        except TypeError:  # old tflite_runtime without op resolver types
            self.it = mod.Interpreter(model_path=path, num_threads=threads)
        self.it.allocate_tensors()
        self.xnnpack = xnnpack
        self.inp = self.it.get_input_details()
        self.out = self.it.get_output_details()
        if len(self.inp) != 1:
            raise JobError("model", f"{path} has {len(self.inp)} inputs; expected 1")
        self.cur = tuple(int(s) for s in self.inp[0]["shape"])

    @staticmethod
    def _quant(d):
        q = d.get("quantization_parameters") or {}
        scales = q.get("scales")
        if scales is not None and len(scales) == 1:
            return float(scales[0]), int(q["zero_points"][0])
        return None

    def tensor(self, d):
        sig = d.get("shape_signature")
        if sig is None or len(sig) == 0:
            sig = d["shape"]
        dtype = self.np.dtype(d["dtype"]).name
        q = self._quant(d) if dtype in ("int8", "uint8", "int16") else None
        return {
            "name": d["name"],
            "shape": [None if int(s) < 0 else int(s) for s in sig],
            "dtype": dtype,
            "quantization": list(q) if q else None,
        }

    def fixed_batch(self):
        return self.tensor(self.inp[0])["shape"][0]

    def set_input(self, x):
        np = self.np
        d = self.inp[0]
        if tuple(x.shape) != self.cur:
            self.it.resize_tensor_input(d["index"], list(x.shape), strict=True)
            self.it.allocate_tensors()
            self.cur = tuple(x.shape)
        dtype = np.dtype(d["dtype"])
        q = self._quant(d) if dtype.kind in "iu" else None
        if q is not None:
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / np.float32(q[0])) + q[1], info.min, info.max).astype(dtype)
        elif dtype != np.float32:
            x = x.astype(dtype)
        self.it.set_tensor(d["index"], x)

    def invoke(self):
        self.it.invoke()

    def outputs(self):
        np = self.np
        res = []
        for d in self.out:
            y = self.it.get_tensor(d["index"])
            q = self._quant(d) if y.dtype.kind in "iu" else None
            if q is not None:
                y = (y.astype(np.float32) - np.float32(q[1])) * np.float32(q[0])
            res.append(y.astype(np.float32))
        return res

    def describe(self):
        try:
            ops = self.it._get_ops_details()
            parts = sum(1 for op in ops if op.get("op_name") == "DELEGATE")
            n_ops = sum(1 for op in ops if op.get("op_name") != "DELEGATE")
        except Exception:
            parts, n_ops = -1, -1
        if not self.xnnpack:
            delegate, fallback = "none (builtin reference kernels)", None
        elif parts == 1:
            delegate, fallback = "XNNPACK (1 partition)", None
        elif parts > 1:
            delegate = f"XNNPACK ({parts} partitions)"
            fallback = (
                f"XNNPACK took the graph in {parts} partitions; the ops between them run on builtin "
                "CPU kernels"
            )
        elif parts == 0:
            delegate = "none"
            fallback = "XNNPACK was requested but took no ops; the model ran on builtin CPU kernels"
        else:
            delegate, fallback = "XNNPACK (requested; partitions unknown)", None
        return {
            "accelerator": "CPU",
            "delegate": delegate,
            "xnnpack": self.xnnpack,
            "ops": n_ops,
            "fallback": fallback,
            "inputs": [self.tensor(d) for d in self.inp],
            "outputs": [self.tensor(d) for d in self.out],
        }


def bench(job, mod):
    """Load each model and time its first inference, warm up, then time interleaved rounds."""
    models, rows = _load(job, mod)
    first, done, warm_s = _warm(models, job["warmup"], job["warmup_seconds"])
    markers = bool(job.get("markers"))
    samples, pairs = _timed(models, job.get("runs"), job.get("min_seconds"), markers)
    for row, m in zip(rows, models):  # noqa: B905 - strict= needs Python 3.10; boards run older
        row.update(m.describe())
    body = {
        "models": rows,
        "samples_ms": samples,
        "warmup_runs": done,
        "warmup_seconds": warm_s,
        "first_warmup_ms": first,
        "peak_rss_mb": peak_rss_mb(),
    }
    if markers:
        body["marker_pairs"] = pairs
    return body


def _load(job, mod):
    import numpy as np

    rng = np.random.default_rng(job.get("seed", 0))
    batch = int(job["batch"])
    models, rows = [], []
    for path in job["models"]:
        rss0 = current_rss_mb()
        t0 = time.perf_counter_ns()
        m = Model(mod, path, job["threads"], job["xnnpack"])
        load_ms = (time.perf_counter_ns() - t0) / 1e6
        fixed = m.fixed_batch()
        if fixed is not None and fixed != batch:
            raise JobError(
                "batch",
                f"batch {batch} does not fit {os.path.basename(path)}: its input has a fixed batch of {fixed}",
            )
        shape = m.tensor(m.inp[0])["shape"]
        x = rng.random((batch, *shape[1:]), dtype=np.float32)
        m.set_input(x)
        t0 = time.perf_counter_ns()
        m.invoke()
        first_ms = (time.perf_counter_ns() - t0) / 1e6
        rss1 = current_rss_mb()
        rows.append(
            {
                "load_ms": load_ms,
                "first_inference_ms": first_ms,
                "rss_before_mb": rss0,
                "rss_increase_mb": None if rss0 is None or rss1 is None else rss1 - rss0,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
        models.append(m)
    return models, rows


def _warm(models, warmup, warmup_seconds):
    """Rounds of every model until both the count and the time are reached."""
    first = [None] * len(models)
    done = 0
    start = time.perf_counter()
    while done < warmup or time.perf_counter() - start < warmup_seconds:
        for i, m in enumerate(models):
            t0 = time.perf_counter_ns()
            m.invoke()
            dt = (time.perf_counter_ns() - t0) / 1e6
            if first[i] is None:
                first[i] = dt
        done += 1
    return first, done, time.perf_counter() - start


def _timed(models, runs, min_seconds, markers):
    """Timed rounds, each invoke timed alone; the order rotates by one every round. With
    markers, each timed invoke sits between a start and a stop marker for the instruction
    counter; `pairs` says which model each pair wrapped (-1: an empty pair)."""
    n = len(models)
    samples = [[] for _ in models]
    clock = time.perf_counter_ns
    pairs = []
    if markers:
        # Empty pairs first, shaped like the timed ones, so their count is the markers' own cost.
        for _ in range(EMPTY_PAIRS):
            _mark(MARK_START)
            t0 = clock()
            _noop()
            t1 = clock()
            _mark(MARK_STOP)
            pairs.append(-1)
    limit_ns = int(min_seconds * 1e9) if min_seconds is not None else 0
    rounds = 0
    t_start = clock()
    while True:
        if min_seconds is None:
            if rounds >= runs:
                break
        elif rounds > 0 and clock() - t_start >= limit_ns:
            break
        for j in range(n):
            i = (j + rounds) % n
            if markers:
                _mark(MARK_START)
            t0 = clock()
            models[i].invoke()
            t1 = clock()
            if markers:
                _mark(MARK_STOP)
                pairs.append(i)
            samples[i].append((t1 - t0) / 1e6)
        rounds += 1
    return samples, pairs


def predict(job, mod):
    """Run a batch file of preprocessed inputs through one model; outputs as base64 .npy."""
    import numpy as np

    m = Model(mod, job["models"][0], job["threads"], job["xnnpack"])
    x = np.load(job["inputs"]).astype(np.float32)
    fixed = m.fixed_batch()
    step = fixed or int(job.get("batch_size", 64))
    outs = []
    for s in range(0, len(x), step):
        part = x[s : s + step]
        n = len(part)
        if fixed is not None and n < fixed:  # pad the last chunk; extra rows are dropped
            part = np.concatenate([part, np.zeros((fixed - n, *part.shape[1:]), np.float32)])
        m.set_input(part)
        m.invoke()
        outs.append([y[:n] for y in m.outputs()])
    result = []
    for k in range(len(m.out)):
        buf = io.BytesIO()
        np.save(buf, np.concatenate([o[k] for o in outs]))
        result.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return {"outputs_npy_b64": result, **m.describe()}


def main(argv):
    if len(argv) != 2:
        _fail("usage", "usage: remote_runner.py JOB.json")
    try:
        import numpy  # noqa: F401
    except ImportError:
        _fail("no_numpy", f"numpy is not importable by {sys.executable}")
    try:
        with open(argv[1]) as f:
            job = json.load(f)
        os.chdir(os.path.dirname(os.path.abspath(argv[1])))
        mod, runtime, version = _interpreter()
        body = bench(job, mod) if job["mode"] == "bench" else predict(job, mod)
    except JobError as e:
        _fail(e.kind, str(e))
    except Exception as e:  # a model LiteRT cannot load, out of memory ...
        _fail("runtime_error", "{}: {}".format(type(e).__name__, " ".join(str(e).split())[:400]))
    body.update(runtime=runtime, runtime_version=version, machine=machine_info())
    print(RESULT + json.dumps(body), flush=True)


if __name__ == "__main__":
    main(sys.argv)
