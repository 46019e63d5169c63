"""The compress pipeline: recipe + model + data -> stages -> verified artifacts -> report.

Layout of a run folder:
  report.json    the source of truth (teacher and every artifact with size, accuracy, latency ...)
  report.md      the same as a readable table
  manifest.json  versions, resolved recipe, seeds, sha256 of inputs and outputs
  run.log        everything printed for people during the run
  stages/NN-name/  one folder per stage with its artifacts and stage.json (its cache key and outputs)
  cache/         teacher outputs per data split (computed once, reused by every stage and re-run)

A stage folder is created complete (written under a temporary name, then renamed), and its
stage.json records sha256(stage name, config, input artifact, data, seeds). A re-run with the same
key reuses it; a killed run therefore resumes after the last completed stage.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import __version__, ui
from edgekit.artifacts import (
    KERAS_FORMATS,
    TMP_SUFFIX,
    ModelArtifact,
    ensure_writable_dir,
    lock_folder,
    sha256_path,
    size_bytes,
    sweep_temporaries,
    write_json_atomic,
    write_text_atomic,
)
from edgekit.data.stream import attach_decode_caches
from edgekit.errors import BudgetExceeded, DataError, UsageError
from edgekit.recipes import Recipe, load_recipe
from edgekit.stages.context import RunContext, first_output, hash_json

TEACHER_ASSET = "teacher_shapes.keras"
# The bundled example's unlabeled pool: fresh scenes of the reference task from a generator seed
# that neither the labelled data (0), the teacher's training (1000-1009) nor its fresh test (999) use.
EXAMPLE_POOL = "shapes:seed=77,n=10000"
NO_POOL = "none"


def default_out_dir(recipe_name: str) -> Path:
    return Path("runs") / f"{recipe_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def bundled_teacher() -> tuple[Path, str]:
    """The example teacher shipped with edgekit and the data spec it was trained for."""
    from edgekit.resources import asset

    path = asset(TEACHER_ASSET)
    card = asset(TEACHER_ASSET.replace(".keras", ".json"))
    spec = "shapes"
    if card.is_file():
        spec = json.loads(card.read_text()).get("data_spec", spec)
    if not path.is_file():
        raise UsageError(
            f"The bundled example teacher is missing ({path}); reinstall edgekit or pass MODEL."
        )
    return path, spec


def compress(
    model: str | os.PathLike | None = None,
    *,
    recipe: str = "distill",
    data: str | None = None,
    out: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    unsafe: bool = False,
    measure_latency: bool = True,
    unlabeled: str | None = None,
    output: int | str | None = None,
) -> dict[str, Any]:
    """Run a recipe on a model and data; returns the report (also written to OUT/report.json).

    `unlabeled`: a data spec of extra images without labels (labels in it are ignored) that
    distillation teaches with the teacher's outputs alone (`distill.use_unlabeled`). The bundled
    example (no `model`, no `data`) brings its own pool (`EXAMPLE_POOL`); "none" leaves it out.

    Raises BudgetExceeded (after writing everything) when the final artifact misses the recipe's
    accuracy budget. `output`: a multi-output teacher's class-score output (name or index),
    which sets the recipe's `class_output`.
    """
    from edgekit.data import Preprocessing, load_dataset

    rec = load_recipe(recipe, overrides)
    if output is not None:
        rec = rec.model_copy(update={"class_output": output})
    wants_pool = _wants_pool(rec)
    model_path, data, unlabeled, message = resolve_inputs(rec, model, data, unlabeled)
    if message:
        ui.info(message)
    teacher = ModelArtifact.from_path(model_path)
    for stage in _stages(rec):
        stage.preflight(teacher)  # settings the teacher rules out, refused before any work
    out_dir = shared_out = Path(out or default_out_dir(rec.name))
    worker = _non_chief_worker(rec)
    if worker:  # only the chief writes the run folder; a worker keeps its own files apart
        out_dir = shared_out / "workers" / worker.replace(":", "-")
    # One run per folder: a second one is refused here, before it touches anything.
    notes: list[str] = []
    lock = lock_folder(
        out_dir,
        hint="Wait for that run to finish, or pass another --out for this one.",
        note=notes.append,
    )
    try:
        ensure_writable_dir(out_dir)
        sweep_temporaries(out_dir)  # what a killed run left; the lock says none is running
        log_handle = ui.add_log_file(out_dir / "run.log")
        for n in notes:  # a lock taken over from a killed run: said here and in run.log
            ui.info(n)
    except BaseException:
        lock.release()
        raise
    decode_caches: list[Any] = []
    try:
        ui.info(
            f"Recipe '{rec.name}': {' -> '.join(s.stage for s in rec.stages)}; run folder {out_dir}"
        )
        for line in filter(None, (stage.plan(teacher) for stage in _stages(rec))):
            ui.info(line)
        predict_teacher, input_shape, class_index, output_names = _teacher_predictor(
            teacher, unsafe, rec.class_output
        )
        dataset = load_dataset(
            data,
            image_size=tuple(input_shape[:2]),
            seed=rec.data.seed,
            stream=rec.data.stream,
            on_corrupt=rec.data.on_corrupt,
        )
        if tuple(dataset.image_shape) != tuple(input_shape):
            raise DataError(
                f"Data images are {tuple(dataset.image_shape)} but the model expects {tuple(input_shape)}. "
                "Use data with the model's image size and channels."
            )
        if unlabeled is not None and not wants_pool:
            ui.info(
                f"warning: no stage of recipe '{rec.name}' uses unlabeled images "
                "(only distill with use_unlabeled does): ignoring --unlabeled."
            )
            unlabeled = None
        check_data_unchanged(out_dir, data, dataset)
        splits = make_splits(rec, dataset, unlabeled)
        prep = Preprocessing(mean=rec.data.preprocessing.mean, std=rec.data.preprocessing.std)
        ctx = RunContext(
            recipe=rec,
            out=out_dir,
            splits=splits,
            preprocessing=prep,
            labels=list(dataset.labels),
            teacher=teacher,
            unsafe=unsafe,
            predict_teacher=predict_teacher,
            class_index=class_index,
            teacher_output_names=output_names,
            # shared by every worker of a multi_worker run (BackupAndRestore reads the chief's)
            checkpoint_root=shared_out / "cache" / "checkpoints",
            worker=worker,
        )
        say_data_plan(ctx, dataset)
        decode_caches = attach_decode_caches(
            out_dir / "cache", [s.x for s in splits.values()], rec.data.decode_cache
        )
        ctx.compute_teacher_outputs(_teacher_splits(rec, splits))
        _check_labels(ctx)

        stage_records, exports, models = _run_stages(ctx, teacher)
        if worker:
            ui.info(
                f"{worker}: the distributed stages are done; the chief writes the artifacts and "
                f"the report in {shared_out}"
            )
            return {"recipe": rec.name, "role": "worker", "task": worker, "stages": stage_records}
        report = _measure_and_report(
            ctx, teacher, dataset, stage_records, models, exports, measure_latency
        )
        budget_error = _budget_status(rec, report)
        _write_outputs(ctx, report, teacher, data)
    finally:
        for cache in decode_caches:
            cache.close()
        ui.remove_log_file(log_handle)
        lock.release()
    if budget_error:
        raise BudgetExceeded(budget_error)
    return report


def make_splits(rec: Recipe, dataset: Any, unlabeled: str | None = None) -> dict[str, Any]:
    """The run's data splits: the recipe's split of `dataset`, the training split cut to
    `data.labelled_fraction` of its labels, and "unlabeled" (the rest of the training split and
    the images of `unlabeled`, labels dropped) when there are any."""

    splits = dataset.split(rec.data.split.fractions(), seed=rec.data.seed)
    pools, sources = [], []
    fraction = rec.data.labelled_fraction
    if fraction < 1:
        train = splits["train"]
        if not train.labeled:
            raise DataError(
                f"data.labelled_fraction={fraction:g} keeps part of the labels, but the data are "
                "unlabeled. Remove the setting, or use labelled data."
            )
        parts = train.split({"labelled": fraction, "rest": 1.0 - fraction}, seed=rec.data.seed)
        splits["train"] = parts["labelled"]
        pools.append(parts["rest"].x)
        sources.append(
            f"{len(parts['rest'])} images of the training split without their labels "
            f"(data.labelled_fraction={fraction:g} kept {len(parts['labelled'])})"
        )
    if unlabeled is not None:
        pool = _unlabeled_pool(
            unlabeled, dataset, rec.data.seed, rec.data.stream, rec.data.on_corrupt
        )
        pools.append(pool.x)
        sources.append(pool.source)
    if pools:
        from edgekit.data.stream import concat

        x = pools[0] if len(pools) == 1 else concat(pools[0], pools[1])
        splits["unlabeled"] = _unlabeled(x, dataset.labels, "unlabeled images", " + ".join(sources))
    return splits


def _unlabeled(x: Any, labels: list[str], name: str, source: str) -> Any:
    from edgekit.data import Dataset

    if getattr(x, "streamed", False):  # validated when scanned; Dataset() would decode it all
        return Dataset._trusted(x, None, labels, name, source)
    return Dataset(x, labels=labels, name=name, source=source)


def check_data_unchanged(out_dir: Path, spec: str, dataset: Any) -> None:
    """OUT/data.json records the fingerprint of the files a run in OUT started on; a later run
    (a resume) on the same path whose files differ stops here with one line, before any stage
    reuses or mixes outputs made from the old files."""
    fp = dataset.fingerprint()
    path = out_dir / "data.json"
    where = str(dataset.source)  # the path, without the spec's options
    record = {"spec": str(spec), "source": where, "fingerprint": fp, "streamed": dataset.streamed}
    if path.is_file() and Path(where).exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("source") == where and old.get("fingerprint") not in (None, fp):
            was = old["fingerprint"]
            raise DataError(
                f"The data at {where} changed since the run in {out_dir} started: "
                f"{was.get('count')} images with fingerprint {str(was.get('sha256'))[:12]} then, "
                f"{fp['count']} with {fp['sha256'][:12]} now. Pass another --out for the new "
                f"files, or delete {path} to start over in this folder."
            )
    write_json_atomic(path, record)


def say_data_plan(ctx: RunContext, dataset: Any) -> None:
    """The data plan, in the run's first lines: files, classes, streamed or cached, and the
    disk the teacher's outputs will take in OUT/cache, checked against the free space before
    the teacher runs (the files already cached are not counted again)."""
    from edgekit.data.stream import human_bytes, require_free_space

    h, w, c = dataset.image_shape
    mode = "streamed from its files" if dataset.streamed else "in memory"
    cls = f"{dataset.num_classes} classes" if dataset.labeled else "unlabeled"
    names = _teacher_splits(ctx.recipe, ctx.splits)
    classes = max(dataset.num_classes, 1)
    total = sum(len(ctx.splits[n]) * classes * 4 + 4096 for n in names)
    splits = ", ".join(f"{k} {len(v):,}" for k, v in ctx.splits.items())
    ui.info(
        f"Data: {dataset.source}: {len(dataset):,} images, {cls}, {h}x{w}x{c}, {mode}; splits "
        f"{splits}; teacher cache {human_bytes(total)} on disk in {ctx.out / 'cache'} "
        f"({', '.join(names)}; more for augmented views)"
    )
    need = ctx.cache_bytes_missing(names, classes)
    if need:
        require_free_space(ctx.out / "cache", need, "the teacher's cached outputs")


def resolve_inputs(
    rec: Recipe, model: str | os.PathLike | None, data: str | None, unlabeled: str | None
) -> tuple[Path, str, str | None, str | None]:
    """(teacher path, data spec, unlabeled spec or None, the line that says so or None).

    No model: the bundled example teacher; no data either: its reference data and, when a stage
    uses unlabeled images, its pool (`EXAMPLE_POOL`). `unlabeled="none"` means no pool."""
    wants_pool = _wants_pool(rec)
    no_pool = unlabeled is not None and unlabeled.strip().lower() == NO_POOL
    if no_pool:
        unlabeled = None
    if model is not None:
        if data is None:
            raise UsageError(
                "Pass --data (digits, shapes, fashion-mnist, an image folder or a .npz) to compress "
                "your own model; only the bundled example teacher comes with data."
            )
        return Path(model), data, unlabeled, None
    model_path, default_spec = bundled_teacher()
    if data is not None:
        return (
            model_path,
            data,
            unlabeled,
            (f"No MODEL given: using the bundled example teacher ({model_path.name})."),
        )
    if unlabeled is None and wants_pool and not no_pool:
        unlabeled = EXAMPLE_POOL
        note = (
            f" and its pool of unlabeled scenes ('{unlabeled}'; --unlabeled none leaves them out)"
        )
    else:
        note = f", with '{unlabeled}' as unlabeled images" if unlabeled else ""
    return (
        model_path,
        default_spec,
        unlabeled,
        (
            f"No MODEL or --data given: running recipe '{rec.name}' on the bundled example teacher "
            f"({model_path.name}), the '{default_spec}' reference data{note}."
        ),
    )


def _unlabeled_pool(
    spec: str, dataset: Any, seed: int, stream: str = "auto", on_corrupt: str = "stop"
) -> Any:
    """The images of `spec` without their labels, checked against the labelled data's shape."""
    from edgekit.data import load_dataset

    pool = load_dataset(
        spec, image_size=dataset.image_shape[:2], seed=seed, stream=stream, on_corrupt=on_corrupt
    )
    if tuple(pool.image_shape) != tuple(dataset.image_shape):
        raise DataError(
            f"Unlabeled images ({spec}) are {tuple(pool.image_shape)} but the data's are "
            f"{tuple(dataset.image_shape)}. Use unlabeled images with the same channels."
        )
    return _unlabeled(pool.x, dataset.labels, f"{pool.name} (unlabeled)", pool.source)


def _teacher_predictor(teacher: ModelArtifact, unsafe: bool, class_output: int | str | None = None):
    """A numpy predict function for the teacher's class scores, whatever its format, its input
    shape (H, W, C) and the index of its class-score output (`class_output`: a name or an index;
    a wrong one fails here, before any work)."""
    from edgekit.export.validate import _class_index

    if teacher.format in KERAS_FORMATS:
        from edgekit.keras_compat import load_model

        loaded = load_model(teacher.path, unsafe=unsafe)
        ci = _class_index(class_output, [str(n) for n in loaded.output_names])
        if len(loaded.output_names) > 1:
            ui.info(
                f"The teacher has {len(loaded.output_names)} outputs "
                f"({', '.join(map(str, loaded.output_names))}): class scores from "
                f"'{loaded.output_names[ci]}' (--output picks another); every output is verified."
            )
        names = [str(n) for n in loaded.output_names]
        return (lambda x: first_output(loaded.predict(x), ci)), tuple(loaded.input_shape), ci, names
    from edgekit.runtimes import open_runner

    runner = open_runner(teacher.path, threads=os.cpu_count() or 1)
    shape = tuple(runner.inputs[0].shape[1:])
    ci = _class_index(class_output, [t.name for t in runner.outputs])
    names = [t.name for t in runner.outputs]
    return (lambda x: first_output(runner.run(x), ci)), shape, ci, names


def _non_chief_worker(rec: Recipe) -> str | None:
    """This task ("worker:1") when a stage of the recipe trains with distribute=multi_worker and
    TF_CONFIG makes this process a worker other than the chief; None otherwise."""
    from edgekit.stages.distribute import worker_task

    if not any(getattr(cfg, "distribute", None) == "multi_worker" for cfg in rec.stages):
        return None
    return worker_task()


def _stages(rec: Recipe) -> list[Any]:
    from edgekit.stages.base import get_stage

    return [get_stage(cfg) for cfg in rec.stages]


def _wants_pool(rec: Recipe) -> bool:
    """True when a stage of the recipe learns from unlabeled images."""
    return any(stage.uses_unlabeled() for stage in _stages(rec))


def _teacher_splits(rec: Recipe, splits: dict[str, Any]) -> list[str]:
    """The splits whose teacher outputs are computed up front: "eval" (the report) and those the
    stages read, in the splits' order."""
    wanted = {"eval"}.union(*(stage.teacher_splits() for stage in _stages(rec)))
    return [name for name in splits if name in wanted]


def _check_labels(ctx: RunContext) -> None:
    needs = [n for n in (stage.needs_labels() for stage in _stages(ctx.recipe)) if n]
    if needs and not ctx.labeled:
        raise DataError(
            f"Stage {needs[0]} needs labels but the data are unlabeled. Provide labels (y), or for "
            "distillation set --set distill.alpha=0 to learn from the teacher alone."
        )


def _stage_key(ctx: RunContext, index: int, config: Any, model: ModelArtifact) -> str:
    return hash_json(
        {
            "edgekit": __version__,
            "index": index,
            "stage": config.model_dump(mode="json"),
            "input": model.sha256,
            "teacher": ctx.teacher.sha256,
            "data": {k: v.fingerprint() for k, v in ctx.splits.items()},
            # how the data are read (streamed or in memory, a decode cache) changes neither
            # the images nor the batches: a rerun with another data.stream reuses the stages
            "data_config": ctx.recipe.data.model_dump(
                mode="json", exclude={"stream", "decode_cache"}
            ),
            "verify": ctx.recipe.verify.model_dump(mode="json"),
            "seed": ctx.recipe.seed,
        }
    )


def _run_stages(ctx: RunContext, teacher: ModelArtifact):
    current = teacher
    exports: list[tuple[str, ModelArtifact]] = []
    models: list[tuple[str, ModelArtifact]] = []
    records = []
    last_distributed = max(
        (
            i
            for i, c in enumerate(ctx.recipe.stages)
            if getattr(c, "distribute", None) == "multi_worker"
        ),
        default=-1,
    )
    for i, (cfg, stage) in enumerate(zip(ctx.recipe.stages, _stages(ctx.recipe), strict=True)):
        final_dir = ctx.out / "stages" / f"{i:02d}-{cfg.stage}"
        key = _stage_key(ctx, i, cfg, current)
        record_path = final_dir / "stage.json"
        t0 = time.perf_counter()
        skipped = False
        output = _reusable(record_path, key, final_dir)
        if output is not None:
            skipped = True
            ui.info(
                f"[{i + 1}/{len(ctx.recipe.stages)}] {cfg.stage}: unchanged since the last run, reused"
            )
        else:
            ui.info(f"[{i + 1}/{len(ctx.recipe.stages)}] {cfg.stage}")
            work = final_dir.with_name(f".{final_dir.name}.partial")
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            # Training checkpoints outlive a failed or killed attempt (the next resumes from
            # them) and go once the stage has finished.
            ctx.checkpoint_dir = ctx.checkpoint_root / f"{final_dir.name}-{key[:16]}"
            try:
                with ui.doing(cfg.stage, f"stage {i + 1}/{len(ctx.recipe.stages)}"):
                    output = stage.run(ctx, current, work)
                output = _relocate(output, work, final_dir)
                record = {"key": key, "stage": cfg.stage, "output": output.to_dict()}
                write_json_atomic(work / "stage.json", _relative_record(record, final_dir))
                _replace_folder(work, final_dir)
            except BaseException:  # failed or interrupted: no half-made stage stays behind
                shutil.rmtree(work, ignore_errors=True)
                raise
            finally:
                ctx.checkpoint_dir = None
            if not ctx.worker:  # the chief's to remove (the workers read them)
                _remove_checkpoints(ctx.checkpoint_root, final_dir.name)
        seconds = time.perf_counter() - t0
        records.append(
            {
                "stage": cfg.stage,
                "key": key[:16],
                "reused": skipped,
                "seconds": round(seconds, 2),
                "config": cfg.model_dump(mode="json"),
                **output.report,
            }
        )
        if output.model is not None:
            current = output.model
            models.append((cfg.stage, current))
        exports.extend((cfg.stage, a) for a in output.exports)
        if ctx.worker and i == last_distributed:
            break  # a worker's part ends with the last distributed stage
    return records, exports, models


def _remove_checkpoints(root: Path, stage_dir: str) -> None:
    """The finished stage's training checkpoints (under `root`, OUT/cache/checkpoints), and
    those of earlier attempts with other settings (other keys), are of no more use."""
    from edgekit.stages.checkpoints import remove

    for path in sorted(root.glob(f"{stage_dir}-*")):
        remove(path)


def _reusable(record_path: Path, key: str, final_dir: Path) -> Any:
    """The recorded output of a finished stage with this key whose files are all in place and
    unchanged; None otherwise (the stage runs again)."""
    from edgekit.stages.base import StageOutput

    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    output = _rebase(StageOutput.from_dict(record["output"]), final_dir)
    for a in [output.model, *output.exports]:
        if a is not None and (not Path(a.path).exists() or sha256_path(a.path) != a.sha256):
            ui.info(
                f"{final_dir.name}: {Path(a.path).name} is missing or changed; running it again"
            )
            return None
    return output


def _replace_folder(new: Path, final_dir: Path) -> None:
    """Put `new` at `final_dir`; an old folder there goes out of the way in one rename first, so
    that an interrupt never leaves half of it (with a stage.json whose files are gone)."""
    old = final_dir.with_name(f".{final_dir.name}.old{TMP_SUFFIX}")
    shutil.rmtree(old, ignore_errors=True)
    if final_dir.exists():
        os.replace(final_dir, old)
    try:
        os.replace(new, final_dir)
    except BaseException:
        if old.exists() and not final_dir.exists():
            os.replace(old, final_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _relocate(output: Any, work: Path, final_dir: Path) -> Any:
    """Point artifact paths at the final stage folder (they were written in the partial one)."""
    for a in [output.model, *output.exports]:
        if a is not None and Path(a.path).is_relative_to(work):
            a.path = str(final_dir / Path(a.path).relative_to(work))
    return output


def _relative_record(record: dict[str, Any], final_dir: Path) -> dict[str, Any]:
    out = json.loads(json.dumps(record, default=str))
    items = [out["output"]["model"], *out["output"]["exports"]]
    for a in items:
        if a and Path(a["path"]).is_relative_to(final_dir):
            a["path"] = str(Path(a["path"]).relative_to(final_dir))
    return out


def _rebase(output: Any, final_dir: Path) -> Any:
    for a in [output.model, *output.exports]:
        if a is not None and not Path(a.path).is_absolute():
            a.path = str(final_dir / a.path)
    return output


def _measure_and_report(ctx, teacher, dataset, stage_records, models, exports, measure_latency):
    n_eval = ctx.recipe.data.max_eval_samples
    x_eval, y_eval = ctx.x("eval", n_eval), ctx.y("eval", n_eval)
    t_eval = ctx.teacher_outputs["eval"][: len(x_eval)]
    runs = ctx.recipe.latency_runs if measure_latency else 0
    ui.info(f"Measuring {1 + len(models) + len(exports)} models on {len(x_eval)} eval samples")
    reference = _teacher_tflite(ctx, teacher)
    has_reference = isinstance(reference, ModelArtifact)
    # with a reference, the teacher is timed once: interleaved with it, below
    teacher_row = _measure_artifact(
        teacher, x_eval, y_eval, t_eval, runs=0 if has_reference else runs, unsafe=ctx.unsafe,
        outputs=t_eval, labels=ctx.labels,
    )  # fmt: skip
    reference_row, reference_note = None, None
    if isinstance(reference, ModelArtifact):
        reference_row = _measure_artifact(
            reference, x_eval, y_eval, t_eval, runs=runs, class_index=ctx.class_index
        )
        reference_row["path"] = _rel(reference_row["path"], ctx.out)
        reference_row["parameters"] = teacher_row.get("parameters")
    elif reference:
        reference_note = reference
    baseline = reference_row or teacher_row
    baseline_art = reference if reference_row else teacher
    rows = []
    for stage_name, art in [*models, *exports]:
        with ui.doing(f"measuring {Path(art.path).name}"):
            row = _measure_artifact(
                art, x_eval, y_eval, t_eval, runs=0, unsafe=ctx.unsafe, labels=ctx.labels,
                class_index=ctx.class_index,
            )  # fmt: skip
            if runs > 0:
                row.update(_interleaved_speed(baseline_art, art, x_eval[:1], runs, ctx.unsafe))
        row["stage"] = stage_name
        rows.append(row)
    for row in rows:
        row["path"] = _rel(row["path"], ctx.out)
        _add_ratios(row, baseline)
    if reference_row:
        if runs > 0:
            teacher_row.update(_interleaved_speed(reference, teacher, x_eval[:1], runs, ctx.unsafe))
        _add_ratios(teacher_row, baseline)
    teacher_row["path"] = str(teacher.path)
    final = _final_artifact(rows)
    for row in rows:  # per-class figures: the teacher's and the final artifact's (the HTML page)
        if row is not final:
            row.pop("per_class", None)
            row.pop("confusion_matrix", None)
    return {
        "edgekit_version": __version__,
        "recipe": ctx.recipe.name,
        "data": {
            "source": dataset.source,
            "name": dataset.name,
            "classes": len(ctx.labels),
            "labels": ctx.labels,
            "image_shape": list(dataset.image_shape),
            "splits": {k: len(v) for k, v in ctx.splits.items()},
            "unlabeled_source": ctx.unlabeled_source,
            "eval_samples": len(x_eval),
            "preprocessing": ctx.preprocessing.to_dict(),
        },
        "teacher": teacher_row,
        "teacher_tflite": reference_row,
        "ratios_against": "teacher float32 TFLite (LiteRT)" if reference_row else "teacher",
        "notes": [reference_note] if reference_note else [],
        "artifacts": rows,
        "final_artifact": final["path"] if final else None,
        "stages": stage_records,
        "latency": {
            "threads": 1,
            "runs": runs,
            "note": "p50 over timed runs after warm-up, batch 1, CPU; 'x faster' from rounds "
            "interleaved with the reference in one process, with a 95% confidence interval",
        },
    }


def _measure_artifact(
    art: ModelArtifact,
    x: np.ndarray,
    y: np.ndarray | None,
    teacher_logits: np.ndarray,
    *,
    runs: int = 50,
    unsafe: bool = False,
    outputs: np.ndarray | None = None,
    labels: list[str] | None = None,
    class_index: int = 0,
) -> dict[str, Any]:
    """One report row: size, parameters, top-1 accuracy and agreement with the teacher on the eval
    split, CPU p50 latency (1 thread, batch 1). `outputs` skips inference when the artifact's
    outputs are already known; `labels` (with `y`) adds per-class accuracy and the confusion
    matrix (`class_figures`)."""
    from edgekit.bench.latency import measure

    runner = _open_runner(art, unsafe)
    try:
        if outputs is None:
            outputs = _batched(runner, x, class_index=class_index)
        pred = np.asarray(outputs).argmax(axis=1)
        latency = None
        if runs > 0:
            latency = measure(runner, x[:1], runs=runs, warmup=5, warmup_seconds=0.2).p50
        runtime = runner.describe()
    finally:
        runner.close()
    row = {
        "path": art.path,
        "format": art.family,
        "precision": art.precision,
        "size_bytes": size_bytes(art.path),
        "parameters": art.metadata.get("parameters") or _count_params(art, unsafe),
        "accuracy": float((pred == y).mean()) if y is not None else None,
        "agreement_with_teacher": float((pred == teacher_logits.argmax(axis=1)).mean()),
        "latency_ms_p50": round(latency, 4) if latency is not None else None,
        "runtime": {
            k: runtime.get(k)
            for k in ("runtime", "runtime_version", "threads", "delegate", "provider")
            if k in runtime
        },
        "sha256": art.sha256,
    }
    for key in ("verification", "sparsity", "conversion"):
        if key in art.metadata:
            row[key] = art.metadata[key]
    if labels is not None and y is not None:
        row.update(class_figures(np.asarray(y), pred, labels))
    return row


def _open_runner(art: ModelArtifact, unsafe: bool) -> Any:
    from edgekit.runtimes import open_runner

    runner_opts: dict[str, Any] = {"unsafe": unsafe} if art.family == "keras" else {}
    if art.family == "keras" and art.precision == "qat":
        from edgekit.stages.qat_io import qat_custom_objects

        runner_opts["custom_objects"] = qat_custom_objects()
    return open_runner(art.path, threads=1, **runner_opts)


def _interleaved_speed(
    reference: ModelArtifact, art: ModelArtifact, x1: np.ndarray, runs: int, unsafe: bool
) -> dict[str, Any]:
    """How much faster `art` runs than `reference`: both timed in interleaved rounds in this
    process (as `edgekit bench A B`), the p50 ratio with its 95% paired-bootstrap interval. A
    ratio whose interval holds 1.0 is "no measurable change"; timing each artifact in turn,
    minutes apart on a shared machine, once printed 1.289x for a model that was 0.997x."""
    from edgekit.bench.latency import measure_interleaved

    base, runner = _open_runner(reference, unsafe), None
    try:
        runner = _open_runner(art, unsafe)
        cmp = measure_interleaved([base, runner], x1, runs=runs, warmup=5, warmup_seconds=0.2)
    finally:
        base.close()
        if runner is not None:
            runner.close()
    r = cmp.ratios[1]  # p50(art) / p50(reference)
    speed, low, high = 1 / r["ratio"], 1 / r["ci_high"], 1 / r["ci_low"]
    verdict = "no measurable change" if low <= 1.0 <= high else "faster" if low > 1 else "slower"
    return {
        "latency_ms_p50": round(cmp.stats[1].p50, 4),
        "speedup_vs_teacher": round(speed, 3),
        "speedup": {
            "ratio": round(speed, 3),
            "ci_low": round(low, 3),
            "ci_high": round(high, 3),
            "confidence": cmp.confidence,
            "verdict": verdict,
            "rounds": runs,
            "reference_latency_ms_p50": round(cmp.stats[0].p50, 4),
            "method": f"interleaved with the reference in this process; {cmp.method}",
        },
    }


# A confusion matrix is kept up to this many classes (a 1000-class one would be 1M numbers).
MAX_CONFUSION_CLASSES = 100


def class_figures(y: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """per_class [{label, count, correct, accuracy}] (as `edgekit eval` reports it) and the
    confusion matrix (rows: true class, columns: predicted; None beyond MAX_CONFUSION_CLASSES)."""
    k = max(len(labels), int(pred.max()) + 1 if pred.size else 0, int(y.max()) + 1 if y.size else 0)
    cm = np.bincount(y.astype(np.int64) * k + pred.astype(np.int64), minlength=k * k).reshape(k, k)
    names = list(labels) + [f"class {i}" for i in range(len(labels), k)]
    support, correct = cm.sum(axis=1), np.diag(cm)
    return {
        "per_class": [
            {
                "label": names[i],
                "count": int(support[i]),
                "correct": int(correct[i]),
                "accuracy": float(correct[i] / support[i]) if support[i] else None,
            }
            for i in range(k)
        ],
        "confusion_matrix": cm.tolist() if k <= MAX_CONFUSION_CLASSES else None,
    }


def _batched(runner: Any, x: np.ndarray, batch: int = 64, class_index: int = 0) -> np.ndarray:
    """The class scores of `runner` on `x` (output `class_index` of a multi-output model)."""
    return np.concatenate(
        [first_output(runner.run(x[i : i + batch]), class_index) for i in range(0, len(x), batch)],
        axis=0,
    )


def _count_params(art: ModelArtifact, unsafe: bool) -> int | None:
    if art.family != "keras":
        return None
    from edgekit.keras_compat import load_model

    return load_model(art.path, unsafe=unsafe).count_params()


def _teacher_tflite(ctx: RunContext, teacher: ModelArtifact) -> ModelArtifact | str | None:
    """The teacher as float TFLite, the like-for-like baseline for size and latency ratios.

    Returns the artifact, a note saying why there is none, or None when not asked for (or the
    teacher is already a .tflite). The file is cached per teacher hash.
    """
    if not ctx.recipe.compare_teacher_tflite or teacher.format == "tflite":
        return None
    if teacher.format == "onnx":
        return "The teacher is ONNX: ratios are against the teacher as given (ONNX Runtime)."
    from edgekit.errors import EdgekitError
    from edgekit.export import tflite as tflite_export
    from edgekit.keras_compat import load_model

    path = ctx.out / "reference" / f"teacher_float32-{teacher.sha256[:12]}.tflite"
    if not path.is_file():
        ui.info("Converting the teacher to float TFLite (the baseline for size and latency ratios)")
        try:
            tflite_export.convert(load_model(teacher.path, unsafe=ctx.unsafe), path)
        except EdgekitError as e:
            return f"The teacher could not be converted to TFLite ({e}); ratios are against the teacher as given."
    return ModelArtifact.from_path(path)


def _rel(path: str, base: Path) -> str:
    p = Path(path)
    return str(p.relative_to(base)) if p.is_relative_to(base) else str(p)


def _add_ratios(row: dict[str, Any], teacher_row: dict[str, Any]) -> None:
    def ratio(a, b):
        return round(a / b, 3) if a and b else None

    row["size_ratio_to_teacher"] = ratio(teacher_row.get("size_bytes"), row.get("size_bytes"))
    if "speedup" not in row:  # interleaved figures (`_interleaved_speed`) are the ones shown
        row["speedup_vs_teacher"] = ratio(
            teacher_row.get("latency_ms_p50"), row.get("latency_ms_p50")
        )
    if row.get("accuracy") is not None and teacher_row.get("accuracy") is not None:
        row["accuracy_drop_points"] = round(100 * (teacher_row["accuracy"] - row["accuracy"]), 2)


def _final_artifact(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The deliverable: the first export of the last stage that exported anything."""
    exported = [r for r in rows if r["format"] in ("tflite", "onnx")]
    if not exported:
        return rows[-1] if rows else None
    last_stage = exported[-1]["stage"]
    return next(r for r in exported if r["stage"] == last_stage)


def _write_outputs(
    ctx: RunContext, report: dict[str, Any], teacher: ModelArtifact, data_spec: str
) -> None:
    from edgekit.report.markdown import render_markdown
    from edgekit.versions import runtime_versions

    out = ctx.out
    outputs = {}
    for row in report["artifacts"]:
        p = out / row["path"]
        outputs[row["path"]] = sha256_path(p) if p.exists() else None
    manifest = {
        "edgekit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": runtime_versions(),
        "recipe": ctx.recipe.model_dump(mode="json"),
        "seeds": {"recipe": ctx.recipe.seed, "split": ctx.recipe.data.seed},
        "inputs": {
            "model": {
                "path": str(teacher.path),
                "sha256": teacher.sha256,
                "format": teacher.format,
                "size_bytes": size_bytes(teacher.path),
            },
            "data": {
                "spec": str(data_spec),
                "unlabeled_spec": ctx.unlabeled_source,
                **{k: v.fingerprint() for k, v in ctx.splits.items()},
            },
        },
        "outputs": outputs,
    }
    write_json_atomic(out / "manifest.json", manifest)
    write_text_atomic(out / "report.md", render_markdown(report))
    _write_html(out, report, manifest)
    write_json_atomic(out / "report.json", report)  # last: a report.json means a finished run


def _write_html(out: Path, report: dict[str, Any], manifest: dict[str, Any]) -> None:
    """report.html beside report.json. A page that cannot be drawn costs a warning, not the
    run: report.json is the source, and `edgekit report RUN_DIR` draws the page again."""
    from edgekit.report.html import render_html

    try:
        page = render_html(report, "compress", extras={"manifest": manifest})
    except Exception as e:
        ui.info(
            f"warning: report.html could not be rendered ({type(e).__name__}: {e}); "
            f"report.json is complete; `edgekit report {out}` tries again."
        )
        return
    write_text_atomic(out / "report.html", page)


def _budget_status(rec: Recipe, report: dict[str, Any]) -> str | None:
    """Record the budget verdict in the report; return the failure message, if any."""
    budget = rec.budget.max_accuracy_drop
    if budget is None:
        return None
    final = next((r for r in report["artifacts"] if r["path"] == report["final_artifact"]), None)
    drop = final.get("accuracy_drop_points") if final else None
    report["budget"] = {
        "max_accuracy_drop": budget,
        "final_artifact": report["final_artifact"],
        "drop": drop,
        "passed": drop is not None and drop <= budget,
    }
    if drop is None:
        return "The recipe sets max_accuracy_drop but the final artifact has no accuracy (unlabeled data?)."
    if drop > budget:
        return (
            f"Final artifact {final['path']} lost {drop:.2f} points of top-1 against the teacher; the budget "
            f"is {budget:.2f}. Artifacts and report are in place; try more distillation epochs, a wider "
            "student, or int16x8/QAT."
        )
    return None
