"""channel_prune to a latency target: the MAC fraction searched with instructions counted on the
emulated pixel-4 (real TFLite, real LiteRT under qemu), the search itself, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import keras_compat
from edgekit.errors import UsageError
from edgekit.stages import channel_prune as cp
from edgekit.stages import latency_budget as lb

SHAPE = (32, 32, 3)


def plain_cnn():
    """Four convs with batch norm and a dense head: enough MACs for the instruction count to
    follow the channels (a few hundred thousand instructions per invoke)."""
    K = keras_compat.keras()
    L = K.layers
    K.utils.set_random_seed(0)
    i = L.Input(SHAPE, name="image")
    x = i
    for n, (filters, stride) in enumerate([(32, 1), (64, 2), (64, 1), (128, 2)]):
        x = L.Conv2D(filters, 3, strides=stride, padding="same", name=f"c{n}")(x)
        x = L.ReLU(name=f"r{n}")(L.BatchNormalization(name=f"bn{n}")(x))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return K.Model(i, L.Dense(10, name="logits")(x), name="plain_cnn")


def test_latency_target_met_on_the_emulated_phone(provisioned, monkeypatch):
    model = plain_cnn()
    weights = [w.copy() for w in model.get_weights()]
    scored = []
    real_importance = cp.importance
    monkeypatch.setattr(cp, "importance", lambda *a, **k: scored.append(1) or real_importance(*a, **k))  # fmt: skip
    result, search = cp.channel_prune_to_latency(
        model, target_latency=0.6, device="pixel-4", precision="float32", multiple_of=8
    )
    s = search.summary()
    assert s["measure"] == "estimated ms" and s["device"] == "pixel-4"
    assert 1 <= len(s["probes"]) <= lb.MAX_PROBES
    assert search.reached and s["chosen"]["latency_ratio"] <= 0.6
    assert s["speedup_estimated"] >= 1 / 0.6 - 1e-3
    # the chosen probe is the result returned, and the largest MAC fraction that met the target
    assert s["chosen"]["macs_kept"] == round(result.macs_kept, 4)
    meeting = [p["macs_kept"] for p in s["probes"] if p["latency_ratio"] <= 0.6]
    assert s["chosen"]["macs_kept"] == max(meeting)
    # counted instructions fall with the MACs: every probe below the unpruned model
    assert all(p["instructions"] < s["unpruned"]["instructions"] for p in s["probes"])
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights, strict=True))
    assert len(scored) == 1  # the channels are scored once, whatever the number of probes


def test_prepared_once_prunes_as_channel_prune():
    """Pruning a prepared model to several targets gives what channel_prune gives at each."""
    model = plain_cnn()
    prepared = cp.prepare(model, "bn_scale")
    for target in (0.7, 0.4):
        a = cp.prune_prepared(prepared, target_macs=target, multiple_of=8)
        b = cp.channel_prune(model, target_macs=target, criterion="bn_scale", multiple_of=8)
        assert a.macs_after == b.macs_after and a.layers == b.layers
        assert a.criterion == "bn_scale" and a.macs_kept <= target
        assert all(np.array_equal(x, y) for x, y in zip(a.model.get_weights(), b.model.get_weights(), strict=True))  # fmt: skip


def test_search_interpolates_to_the_target():
    """On a latency that is an affine function of the MACs (a fixed cost of 30%), the search lands
    within the tolerance below the target in at most three probes (the real pruning each time)."""
    model = plain_cnn()

    def prune_at(macs):
        return cp.channel_prune(model, target_macs=macs, min_channels=1, multiple_of=1)

    def measure(m):
        macs = sum(cp.analyze(m).macs.values())
        return {"instructions": 1e6 * (0.3 + 0.7 * macs / total), "ms": None}

    total = cp.analyze(model).total_macs
    result, search = lb.search(
        prune_at, measure, measure(model), 0.6, device="affine", precision="float32"
    )
    s = search.summary()
    assert s["measure"] == "instructions"  # no ms: the instruction ratio is the measure
    assert len(s["probes"]) <= 3, s["probes"]
    assert 0.6 - lb.TOLERANCE <= s["chosen"]["latency_ratio"] <= 0.6
    assert result.macs_kept == pytest.approx((0.6 - 0.3) / 0.7, abs=0.05)


@pytest.mark.parametrize("target", [0, 1, 1.5, True])
def test_bad_latency_target(target):
    with pytest.raises(UsageError, match=r"target_latency .* in \(0, 1\)"):
        cp.channel_prune_to_latency(plain_cnn(), target_latency=target, device="pixel-4")


def test_config_needs_an_emulated_device():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="latency_device"):
        cp.ChannelPruneConfig(target_latency=0.6)
    with pytest.raises(UsageError, match="not an emulated arm64 device"):
        lb.device_profile("desktop-cpu")
    with pytest.raises(UsageError, match="pixel-4"):
        lb.device_profile(None)


def test_cli_latency_target_bad_input_exit_2(tmp_path):
    """Refused before any work, one line, exit 2: no device, a device that cannot be emulated."""
    from click.testing import CliRunner

    from edgekit.cli import cli

    path = tmp_path / "cnn.keras"
    plain_cnn().save(path)
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.integers(0, 256, (40, *SHAPE), dtype=np.uint8), y=rng.integers(0, 10, 40))
    base = ["compress", str(path), "--recipe", "slim", "--data", str(data)]
    run = CliRunner(env={"EDGEKIT_QUIET": "1"})
    for i, sets in enumerate(
        [
            ["channel_prune.target_latency=0.6"],
            ["channel_prune.target_latency=0.6", "channel_prune.latency_device=desktop-cpu"],
        ]
    ):
        args = [*base, "--out", str(tmp_path / f"run{i}")]
        for s in sets:
            args += ["--set", s]
        r = run.invoke(cli, args)
        assert r.exit_code == 2, r.output
        assert "latency_device" in r.output and "Traceback" not in r.output
        assert not (tmp_path / f"run{i}" / "report.json").exists()


@pytest.mark.slow
def test_compress_with_a_latency_target(provisioned, tmp_path):
    """The stage in a compress run: the report's latency_target holds every probe and the chosen
    one, which met the target, and the slim model's MACs are the chosen probe's."""
    import json

    from click.testing import CliRunner

    from edgekit.cli import cli

    path = tmp_path / "cnn.keras"
    plain_cnn().save(path)
    rng = np.random.default_rng(0)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.integers(0, 256, (80, *SHAPE), dtype=np.uint8), y=rng.integers(0, 10, 80))
    recipe = tmp_path / "slim-latency.yaml"
    recipe.write_text(
        "name: slim-latency\nseed: 0\nlatency_runs: 10\nverify: {samples: 8}\n"
        "data: {split: {train: 0.7, val: 0.1, calib: 0.1, eval: 0.1}, max_eval_samples: 8}\n"
        "stages:\n  - {stage: channel_prune, target_latency: 0.7, latency_device: pixel-4,"
        " latency_precision: int8, epochs: 0}\n  - {stage: export, formats: [tflite]}\n"
    )
    args = ["compress", str(path), "--recipe", str(recipe), "--data", str(data)]
    r = CliRunner(env={"EDGEKIT_QUIET": "1"}).invoke(
        cli, [*args, "--out", str(tmp_path / "run"), "--json"], catch_exceptions=False
    )
    assert r.exit_code == 0, r.output
    stage = next(s for s in json.loads(r.stdout)["stages"] if s["stage"] == "channel_prune")
    lat = stage["latency_target"]
    assert lat["device"] == "pixel-4" and lat["precision"] == "int8" and lat["target_reached"]
    assert lat["chosen"]["latency_ratio"] <= 0.7 and lat["chosen"] in lat["probes"]
    assert stage["macs_kept"] == lat["chosen"]["macs_kept"]
    md = (tmp_path / "run" / "report.md").read_text()
    assert "Latency target 0.7 of the unpruned model's estimated ms on pixel-4 (int8)" in md
