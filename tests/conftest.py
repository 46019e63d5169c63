"""Fixtures shared by several test modules."""

from __future__ import annotations

import os
import shutil

import pytest


@pytest.fixture(scope="session")
def provisioned():
    """The emulated arm64 targets, provisioned once per test session (`edgekit devices setup`,
    idempotent); skipped with the fix where qemu-user is missing and cannot be installed."""
    from edgekit.targets.emulated import provision

    if shutil.which("qemu-aarch64") is None and os.geteuid() != 0:
        pytest.skip(
            "qemu-aarch64 is not installed and this user cannot install it: "
            "sudo apt-get install -y qemu-user, then `edgekit devices setup`"
        )
    return provision.setup()
