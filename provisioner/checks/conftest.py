"""Fixtures for the node checks: which node a testinfra host is, and its roles.

`provisioner cluster validate` writes the context file and names it in
PROVISIONER_CHECKS_CONTEXT: {"cluster": {...}, "nodes": {address: {name, roles, ...}}}.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest


@pytest.fixture(scope="session")
def context() -> dict[str, Any]:
    path = os.environ.get("PROVISIONER_CHECKS_CONTEXT")
    if not path:
        pytest.skip("run through `provisioner cluster validate` (PROVISIONER_CHECKS_CONTEXT is not set)")
    with open(path) as f:
        return json.load(f)


@pytest.fixture
def node(host: Any, context: dict[str, Any]) -> dict[str, Any]:
    address = host.backend.host.name
    return context["nodes"][address]


@pytest.fixture
def cluster(context: dict[str, Any]) -> dict[str, Any]:
    return context["cluster"]
