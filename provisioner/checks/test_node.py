"""What a healthy node of a provisioner cluster looks like, by kubespray group.

The node's groups, the other members of each group and the cluster-wide values come from
the cluster's inventory (see conftest.py); a check that does not apply to a node's groups
is skipped there.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import TYPE_CHECKING, Any

from cryptography import x509

if TYPE_CHECKING:
    from provisioner.checks.conftest import Node

PKI = "/etc/kubernetes/pki"

# group -> what every member of it runs, listens on, holds
SERVICES = {
    "k8s_cluster": ["containerd", "kubelet", "kube-proxy", "api-lb", "bird"],
    "etcd": ["etcd"],
    "kube_control_plane": ["kube-apiserver", "kube-controller-manager", "kube-scheduler"],
}
PORTS = {
    "k8s_cluster": ["tcp://10250", "tcp://10256", "tcp://127.0.0.1:{lb}"],
    "etcd": ["tcp://{ip}:2379", "tcp://{ip}:2380"],
    # hardening.local_bind: the controller manager and the scheduler listen on 127.0.0.1 only
    "kube_control_plane": ["tcp://6443", "tcp://{local}10257", "tcp://{local}10259"],
}
# certificate -> its CA
CERTS = {
    "k8s_cluster": [("kubelet.crt", "ca.crt")],
    "etcd": [("etcd/server.crt", "etcd/ca.crt"), ("etcd/peer.crt", "etcd/ca.crt")],
    "kube_control_plane": [
        ("apiserver.crt", "ca.crt"),
        ("apiserver-kubelet-client.crt", "ca.crt"),
        ("apiserver-etcd-client.crt", "etcd/ca.crt"),
        ("front-proxy-client.crt", "front-proxy-ca.crt"),
    ],
}
ETCDCTL = (
    f"/usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 --cacert={PKI}/etcd/ca.crt "
    f"--cert={PKI}/etcd/healthcheck-client.crt --key={PKI}/etcd/healthcheck-client.key"
)


BGP_PORT = "tcp://0.0.0.0:179"  # BIRD listens only once it has a BGP peer


def _for(table: dict[str, list[Any]], node: Node) -> list[Any]:
    return [x for group, items in table.items() if group in node.groups for x in items]


def _bgp_peers(node: Node, hostvars: dict[str, Any], groups: dict[str, list[str]]) -> int:
    """As the network role's bird.conf: a route reflector's client peers with the reflectors,
    every other Kubernetes node with all the others."""
    rrs = hostvars["bgp_route_reflectors"]
    if rrs and node.name not in rrs:
        return len(rrs)
    # testinfra's groups can list a host twice (calico_rr and kube_control_plane are both
    # children of k8s_cluster); Ansible's are unique
    return len(set(groups["k8s_cluster"]) - {node.name})


def test_services_active_and_enabled(host: Any, node: Node) -> None:
    bad = []
    for name in _for(SERVICES, node):
        svc = host.service(name)
        running, enabled = svc.is_running, svc.is_enabled  # each asked once: a command on the node
        if not (running and enabled):
            bad.append(f"{name} (running={running}, enabled={enabled})")
    assert not bad, "services not active and enabled: " + ", ".join(bad)


def test_ports_listening(host: Any, node: Node, hostvars: dict[str, Any], groups: dict[str, list[str]]) -> None:
    missing = []
    bgp = [BGP_PORT] if "k8s_cluster" in node.groups and _bgp_peers(node, hostvars, groups) else []
    for spec in _for(PORTS, node) + bgp:
        local = "127.0.0.1:" if hostvars.get("kube_components_local_bind") else ""
        url = spec.format(ip=node.address, lb=hostvars["api_lb_port"], local=local)
        if not host.socket(url).is_listening:
            missing.append(url)
    assert not missing, "not listening: " + ", ".join(missing)


def test_certificates_valid_and_match_their_ca(host: Any, node: Node) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    problems = []
    for cert_path, ca_path in _for(CERTS, node):
        cert = x509.load_pem_x509_certificate(host.file(f"{PKI}/{cert_path}").content)
        ca = x509.load_pem_x509_certificate(host.file(f"{PKI}/{ca_path}").content)
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, Exception) as exc:  # InvalidSignature has no message
            problems.append(f"{cert_path} is not signed by {ca_path} ({type(exc).__name__})")
        if cert.not_valid_after_utc < soon:
            problems.append(f"{cert_path} expires {cert.not_valid_after_utc:%Y-%m-%d} (within 30 days)")
        if cert.not_valid_before_utc > dt.datetime.now(dt.UTC):
            problems.append(f"{cert_path} is not valid yet")
    assert not problems, "; ".join(problems)


def test_key_files_are_private(host: Any) -> None:
    keys = host.run(f"find {PKI} /etc/kubernetes -maxdepth 2 \\( -name '*.key' -o -name '*.kubeconfig' \\) -type f")
    loose = []
    for path in keys.stdout.split():
        mode = host.file(path).mode
        if mode & 0o077:
            loose.append(f"{path} ({oct(mode)})")
    assert keys.stdout.strip(), "no key files found"
    assert not loose, "readable by others, should be 0600: " + ", ".join(loose)


def test_etcd_healthy_with_every_member(host: Any, node: Node, groups: dict[str, list[str]]) -> None:
    node.require("etcd")
    health = host.run(f"{ETCDCTL} endpoint health")
    assert health.rc == 0, f"etcd endpoint health: {health.stderr or health.stdout}"
    members = host.run(f"{ETCDCTL} member list -w json")
    assert members.rc == 0, members.stderr
    names = sorted(m.get("name", "") for m in json.loads(members.stdout)["members"])
    expected = sorted(groups["etcd"])
    assert names == expected, f"etcd members {names}, expected {expected}"


def test_bird_sessions_established(
    host: Any, node: Node, hostvars: dict[str, Any], groups: dict[str, list[str]]
) -> None:
    node.require("k8s_cluster")
    out = host.run("birdc show protocols")
    assert out.rc == 0, f"birdc: {out.stderr or out.stdout}"
    sessions = [line.split() for line in out.stdout.splitlines() if re.match(r"^peer_\S+\s+BGP", line)]
    expected = _bgp_peers(node, hostvars, groups)
    assert len(sessions) == expected, f"{len(sessions)} BGP peers configured, expected {expected}"
    down = [s[0] for s in sessions if "Established" not in s]
    assert not down, "BGP sessions not Established: " + ", ".join(down)


def test_pod_tunnel(host: Any, node: Node, hostvars: dict[str, Any], groups: dict[str, list[str]]) -> None:
    """network.encapsulation vxlan or ipip: the tunnel device is up with the pod MTU and routes every
    other node's pod block (docs/network.md); none: there is no tunnel device."""
    node.require("k8s_cluster")
    device = hostvars.get("network_tunnel_device") or ""
    if not device:
        for other in hostvars.get("network_tunnel_devices", []):
            assert not host.interface(other).exists, f"{other} exists, and network.encapsulation is none"
        return
    link = json.loads(host.check_output(f"ip -j -d link show dev {device}"))[0]
    assert "UP" in link["flags"], f"{device} is not up: {link['flags']}"
    assert link["mtu"] == hostvars["network_pod_mtu"], f"{device} MTU {link['mtu']}, expected the pod MTU"
    routes = json.loads(host.check_output(f"ip -j -4 route show dev {device}"))
    peers = len([h for h in groups.get("k8s_cluster", []) if h != node.name])
    assert len(routes) == peers, f"{device} routes {len(routes)} pod blocks, expected one per other node ({peers})"


def test_node_ready(host: Any, node: Node) -> None:
    node.require("k8s_cluster")
    out = host.run(
        "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/kubelet.kubeconfig get node %s -o json", node.name
    )
    assert out.rc == 0, f"kubectl get node: {out.stderr}"
    conditions = {c["type"]: c["status"] for c in json.loads(out.stdout)["status"]["conditions"]}
    assert conditions.get("Ready") == "True", f"node conditions: {conditions}"


DNS_QUERY = r"""
import socket, struct, sys
name, server = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(q, (server, 53)); r = s.recv(512)
an = struct.unpack(">H", r[6:8])[0]; rcode = r[3] & 15
print(rcode, an, socket.inet_ntoa(r[-4:]) if an else "")
"""


def test_coredns_answers(host: Any, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("k8s_cluster")
    name = f"kubernetes.default.svc.{hostvars['cluster_domain']}"
    out = host.run("python3 -c %s %s %s", DNS_QUERY, name, hostvars["cluster_dns_ip"])
    assert out.rc == 0, f"no DNS answer from {hostvars['cluster_dns_ip']}: {out.stderr.strip()[-200:]}"
    rcode, answers, address = [*out.stdout.split(), "", "", ""][:3]
    assert rcode == "0" and int(answers) >= 1, f"DNS rcode {rcode}, {answers} answers"
    expected = hostvars["kube_service_ip"]
    assert address == expected, f"{name} resolved to {address}, expected {expected}"
