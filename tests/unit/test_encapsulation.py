"""network.encapsulation (none | vxlan | ipip) x encapsulation_mode (always | cross-subnet): the
BIRD, CNI and tunnel configuration the network role renders (Ansible's own templating, against
group_vars built by provisioner.defaults.group_vars), the MTU arithmetic, the preflight kernel
check, the guard against changing a running cluster's encapsulation, and the facts it reads."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

from provisioner import defaults, facts, guards, preflight, spec

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "provisioner" / "playbooks" / "roles" / "network"
HA = ROOT / "inventory" / "sample" / "ha.yaml"
BLOCKS = {
    "cp1": "10.233.64.0/24",
    "cp2": "10.233.65.0/24",
    "cp3": "10.233.66.0/24",
    "w1": "10.233.67.0/24",
    "w2": "10.233.68.0/24",
}
MODES = [
    ("none", "always"),
    ("vxlan", "always"),
    ("vxlan", "cross-subnet"),
    ("ipip", "always"),
    ("ipip", "cross-subnet"),
]


def cluster(encapsulation: str = "vxlan", mode: str = "always", rrs: list[str] | None = None, **net: Any):
    data = spec.load(HA).model_dump(mode="json")
    data["network"].update(encapsulation=encapsulation, encapsulation_mode=mode, route_reflectors=rrs or [], **net)
    return spec.from_dict(data)


def render(c: spec.ClusterSpec, template: str, host: str = "cp1", removing: list[str] | None = None) -> str:
    loader = DataLoader()
    variables: dict[str, Any] = {
        **defaults.group_vars(c, Path("/state") / c.name),
        **loader.load_from_file(str(ROLE / "defaults" / "main.yml")),
        "removing": removing or [],
        "inventory_hostname": host,
        "ip": c.node(host).address,
        "pod_block": BLOCKS[host],
        "groups": {"k8s_cluster": [n.name for n in c.nodes]},
        "hostvars": {n.name: {"ip": n.address, "pod_block": BLOCKS[n.name]} for n in c.nodes},
    }
    templar = Templar(loader=loader, variables=variables)
    return templar.template(trust_as_template((ROLE / "templates" / template).read_text()))


def protocol(conf: str, name: str) -> str:
    m = re.search(rf"^protocol {name} {{\n(.*?)^}}", conf, re.S | re.M)
    assert m, f"no protocol {name} in:\n{conf}"
    return m.group(1)


# -- MTU -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("encapsulation", "mtu", "pod"),
    [("none", 1500, 1500), ("vxlan", 1500, 1450), ("ipip", 1500, 1480), ("vxlan", 9000, 8950)],
)
def test_pod_mtu_is_the_nodes_mtu_minus_the_tunnel_overhead(encapsulation: str, mtu: int, pod: int) -> None:
    c = cluster(encapsulation, mtu=mtu)
    assert spec.pod_mtu(c.network) == pod
    gv = defaults.group_vars(c, Path("/state/ha"))
    assert gv["network_pod_mtu"] == pod and gv["network_mtu"] == mtu
    conflist = json.loads(render(c, "10-provisioner.conflist.j2"))
    assert conflist["plugins"][0]["mtu"] == pod


def test_tunnel_overheads_are_calicos() -> None:
    assert spec.TUNNEL_OVERHEAD == {"none": 0, "vxlan": 50, "ipip": 20}


# -- BIRD ----------------------------------------------------------------------------------------


def test_bird_without_encapsulation_is_as_before() -> None:
    conf = render(cluster("none"), "bird.conf.j2")
    assert "protocol direct" not in conf and "multihop" not in conf
    assert "if source = RTS_BGP then accept;" in protocol(conf, "kernel")
    bgp = protocol(conf, "bgp peer_cp2")
    assert "  direct;" in bgp and "gateway direct;" in bgp


@pytest.mark.parametrize(("encapsulation", "mode"), MODES[1:])
@pytest.mark.parametrize("rrs", [[], ["cp1", "cp2"]])
def test_bird_with_encapsulation(encapsulation: str, mode: str, rrs: list[str]) -> None:
    """Sessions are multihop (a peer may be on another subnet, behind a router) and next hops are
    resolved through the node's own networks (protocol direct, never a pod network): a peer on the
    same subnet resolves, one on another subnet does not. The blocks are always announced."""
    c = cluster(encapsulation, mode, rrs)
    for host in ("cp1", "w1"):
        conf = render(c, "bird.conf.j2", host=host)
        assert "if net ~ POD_NET then reject;" in protocol(conf, "direct")
        assert "route 10.233" in protocol(conf, "static pod_block")
        kernel = protocol(conf, "kernel")
        assert "metric 32;" in kernel
        if mode == "always":
            assert "export none;" in kernel  # every remote block goes through the tunnel
        else:
            assert "if source = RTS_BGP && dest = RTD_UNICAST then accept;" in kernel
        peers = re.findall(r"^protocol bgp (\S+)", conf, re.M)
        expected = ["cp1", "cp2"] if rrs and host == "w1" else [n for n in BLOCKS if n != host]
        assert peers == [f"peer_{p}" for p in expected]
        for p in peers:
            bgp = protocol(conf, f"bgp {p}")
            assert "multihop;" in bgp and "gateway recursive;" in bgp and "  direct;" not in bgp
            assert 'if proto = "pod_block" then accept;' in bgp
        if rrs and host == "cp1":
            assert "rr client;" in protocol(conf, "bgp peer_w1")


# -- the tunnel ----------------------------------------------------------------------------------


def test_tunnel_mac_is_derived_from_the_node_address() -> None:
    assert defaults.tunnel_mac("192.168.236.11") == "02:70:c0:a8:ec:0b"


def test_vxlan_script() -> None:
    c = cluster("vxlan", "cross-subnet", vxlan_port=4790, vxlan_vni=77)
    cp1, cp2 = c.node("cp1").address, c.node("cp2").address
    script = render(c, "pod-tunnel.sh.j2", host="cp1")
    assert script.splitlines()[1].endswith("encapsulation=vxlan mode=cross-subnet pod_mtu=1450")
    assert "DEV=pod-vxlan" in script
    mine = defaults.tunnel_mac(cp1)
    assert f'ip link add "$DEV" address {mine} type vxlan id 77 local {cp1} dstport 4790 nolearning' in script
    assert 'ip link set "$DEV" mtu 1450 up' in script
    theirs = defaults.tunnel_mac(cp2)
    assert f'bridge fdb replace {theirs} dev "$DEV" dst {cp2} self permanent' in script
    assert f'ip neigh replace 10.233.65.0 lladdr {theirs} dev "$DEV" nud permanent' in script
    assert 'ip route replace 10.233.65.0/24 via 10.233.65.0 dev "$DEV" onlink metric 1024' in script
    assert "10.233.64.0/24 via" not in script  # not to itself
    assert " 10.233.65.0/24 10.233.66.0/24 10.233.67.0/24 10.233.68.0/24 " in script  # the routes it keeps
    _sh_syntax(script)


@pytest.mark.parametrize("mode", ["always", "cross-subnet"])
def test_ipip_script_uses_the_same_path(mode: str) -> None:
    c = cluster("ipip", mode)
    w1 = c.node("w1").address
    script = render(c, "pod-tunnel.sh.j2", host="cp1")
    assert "DEV=pod-ipip" in script and f'ip link add "$DEV" type ipip local {c.node("cp1").address}' in script
    assert 'ip link set "$DEV" mtu 1480 up' in script
    assert f'ip route replace 10.233.67.0/24 via {w1} dev "$DEV" onlink metric 1024' in script
    assert "bridge fdb" not in script and "ip neigh" not in script
    _sh_syntax(script)


def test_a_removed_node_loses_its_tunnel_route() -> None:
    c = cluster("vxlan")
    script = render(c, "pod-tunnel.sh.j2", host="cp1", removing=["w1"])
    assert "10.233.67.0/24 via" not in script
    kept = script.split("routes to the")[1]
    assert " 10.233.65.0/24 10.233.66.0/24 10.233.68.0/24 " in kept and "10.233.67.0/24 " not in kept


@pytest.mark.parametrize(("encapsulation", "mode"), MODES[1:])
def test_tunnel_unit_says_what_it_runs(encapsulation: str, mode: str) -> None:
    unit = render(cluster(encapsulation, mode), "pod-tunnel.service.j2")
    first = unit.splitlines()[0]
    assert first.endswith(
        f"encapsulation={encapsulation} mode={mode} pod_mtu={1450 if encapsulation == 'vxlan' else 1480}"
    )
    assert "ExecStop=/bin/sh /etc/provisioner/pod-tunnel.sh stop" in unit
    assert facts._encapsulation(unit.encode()) == encapsulation


def _sh_syntax(script: str) -> None:
    proc = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- preflight: the kernel -----------------------------------------------------------------------


def test_preflight_probes_the_module_of_the_chosen_encapsulation_only() -> None:
    node = cluster("none").nodes[0]
    assert "kmod_" not in preflight.probe_for(node, cluster("none"))
    ipip = preflight.probe_for(node, cluster("ipip"))
    assert "m=ipip;" in ipip and "unshare -n sh -c 'ip link add pv-probe type ipip" in ipip and "m=vxlan" not in ipip
    vxlan = preflight.probe_for(node, cluster("vxlan"))
    assert "m=vxlan;" in vxlan and "type vxlan id 1 dstport 4789" in vxlan


@pytest.mark.parametrize(("state", "ok"), [("loaded", True), ("module", True), ("missing", False), ("", False)])
def test_preflight_kernel_check(state: str, ok: bool) -> None:
    c = cluster("ipip")
    node = c.nodes[0]
    base = {"sudo": "root", "python3": "/usr/bin/python3", "os_id": "debian", "os_version": "12", "arch": "x86_64"}
    checks = {ch.name: ch for ch in preflight.judge(node, c, {**base, "kmod_ipip": state, "kernel": "6.1"}, {})}
    assert checks["kernel ipip"].ok is ok
    if not ok:
        assert checks["kernel ipip"].detail.startswith(
            "network.encapsulation ipip needs the kernel module ipip, and kernel 6.1 has none"
        )
        assert "set network.encapsulation to vxlan" in checks["kernel ipip"].detail
    no_tunnel = {ch.name for ch in preflight.judge(node, cluster("none"), base, {})}
    assert not any(name.startswith("kernel") for name in no_tunnel)


# -- a running cluster's encapsulation is not changed by create ---------------------------------


def _facts(encapsulation: str | None, mtu: int | None = None) -> facts.ClusterFacts:
    results: dict[str, dict[str, Any]] = {}
    for name in BLOCKS:
        files: dict[str, str] = {}
        if encapsulation is not None:
            bridge: dict[str, Any] = {"type": "bridge", "ipam": {"ranges": [[{"subnet": BLOCKS[name]}]]}}
            if mtu:
                bridge["mtu"] = mtu
            files["cni"] = base64.b64encode(json.dumps({"plugins": [bridge]}).encode()).decode()
            if encapsulation != "none":
                unit = f"# Managed by provisioner (role network): encapsulation={encapsulation} mode=always\n"
                files["tunnel"] = base64.b64encode(unit.encode()).decode()
        results[name] = {"ansible_facts": {"provisioner_node_facts": {"files": files}}}
    return facts.from_results(list(BLOCKS), results)


def test_facts_read_the_running_encapsulation_and_pod_mtu() -> None:
    f = _facts("vxlan", 1450)
    assert {n.encapsulation for n in f.nodes.values()} == {"vxlan"} and f.nodes["cp1"].pod_mtu == 1450
    old = _facts("none")  # a cluster made before the conflist carried the MTU
    assert old.nodes["cp1"].encapsulation == "none" and old.nodes["cp1"].pod_mtu == 1500
    assert _facts(None).nodes["cp1"].encapsulation is None


def test_guard_allows_a_new_cluster_and_the_same_encapsulation() -> None:
    assert guards.encapsulation(cluster("vxlan"), _facts(None)) == []
    assert guards.encapsulation(cluster("vxlan", "cross-subnet"), _facts("vxlan", 1450)) == []
    assert guards.encapsulation(cluster("none"), _facts("none")) == []


def test_guard_refuses_a_change_of_encapsulation() -> None:
    (problem,) = guards.encapsulation(cluster("vxlan"), _facts("none"))
    assert problem.startswith("network.encapsulation: cp1 runs the pod network with encapsulation none")
    assert "the file says vxlan" in problem and "reset the cluster" in problem
    (problem,) = guards.encapsulation(cluster("none"), _facts("vxlan", 1450))
    assert "encapsulation vxlan and the file says none" in problem


def test_guard_refuses_a_change_of_pod_mtu() -> None:
    (problem,) = guards.encapsulation(cluster("vxlan", mtu=9000), _facts("vxlan", 1450))
    assert problem.startswith("network.mtu: cp1 gives pods an MTU of 1450 and the file would give 8950")
    assert "set network.mtu back to 1500" in problem


def test_reset_removes_the_tunnel_devices_and_unit() -> None:
    import yaml

    reset = yaml.safe_load((ROLE.parent / "reset" / "defaults" / "main.yml").read_text())
    assert "pod-tunnel" in reset["reset_services"]  # its ExecStop deletes the device
    assert "network_tunnel_devices" in reset["reset_links"]  # and any tunnel device left is deleted
    gv = defaults.group_vars(cluster("none"), Path("/state/ha"))
    assert gv["network_tunnel_devices"] == ["pod-ipip", "pod-vxlan"] and gv["network_tunnel_device"] == ""
