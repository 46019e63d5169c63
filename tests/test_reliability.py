"""Nothing lost around a compress run: one run per folder, interrupts, kill -9, a full disk.

Real `edgekit compress` processes and real signals (os.kill): SIGINT and SIGTERM end in one line
and exit 130 / 143 with nothing half-written, kill -9 leaves a run the next one resumes, a second
run on the same folder is refused in one line while the first finishes, and a full disk (a small
tmpfs, where root may mount one) is one line naming the folder and the space needed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from reliability_helpers import (
    SIGCONT,
    SIGINT,
    SIGKILL,
    SIGSTOP,
    SIGTERM,
    Edgekit,
    assert_interrupted,
    edgekit_lines,
    fill,
    leftovers,
    log_size,
    mount_small_disk,
    run,
    snapshot,
    wait_for_line,
)

from edgekit.artifacts import LOCK_NAME, sha256_path

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("reliability")]


@pytest.fixture(scope="module")
def data_and_teacher(tmp_path_factory) -> tuple[Path, Path]:
    """600 digits at 32x32 and a small Keras 3 CNN trained on them for a few seconds."""
    from edgekit.data import load_dataset
    from edgekit.keras_compat import keras

    ds = load_dataset("digits:size=32")
    idx = np.random.default_rng(0).permutation(len(ds))[:600]
    folder = tmp_path_factory.mktemp("reliability")
    data = folder / "digits600.npz"
    np.savez(data, x=ds.x[idx], y=ds.y[idx], labels=np.array(ds.labels))
    k = keras()
    k.utils.set_random_seed(0)
    inp = k.Input((32, 32, 3))
    h = k.layers.Conv2D(16, 3, activation="relu", padding="same")(inp)
    h = k.layers.MaxPooling2D()(h)
    h = k.layers.Conv2D(16, 3, activation="relu", padding="same")(h)
    h = k.layers.MaxPooling2D()(h)
    out = k.layers.Dense(10)(k.layers.Flatten()(h))
    model = k.Model(inp, out)
    model.compile(
        "adam", k.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    model.fit(ds.x[idx] / 255.0, ds.y[idx], epochs=6, batch_size=32, verbose=0)
    teacher = folder / "teacher.keras"
    model.save(teacher)
    return data, teacher


COMMON = """
seed: 0
data: {max_eval_samples: 60}
verify: {samples: 64, min_agreement: 0.5}
latency_runs: 3
compare_teacher_tflite: false
"""


def recipe(tmp: Path, name: str, stages: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(f"name: {name}\n{COMMON}stages:\n{stages}")
    return path


EXPORT = "  - {stage: export, formats: [tflite]}\n"
QUANTIZE = "  - {stage: quantize, modes: [int8], formats: [tflite], calibration_samples: 32}\n"


def compress_args(teacher: Path, data: Path, rec: Path, out: Path) -> list:
    return ["compress", teacher, "--data", data, "--recipe", rec, "--out", out, "--json"]


def assert_complete(out: Path, p: Edgekit) -> dict:
    """A finished run: exit 0, report.json equal to stdout, every artifact there and hashed."""
    assert p.proc.returncode == 0, p.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report == json.loads(p.stdout)
    manifest = json.loads((out / "manifest.json").read_text())
    for a in report["artifacts"]:
        assert manifest["outputs"][a["path"]] == sha256_path(out / a["path"]) == a["sha256"]
    assert leftovers(out) == []
    return report


def assert_clean_stop(out: Path, stages_done: list[str]) -> None:
    """After SIGINT/SIGTERM: no partial stage, no temporary, the lock released; the stages
    finished before are complete; no report of an unfinished run."""
    assert leftovers(out) == [], leftovers(out)
    assert sorted(p.name for p in (out / "stages").iterdir()) == stages_done
    for name in stages_done:
        record = json.loads((out / "stages" / name / "stage.json").read_text())
        for a in [record["output"]["model"], *record["output"]["exports"]]:
            if a:
                assert sha256_path(out / "stages" / name / a["path"]) == a["sha256"]
    assert not (out / "report.json").exists()


def interrupt_at(teacher, data, rec, out, logs, name, pattern, sig):
    """Start a run, wait for a fresh run.log line matching `pattern`, send `sig`."""
    offset = log_size(out)
    p = Edgekit(compress_args(teacher, data, rec, out), logs, name)
    wait_for_line(out / "run.log", pattern, p, offset=offset)
    p.signal(sig)
    return p, offset


def test_second_run_on_a_folder_is_refused_and_the_first_finishes(tmp_path, data_and_teacher):
    data, teacher = data_and_teacher
    rec = recipe(tmp_path, "two-runs", EXPORT + QUANTIZE)
    out = tmp_path / "run"
    first = Edgekit(compress_args(teacher, data, rec, out), tmp_path / "logs", "first")
    wait_for_line(out / "run.log", r"\[1/2\] export$", first)
    first.signal(SIGSTOP)  # frozen, so that whatever changes in the folder now is the second's
    try:
        before = snapshot(out)
        second = run(compress_args(teacher, data, rec, out), tmp_path / "logs", "second", 120)
        after = snapshot(out)
    finally:
        first.signal(SIGCONT)
    assert second.proc.returncode == 2
    lines = edgekit_lines(second.stderr)
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
    assert lines[0].startswith(f"error: Run folder {out} is in use by pid {first.pid} on ")
    assert "started 20" in lines[0] and "nothing was touched" in lines[0]
    assert "--out" in lines[0]  # what to do
    assert after == before  # the refused run touched nothing, not even run.log
    first.wait()
    report = assert_complete(out, first)
    assert [s["stage"] for s in report["stages"]] == ["export", "quantize"]
    assert not (out / LOCK_NAME).exists()


def test_interrupts_and_kill_9_resume_distill_and_quantize(tmp_path, data_and_teacher):
    """SIGINT in a distill epoch, kill -9 in distill, SIGTERM in quantize, kill -9 in quantize:
    each rerun resumes after the last finished stage, and inside distill after its last
    finished epoch (its per-epoch checkpoint)."""
    data, teacher = data_and_teacher
    rec = recipe(
        tmp_path,
        "chain-distill",
        "  - stage: distill\n"
        "    student: {arch: mobilenet_v2, width: 0.35, input_size: 32}\n"
        "    epochs: 3\n"
        "    early_stopping: {enabled: false}\n" + QUANTIZE,
    )
    out, logs = tmp_path / "run", tmp_path / "logs"

    # after the first epoch's line: the second epoch has begun, or is about to
    p, _ = interrupt_at(teacher, data, rec, out, logs, "1-int", r"distill: epoch 1/3", SIGINT)
    assert_interrupted(
        p,
        SIGINT,
        r"interrupted during distill epoch [12]/3 \(stage 1/2\); rerun the same command to "
        r"resume \(finished stages are kept\)",
    )
    assert_clean_stop(out, [])

    # killed in epoch 3, once epoch 2 (which this attempt resumed into) is logged
    p, offset = interrupt_at(
        teacher, data, rec, out, logs, "2-kill", r"distill: epoch 2/3", SIGKILL
    )
    assert p.wait() == -SIGKILL
    assert (out / LOCK_NAME).exists()  # kill -9 leaves its lock behind ...
    log = (out / "run.log").read_text()[offset:]
    assert "distill: resuming after epoch 1/3 from the checkpoint in" in log, log
    assert "distill: epoch 1/3" not in log

    p, offset = interrupt_at(teacher, data, rec, out, logs, "3-term", r"\[2/2\] quantize$", SIGTERM)
    assert_interrupted(
        p,
        SIGTERM,
        r"interrupted by SIGTERM during quantize \(stage 2/2\); rerun the same command to "
        r"resume \(finished stages are kept\)",
    )
    log = (out / "run.log").read_text()[offset:]
    assert f"took over the lock of Run folder {out} from pid" in log  # ... taken over with a note
    assert "distill: resuming after epoch 2/3 from the checkpoint in" in log, log
    assert "distill: epoch 3/3" in log and "distill: epoch 2/3" not in log
    assert_clean_stop(out, ["00-distill"])
    assert not (out / "cache" / "checkpoints").exists()  # gone once distill finished

    p, _ = interrupt_at(teacher, data, rec, out, logs, "4-kill", r"\[2/2\] quantize$", SIGKILL)
    assert p.wait() == -SIGKILL

    p = run(compress_args(teacher, data, rec, out), logs, "5-done")
    report = assert_complete(out, p)
    assert {s["stage"]: s["reused"] for s in report["stages"]} == {
        "distill": True,
        "quantize": False,
    }
    distill = report["stages"][0]  # its history covers the three epochs of three attempts
    assert distill["epochs_run"] == 3 and len(distill["history"]["loss"]) == 3


def test_interrupts_and_kill_9_resume_prune_qat_and_export(tmp_path, data_and_teacher):
    data, teacher = data_and_teacher
    rec = recipe(
        tmp_path,
        "chain-tfmot",
        "  - {stage: prune, epochs: 1, target_sparsity: 0.5}\n"
        "  - {stage: qat, epochs: 1}\n" + EXPORT,
    )
    out, logs = tmp_path / "run", tmp_path / "logs"

    p, _ = interrupt_at(teacher, data, rec, out, logs, "1-kill", r"\[1/3\] prune$", SIGKILL)
    assert p.wait() == -SIGKILL

    p, _ = interrupt_at(teacher, data, rec, out, logs, "2-int", r"\[2/3\] qat$", SIGINT)
    assert_interrupted(
        p, SIGINT, r"interrupted during qat( epoch 1/1)? \(stage 2/3\); rerun the same .*"
    )
    assert_clean_stop(out, ["00-prune"])

    p, _ = interrupt_at(teacher, data, rec, out, logs, "3-kill", r"\[2/3\] qat$", SIGKILL)
    assert p.wait() == -SIGKILL

    p, _ = interrupt_at(teacher, data, rec, out, logs, "4-term", r"\[3/3\] export$", SIGTERM)
    assert_interrupted(
        p, SIGTERM, r"interrupted by SIGTERM during export \(stage 3/3\); rerun the same .*"
    )
    assert_clean_stop(out, ["00-prune", "01-qat"])

    p, _ = interrupt_at(teacher, data, rec, out, logs, "5-kill", r"\[3/3\] export$", SIGKILL)
    assert p.wait() == -SIGKILL

    p = run(compress_args(teacher, data, rec, out), logs, "6-done")
    report = assert_complete(out, p)
    assert {s["stage"]: s["reused"] for s in report["stages"]} == {
        "prune": True,
        "qat": True,
        "export": False,
    }


# -- a full disk ----------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    yield from mount_small_disk(tmp_path)


def test_full_disk_is_one_line_and_keeps_earlier_stages(tmp_path, data_and_teacher, small_disk):
    data, teacher = data_and_teacher
    out, logs = small_disk / "run", tmp_path / "logs"
    first = run(compress_args(teacher, data, recipe(tmp_path, "one", EXPORT), out), logs, "1")
    report1 = assert_complete(out, first)
    export_dir = out / "stages" / "00-export"
    export_files = {p.name: sha256_path(p) for p in export_dir.iterdir()}

    two = recipe(
        tmp_path,
        "two",
        EXPORT + "  - {stage: quantize, modes: [float16], formats: [tflite]}\n",
    )
    filler = fill(small_disk, leave=12 * 1024)  # room for the lock and the log, not a model
    p = run(compress_args(teacher, data, two, out), logs, "2-full")
    assert p.proc.returncode == 2, p.stderr[-3000:]
    lines = edgekit_lines(p.stderr)
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    line = lines[0]
    assert line.startswith(f"error: No space left in {out}"), line
    assert " free, " in line and " needed" in line and "rerun the same command" in line
    # nothing half-written; the stage finished before is intact; the old report still stands
    assert leftovers(out) == []
    assert {q.name: sha256_path(q) for q in export_dir.iterdir()} == export_files
    assert not (out / "stages" / "01-quantize").exists()
    assert json.loads((out / "report.json").read_text()) == report1

    filler.unlink()
    p = run(compress_args(teacher, data, two, out), logs, "3-room")
    report = assert_complete(out, p)
    assert {s["stage"]: s["reused"] for s in report["stages"]} == {
        "export": True,
        "quantize": False,
    }


def test_export_stopped_by_sigterm_leaves_no_file(tmp_path, data_and_teacher):
    data, teacher = data_and_teacher
    dest = tmp_path / "out" / "model_int8.tflite"
    args = ["export", teacher, "--quantize", "int8", "--data", data, "--out", dest]
    p = Edgekit(args, tmp_path / "logs", "export", EDGEKIT_QUIET="0")
    wait_for_line(p.err_path, r"Calibrating \(TFLite\): ", p)  # inside the converter
    p.signal(SIGTERM)
    assert_interrupted(
        p, SIGTERM, r"interrupted by SIGTERM during .*; nothing is half-written; rerun .*"
    )
    assert list(dest.parent.iterdir()) == []


def test_full_disk_under_a_keras_or_h5_writer_names_the_folder(tmp_path, small_disk):
    """Keras and h5py report a full disk in their own exceptions; edgekit still says it in one
    line naming the folder, and leaves nothing behind."""
    from edgekit.artifacts import disk_full_from
    from edgekit.errors import DiskFull, EdgekitError
    from edgekit.keras_compat import save_model, tf_keras

    tfk = tf_keras()
    inp = tfk.Input((32, 32, 3))
    model = tfk.Model(inp, tfk.layers.Dense(10)(tfk.layers.Flatten()(inp)))  # 120 KB of weights
    filler = fill(small_disk, leave=16 * 1024)
    for name in ("m.keras", "m.h5"):
        with pytest.raises(EdgekitError) as e:
            save_model(model, small_disk / name)
        full = disk_full_from(e.value)
        assert isinstance(full, DiskFull), e.value
        assert str(full).startswith(f"No space left in {small_disk} while writing {name}: ")
        assert [q.name for q in small_disk.iterdir()] == ["filler"]
    filler.unlink()
