"""The API virtual IP (``api_vip`` in the cluster file): keepalived runs on every control plane,
exactly one of them holds the VIP, and the API answers on it. Skipped without a VIP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import testinfra

if TYPE_CHECKING:
    from provisioner.checks.conftest import Node

PKI = "/etc/kubernetes/pki"


def _vip(node: Node, hostvars: dict[str, Any]) -> str:
    node.require("kube_control_plane")
    if not hostvars.get("api_vip_enabled"):
        pytest.skip("no api_vip in the cluster file")
    return str(hostvars["api_vip_address"])


def _holds(host: Any, vip: str) -> bool:
    return host.run("ip -o -4 addr show to %s/32", vip).stdout.strip() != ""


def test_keepalived_runs_for_the_api_vip(host: Any, node: Node, hostvars: dict[str, Any]) -> None:
    _vip(node, hostvars)
    svc = host.service("keepalived")
    running, enabled = svc.is_running, svc.is_enabled
    assert running and enabled, f"keepalived running={running}, enabled={enabled}"


def test_exactly_one_control_plane_holds_the_api_vip(
    host: Any, node: Node, hostvars: dict[str, Any], groups: dict[str, list[str]], request: pytest.FixtureRequest
) -> None:
    """Asked of every control plane, once (reported under the first one)."""
    vip = _vip(node, hostvars)
    control_planes = list(dict.fromkeys(groups["kube_control_plane"]))
    if node.name != control_planes[0]:
        pytest.skip(f"checked once for the cluster, on {control_planes[0]}")
    holders = [node.name] if _holds(host, vip) else []
    inventory = request.config.option.ansible_inventory
    for name in control_planes[1:]:
        if _holds(testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory), vip):
            holders.append(name)
    assert len(holders) == 1, f"{vip} is held by {len(holders)} control planes ({', '.join(holders) or 'none'})"
    port = hostvars["kube_apiserver_port"]
    answer = host.run("curl --silent --max-time 5 --cacert %s https://%s:%s/readyz", f"{PKI}/ca.crt", vip, str(port))
    assert answer.stdout.strip() == "ok", f"https://{vip}:{port}/readyz (held by {holders[0]}): {answer.stdout!r}"
