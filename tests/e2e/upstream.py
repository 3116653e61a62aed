"""Kubernetes' own end-to-end tests against a lab cluster: the mirror's ``e2e.test`` (built by
`provisioner mirror build` from the pinned Kubernetes module, with the agnhost image its
framework asks for) run with a focus, its JUnit report kept under the test's tmp dir and copied
to ``build/junit/`` of the checkout (a CI artifact), its failed and skipped specs printed.

Reusable on any lab cluster: ``run_suite(cluster, GRANULAR_CHECKS, tmp_path)``."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import testinfra

from provisioner.lab.manager import DEFAULT_MIRROR
from provisioner.mirror.manifest import Manifest
from provisioner.versions import DEFAULT_KUBERNETES
from tests.e2e.conftest import ROOT, Cluster, kubectl_binary

JUNIT_DIR = ROOT / "build" / "junit"


@dataclass(frozen=True)
class Suite:
    name: str
    focus: str
    skip: str = ""
    timeout_s: float = 1800


# What kubespray's CI runs: pod-to-pod and node-to-pod, HTTP and UDP, across the nodes.
GRANULAR_CHECKS = Suite("granular-checks", r"\[sig-network\] Networking Granular Checks.+\[Conformance\]")
# The upstream NetworkPolicy suite (test/e2e/network/netpol: "[sig-network] Netpol ...
# [Feature:NetworkPolicy]"); SCTP is not enforced (kube-router, and this kernel), so left out.
NETPOL = Suite("netpol", r"\[sig-network\] Netpol", skip=r"SCTP")
# A representative part of it that fits CI's budget: default deny ingress and egress,
# podSelector, namespaceSelector, ipBlock with except, a named port.
NETPOL_FOCUSED = Suite(
    "netpol-focused",
    r"\[sig-network\] Netpol NetworkPolicy between server and client "
    r"(should support a 'default-deny-ingress' policy"
    r"|should deny egress from all pods in a namespace"
    r"|should enforce policy to allow traffic from pods within server namespace based on PodSelector"
    r"|should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector"
    r"|should enforce except clause while egress access to server in CIDR block"
    r"|should allow ingress access on one named port)",
    skip=r"SCTP",
)


@dataclass
class SuiteResult:
    suite: Suite
    seconds: float
    returncode: int
    junit: Path
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    output: str = ""

    def summary(self) -> str:
        lines = [
            f"upstream {self.suite.name}: {len(self.passed)} passed, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped in {self.seconds:.0f} s (JUnit: {self.junit})"
        ]
        lines += [f"  FAILED  {n}" for n in self.failed]
        lines += [f"  skipped {n}" for n in self.skipped]
        return "\n".join(lines)


def e2e_test_binary(version: str = DEFAULT_KUBERNETES) -> Path:
    manifest = Manifest.read(DEFAULT_MIRROR)
    try:
        return DEFAULT_MIRROR / manifest.find("e2e.test", version).path
    except KeyError:
        raise AssertionError(
            f"the mirror ({DEFAULT_MIRROR}) has no e2e.test {version}: run `provisioner mirror build`"
        ) from None


def agnhost_image() -> str:
    manifest = Manifest.read(DEFAULT_MIRROR)
    versions = manifest.versions("image-agnhost")
    assert versions, f"the mirror ({DEFAULT_MIRROR}) has no agnhost image: run `provisioner mirror build`"
    return manifest.find("image-agnhost", versions[-1]).image or ""


def assert_agnhost_on_every_node(cluster: Cluster) -> str:
    """The create imported the mirror's agnhost into containerd on every node (offline, the
    e2e pods could not pull it)."""
    image = agnhost_image()
    for row in cluster.lab.status():
        host = testinfra.get_host(f"paramiko://root@{row['address']}?ssh_identity_file={cluster.lab.key}")
        listed = host.check_output("/usr/local/bin/ctr --namespace k8s.io images list --quiet").split()
        assert image in listed, f"{row['node']}: {image} is not in containerd (listed: {listed})"
    return image


CONTROL_PLANE_TAINT = "node-role.kubernetes.io/control-plane:NoSchedule"


@contextmanager
def untainted(cluster: Cluster, nodes: list[str]) -> Iterator[None]:
    """The e2e framework puts its pods only on untainted nodes: on a lab with one worker, let them
    onto these control planes too for the run (pod to pod and node to pod across nodes), and
    taint them again afterwards (the taint is the kubelet's at registration; nothing re-applies it)."""
    for node in nodes:
        cluster.kubectl("taint", "nodes", node, f"{CONTROL_PLANE_TAINT}-", check=False)
    try:
        yield
    finally:
        for node in nodes:
            cluster.kubectl("taint", "nodes", node, CONTROL_PLANE_TAINT, "--overwrite")


def _cases(junit: Path) -> tuple[list[str], list[str], list[str]]:
    passed, failed, skipped = [], [], []
    for case in ElementTree.parse(junit).iter("testcase"):
        name = case.get("name", "")
        status = case.get("status", "")
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"} or status in ("failed", "panicked", "interrupted", "timedout"):
            failed.append(name)
        elif "skipped" in kinds or status in ("skipped", "pending"):
            skipped.append(name)
        else:
            passed.append(name)
    return passed, failed, skipped


def run_suite(cluster: Cluster, suite: Suite, tmp: Path, label: str = "") -> SuiteResult:
    """Run ``suite`` of the mirror's e2e.test against ``cluster``; its JUnit report goes to
    ``tmp`` and to build/junit/<lab>-<suite>.xml. Specs outside the focus are not reported."""
    assert_agnhost_on_every_node(cluster)
    report_dir = tmp / f"e2e-{suite.name}"
    report_dir.mkdir(parents=True, exist_ok=True)
    junit = report_dir / "junit.xml"
    cmd = [
        str(e2e_test_binary()),
        f"--kubeconfig={cluster.kubeconfig}",
        f"--kubectl-path={kubectl_binary()}",
        "--provider=skeleton",
        f"--report-dir={report_dir}",
        f"--ginkgo.junit-report={junit}",
        "--ginkgo.silence-skips",
        "--ginkgo.no-color",
        f"--ginkgo.timeout={int(suite.timeout_s)}s",
        f"--ginkgo.focus={suite.focus}",
    ]
    if suite.skip:
        cmd.append(f"--ginkgo.skip={suite.skip}")
    started = time.monotonic()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=suite.timeout_s + 300, cwd=report_dir, check=False
    )
    seconds = time.monotonic() - started
    (report_dir / "e2e.log").write_text(proc.stdout + proc.stderr)
    assert junit.exists(), f"e2e.test wrote no JUnit report (exit {proc.returncode}):\n{proc.stdout[-3000:]}"
    JUNIT_DIR.mkdir(parents=True, exist_ok=True)
    kept = JUNIT_DIR / f"{label or cluster.lab.name}-{suite.name}.xml"
    shutil.copyfile(junit, kept)
    passed, failed, skipped = _cases(junit)
    # ginkgo reports every spec outside the focus as skipped, and the suite's setup and
    # teardown nodes as cases: only the focused specs count (a failure anywhere counts)
    passed = [n for n in passed if _matches(suite, n)]
    skipped = [n for n in skipped if _matches(suite, n)]
    result = SuiteResult(suite, seconds, proc.returncode, kept, passed, failed, skipped, proc.stdout[-5000:])
    print(result.summary())
    return result


def _matches(suite: Suite, name: str) -> bool:
    return bool(re.search(suite.focus, name)) and not (suite.skip and re.search(suite.skip, name))
