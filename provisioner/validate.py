"""`cluster validate`: run the shipped testinfra checks against every node, by group.

The checks reach the nodes through testinfra's Ansible backend and the cluster's generated
inventory (``<cluster dir>/inventory``, rewritten first the way `inventory generate` does):
``--hosts=ansible://all --ansible-inventory=<cluster dir>/inventory``. Everything the checks
need comes from that inventory: how to reach a node (user, port, key and the OpenSSH
options in ``ansible_ssh_common_args``, such as the cluster's pinned known_hosts), its
kubespray groups and the cluster-wide group_vars.

testinfra turns each inventory host into an OpenSSH command line (its ``ssh`` backend):
``ansible.cfg``'s ``[ssh_connection] ssh_args``, then the host's ``ansible_ssh_common_args``
and ``ansible_ssh_extra_args``, then user, port and identity file. It adds no
StrictHostKeyChecking option of its own (nor reads ``host_key_checking``), so the
inventory's ``StrictHostKeyChecking=yes`` holds. Only when testinfra has to run Ansible
itself (``host.ansible(...)``, or a connection type it cannot map) does Ansible's own
``host_key_checking`` matter (False puts ``StrictHostKeyChecking=no`` first); the inventory
sets ``ansible_host_key_checking: true`` and the run's environment says True as well. The
run gets an ansible.cfg of its own (see ``_ssh_session``).

Results are gathered per node (the host part of each test id, ``ansible://NAME``) and per
check; ``junit`` also writes pytest's JUnit XML report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from provisioner import inventory as inv
from provisioner import yamlio
from provisioner.spec import ClusterSpec
from provisioner.state import ClusterDir

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


def node_of(nodeid: str) -> str:
    """The inventory name in a test id: ``test_node.py::test_x[ansible://cp1]`` -> ``cp1``."""
    param = nodeid.split("::")[-1].partition("[")[2].removesuffix("]")
    return param.split("://", 1)[-1]


def _message(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        msg = crash.message
    elif isinstance(longrepr, tuple):  # a skip: (file, line, reason)
        msg = longrepr[2]
    else:  # e.g. a test module that cannot be imported: the last line names the error
        lines = [line.removeprefix("E ").strip() for line in str(longrepr).splitlines() if line.strip()]
        msg = lines[-1] if lines else ""
    return " ".join(str(msg).split())[:300]


class _Collector:
    """pytest plugin: each check's outcome, filed under the node it ran on."""

    def __init__(self, by_name: dict[str, NodeResult]):
        self.by_name = by_name
        self.collect_errors: list[str] = []

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collect_errors.append(_message(report))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not (report.when == "setup" and (report.failed or report.skipped)):
            return
        result = self.by_name.get(node_of(report.nodeid))
        if result is None:
            return
        check = report.nodeid.split("::")[-1].partition("[")[0].removeprefix("test_")
        if report.passed:
            result.passed.append(check)
        elif report.skipped:
            result.skipped.append(check)
        else:
            result.failed[check] = _message(report)


def _recorded_downloads(inventory_dir: Path) -> dict[str, list[dict[str, Any]]] | None:
    path = inventory_dir / "group_vars" / "all.yml"
    if not path.exists():
        return None
    data = yamlio.load(path.read_text()) or {}
    return data.get("download_artifacts") or None


def write_inventory(spec: ClusterSpec, cdir: ClusterDir) -> Path:
    """(Re)write ``<cluster dir>/inventory`` from the cluster file as `inventory generate` does,
    with the recorded pod blocks. The download list already in it is kept: the checks do not
    need it, and validate does not ask files_repo for a new one."""
    blocks = inv.assign_pod_blocks(spec, cdir.read_blocks())
    downloads = _recorded_downloads(cdir.inventory)
    cdir.ensure().write_blocks(blocks)
    return inv.write(inv.build(spec, blocks, cdir.root, downloads), cdir.inventory)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _checks_environment() -> dict[str, str]:
    env = {
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
    }
    # testinfra runs `ansible-inventory` (and maybe `ansible`) from PATH; the venv need not be on it
    here = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if (Path(here) / "ansible-inventory").exists() and here not in path.split(os.pathsep):
        env["PATH"] = here + os.pathsep + path
    return env


@contextmanager
def _ssh_session() -> Iterator[dict[str, str]]:
    """A private ansible.cfg for the run (``ANSIBLE_CONFIG``), which testinfra reads to build its
    ssh command lines: one multiplexed OpenSSH connection per node (``ControlPath=<dir>/%C``, a
    hash of host, port and user) instead of a new connection per command, and no ``ssh_args`` from
    someone's own ansible.cfg in front of the inventory's options (OpenSSH keeps an option's first
    value: an ansible.cfg ``StrictHostKeyChecking=no`` would win over the inventory's ``yes``).

    The control path is given as ``control_path`` (which testinfra and Ansible both expand), not
    inside ``ssh_args``: Ansible passes ``ssh_args`` on without ini unescaping, so a ``%%C`` there
    would reach ssh as a literal ``%C``, one socket shared by every node."""
    with tempfile.TemporaryDirectory(prefix="provisioner-validate-") as tmp:
        sockets = Path(tmp) / "cp"
        sockets.mkdir()
        cfg = Path(tmp) / "ansible.cfg"
        cfg.write_text(
            "[defaults]\nhost_key_checking = True\n\n"
            f"[ssh_connection]\ncontrol_path_dir = {sockets}\ncontrol_path = %(directory)s/%%C\n\n"
            f"[persistent_connection]\ncontrol_path_dir = {sockets}\n"  # where testinfra looks for it
        )
        try:
            yield {"ANSIBLE_CONFIG": str(cfg)}
        finally:
            for sock in sockets.iterdir():  # close the master connections now, not when they time out
                subprocess.run(
                    ["ssh", "-O", "exit", "-o", f"ControlPath={sock}", "provisioner-validate"],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )


def _forget_testinfra_caches() -> None:
    """testinfra keeps hosts and parsed inventories per process, keyed by the inventory's path;
    a second run in the same process must read the inventory just written."""
    from testinfra.host import Host
    from testinfra.utils.ansible_runner import AnsibleRunner

    Host._host_cache.clear()
    Host._hosts_cache.clear()
    AnsibleRunner._runners.clear()


def run_checks(
    inventory_dir: Path,
    results: dict[str, NodeResult],
    quiet: bool = True,
    junit: Path | None = None,
    checks: Path = CHECKS,
    suite: str = "provisioner",
) -> list[NodeResult]:
    """Run the checks in ``checks`` on every host of the inventory; fill ``results`` (by inventory name)."""
    args = [
        str(checks),
        "--hosts=ansible://all",
        f"--ansible-inventory={inventory_dir}",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "--rootdir",
        str(checks),
        "-W",
        "ignore::UserWarning",
    ]
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        args += [f"--junitxml={junit}", "-o", f"junit_suite_name={suite}"]
    if quiet:
        args += ["-p", "no:terminal"]
    collector = _Collector(results)
    _forget_testinfra_caches()
    try:
        with _ssh_session() as ssh_env, _environment(_checks_environment() | ssh_env):
            pytest.main(args, plugins=[collector])
    finally:
        _forget_testinfra_caches()
    why = "; ".join(collector.collect_errors) or "run again without --quiet to see why"
    for r in results.values():
        if not r.passed and not r.failed:
            r.failed["checks"] = f"no check ran on this node ({why})"
    return list(results.values())


def run(spec: ClusterSpec, cluster_dir: Path, quiet: bool = True, junit: Path | None = None) -> list[NodeResult]:
    """Rewrite the cluster's inventory, run the shipped checks through it; one result per node, in file order."""
    inventory_dir = write_inventory(spec, ClusterDir(cluster_dir))
    results = {n.name: NodeResult(n.name, n.address) for n in spec.nodes}
    return run_checks(inventory_dir, results, quiet=quiet, junit=junit, suite=f"validate-{spec.name}")
