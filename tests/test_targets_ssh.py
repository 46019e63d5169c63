"""`edgekit bench/eval --target ssh://...` for real: the tests start Debian's OpenSSH server on a random
loopback port (a throwaway host key, a throwaway user key, its own sshd_config) and benchmark
through it with the system ssh/scp. The "remote" Python is this test's own interpreter, which has
numpy and LiteRT, as a board would after `pip install numpy ai-edge-litert`.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cli_helpers import invoke, one_line_error

from edgekit.errors import UsageError
from edgekit.targets.ssh import SshTarget

REPO = Path(__file__).resolve().parent.parent
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An sshd on 127.0.0.1:PORT (foreground child process) that accepts one throwaway key."""
    if not Path(SSHD).exists():
        pytest.skip(
            "OpenSSH server not installed (Debian: apt-get install -y openssh-server); these tests "
            "start one on loopback to benchmark through ssh"
        )
    if not (shutil.which("ssh") and shutil.which("scp") and shutil.which("ssh-keygen")):
        pytest.skip(
            "OpenSSH client (ssh, scp, ssh-keygen) not installed: apt-get install -y openssh-client"
        )
    d = tmp_path_factory.mktemp("sshd")
    _keygen(d / "host_key")
    _keygen(d / "user_key")
    _keygen(d / "other_key")
    shutil.copyfile(d / "user_key.pub", d / "authorized_keys")
    if os.geteuid() == 0:
        # sshd refuses to start without its privilege-separation folder (the Debian service makes it).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    port = _free_port()
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        "Subsystem sftp internal-sftp\n"
    )
    log = open(d / "sshd.log", "w")  # noqa: SIM115 - open for the server's lifetime
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stderr=log)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            pytest.fail(f"sshd exited at start: {(d / 'sshd.log').read_text()[-500:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    user = getpass.getuser()
    try:
        yield SimpleNamespace(
            port=port,
            url=f"ssh://{user}@127.0.0.1:{port}",
            key=d / "user_key",
            other_key=d / "other_key",
            known_hosts=d / "known_hosts",
            dir=d,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def models(request):
    from test_runtimes_models import zoo

    return zoo(request.config)


def ssh_args(sshd, *, key=None, python=None):
    return [
        "--target", sshd.url, "--ssh-key", key or sshd.key, "--known-hosts", sshd.known_hosts,
        "--remote-python", python or sys.executable,
    ]  # fmt: skip


def test_bench_over_ssh_returns_the_local_report(sshd, models):
    a, b = models["f32_b1.tflite"], models["int8_b1.tflite"]
    r = invoke("bench", a, b, "--runs", "30", "--json", *ssh_args(sshd))
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    local = json.loads(invoke("bench", a, b, "--runs", "30", "--json").stdout)
    # The same JSON structure as a local run, down to each model's fields.
    assert set(rep) == set(local)
    for remote_row, local_row in zip(rep["models"], local["models"], strict=True):
        assert set(remote_row) == set(local_row)
        assert set(remote_row["latency_ms"]) == set(local_row["latency_ms"])
        assert remote_row["source"] == "measured on the device"
        assert local_row["source"] == "measured on this machine"
        assert remote_row["latency_ms"]["count"] == 30
        assert remote_row["runtime"] == "litert" and remote_row["delegate"].startswith("XNNPACK")
        assert remote_row["input"]["dtype"] == local_row["input"]["dtype"]
    assert rep["source"] == "measured on the device"
    assert rep["settings"]["target"] == sshd.url
    assert rep["machine"]["hostname"] == socket.gethostname()
    assert set(rep["comparison"]) == set(local["comparison"])
    ratio = rep["comparison"]["rows"][1]
    assert ratio["ci_low"] <= ratio["ratio"] <= ratio["ci_high"]


def _recording_python(folder: Path, *, hide_litert: bool = False) -> tuple[Path, Path]:
    """A "remote Python": this interpreter behind a script that records the runner's path (and,
    with hide_litert, makes both LiteRT modules unimportable: a board without a runtime)."""
    log = folder / "runner-paths.txt"
    wrapper = folder / ("python-without-litert" if hide_litert else "python-recording")
    hide = (
        'sys.modules["ai_edge_litert"] = None; sys.modules["tflite_runtime"] = None; '
        if hide_litert
        else ""
    )
    wrapper.write_text(
        "#!/bin/sh\n"
        f'echo "$1" >> "{log}"\n'
        f'exec "{sys.executable}" -c \'import runpy, sys; {hide}sys.argv = sys.argv[1:]; '
        'runpy.run_path(sys.argv[0], run_name="__main__")\' "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper, log


def test_remote_folder_is_removed_after_success_and_failure(sshd, models, tmp_path):
    wrapper, log = _recording_python(tmp_path)
    assert (
        invoke(
            "bench", models["f32_b1.tflite"], "--runs", "3", *ssh_args(sshd, python=wrapper)
        ).exit_code
        == 0
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    wrapper2, log2 = _recording_python(bad, hide_litert=True)
    assert invoke("bench", models["f32_b1.tflite"], *ssh_args(sshd, python=wrapper2)).exit_code == 2
    for runner in log.read_text().split() + log2.read_text().split():
        folder = Path(runner).parent
        assert folder.name.startswith("edgekit.") and not folder.exists()


def test_bench_over_ssh_table_and_awkward_local_names(sshd, models, tmp_path):
    odd = tmp_path / "my model; rm -rf x.tflite"
    shutil.copyfile(models["f32_dyn.tflite"], odd)
    r = invoke("bench", odd, "--runs", "10", "--batch", "2", *ssh_args(sshd))
    assert r.exit_code == 0, r.output
    assert "measured on the device" in r.stdout and "throughput" in r.stdout
    assert odd.exists()


def test_eval_over_ssh_equals_local(sshd, models, tmp_path):
    from edgekit.runtimes import open_runner

    x = (np.random.default_rng(3).random((50, 8, 8, 3)) * 255).astype(np.uint8)
    with open_runner(models["f32_dyn.tflite"]) as r:
        y = r.run(x.astype(np.float32) / 255)[0].argmax(1)
    y[::4] = (y[::4] + 1) % 4  # some wrong labels, so accuracy is not trivially 1
    data = tmp_path / "eval.npz"
    np.savez(data, x=x, y=y, labels=np.array(["a", "b", "c", "d"]))
    remote = invoke(
        "eval", models["int8_b1.tflite"], "--data", data, "--batch-size", "16", "--json",
        *ssh_args(sshd),
    )  # fmt: skip
    assert remote.exit_code == 0, remote.output
    local = invoke("eval", models["int8_b1.tflite"], "--data", data, "--batch-size", "16", "--json")
    r, lo = json.loads(remote.stdout), json.loads(local.stdout)
    assert r["source"] == "measured on the device" and lo["source"] == "measured on this machine"
    assert r["count"] == lo["count"] == 50
    assert r["top1"] == lo["top1"] and r["confusion_matrix"] == lo["confusion_matrix"]
    assert 0 < r["top1"] < 1


def test_unreachable_host(sshd, models):
    closed = _free_port()
    r = invoke(
        "bench", models["f32_b1.tflite"], "--target", f"ssh://nobody@127.0.0.1:{closed}",
        "--ssh-key", sshd.key, "--known-hosts", sshd.known_hosts,
    )  # fmt: skip
    assert "nothing listens for ssh there" in one_line_error(r)


def test_key_refused(sshd, models):
    err = one_line_error(
        invoke("bench", models["f32_b1.tflite"], *ssh_args(sshd, key=sshd.other_key))
    )
    assert "key was refused" in err and "authorized_keys" in err


def test_remote_without_a_runtime_says_what_to_install(sshd, models, tmp_path):
    wrapper, _ = _recording_python(tmp_path, hide_litert=True)  # numpy, but no LiteRT
    err = one_line_error(invoke("bench", models["f32_b1.tflite"], *ssh_args(sshd, python=wrapper)))
    assert "has no LiteRT runtime" in err and "pip install ai-edge-litert" in err
    assert "tflite-runtime" in err


def test_remote_without_python(sshd, models):
    err = one_line_error(
        invoke("bench", models["f32_b1.tflite"], *ssh_args(sshd, python="/nonexistent/python3"))
    )
    assert "has no `/nonexistent/python3`" in err and "--remote-python" in err


def test_ssh_refuses_non_tflite_and_other_targets_options(sshd, models):
    err = one_line_error(invoke("bench", models["f32_dyn.onnx"], *ssh_args(sshd)))
    assert "is a onnx model" in err
    err = one_line_error(
        invoke("bench", models["f32_b1.tflite"], *ssh_args(sshd), "--delegate", "gpu")
    )
    assert "do not apply to ssh targets" in err
    err = one_line_error(invoke("bench", models["f32_b1.tflite"], *ssh_args(sshd), "--batch", "2"))
    assert "fixed batch of 1" in err


@pytest.mark.parametrize(
    "url",
    [
        "ssh://-oProxyCommand=touch%20x",
        "ssh://user@host/path",
        "ssh://user@host:99999",
        "ssh://us er@host",
        "ssh://",
        "ssh://user:secret@host",
    ],
)
def test_bad_ssh_targets_are_usage_errors(url):
    with pytest.raises(UsageError):
        SshTarget.parse(url)


def test_ssh_target_parse():
    t = SshTarget.parse("ssh://pi@raspberrypi.local:2222")
    assert (t.user, t.host, t.port, t.destination) == (
        "pi",
        "raspberrypi.local",
        2222,
        "pi@raspberrypi.local",
    )
    assert str(SshTarget.parse("ssh://10.0.0.5")) == "ssh://10.0.0.5"


def test_ssh_bench_imports_no_tensorflow(sshd, models):
    code = (
        "import sys\nfrom edgekit import api\n"
        "rep = api.bench([sys.argv[1]], target=sys.argv[2], runs=5, ssh_key=sys.argv[3],\n"
        "                known_hosts=sys.argv[4], remote_python=sys.executable)\n"
        "assert rep['models'][0]['source'] == 'measured on the device'\n"
        "print('HEAVY', sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(models["f32_b1.tflite"]),
            sshd.url,
            str(sshd.key),
            str(sshd.known_hosts),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "EDGEKIT_QUIET": "1"},
    )
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
