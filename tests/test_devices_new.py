"""`edgekit devices new`: a profile for a phone nobody published figures for, from its
/proc/cpuinfo and core clusters, marked extrapolated with the band measured for that."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgekit import api
from edgekit.cli import cli
from edgekit.emulation import cores, newdevice
from edgekit.emulation.estimate import estimate_latency
from edgekit.emulation.profiles import load_profile
from edgekit.errors import UsageError

FIXTURES = Path(__file__).parent / "fixtures"
SM8250 = FIXTURES / "cpuinfo" / "sm8250.txt"  # 4x Cortex-A55 + 4x Cortex-A77
CLUSTERS = "1x2.84,3x2.42,4x1.8"


def sdm845_like(n_big: int = 4) -> str:
    """An SDM845-style cpuinfo: Kryo 385 Silver (A55r0) then Kryo 385 Gold (A75), no asimddp."""
    feats = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp"
    blocks = []
    for i in range(4 + n_big):
        var, part, rev = ("0x7", "0x803", "12") if i < 4 else ("0x6", "0x802", "13")
        blocks.append(
            f"processor\t: {i}\nBogoMIPS\t: 38.40\nFeatures\t: {feats}\nCPU implementer\t: 0x51\n"
            f"CPU architecture: 8\nCPU variant\t: {var}\nCPU part\t: {part}\nCPU revision\t: {rev}\n"
        )
    return "\n".join(blocks) + "\nHardware\t: Qualcomm Technologies, Inc SDM845\n"


def test_parse_cpuinfo_reads_every_core():
    info = newdevice.parse_cpuinfo(SM8250.read_text())
    assert [c["processor"] for c in info["cores"]] == list(range(8))
    assert {c["midr"]["part"] for c in info["cores"]} == {"0xd05", "0xd0d"}
    assert "asimddp" in info["cores"][7]["features"] and info["hardware"].endswith("KONA")


def test_an_unknown_core_gets_the_nearest_calibrated_class_and_the_extrapolated_band(tmp_path):
    fit = cores.load_fit()
    res = api.new_device("my-865", cpuinfo=SM8250, clusters=CLUSTERS, out=tmp_path / "my-865.yaml")
    assert res["core_class"] == "cortex-a77" and res["constants_from"] == ["cortex-a76"]
    assert res["status"] == "extrapolated" and res["int8_kernels"] == "dotprod"
    assert res["basis"] == {"float32": "extrapolated", "int8": "extrapolated"}
    for p in ("float32", "int8"):
        assert res["expected_error"][p] == round(fit.bands[p]["extrapolated"].error, 2)
    prof = load_profile(tmp_path / "my-865.yaml")
    assert prof.name == "my-865" and prof.calibration.status == "extrapolated"
    assert [(c.core, c.count, c.max_ghz) for c in prof.cpu.clusters] == [
        ("cortex-a77", 1, 2.84),
        ("cortex-a77", 3, 2.42),
        ("cortex-a55", 4, 1.8),
    ]
    assert prof.cpu.big_cores == 4 and prof.cpu.qemu_cpu == "cortex-a76"
    assert prof.cpu.midr == {
        "implementer": "0x41",
        "variant": "0x1",
        "part": "0xd0d",
        "revision": "0",
    }
    # constants: the A76's, held to the A77's own (wider) issue bound
    a76 = fit.classes["cortex-a76"]
    assert prof.calibration.cpi["float32"] == pytest.approx(a76["float32"].cpi, abs=1e-4)
    # an estimate on it says extrapolated and carries the wider band than the fitted device's
    mine = estimate_latency(3e8, 1e7, "float32", prof, threads=4)
    fitted = estimate_latency(3e8, 1e7, "float32", load_profile("pixel-4"), threads=4)
    assert mine["extrapolated"] and mine["basis"] == "extrapolated"
    assert fitted["basis"] == "fitted" and mine["expected_error"] > fitted["expected_error"]
    assert mine["high_ms"] / mine["ms"] == pytest.approx(1 + mine["expected_error"])


def test_a_phone_of_a_calibrated_class_gets_its_class_constants(tmp_path):
    f = tmp_path / "cpuinfo.txt"
    f.write_text(sdm845_like())
    res = api.new_device("sd845", cpuinfo=f, clusters="4x2.8,4x1.77", out=tmp_path / "sd845.yaml")
    fit = cores.load_fit()
    assert res["core_class"] == "cortex-a75" and res["constants_from"] == ["cortex-a75"]
    assert res["basis"]["float32"] == "core-class" and res["int8_kernels"] == "no-dotprod"
    assert res["expected_error"]["float32"] == round(fit.bands["float32"]["core-class"].error, 2)
    a75_int8 = fit.classes["cortex-a75"]["int8"]
    want = "core-class" if a75_int8.basis == "fitted" else "extrapolated"
    assert res["basis"]["int8"] == want
    prof = load_profile(tmp_path / "sd845.yaml")
    assert prof.cpu.clusters[0].name == "Kryo 360/385 Gold" and prof.cpu.big_cores == 4
    assert prof.calibration.cpi["int8"] >= cores.require_core("cortex-a75").min_cpi


def test_cli_devices_new_writes_a_profile_that_bench_targets_accept(tmp_path):
    out = tmp_path / "mine.yaml"
    args = ["devices", "new", "mine", "--cpuinfo", str(SM8250), "--clusters", CLUSTERS]
    r = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "status extrapolated" in r.output and "cortex-a76" in r.output and "±" in r.output
    shown = CliRunner().invoke(cli, ["devices", "show", str(out), "--json"])
    data = json.loads(shown.output)
    assert (
        data["calibration"]["status"] == "extrapolated"
        and data["derived"]["bounds"]["max_ipc"] == 6
    )
    assert yaml.safe_load(out.read_text())["sources"]["cpu.midr"].startswith("/proc/cpuinfo")
    again = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output and again.output.count("\n") == 1
    forced = CliRunner().invoke(cli, [*args, "--out", str(out), "--force", "--json"])
    assert forced.exit_code == 0 and json.loads(forced.output)["path"] == str(out)


@pytest.mark.parametrize(
    "extra,match",
    [
        ([], "has no clocks: pass the SoC's clusters"),
        (["--clusters", "1x2.84,3x2.42"], "add up to 4 cores but /proc/cpuinfo lists 8"),
        (["--clusters", "4x1.8,4x2.4"], "fastest first"),
        (["--clusters", "fast"], "COUNTxGHZ"),
        (["--clusters", CLUSTERS, "--core-class", "cortex-z9"], "Unknown core class"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, extra, match):
    out = tmp_path / "x.yaml"
    r = CliRunner().invoke(
        cli, ["devices", "new", "x", "--cpuinfo", str(SM8250), "--out", str(out), *extra]
    )
    assert r.exit_code == 2 and match in r.output and r.output.count("\n") == 1
    assert not out.exists()


def test_a_non_arm64_cpuinfo_is_refused(tmp_path):
    x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme sse sse2 avx2\n"
    with pytest.raises(UsageError, match="arm64 device"):
        newdevice.parse_cpuinfo(x86)
    host = Path("/proc/cpuinfo")
    if host.is_file() and "CPU part" not in host.read_text():  # this x86 machine's own
        with pytest.raises(UsageError, match="arm64 device"):
            api.new_device("host", cpuinfo=host, clusters="1x3.0", out=tmp_path / "h.yaml")
    armv7 = sdm845_like().replace("asimd", "neon")
    with pytest.raises(UsageError, match="aarch64"):
        newdevice.parse_cpuinfo(armv7)


def test_over_adb_the_clocks_and_ram_come_from_the_device(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "adb"
    exe.write_text(f"#!{sys.executable}\n" + (FIXTURES / "fake_adb.py").read_text())
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    freqs = {i: "1804800" if i < 4 else ("2841600" if i == 7 else "2419200") for i in range(8)}
    files = {"/proc/cpuinfo": SM8250.read_text(), "/proc/meminfo": "MemTotal:  7723324 kB\n"}
    files |= {
        f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq": f + "\n"
        for i, f in freqs.items()
    }
    monkeypatch.setenv("FAKE_ADB_FILES", json.dumps(files))
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    res = api.new_device("pixel-7ish", device="adb", out=tmp_path / "p.yaml")
    prof = load_profile(tmp_path / "p.yaml")
    assert [(c.count, c.max_ghz) for c in prof.cpu.clusters] == [(1, 2.842), (3, 2.419), (4, 1.805)]
    assert prof.memory.ram_mb == 7542 and "meminfo" in prof.sources["memory.ram_mb"]
    assert prof.title == "Pixel 7 (extrapolated)" and res["core_class"] == "cortex-a77"
    logged = [json.loads(line) for line in (tmp_path / "adb.log").read_text().splitlines()]
    assert any(e.get("device") == [["cat", "/proc/cpuinfo"]] for e in logged)


def test_devices_new_imports_no_tensorflow(tmp_path):
    code = (
        "import sys\n"
        "from edgekit.cli import cli\n"
        "try:\n"
        f"    cli(['devices', 'new', 'z', '--cpuinfo', {str(SM8250)!r}, '--clusters', "
        f"{CLUSTERS!r}, '--out', {str(tmp_path / 'z.yaml')!r}])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "z.yaml").is_file()
