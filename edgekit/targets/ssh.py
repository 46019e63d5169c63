"""Running edgekit's remote runner on a Linux board over ssh (Raspberry Pi, Jetson, any host).

Uses the system `ssh` and `scp` with argument lists, never a local shell. The remote command is
the one string ssh hands to the remote user's shell, so every word of it is quoted
(`shlex.quote`): a path or name with spaces or `;` stays one harmless word. Connections are
non-interactive (BatchMode: a refused key fails at once instead of asking for a password).

    target = SshTarget.parse("ssh://pi@raspberrypi.local:22")
    result = run_job(target, {"model0.tflite": Path("m.tflite")}, job)

`LinuxBoard` is the bench / eval target: edgekit's runner takes the timings (or computes the
outputs) on the board, and edgekit.bench computes the statistics with the same code as a run
here.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgekit.errors import TargetUnavailableError, UsageError
from edgekit.targets.base import SOURCE_DEVICE, BenchRun, Predictor, Target, tflite_models
from edgekit.targets.jobs import (
    RemotePredictor,
    bench_job,
    last_line,
    model_runs,
    read_output,
    run_predict,
    stage_job,
)

# Host names, IPv4/IPv6 literals; user names as POSIX allows them. Anything else (a leading "-"
# that ssh would read as an option, spaces, quotes ...) is refused before ssh runs.
_HOST = re.compile(r"^[A-Za-z0-9_.:%-]+$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_REMOTE_DIR = re.compile(r"^/[A-Za-z0-9._/-]+$")


@dataclass(frozen=True)
class SshTarget:
    """An ssh://[user@]host[:port] target."""

    host: str
    user: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, url: str) -> SshTarget:
        """Parse `ssh://[user@]host[:port]`; a UsageError says what is wrong."""
        parts = urlsplit(str(url))
        if parts.scheme != "ssh":
            raise UsageError(f"Expected an ssh target ssh://user@host[:port]. Received: {url!r}")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password:
            raise UsageError(
                f"An ssh target is ssh://user@host[:port] with nothing after the port (no path, "
                f"password or query). Received: {url!r}"
            )
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"The port in {url!r} is not a number between 1 and 65535.") from None
        host = parts.hostname or ""
        if not host or host.startswith("-") or not _HOST.match(host):
            raise UsageError(f"Expected a host name or address in {url!r}. Received: {host!r}")
        user = parts.username
        if user is not None and not _USER.match(user):
            raise UsageError(
                f"Expected a user name of letters, digits, '_', '.' or '-' in {url!r}. Received: {user!r}"
            )
        return cls(host=host, user=user, port=port)

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        port = f":{self.port}" if self.port else ""
        return f"ssh://{self.destination}{port}"


@dataclass
class SshOptions:
    """How to connect. identity: a private key file; known_hosts: the known-hosts file to use
    (default: ssh's own); connect_timeout in seconds; timeout: the whole job, in seconds."""

    identity: str | os.PathLike | None = None
    known_hosts: str | os.PathLike | None = None
    connect_timeout: int = 10
    timeout: float = 600.0
    python: str = "python3"


def _exe(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise TargetUnavailableError(
            f"`{name}` is not on PATH; ssh targets use the system OpenSSH client "
            "(Debian/Ubuntu: apt-get install openssh-client)."
        )
    return path


class SshSession:
    """A remote temporary folder for one job; removed again on exit."""

    def __init__(self, target: SshTarget, options: SshOptions | None = None) -> None:
        self.target = target
        self.opts = options or SshOptions()
        self.remote_dir: str | None = None
        if self.opts.identity is not None and not Path(self.opts.identity).is_file():
            raise UsageError(
                f"--ssh-key {self.opts.identity} does not exist. Pass a private key file."
            )

    def _common(self) -> list[str]:
        o = self.opts
        args = [
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={int(o.connect_timeout)}",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "LogLevel=ERROR",
        ]
        if o.known_hosts is not None:
            args += ["-o", f"UserKnownHostsFile={os.fspath(o.known_hosts)}"]
        if o.identity is not None:
            args += ["-o", "IdentitiesOnly=yes", "-i", os.fspath(o.identity)]
        return args

    def ssh_argv(self, remote_argv: list[str]) -> list[str]:
        """The local argument list for running `remote_argv` on the target (each word quoted)."""
        port = ["-p", str(self.target.port)] if self.target.port else []
        remote = " ".join(shlex.quote(str(a)) for a in remote_argv)
        return [_exe("ssh"), *self._common(), *port, "--", self.target.destination, remote]

    def scp_argv(self, local: list[Path], remote_dir: str) -> list[str]:
        port = ["-P", str(self.target.port)] if self.target.port else []
        dest = f"{self.target.destination}:{remote_dir}/"
        return [_exe("scp"), "-q", "-B", *self._common(), *port, "--", *map(str, local), dest]

    def run(
        self, remote_argv: list[str], *, timeout: float | None = None
    ) -> subprocess.CompletedProcess:
        argv = self.ssh_argv(remote_argv)
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout or self.opts.timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise TargetUnavailableError(
                f"{self.target}: no answer within {timeout or self.opts.timeout:g} s. Check that the "
                "board is up, or raise the time limit."
            ) from None
        if proc.returncode == 255:
            raise connection_error(self.target, proc.stderr)
        return proc

    def put(self, files: list[Path]) -> None:
        assert self.remote_dir is not None
        try:
            proc = subprocess.run(
                self.scp_argv(files, self.remote_dir),
                capture_output=True,
                text=True,
                timeout=self.opts.timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            raise TargetUnavailableError(
                f"{self.target}: copying the model did not finish within {self.opts.timeout:g} s."
            ) from None
        if proc.returncode != 0:
            if "Permission denied" in proc.stderr or "Connection" in proc.stderr:
                raise connection_error(self.target, proc.stderr)
            raise TargetUnavailableError(
                f"{self.target}: copying files failed: {last_line(proc.stderr)}"
            )

    def __enter__(self) -> SshSession:
        proc = self.run(["mktemp", "-d", "-t", "edgekit.XXXXXXXX"])
        path = proc.stdout.strip()
        if proc.returncode != 0 or not _REMOTE_DIR.match(path):
            raise TargetUnavailableError(
                f"{self.target}: could not make a temporary folder there (mktemp -d: "
                f"{last_line(proc.stderr) or path!r})."
            )
        self.remote_dir = path
        return self

    def __exit__(self, *exc: object) -> None:
        if self.remote_dir is not None:
            # On failure the job's own error is the one to report.
            with contextlib.suppress(TargetUnavailableError):
                self.run(["rm", "-rf", "--", self.remote_dir], timeout=60)
            self.remote_dir = None


def connection_error(target: SshTarget, stderr: str) -> TargetUnavailableError:
    """One line for why ssh could not connect (ssh exits 255 for all of them)."""
    text = " ".join((stderr or "").split())
    low = text.lower()
    if "permission denied" in low:
        hint = "the key was refused: add your public key to ~/.ssh/authorized_keys there, or pass --ssh-key"
    elif "host key verification failed" in low or "remote host identification has changed" in low:
        hint = "its host key does not match known_hosts: check the board, then fix the known_hosts entry"
    elif "could not resolve" in low or "name or service not known" in low:
        hint = "the host name does not resolve"
    elif "connection refused" in low:
        hint = "nothing listens for ssh there (is sshd running? right port?)"
    elif "timed out" in low or "no route to host" in low or "network is unreachable" in low:
        hint = "the host is unreachable"
    else:
        hint = text[:200] or "ssh failed without saying why"
    return TargetUnavailableError(f"Cannot reach {target}: {hint}. ({last_line(stderr)[:160]})")


def run_job(
    target: SshTarget,
    files: Mapping[str, Path],
    job: dict[str, Any],
    options: SshOptions | None = None,
) -> dict[str, Any]:
    """Copy the runner, the job and `files` (remote name -> local path) into a fresh remote
    folder, run the job with the remote Python, remove the folder; return the runner's result."""
    opts = options or SshOptions()
    with tempfile.TemporaryDirectory(prefix="edgekit-ssh-") as tmp:
        stage = Path(tmp)
        stage_job(stage, files, job)
        with SshSession(target, opts) as s:
            assert s.remote_dir is not None
            s.put(sorted(stage.iterdir()))
            proc = s.run(
                [opts.python, f"{s.remote_dir}/remote_runner.py", f"{s.remote_dir}/job.json"]
            )
    return parse_result(target, opts.python, proc)


def parse_result(
    target: SshTarget, python: str, proc: subprocess.CompletedProcess
) -> dict[str, Any]:
    """The runner's JSON result, or a one-line error saying what to fix on the remote."""
    out = read_output(proc.stdout)
    if out is not None:
        kind, body = out
        if kind == "result":
            return body
        raise remote_error(target, python, body["kind"], body["message"])
    err_text = proc.stderr or ""
    if proc.returncode == 127 or "command not found" in err_text or "No such file" in err_text:
        raise TargetUnavailableError(
            f"{target} has no `{python}`: install Python 3 there with numpy and LiteRT "
            f"(pip install numpy ai-edge-litert), or pass --remote-python PATH. ({last_line(err_text)[:160]})"
        )
    raise TargetUnavailableError(
        f"The edgekit runner on {target} ended without a result (exit {proc.returncode}): "
        f"{last_line(err_text)[:200] or 'no message'}"
    )


def remote_error(target: SshTarget, python: str, kind: str, message: str) -> TargetUnavailableError:
    if kind == "no_runtime":
        return TargetUnavailableError(
            f"{target} has no LiteRT runtime for {python}: install one there with "
            f"`{python} -m pip install ai-edge-litert` (64-bit Linux, Python 3.9+) or "
            f"`{python} -m pip install tflite-runtime` (older boards). ({message})"
        )
    if kind == "no_numpy":
        return TargetUnavailableError(
            f"{target}: numpy is missing for {python}: `{python} -m pip install numpy` there ({message})."
        )
    if kind == "batch":
        return TargetUnavailableError(f"{target}: {message}. Use --batch to match the model.")
    return TargetUnavailableError(f"The edgekit runner on {target} failed: {message}")


class LinuxBoard(Target):
    """`--target ssh://user@host[:port]`: a Linux board with Python 3, numpy and LiteRT."""

    kind = "ssh"
    takes = ("remote_python", "ssh_key", "known_hosts", "connect_timeout", "remote_timeout")

    def __init__(self, target: str) -> None:
        self.given = str(target)
        self.url = SshTarget.parse(target)
        self.name = str(self.url)

    @staticmethod
    def connection(o: Any) -> SshOptions:
        """SshOptions from the plan's TargetOptions (their defaults where unset)."""
        return SshOptions(
            identity=o.ssh_key,
            known_hosts=o.known_hosts,
            connect_timeout=int(o.connect_timeout or 10),
            timeout=float(o.remote_timeout or 600),
            python=str(o.remote_python or "python3"),
        )

    def bench(self, models: list[Any], plan: Any) -> BenchRun:
        """The benchmark of `edgekit bench`, run on the board by edgekit's remote runner."""
        from dataclasses import replace

        from edgekit import ui
        from edgekit.runtimes.base import check_threads

        opts = self.connection(plan.options)
        plan = replace(plan, threads=check_threads(plan.threads))
        models = tflite_models(models, "an ssh target", batch=plan.batch)
        files, job = bench_job(models, plan)
        ui.info(f"bench: running {len(models)} model(s) on {self.url} with {opts.python}")
        res = run_job(self.url, files, job, opts)
        return BenchRun(
            models=model_runs(models, res, target=self.name, threads=plan.threads),
            plan=plan,
            target=self.name,
            clock="time.perf_counter_ns around invoke() only, on the device (edgekit runner)",
            machine=res["machine"],
            source=SOURCE_DEVICE,
            peak_rss_mb=res["peak_rss_mb"],
            warmup_runs=res["warmup_runs"],
            warmup_seconds=res["warmup_seconds"],
            settings={"remote_python": opts.python},
        )

    def predictor(self, model: Any, plan: Any) -> Predictor:
        """The model runs on the board (one round trip for the whole set); the metrics are
        computed here from its outputs, with the same code as a run here."""
        opts = self.connection(plan.options)
        (model,) = tflite_models([model], "an ssh target", batch=1)
        threads = plan.threads or os.cpu_count() or 1

        def predict(x: Any) -> Any:
            return run_predict(
                model,
                x,
                threads=threads,
                batch_size=plan.batch_size,
                run=lambda files, job: run_job(self.url, files, job, opts),
            )

        return RemotePredictor(
            model,
            predict,
            target=self.given,
            source=SOURCE_DEVICE,
            batching="on the device: one invoke per batch",
            threads=threads,
        )
