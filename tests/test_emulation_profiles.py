"""Device profiles: every bundled profile validates; bad profiles fail with the key path and value."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.emulation.profiles import (
    QEMU_CPU_FEATURES,
    DeviceProfile,
    list_profiles,
    load_profile,
    validate_profile,
)
from edgekit.errors import RecipeError

# A minimal valid aarch64 board; tests break one thing at a time.
BOARD = {
    "name": "toy-board",
    "title": "Toy board",
    "kind": "board",
    "cpu": {
        "arch": "aarch64",
        "qemu_cpu": "cortex-a53",
        "features": ["fp", "asimd", "evtstrm", "crc32", "cpuid"],
        "midr": {"implementer": "0x41", "variant": "0x0", "part": "0xd03", "revision": "4"},
        "clusters": [{"core": "cortex-a53", "count": 4, "max_ghz": 1.4}],
    },
    "memory": {"ram_mb": 1024},
    "accelerators": ["xnnpack"],
    "published": [
        {
            "model": "mobilenet_v2_1.0_224",
            "precision": "float32",
            "threads": 1,
            "ms": 100.0,
            "source": "https://example.org/figures",
        }
    ],
    "sources": {
        "cpu.clusters": "vendor page",
        "cpu.features": "cpuinfo dump",
        "cpu.midr": "cpuinfo dump",
        "memory.ram_mb": "vendor page",
    },
}


def board(**changes) -> dict:
    raw = copy.deepcopy(BOARD)
    for path, value in changes.items():
        target = raw
        *parents, last = path.split("__")
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return raw


def test_the_toy_board_is_valid():
    p = validate_profile(board())
    assert p.cpu.big_cores == 4 and p.cpu.max_ghz == 1.4 and not p.cpu.dotprod


@pytest.mark.parametrize("name", list_profiles())
def test_every_bundled_profile_validates(name):
    p = load_profile(name)
    assert isinstance(p, DeviceProfile) and p.name == name
    if p.cpu.arch == "aarch64":
        assert p.cpu.qemu_cpu in QEMU_CPU_FEATURES and p.cpu.midr and p.cpu.clusters
    for fig in p.published:
        assert fig.source.startswith("https://"), f"{name}: figure without a URL"


def test_required_profiles_are_bundled():
    names = set(list_profiles())
    assert {"desktop-cpu", "desktop-gpu", "pixel-4", "redmi-note-4", "rpi4", "rpi3"} <= names
    qemu = {load_profile(n).cpu.qemu_cpu for n in names}
    assert {"cortex-a76", "cortex-a53", "cortex-a72"} <= qemu


def test_derived_flags_follow_features():
    assert load_profile("pixel-4").cpu.dotprod and load_profile("pixel-4").cpu.fp16
    a53 = load_profile("redmi-note-4").cpu
    assert not a53.dotprod and not a53.fp16
    assert load_profile("pixel-4").cpu.big_cores == 4  # 1 prime + 3 gold, all Cortex-A76


def test_calibration_is_fitted_and_sourced_or_explicitly_missing():
    statuses = {}
    for name in list_profiles():
        p = load_profile(name)
        c = p.calibration
        statuses[name] = c.status
        if not c.calibrated:
            assert c.status == "uncalibrated" and c.cpi is None
            continue
        # Fitted by the script, to figures the profile (or its core class) publishes.
        assert set(c.cpi) == {"float32", "int8"} and 0 < c.parallel_efficiency <= 1
        assert set(c.basis) == {"float32", "int8"} and set(c.expected_error) == set(c.basis)
        assert "benchmarks/calibrate_devices.py" in c.method
        assert "benchmarks/calibrate_devices.py" in p.sources["calibration"]
        if c.status == "calibrated":
            assert "fitted" in c.basis.values()
            assert any(f.abi == "aarch64" and f.delegate == "cpu" for f in p.published)
        else:
            assert "fitted" not in c.basis.values()
        # carried-over constants never get a narrower band than fitted ones
        for prec, basis in c.basis.items():
            if basis == "extrapolated":
                assert c.error_for(prec) > 0.2
    fitted = {"pixel-2", "pixel-3a", "pixel-4", "rpi4"}
    assert {n for n, s in statuses.items() if s == "calibrated"} == fitted
    # pixel-3 is the unseen device; the Cortex-A53 profiles have no aarch64 figure at all
    assert {n for n, s in statuses.items() if s == "extrapolated"} == {
        "pixel-3",
        "redmi-note-4",
        "rpi3",
    }
    with pytest.raises(RecipeError, match="set status: calibrated"):
        validate_profile(board(calibration={"cpi": {"float32": 1.0}}))
    with pytest.raises(RecipeError, match="needs cpi, parallel_efficiency and expected_error"):
        validate_profile(board(calibration={"status": "calibrated", "cpi": {"float32": 1.0}}))
    fitted_cal = {
        "status": "calibrated",
        "cpi": {"float32": 0.9, "int8": 0.7},
        "parallel_efficiency": 0.8,
        "expected_error": 0.3,
    }
    with pytest.raises(RecipeError, match=r"calibration.cpi.float32 has no source"):
        validate_profile(board(calibration=fitted_cal))
    sourced = {**BOARD["sources"], "calibration": "fit"}
    p = validate_profile(board(calibration=fitted_cal, sources=sourced))
    assert p.calibration.calibrated and p.calibration.cpi["int8"] == 0.7
    assert p.calibration.error_for("int8") == 0.3 and p.calibration.basis_for("int8") == "fitted"
    extra = {
        **fitted_cal,
        "status": "extrapolated",
        "expected_error": {"float32": 0.4, "int8": 1.5},
        "basis": {"float32": "core-class", "int8": "extrapolated"},
    }
    p = validate_profile(board(calibration=extra, sources=sourced))
    assert p.calibration.extrapolated and p.calibration.error_for("int8") == 1.5
    with pytest.raises(RecipeError, match="basis says 'fitted'"):
        validate_profile(
            board(calibration={**extra, "basis": {"float32": "fitted"}}, sources=sourced)
        )
    with pytest.raises(RecipeError, match=r"calibration.basis.int8"):
        validate_profile(
            board(calibration={**extra, "basis": {"int8": "guessed"}}, sources=sourced)
        )


def test_the_big_cores_need_a_core_class_and_a_midr_with_sdot_needs_an_sdot_qemu_model():
    clusters = [{"core": "cortex-a99", "count": 4, "max_ghz": 1.4}]
    with pytest.raises(RecipeError, match=r"'cortex-a99' has no core class.*cortex-a76"):
        validate_profile(board(cpu__clusters=clusters))
    # the little cluster may be anything
    two = [
        {"core": "cortex-a53", "count": 4, "max_ghz": 1.4},
        {"core": "mystery-little", "count": 4, "max_ghz": 1.0},
    ]
    assert validate_profile(board(cpu__clusters=two)).cpu.big_cores == 4
    # Kryo 485 Gold: XNNPACK's cpuinfo gives it SDOT even when Features lacks asimddp
    kryo485 = {"implementer": "0x51", "variant": "0xd", "part": "0x804", "revision": "14"}
    a76 = [{"core": "cortex-a76", "count": 4, "max_ghz": 2.4}]
    with pytest.raises(RecipeError, match=r"part 0x804 has SDOT/UDOT.*SIGILL"):
        validate_profile(board(cpu__midr=kryo485, cpu__qemu_cpu="cortex-a72", cpu__clusters=a76))
    p = validate_profile(board(cpu__midr=kryo485, cpu__qemu_cpu="cortex-a76", cpu__clusters=a76))
    assert p.cpu.int8_kernels == "dotprod" and not p.cpu.dotprod
    assert p.resolved()["derived"]["bounds"]["max_ipc"] == 4


def test_unknown_name_lists_known_profiles():
    with pytest.raises(RecipeError, match=r"Unknown device profile 'pixel-99'.*rpi4"):
        load_profile("pixel-99")
    with pytest.raises(RecipeError, match="does not exist"):
        load_profile("missing.yaml")


def test_loads_a_path_and_names_it_after_the_file(tmp_path):
    raw = board()
    del raw["name"]
    f = tmp_path / "my-board.yaml"
    f.write_text(yaml.safe_dump(raw))
    assert load_profile(str(f)).name == "my-board"
    f.write_text("cpu: [1, 2\n")
    with pytest.raises(RecipeError, match="not valid YAML at line"):
        load_profile(f)


def test_unsourced_number_is_rejected():
    sources = {k: v for k, v in BOARD["sources"].items() if k != "memory.ram_mb"}
    with pytest.raises(RecipeError, match=r"memory.ram_mb has no source"):
        validate_profile(board(sources=sources))
    sources = {k: v for k, v in BOARD["sources"].items() if k != "cpu.clusters"}
    with pytest.raises(RecipeError, match=r"cpu.clusters.0.count has no source"):
        validate_profile(board(sources=sources))
    # A prefix covers every field under it; a finer key works too.
    sources = {**sources, "cpu.clusters.0": "spec"}
    assert validate_profile(board(sources=sources)).source_for("cpu.clusters.0.max_ghz") == "spec"


def test_source_for_a_field_that_does_not_exist_is_rejected():
    with pytest.raises(
        RecipeError, match=r"sources name fields the profile does not have: cpu.clock"
    ):
        validate_profile(board(sources={**BOARD["sources"], "cpu.clock": "x"}))


def test_unknown_key_is_rejected_with_its_path():
    with pytest.raises(
        RecipeError, match=r"Invalid device profile <dict>: cpu.clusters.0.ghz: unknown key"
    ):
        validate_profile(board(cpu__clusters__0__ghz=2.0))


def test_wrong_type_names_path_expectation_and_value():
    with pytest.raises(RecipeError) as e:
        validate_profile(board(memory__ram_mb="lots"))
    assert "memory.ram_mb: Input should be a valid integer" in str(e.value)
    assert "(received 'lots')" in str(e.value)
    with pytest.raises(
        RecipeError, match=r"accelerators.0: Input should be 'xnnpack', 'gpu' or 'nnapi'"
    ):
        validate_profile(board(accelerators=["npu"]))


def test_qemu_cpu_required_iff_aarch64():
    with pytest.raises(RecipeError, match="qemu_cpu is required for arch aarch64"):
        validate_profile(board(cpu__qemu_cpu=None))
    with pytest.raises(
        RecipeError, match=r"Expected qemu_cpu one of .*Received: qemu_cpu='cortex-a75'"
    ):
        validate_profile(board(cpu__qemu_cpu="cortex-a75"))
    x86 = board(cpu__arch="x86_64")
    with pytest.raises(RecipeError, match="set them to null for arch x86_64"):
        validate_profile(x86)


def test_the_emulated_sdot_must_be_the_devices():
    # XNNPACK reads the ISA from the emulated CPU, not Features: a device with asimddp on a qemu
    # model without SDOT would be counted with the other int8 kernels, and the reverse too.
    features = BOARD["cpu"]["features"] + ["asimddp"]
    with pytest.raises(
        RecipeError, match=r"has asimddp \(SDOT/UDOT\) but qemu cpu cortex-a53 has none"
    ):
        validate_profile(board(cpu__features=features))
    p = validate_profile(board(cpu__features=features, cpu__qemu_cpu="cortex-a76"))
    assert p.cpu.dotprod and p.cpu.int8_kernels == "dotprod"
    with pytest.raises(RecipeError, match=r"qemu cpu cortex-a76 reports SDOT/UDOT.*cortex-a72"):
        validate_profile(board(cpu__qemu_cpu="cortex-a76"))
    # Features the qemu model lacks are allowed (not emulated) and listed
    atomics = BOARD["cpu"]["features"] + ["atomics", "asimdhp"]
    p = validate_profile(board(cpu__features=atomics))
    assert p.cpu.not_emulated == ["atomics", "asimdhp"]
    assert p.resolved()["derived"]["not_emulated"] == ["atomics", "asimdhp"]


def test_midr_and_cluster_order_checked():
    with pytest.raises(RecipeError, match=r"midr.part as lower-case hex"):
        validate_profile(board(cpu__midr={**BOARD["cpu"]["midr"], "part": "d03"}))
    clusters = [
        {"core": "cortex-a55", "count": 4, "max_ghz": 1.8},
        {"core": "cortex-a76", "count": 4, "max_ghz": 2.4},
    ]
    with pytest.raises(RecipeError, match="fastest first"):
        validate_profile(board(cpu__clusters=clusters))


def test_published_figures_are_normalized():
    fig = {**BOARD["published"][0], "model": "MobileNet V2"}
    with pytest.raises(RecipeError, match="normalized model name"):
        validate_profile(board(published=[fig]))
    fig = {**BOARD["published"][0], "precision": "uint8"}
    with pytest.raises(RecipeError, match=r"published.0.precision"):
        validate_profile(board(published=[fig]))


def test_cli_lists_profiles():
    r = CliRunner().invoke(cli, ["devices"])
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == len(list_profiles())
    rpi4 = next(line for line in lines if line.startswith("rpi4 "))
    assert "4x cortex-a72 @1.5GHz" in rpi4 and rpi4.endswith(" calibrated")
    rpi3 = next(line for line in lines if line.startswith("rpi3 "))
    assert rpi3.endswith(" extrapolated")
    assert next(line for line in lines if line.startswith("desktop-cpu")).endswith("not calibrated")
    rows = json.loads(CliRunner().invoke(cli, ["devices", "--json"]).output)
    assert {r["name"] for r in rows} == set(list_profiles())
    assert all(
        set(r) >= {"title", "cpu", "accelerators", "calibrated", "calibration"} for r in rows
    )


def test_cli_show_yaml_and_json():
    r = CliRunner().invoke(cli, ["devices", "show", "pixel-4"])
    assert r.exit_code == 0, r.output
    shown = yaml.safe_load(r.output)
    assert shown["cpu"]["qemu_cpu"] == "cortex-a76" and shown["derived"]["dotprod"] is True
    r = CliRunner().invoke(cli, ["devices", "show", "rpi3", "--json"])
    data = json.loads(r.output)
    assert data["name"] == "rpi3" and data["derived"]["big_cores"] == 4
    assert all(f["abi"] == "armv7" for f in data["published"])


def test_cli_unknown_profile_is_one_line_exit_2():
    r = CliRunner().invoke(cli, ["devices", "show", "pixel-99"])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1 and "Known profiles:" in r.output


def test_devices_command_imports_no_tensorflow():
    code = (
        "import sys\n"
        "from edgekit.cli import cli\n"
        "try:\n"
        "    cli(['devices', 'show', 'rpi4', '--json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_devices_status_on_an_empty_cache_names_the_fix(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgekit.cli import cli

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    res = CliRunner().invoke(cli, ["devices", "status"])
    assert res.exit_code == 1
    assert "not provisioned: run `edgekit devices setup`" in res.output
    res = CliRunner().invoke(cli, ["devices", "status", "--json"])
    data = json.loads(res.output)
    assert data["provisioned"] is False and "sysroot" in data["missing"]
