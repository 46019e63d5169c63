"""Core classes (devices/cores/*.yaml): physical bounds with sources, the MIDR map, the nearest
class rule, and the calibration fitted per class and precision (devices/cores/fit.yaml)."""

from __future__ import annotations

import pytest
import yaml

from edgekit.emulation import cores
from edgekit.emulation.cores import CoreClass
from edgekit.emulation.estimate import estimate_latency
from edgekit.emulation.profiles import QEMU_CPU_FEATURES, list_profiles, load_profile


@pytest.mark.parametrize("name", sorted(cores.catalogue()))
def test_every_core_class_is_sourced_and_emulatable(name):
    c = cores.require_core(name)
    assert c.core == name and c.max_ipc > 0 and c.qemu_cpu in QEMU_CPU_FEATURES
    assert c.source("max_ipc").startswith("http") and c.source("midr")
    if c.decode_width:
        # issue can exceed decode only through a macro-op cache; never fall below it
        assert c.max_ipc >= c.decode_width
    assert c.min_cpi == pytest.approx(1 / c.max_ipc)


def test_an_unsourced_bound_is_rejected():
    raw = yaml.safe_load((cores.cores_dir() / "cortex-a76.yaml").read_text())
    del raw["sources"]["max_ipc"]
    with pytest.raises(ValueError, match="max_ipc of core cortex-a76 have no source"):
        CoreClass.model_validate(raw)


def test_midr_parts_name_the_vendor_derivatives():
    assert cores.by_midr("0x51", "0x804")[0].core == "cortex-a76"  # Kryo 485 Gold
    assert cores.by_midr("0x51", "0x802")[0].core == "cortex-a75"  # Kryo 385 Gold
    assert cores.by_midr("0x51", "0x800")[0].core == "cortex-a73"  # Kryo 280 Gold
    assert cores.by_midr("0x41", "0xd03")[0].core == "cortex-a53"
    assert cores.by_midr("0x41", "0xfff") is None


def test_int8_kernels_follow_xnnpacks_midr_list_not_only_features():
    kryo485 = {"implementer": "0x51", "variant": "0xd", "part": "0x804", "revision": "14"}
    kryo385 = {"implementer": "0x51", "variant": "0x6", "part": "0x802", "revision": "13"}
    a55r0 = {"implementer": "0x41", "variant": "0x0", "part": "0xd05", "revision": "0"}
    a55r1 = {**a55r0, "variant": "0x1"}
    assert cores.int8_kernels(kryo485, ["fp", "asimd"]) == "dotprod"
    assert cores.int8_kernels(kryo385, ["fp", "asimd"]) == "no-dotprod"
    assert cores.int8_kernels(kryo385, ["fp", "asimd", "asimddp"]) == "dotprod"
    assert cores.int8_kernels(a55r0, []) == "no-dotprod"
    assert cores.int8_kernels(a55r1, []) == "dotprod"


def test_nearest_class_prefers_the_same_pipeline_then_the_issue_width():
    calibrated = ["cortex-a72", "cortex-a73", "cortex-a75", "cortex-a76"]
    assert cores.nearest("cortex-a76", calibrated) == "cortex-a76"
    assert cores.nearest("cortex-a77", calibrated) == "cortex-a76"
    assert cores.nearest("cortex-x1", calibrated) == "cortex-a76"
    assert cores.nearest("cortex-a53", calibrated) == "cortex-a73"  # 2-wide, like the A53
    assert cores.nearest("cortex-a53", [*calibrated, "cortex-a55"]) == "cortex-a55"  # in-order
    assert cores.nearest("no-such-core", calibrated) is None


def test_the_fit_covers_every_class_and_widens_the_band_for_carried_over_constants():
    fit = cores.load_fit()
    assert fit is not None and 0 < fit.parallel_efficiency <= 1
    assert set(fit.classes) == set(cores.catalogue())
    for core, by_precision in fit.classes.items():
        bound = cores.require_core(core).min_cpi
        for precision, c in by_precision.items():
            assert c.cpi >= bound - 1e-9, f"{core} {precision} cpi beyond the issue width"
            if c.basis == "extrapolated":
                assert c.rule.startswith(("R1", "R2")) and c.figures == 0
            else:
                assert c.figures > 0 and c.devices
    for precision in ("float32", "int8"):
        b = fit.bands[precision]
        assert b["extrapolated"].error > b["fitted"].error
        assert b["fitted"].measured and b["extrapolated"].measured and b["fitted"].n > 0
    assert fit.unseen == ["pixel-3"]


@pytest.mark.parametrize("name", list_profiles())
def test_no_bundled_profile_implies_more_than_its_core_can_issue(name):
    p = load_profile(name)
    if not p.calibration.calibrated:
        return
    bound = cores.require_core(p.cpu.clusters[0].core)
    for precision, cpi in p.calibration.cpi.items():
        assert cpi >= bound.min_cpi - 1e-9
        for threads in (1, p.cpu.big_cores):
            est = estimate_latency(3.7e8, 2e7, precision, p, threads=threads)
            assert est["implied_ipc"] <= bound.max_ipc + 1e-9 and not est["clamped"]
            assert est["basis"] in ("fitted", "core-class", "extrapolated")
