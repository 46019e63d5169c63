"""Library entry points, one per command. The CLI calls these and only renders their results.

Each imports its implementation lazily so that `import edgekit.api` stays light.
"""

from __future__ import annotations

import os
from typing import Any


def compress(
    model: str | os.PathLike | None = None,
    *,
    recipe: str = "distill",
    data: str | None = None,
    out: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    unsafe: bool = False,
    measure_latency: bool = True,
) -> dict[str, Any]:
    """Run a compression recipe; returns the report (also written to OUT/report.json).

    model: a Keras 3 .keras, tf-keras .keras/.h5, SavedModel folder (or, as a distillation teacher
        only, a .tflite/.onnx). None: the bundled example teacher.
    recipe: a bundled recipe name (`list_recipes()`) or a YAML path.
    data: "digits", "shapes", "shapes:64", an image folder, a .npz ... None: the example's data.
    overrides: `key=value` strings, as `--set` on the command line (`distill.epochs=3`).
    unsafe: allow Lambda layers and custom objects in the model file (only for files you trust).
    """
    from edgekit.pipeline import compress as _compress

    return _compress(
        model,
        recipe=recipe,
        data=data,
        out=out,
        overrides=overrides,
        unsafe=unsafe,
        measure_latency=measure_latency,
    )


def list_recipes() -> list[dict[str, Any]]:
    """Bundled recipes: name, stages, one-line description, file."""
    from edgekit.recipes import bundled_recipes, load_recipe

    out = []
    for name, path in bundled_recipes().items():
        r = load_recipe(name)
        out.append(
            {
                "name": name,
                "stages": [s.stage for s in r.stages],
                "description": " ".join(r.description.split()),
                "path": str(path),
            }
        )
    return out


def show_recipe(name_or_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """A recipe resolved and validated, with every default filled in."""
    from edgekit.recipes import load_recipe

    return load_recipe(name_or_path, overrides).model_dump(mode="json")
