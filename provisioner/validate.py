"""`cluster validate`: run the shipped testinfra checks against every node, by role.

Hosts are reached over SSH with paramiko (testinfra's paramiko backend, one connection
per host); results are gathered per node and per check.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from provisioner.inventory import cluster_vars
from provisioner.spec import ClusterSpec

CHECKS = Path(__file__).parent / "checks"


@dataclass
class NodeResult:
    name: str
    address: str
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


class _Collector:
    def __init__(self, by_address: dict[str, NodeResult]):
        self.by_address = by_address

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not (report.when == "setup" and (report.failed or report.skipped)):
            return
        test = report.nodeid.split("::")[-1]
        name, _, param = test.partition("[")
        found = re.search(r"//(?:[^@/]*@)?([^:/?\]]+)", param)
        address = found.group(1) if found else ""
        result = self.by_address.get(address)
        if result is None:
            return
        check = name.removeprefix("test_")
        if report.passed:
            result.passed.append(check)
        elif report.skipped:
            result.skipped.append(check)
        else:
            msg = report.longrepr.reprcrash.message if hasattr(report.longrepr, "reprcrash") else str(report.longrepr)
            result.failed[check] = " ".join(str(msg).split())[:300]


def context(spec: ClusterSpec, cluster_dir: Path) -> dict[str, Any]:
    cv = cluster_vars(spec, cluster_dir)
    return {
        "cluster": {
            k: cv[k]
            for k in (
                "cluster_domain",
                "cluster_dns_ip",
                "kube_service_ip",
                "api_lb_port",
                "kube_version",
                "cluster_name",
            )
        }
        | {"route_reflectors": list(spec.network.route_reflectors)},
        "nodes": {n.address: {"name": n.name, "address": n.address, "roles": list(n.roles)} for n in spec.nodes},
    }


def host_url(spec: ClusterSpec, address: str, user: str, port: int) -> str:
    key = quote(str(Path(spec.ssh.private_key).expanduser()))
    return f"paramiko://{user}@{address}:{port}?ssh_identity_file={key}&timeout=10"


def run(spec: ClusterSpec, cluster_dir: Path, quiet: bool = True) -> list[NodeResult]:
    results = {n.address: NodeResult(n.name, n.address) for n in spec.nodes}
    hosts = ",".join(
        host_url(spec, n.address, n.ssh_user or spec.ssh.user, n.ssh_port or spec.ssh.port) for n in spec.nodes
    )
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(context(spec, cluster_dir), f)
        ctx_path = f.name
    os.environ["PROVISIONER_CHECKS_CONTEXT"] = ctx_path
    try:
        args = [
            str(CHECKS),
            f"--hosts={hosts}",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "--rootdir",
            str(CHECKS),
            "-W",
            "ignore::UserWarning",
        ]
        if quiet:
            args += ["-p", "no:terminal"]
        pytest.main(args, plugins=[_Collector(results)])
    finally:
        Path(ctx_path).unlink(missing_ok=True)
        os.environ.pop("PROVISIONER_CHECKS_CONTEXT", None)
    for r in results.values():
        if not r.passed and not r.failed:
            r.failed["checks"] = "no check ran on this node (run again without --quiet to see why)"
    return [results[n.address] for n in spec.nodes]
