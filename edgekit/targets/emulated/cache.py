"""The provisioned parts of the emulated arm64 targets in edgekit's cache: where they live, what
is there (`status`) and the state a run needs (`require`). edgekit.targets.emulated.provision
builds them; edgekit.targets.emulated.qemu runs jobs with them.

    from edgekit.targets.emulated import cache
    cache.status()     # what is there, what is missing, the one command that fixes it
    cache.require()    # the state of a complete provision, or a one-line error naming the fix
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from importlib import metadata
from importlib.resources import files as package_files
from pathlib import Path
from typing import Any

from edgekit.errors import TargetUnavailableError

FORMAT = 1
SETUP_COMMAND = "edgekit devices setup"
QEMU = "qemu-aarch64"


def cache_root() -> Path:
    """$EDGEKIT_CACHE, else $XDG_CACHE_HOME/edgekit, else ~/.cache/edgekit."""
    if os.environ.get("EDGEKIT_CACHE"):
        return Path(os.environ["EDGEKIT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "edgekit"
    return Path.home() / ".cache" / "edgekit"


def emulation_dir() -> Path:
    return cache_root() / "emulation"


def plugin_source() -> Path:
    return Path(str(package_files("edgekit.targets.emulated") / "insn_count.c"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wanted_wheels() -> dict[str, str]:
    """The same LiteRT (and numpy) versions as this Python's, so guest and host runs compare."""
    out = {}
    for dist in ("ai-edge-litert", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            raise TargetUnavailableError(
                f"{dist} is not installed in {sys.executable}; the emulated targets use the same "
                f"version as the host. Install edgekit with its dependencies."
            ) from None
    return out


def _read_state(root: Path) -> dict[str, Any]:
    try:
        state = json.loads((root / "state.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) and state.get("format") == FORMAT else {}


def plugin_path(root: Path | None = None) -> Path:
    root = root or emulation_dir()
    return root / "plugin" / f"insn_count-{_sha256(plugin_source())[:16]}.so"


def _check_parts(root: Path, state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each part: {"ok": bool, ...what was recorded, "why": reason when not ok}."""
    parts: dict[str, dict[str, Any]] = {}
    qemu = shutil.which(QEMU)
    ok = qemu is not None and state.get("qemu", {}).get("path") == qemu
    parts["qemu"] = {**state.get("qemu", {}), "ok": ok, "path": qemu}
    if qemu is None:
        parts["qemu"]["why"] = f"{QEMU} is not on PATH (Debian/Ubuntu package qemu-user)"
    elif not ok:
        parts["qemu"]["why"] = f"{qemu} was not tested yet"
    sysroot = state.get("sysroot", {})
    ok = bool(sysroot) and (root / "sysroot" / "usr" / "bin" / "python3.11").is_file()
    parts["sysroot"] = {"ok": ok, **sysroot}
    if not ok:
        parts["sysroot"]["why"] = "no arm64 Python sysroot"
    wheels = state.get("wheels", {})
    want = wanted_wheels()
    ok = wheels.get("versions") == want and (root / "site" / "ai_edge_litert").is_dir()
    parts["wheels"] = {"ok": ok, **wheels, "wanted": want}
    if not ok:
        parts["wheels"]["why"] = f"no aarch64 wheels for {want}"
    plugin = plugin_path(root)
    ok = plugin.is_file() and state.get("plugin", {}).get("path") == str(plugin)
    parts["plugin"] = {"ok": ok, **state.get("plugin", {})}
    if not ok:
        parts["plugin"]["why"] = "the instruction-counting plugin is not built for this source"
    smoke = state.get("smoke", {})
    ok = all(p["ok"] for p in parts.values()) and smoke.get("key") == _smoke_key(state)
    parts["smoke"] = {"ok": ok, **smoke}
    if not ok:
        parts["smoke"]["why"] = "the parts were not tested together"
    return parts


def _smoke_key(state: dict[str, Any]) -> str:
    keys = [json.dumps(state.get(k, {}), sort_keys=True) for k in ("sysroot", "wheels", "plugin")]
    return hashlib.sha256("|".join(keys).encode()).hexdigest()[:16]


def status() -> dict[str, Any]:
    """What is provisioned, what is missing, and the command that fixes it."""
    root = emulation_dir()
    parts = _check_parts(root, _read_state(root))
    missing = [name for name, p in parts.items() if not p["ok"]]
    return {
        "provisioned": not missing,
        "cache": str(root),
        "parts": parts,
        "missing": missing,
        "fix": None if not missing else SETUP_COMMAND,
    }


def require() -> dict[str, Any]:
    """The state of a complete provision; TargetUnavailableError naming the fix otherwise."""
    root = emulation_dir()
    state = _read_state(root)
    parts = _check_parts(root, state)
    missing = [n for n, p in parts.items() if not p["ok"]]
    if missing:
        why = "; ".join(parts[n]["why"] for n in missing)
        raise TargetUnavailableError(
            f"The emulated targets are not provisioned in {root} ({why}). Run `{SETUP_COMMAND}` "
            "(downloads about 55 MB once; installing qemu-user needs root)."
        )
    return state
