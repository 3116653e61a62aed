"""Where the package keeps what it ships: playbooks (with their roles beside them), the
testinfra checks and the Go module pins. All inside the package, so a wheel works as well
as a checkout (the checkout's top-level ``playbooks`` is a link to the same folder)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
PLAYBOOKS = PACKAGE / "playbooks"
ROLES = PLAYBOOKS / "roles"
CHECKS = PACKAGE / "checks"
GO_MODULES = PACKAGE / "mirror" / "go"
