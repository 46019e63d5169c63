"""Where a model runs: this machine (cpu / gpu, measured by edgekit.bench in this process), a
Linux board over ssh, an Android device over adb, a device profile (an arm64 phone or board
emulated under QEMU, or a desktop profile: this machine); and the job protocol of edgekit's own
runner.

    target = open_target("ssh://pi@raspberrypi.local")      # a Target (edgekit.targets.base)

Every kind of target is one module; `KINDS` below says which names each one answers to.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError


def is_ssh(target: str) -> bool:
    return str(target).startswith("ssh://")


def is_adb(target: str) -> bool:
    t = str(target)
    return t == "adb" or t.startswith("adb:")


def is_here(target: str) -> bool:
    return str(target).lower() in ("cpu", "gpu")


def is_profile(target: str) -> bool:
    """A bundled device profile name or a path to a profile .yaml."""
    from edgekit.profiles import list_profiles

    t = str(target)
    return t in list_profiles() or Path(t).suffix in (".yaml", ".yml")


def _here(target: str) -> Any:
    from edgekit.targets.base import ThisMachine

    return ThisMachine(target)


def _ssh(target: str) -> Any:
    from edgekit.targets.ssh import LinuxBoard

    return LinuxBoard(target)


def _adb(target: str) -> Any:
    from edgekit.targets.adb import AndroidDevice

    return AndroidDevice(target)


def _profile(target: str) -> Any:
    from edgekit.targets.emulated.target import profile_target

    return profile_target(target)


# (does the name belong to this kind, the Target for it), in the order they are asked.
KINDS: tuple[tuple[Callable[[str], bool], Callable[[str], Any]], ...] = (
    (is_ssh, _ssh),
    (is_adb, _adb),
    (is_here, _here),
    (is_profile, _profile),
)


def open_target(target: str) -> Any:
    """The Target a `--target` names; a UsageError listing every valid target for anything
    else."""
    for belongs, make in KINDS:
        if belongs(str(target)):
            return make(str(target))
    from edgekit.profiles import list_profiles

    raise UsageError(
        f"Unknown target {str(target)!r}. Expected cpu, gpu, ssh://user@host[:port], "
        f"adb[:SERIAL], a device profile ({', '.join(list_profiles())}) or a profile .yaml path."
    )
