"""The API virtual IP (``api_vip``): the keepalived configuration the api_vip role renders
(Ansible's own templating, against group_vars built by provisioner.defaults.group_vars), the
preflight rule that the VIP lies in the control planes' subnet, the API server certificate's
SANs (the VIP added to a running cluster: same key, no new CA), the admin kubeconfig's server
(a new one, and an existing one rewritten in place), and the lab's VIP."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from provisioner import defaults, pki, preflight, spec
from tests.unit import role_templates
from tests.unit.role_templates import host_vars

ROOT = Path(__file__).resolve().parents[2]
HA = ROOT / "inventory" / "sample" / "ha.yaml"
SERVICE_IP = "10.233.0.1"
VIP = "192.168.250.250"


def cluster(vip: dict[str, Any] | None = {"address": VIP}, control_planes: int = 3) -> spec.ClusterSpec:  # noqa: B006
    data = spec.load(HA).model_dump(mode="json")
    data["api_vip"] = vip
    cps = [n for n in data["nodes"] if "control-plane" in n["roles"]]
    data["nodes"] = cps[:control_planes] + [n for n in data["nodes"] if "control-plane" not in n["roles"]]
    if control_planes == 1:
        data["nodes"][0]["roles"] = ["etcd", "control-plane"]
    return spec.from_dict(data)


def render(c: spec.ClusterSpec, host: str, removing: list[str] | None = None, device: str = "eth0") -> str:
    """keepalived.conf as the api_vip role renders it on ``host``."""
    variables = {**host_vars(c, host), "removing": removing or [], "api_vip_device": device}
    return role_templates.render("api_vip", "keepalived.conf.j2", variables)


def block(conf: str, name: str) -> list[str]:
    """The lines inside ``name { ... }`` (one level)."""
    m = re.search(rf"^\s*{name} {{\n(.*?)^\s*}}", conf, re.S | re.M)
    assert m, f"no {name} block in:\n{conf}"
    return [line.strip() for line in m.group(1).splitlines() if line.strip()]


# -- keepalived.conf ---------------------------------------------------------------------------


def test_keepalived_conf_of_the_first_control_plane() -> None:
    c = cluster()
    conf = render(c, "cp1", device="host0")
    assert conf.startswith("# Managed by provisioner (role api_vip). Node cp1.")
    instance = conf[conf.index("vrrp_instance api_vip {") :]
    assert "state BACKUP" in instance and "interface host0" in instance
    assert "nopreempt" in instance  # a holder keeps the VIP while it is healthy: no second move
    assert "virtual_router_id 51" in instance and "priority 250" in instance and "advert_int 1" in instance
    assert "unicast_src_ip 192.168.250.11" in instance
    assert block(conf, "unicast_peer") == ["192.168.250.12", "192.168.250.13"]
    assert block(conf, "virtual_ipaddress") == [f"{VIP}/32 dev host0"]
    assert block(conf, "track_script") == ["api_server_ready"]
    script = block(conf, "vrrp_script api_server_ready")
    assert script[0] == (
        'script "/usr/bin/curl --silent --fail --max-time 2 --output /dev/null '
        '--cacert /etc/kubernetes/pki/ca.crt https://127.0.0.1:6443/readyz"'
    )
    assert {"interval 1", "fall 2", "rise 2", "timeout 3"} <= set(script)
    assert {"enable_script_security", "script_user root", "router_id cp1"} <= set(block(conf, "global_defs"))


def test_each_control_plane_has_its_own_priority_and_the_others_as_peers() -> None:
    c = cluster({"address": VIP, "virtual_router_id": 7})
    priorities = {}
    for n in c.control_planes:
        conf = render(c, n.name)
        priorities[n.name] = int(re.search(r"priority (\d+)", conf).group(1))  # type: ignore[union-attr]
        assert "virtual_router_id 7" in conf
        assert block(conf, "unicast_peer") == [m.address for m in c.control_planes if m.name != n.name]
    assert priorities == {"cp1": 250, "cp2": 230, "cp3": 210}  # exactly one highest, the next holder


def test_removed_control_planes_leave_the_peers_and_the_priorities_close_up() -> None:
    c = cluster()
    conf = render(c, "cp2", removing=["cp1"])
    assert block(conf, "unicast_peer") == ["192.168.250.13"]
    assert "priority 250" in conf  # cp2 is now the first


def test_one_control_plane_with_a_vip_has_no_peers() -> None:
    conf = render(cluster(control_planes=1), "cp1")
    assert block(conf, "unicast_peer") == [] and "priority 250" in conf


def test_the_interface_given_in_the_cluster_file_is_used() -> None:
    c = cluster({"address": VIP, "interface": "bond0.12"})
    assert defaults.group_vars(c, Path("/s"))["api_vip_interface"] == "bond0.12"
    assert "interface bond0.12" in render(c, "cp1", device="bond0.12")


# -- preflight -----------------------------------------------------------------------------------

ADDRS = "lo=127.0.0.1/8 eth0=192.168.250.11/24 cni0=10.233.64.1/24"


def vip_check(addrs: str = ADDRS, vip: dict[str, Any] | None = None, node: str = "cp1") -> preflight.Check:
    c = cluster(vip or {"address": VIP})
    checks = {ch.name: ch for ch in preflight.judge(c.node(node), c, {"addrs": addrs}, {})}
    return checks["api_vip"]


def test_preflight_the_vip_in_the_control_planes_subnet_passes() -> None:
    check = vip_check()
    assert check.ok and check.detail == f"{VIP} in eth0's subnet 192.168.250.0/24"
    # a VIP held already (a /32 on the interface) changes nothing
    assert vip_check(ADDRS + f" eth0={VIP}/32").ok


def test_preflight_a_vip_outside_the_subnet_fails_in_one_line() -> None:
    check = vip_check(vip={"address": "10.9.9.9"})
    assert not check.ok and not check.warning
    assert check.detail == (
        "api_vip.address: 10.9.9.9 is not in the subnet of eth0 (192.168.250.0/24) on this node; "
        "pick a free address of the control planes' subnet"
    )
    report = preflight.HostReport("cp1", "192.168.250.11", [check])
    assert str(preflight.PreflightFailed([report])).splitlines()[1] == (
        f"cp1 (192.168.250.11): api_vip: {check.detail}"
    )


def test_preflight_the_named_interface_must_exist_and_carry_the_subnet() -> None:
    missing = vip_check(vip={"address": VIP, "interface": "bond0"})
    assert not missing.ok and missing.detail == (
        "api_vip.interface: bond0 has no IPv4 address on this node (it has cni0, eth0, lo)"
    )
    other = vip_check(vip={"address": VIP, "interface": "cni0"})
    assert not other.ok and "not in the subnet of cni0 (10.233.64.0/24)" in other.detail


def test_preflight_no_interface_with_the_nodes_address() -> None:
    check = vip_check("lo=127.0.0.1/8 eth0=10.0.0.5/24")
    assert not check.ok and check.detail.startswith("no interface carries 192.168.250.11; set api_vip.interface")


def test_preflight_the_vip_is_checked_on_control_planes_only() -> None:
    c = cluster()
    worker = {ch.name for ch in preflight.judge(c.node("w1"), c, {"addrs": ADDRS}, {})}
    assert "api_vip" not in worker
    assert "ping -c1 -W1 192.168.250.250" in preflight.probe_for(c.node("cp1"), c)
    assert preflight.probe_for(c.node("w1"), c) == preflight.PROBE
    assert preflight.probe_for(cluster(None).node("cp1"), cluster(None)) == preflight.PROBE


def test_preflight_parses_every_interface_address() -> None:
    facts, _ = preflight._parse("addr=lo=127.0.0.1/8\naddr=eth0=192.168.250.11/24\naddr=eth0=192.168.250.250/32\n")
    assert preflight.interfaces(facts["addrs"]) == {
        "lo": [preflight.ipaddress.IPv4Interface("127.0.0.1/8")],
        "eth0": [
            preflight.ipaddress.IPv4Interface("192.168.250.11/24"),
            preflight.ipaddress.IPv4Interface(f"{VIP}/32"),
        ],
    }


def _report(name: str, answers: bool, addrs: str = ADDRS, ports: str = "22") -> preflight.HostReport:
    facts = {"addrs": addrs, "vip_answers": "1" if answers else "0", "listening_ports": ports}
    return preflight.HostReport(name, "", [], facts)


def test_preflight_someone_else_answering_on_the_vip_of_a_new_cluster_is_refused() -> None:
    c = cluster()
    problem = preflight.vip_in_use(c, [_report("cp1", True), _report("cp2", True), _report("w1", False)])
    assert problem == (
        f"api_vip.address: {VIP} already answers ping, and no control plane holds it: "
        "another machine uses it; pick a free address"
    )
    assert preflight.vip_in_use(c, [_report("cp1", False), _report("cp2", False)]) is None
    # a running cluster: the VIP answers from the control plane that holds it
    assert preflight.vip_in_use(c, [_report("cp1", True, ADDRS + f" eth0={VIP}/32"), _report("cp2", True)]) is None
    assert preflight.vip_in_use(c, [_report("cp1", True, ports="22 6443")]) is None
    assert preflight.vip_in_use(cluster(None), [_report("cp1", True)]) is None


# -- certificates and kubeconfig -------------------------------------------------------------------


def sans(c: x509.Certificate) -> set[str]:
    ext = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)) | {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}


def test_the_vip_is_in_the_api_server_certificate() -> None:
    req = next(r for r in pki.requests(cluster(), SERVICE_IP) if r.path == "apiserver")
    assert VIP in req.sans
    req = next(r for r in pki.requests(cluster(None), SERVICE_IP) if r.path == "apiserver")
    assert VIP not in req.sans


def test_adding_a_vip_re_issues_the_api_server_certificate_with_its_key_and_no_new_ca(tmp_path: Path) -> None:
    pki.ensure(cluster(None), tmp_path, SERVICE_IP, 6444)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    made = pki.ensure(cluster(), tmp_path, SERVICE_IP, 6444)
    assert made == ["apiserver.crt"]
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert {p for p in after if after[p] != before.get(p)} == {tmp_path / "apiserver.crt"}  # key, CAs: same bytes
    crt = x509.load_pem_x509_certificate((tmp_path / "apiserver.crt").read_bytes())
    assert VIP in sans(crt) and {"192.168.250.11", "192.168.250.13", "kubernetes.default"} <= sans(crt)
    crt.verify_directly_issued_by(x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes()))
    assert pki.ensure(cluster(), tmp_path, SERVICE_IP, 6444) == []


def _server(config: dict[str, Any]) -> str:
    ctx = next(c for c in config["contexts"] if c["name"] == config["current-context"])["context"]
    return next(c for c in config["clusters"] if c["name"] == ctx["cluster"])["cluster"]["server"]


def test_a_new_admin_kubeconfig_points_at_the_vip(tmp_path: Path) -> None:
    pki.ensure(cluster(), tmp_path / "pki", SERVICE_IP, 6444)
    target = tmp_path / "admin.kubeconfig"
    assert pki.admin_kubeconfig(cluster(), tmp_path / "pki", target)
    config = yaml.safe_load(target.read_text())
    assert config["current-context"] == "ha" and _server(config) == f"https://{VIP}:6443"
    # a context per control plane too, to reach one API server on purpose
    assert [c["name"] for c in config["contexts"]] == ["ha", "ha-cp1", "ha-cp2", "ha-cp3"]
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert pki.api_endpoint(cluster()) == f"https://{VIP}:6443"
    assert pki.api_endpoint(cluster(None)) == "https://192.168.250.11:6443"


def test_an_existing_admin_kubeconfig_is_pointed_at_the_vip_with_the_same_credentials(tmp_path: Path) -> None:
    pki.ensure(cluster(None), tmp_path / "pki", SERVICE_IP, 6444)
    target = tmp_path / "admin.kubeconfig"
    pki.admin_kubeconfig(cluster(None), tmp_path / "pki", target)
    old = yaml.safe_load(target.read_text())
    assert _server(old) == "https://192.168.250.11:6443"  # without a VIP: pinned to cp1, as before

    assert pki.admin_kubeconfig(cluster(), tmp_path / "pki", target)  # the file gains the VIP
    new = yaml.safe_load(target.read_text())
    assert _server(new) == f"https://{VIP}:6443" and new["current-context"] == "ha"
    assert new["users"] == old["users"]  # the same client certificate and key: nothing re-issued
    assert [c for c in new["clusters"] if c["name"] != "ha"] == old["clusters"]
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert not pki.admin_kubeconfig(cluster(), tmp_path / "pki", target)  # a second run changes nothing

    # a new VIP address: the server is rewritten in place; a context the user chose stays current
    new["current-context"] = "ha-cp2"
    target.write_text(yaml.safe_dump(new, sort_keys=False))
    moved = cluster({"address": "192.168.250.240"})
    assert pki.admin_kubeconfig(moved, tmp_path / "pki", target)
    again = yaml.safe_load(target.read_text())
    assert again["current-context"] == "ha-cp2"
    assert next(c for c in again["clusters"] if c["name"] == "ha")["cluster"]["server"] == (
        "https://192.168.250.240:6443"
    )

    # the VIP leaves the cluster file: its entries go, the first control plane is current again
    again["current-context"] = "ha"
    target.write_text(yaml.safe_dump(again, sort_keys=False))
    assert pki.admin_kubeconfig(cluster(None), tmp_path / "pki", target)
    back = yaml.safe_load(target.read_text())
    assert back["current-context"] == "ha-cp1" and back["users"] == old["users"]
    assert [c["name"] for c in back["clusters"]] == ["ha-cp1", "ha-cp2", "ha-cp3"]


# -- the lab -----------------------------------------------------------------------------------------


def test_the_lab_picks_a_free_vip_on_its_bridge() -> None:
    from provisioner.lab.manager import pick_vip

    assert pick_vip("192.168.241.0/24", {"192.168.241.11", "192.168.241.12"}) == "192.168.241.250"
    assert pick_vip("192.168.241.0/24", {"192.168.241.250"}) == "192.168.241.249"
    assert pick_vip("10.0.0.0/27", {"10.0.0.26"}) == "10.0.0.25"


def test_an_ha_lab_writes_a_vip_into_its_cluster_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from provisioner.lab import manager

    lab = manager.Lab("lab", tmp_path / "state", root=tmp_path / "root")
    lab.cluster.ensure()
    nodes = [manager.LabNode(n, f"192.168.249.{manager.node_host_number(n)}", r) for n, r in manager.node_layout(4, 3)]
    st = manager.LabState("lab", "192.168.249.0/24", "pvl-lab", nodes)
    lab.write_cluster_file(st, "http://192.168.249.1:8088")
    written = spec.load(lab.cluster_file)
    assert written.api_vip is not None and written.api_vip.address == "192.168.249.250"
    assert list(yaml.safe_load(lab.cluster_file.read_text()))[-2:] == ["api_vip", "nodes"]

    st.nodes = [n for n in nodes if n.name in ("cp1", "w1")]
    lab.write_cluster_file(st, "http://192.168.249.1:8088")
    assert spec.load(lab.cluster_file).api_vip is None  # one control plane: no VIP
