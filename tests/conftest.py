"""Shared test settings: lab and e2e tests need root and the lab's host tools."""

from __future__ import annotations

import os
import shutil

import pytest


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (the lab makes a bridge and machine containers)"
    for exe in ("systemd-nspawn", "debootstrap", "apt-cacher-ng"):
        if shutil.which(exe) is None:
            return f"needs {exe} (sudo make host-packages)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = lab_unavailable()
    if reason is None:
        return
    for item in items:
        if "lab" in item.keywords or "e2e" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
