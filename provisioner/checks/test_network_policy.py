"""NetworkPolicy enforcement (the cluster file's ``network.policy``): kube-router's network
policy controller runs on every Kubernetes node and has hooked its chains into the filter
table, in the same iptables backend as kube-proxy and the NAT-outgoing rule. With
``network.policy: false`` nothing of it is on the node."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from provisioner.checks.conftest import Node

# the jumps kube-router puts first in the filter table's built-in chains
JUMPS = {"INPUT": "KUBE-ROUTER-INPUT", "FORWARD": "KUBE-ROUTER-FORWARD", "OUTPUT": "KUBE-ROUTER-OUTPUT"}
KUBE_ROUTER_CHAIN = re.compile(r"^:KUBE-(ROUTER|NWPLCY|POD-FW)-", re.M)


def _enabled(hostvars: dict[str, Any]) -> bool:
    return bool(hostvars.get("network_policy", False))


def test_network_policy_controller_running(host: Any, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("k8s_cluster")
    svc = host.service("kube-router")
    running, enabled = svc.is_running, svc.is_enabled
    if not _enabled(hostvars):
        assert not running and not enabled, "network.policy is false, yet kube-router runs or is enabled"
        filt = host.run("iptables-save -t filter").stdout
        assert not KUBE_ROUTER_CHAIN.search(filt), "network.policy is false, yet kube-router's chains are here"
        return
    assert running and enabled, f"kube-router (network policy) running={running}, enabled={enabled}"
    filt = host.run("iptables-save -t filter")
    assert filt.rc == 0, f"iptables-save: {filt.stderr.strip()}"
    rules = filt.stdout.splitlines()
    missing = []
    for builtin, target in JUMPS.items():
        first = next((r for r in rules if r.startswith(f"-A {builtin} ")), "")
        if not first.endswith(f"-j {target}"):
            missing.append(f"{builtin} -> {target}")
    assert not missing, "kube-router has not hooked its chains first in: " + ", ".join(missing)


def test_network_policy_iptables_backend_is_the_nodes(host: Any, node: Node, hostvars: dict[str, Any]) -> None:
    """kube-router, kube-proxy and the NAT-outgoing rule all call the node's `iptables`; their
    rules must all be in the one backend it selects (nf_tables or legacy), none in the other."""
    node.require("k8s_cluster")
    if not _enabled(hostvars):
        pytest.skip("network.policy is false")
    version = host.run("iptables -V").stdout
    mode = "nf_tables" if "nf_tables" in version else "legacy"
    other = "iptables-legacy-save" if mode == "nf_tables" else "iptables-nft-save"
    mine = host.run("iptables-save").stdout
    assert ":KUBE-ROUTER-FORWARD" in mine, f"kube-router's chains are not in the node's iptables ({mode})"
    if hostvars.get("network_nat_outgoing"):
        assert "provisioner-nat-outgoing" in mine, f"the NAT-outgoing rule is not in the node's iptables ({mode})"
    if hostvars.get("kube_proxy_mode") == "iptables":
        assert ":KUBE-SERVICES" in mine, f"kube-proxy's chains are not in the node's iptables ({mode})"
    theirs = host.run(f"{other} 2>/dev/null")
    stray = sorted(set(re.findall(r"^:(KUBE-[A-Z0-9-]+)", theirs.stdout, re.M)))
    assert not stray, f"chains in the other iptables backend ({other}): {', '.join(stray[:5])}"
