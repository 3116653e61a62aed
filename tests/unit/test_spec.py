"""Unit tests of the cluster file (provisioner.spec): every validation rule with a good and a
bad case, each error line naming the field path and saying what to do; every problem
reported at once; the samples load. Nothing here touches a node."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from provisioner import spec
from provisioner.versions import SUPPORTED_KUBERNETES

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "inventory" / "sample").glob("*.yaml"))

GOOD: dict[str, Any] = {
    "name": "demo",
    "kubernetes": {"version": SUPPORTED_KUBERNETES[-1]},
    "network": {"pod_subnet": "10.233.64.0/18", "service_subnet": "10.233.0.0/18", "node_prefix": 24},
    "nodes": [
        {"name": "cp1", "address": "192.168.250.11", "roles": ["etcd", "control-plane"]},
        {"name": "w1", "address": "192.168.250.21", "roles": ["worker"]},
    ],
}


def _nodes(etcd: int, workers: int = 0) -> list[dict[str, Any]]:
    nodes = [
        {"name": f"cp{i}", "address": f"192.168.250.{10 + i}", "roles": ["etcd", "control-plane"]}
        for i in range(1, etcd + 1)
    ]
    nodes += [
        {"name": f"w{i}", "address": f"192.168.250.{100 + i}", "roles": ["worker"]} for i in range(1, workers + 1)
    ]
    return nodes


def changed(changes: dict[str, Any]) -> dict[str, Any]:
    """GOOD with some values replaced, by dotted path (``nodes.1.name``, ``network.pod_subnet``)."""
    data = copy.deepcopy(GOOD)
    for path, value in changes.items():
        target: Any = data
        keys = path.split(".")
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target.setdefault(k, {})
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return data


def problems(changes: dict[str, Any] | None = None) -> list[str]:
    try:
        spec.from_dict(changed(changes or {}))
    except spec.SpecError as exc:
        return exc.problems
    return []


def assert_problem(lines: list[str], field: str, says: str) -> None:
    """One of ``lines`` is about ``field`` (the path, then a colon) and contains ``says``."""
    hits = [line for line in lines if line.startswith(field + ":")]
    assert hits, f"no problem names {field}: {lines}"
    assert any(says in h for h in hits), f"{field}: expected {says!r} in {hits}"


# (id, a good variant, a bad variant, the field path named, what the line says to do)
RULES: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    ("cluster name is DNS-1123", {"name": "prod-1"}, {"name": "Prod_1"}, "name", "lowercase letters, digits, '-'"),
    (
        "node name is DNS-1123",
        {"nodes.1.name": "worker-01"},
        {"nodes.1.name": "Worker_01"},
        "nodes[1].name",
        "DNS-1123",
    ),
    ("node name starts alphanumeric", {"nodes.1.name": "w-1"}, {"nodes.1.name": "-w1"}, "nodes[1].name", "DNS-1123"),
    ("node name ends alphanumeric", {"nodes.1.name": "w1a"}, {"nodes.1.name": "w1-"}, "nodes[1].name", "DNS-1123"),
    ("node name <= 63", {"nodes.1.name": "a" * 63}, {"nodes.1.name": "a" * 64}, "nodes[1].name", "DNS-1123"),
    ("node names unique", {"nodes.1.name": "w2"}, {"nodes.1.name": "cp1"}, "nodes[1].name", "names must be unique"),
    (
        "address is an IP",
        {"nodes.1.address": "10.1.2.3"},
        {"nodes.1.address": "not-an-ip"},
        "nodes[1].address",
        "give the node's IPv4 address",
    ),
    (
        "address octets valid",
        {"nodes.1.address": "192.168.250.255"},
        {"nodes.1.address": "192.168.250.300"},
        "nodes[1].address",
        "give the node's IPv4 address",
    ),
    (
        "address has four octets",
        {"nodes.1.address": "10.0.0.1"},
        {"nodes.1.address": "10.0.0"},
        "nodes[1].address",
        "give the node's IPv4 address",
    ),
    (
        "address is IPv4",
        {"nodes.1.address": "192.168.250.99"},
        {"nodes.1.address": "fd00::1"},
        "nodes[1].address",
        "only IPv4 node addresses",
    ),
    (
        "addresses unique",
        {"nodes.1.address": "192.168.250.12"},
        {"nodes.1.address": "192.168.250.11"},
        "nodes[1].address",
        "already used by nodes[0]",
    ),
    ("a control plane", {}, {"nodes.0.roles": ["etcd", "worker"]}, "nodes", "give it to at least one node"),
    ("an etcd member", {}, {"nodes.0.roles": ["control-plane"]}, "nodes", "give it to 1, 3 or 5 nodes"),
    ("roles not empty", {"nodes.1.roles": ["worker"]}, {"nodes.1.roles": []}, "nodes[1].roles", "give at least one"),
    ("roles listed once", {}, {"nodes.1.roles": ["worker", "worker"]}, "nodes[1].roles", "a role is listed twice"),
    (
        "roles are known",
        {"nodes.1.roles": ["worker", "control-plane"]},
        {"nodes.1.roles": ["master"]},
        "nodes[1].roles[0]",
        "input should be 'etcd', 'control-plane' or 'worker'",
    ),
    ("at least one node", {}, {"nodes": []}, "nodes", "list at least one"),
    (
        "pod_subnet is a CIDR",
        {"network.pod_subnet": "10.42.0.0/16"},
        {"network.pod_subnet": "banana"},
        "network.pod_subnet",
        "write it as 10.233.64.0/18",
    ),
    (
        "pod_subnet has no host bits",
        {"network.pod_subnet": "10.233.64.0/18"},
        {"network.pod_subnet": "10.233.64.1/18"},
        "network.pod_subnet",
        "not a valid CIDR",
    ),
    (
        "pod_subnet is IPv4",
        {},
        {"network.pod_subnet": "fd00:10::/48"},
        "network.pod_subnet",
        "only IPv4 networks",
    ),
    (
        "service_subnet is a CIDR",
        {"network.service_subnet": "10.96.0.0/16"},
        {"network.service_subnet": "10.96.0.0/33"},
        "network.service_subnet",
        "write it as",
    ),
    (
        "subnets do not overlap",
        {"network.service_subnet": "10.233.0.0/24"},
        {"network.service_subnet": "10.233.64.0/24"},
        "network.service_subnet",
        "choose ranges that do not overlap",
    ),
    (
        "pod_subnet holds no node",
        {"network.pod_subnet": "10.0.0.0/16"},
        {"network.pod_subnet": "192.168.0.0/16"},
        "nodes[0].address",
        "lies inside network.pod_subnet 192.168.0.0/16; move one of them",
    ),
    (
        "service_subnet holds no node",
        {"network.service_subnet": "192.168.251.0/24"},
        {"network.service_subnet": "192.168.250.0/24"},
        "nodes[1].address",
        "lies inside network.service_subnet 192.168.250.0/24; move one of them",
    ),
    (
        "service_subnet not tiny",
        {"network.service_subnet": "10.96.0.0/28"},
        {"network.service_subnet": "10.96.0.0/29"},
        "network.service_subnet",
        "use a /28 or larger",
    ),
    (
        "node_prefix room for every node",
        {"network.pod_subnet": "10.233.64.0/24", "network.node_prefix": 25},
        {"network.pod_subnet": "10.233.64.0/24", "network.node_prefix": 24},
        "network.node_prefix",
        "give 1 blocks for 2 nodes; raise node_prefix or widen pod_subnet",
    ),
    (
        "node_prefix not wider than pod_subnet",
        {"network.node_prefix": 19},
        {"network.node_prefix": 16},
        "network.node_prefix",
        "must be between the pod_subnet prefix /18 and 30",
    ),
    (
        "node_prefix at most 30",
        {"network.node_prefix": 30},
        {"network.node_prefix": 31},
        "network.node_prefix",
        "must be between the pod_subnet prefix /18 and 30",
    ),
    (
        "node_prefix is a number",
        {"network.node_prefix": 26},
        {"network.node_prefix": "big"},
        "network.node_prefix",
        "(got 'big')",
    ),
    (
        "kubernetes version supported",
        {"kubernetes.version": SUPPORTED_KUBERNETES[0]},
        {"kubernetes.version": "v1.20.0"},
        "kubernetes.version",
        "use one of " + ", ".join(SUPPORTED_KUBERNETES),
    ),
    (
        "proxy mode known",
        {"kubernetes.proxy_mode": "nftables"},
        {"kubernetes.proxy_mode": "userspace"},
        "kubernetes.proxy_mode",
        "input should be 'iptables', 'ipvs' or 'nftables'",
    ),
    (
        "cluster_domain is a DNS name",
        {"kubernetes.cluster_domain": "k8s.example.com"},
        {"kubernetes.cluster_domain": "Cluster_Local"},
        "kubernetes.cluster_domain",
        "must be a DNS name such as cluster.local",
    ),
    (
        "route reflectors are nodes",
        {"network.route_reflectors": ["cp1", "w1"]},
        {"network.route_reflectors": ["cp1", "cp9"]},
        "network.route_reflectors[1]",
        "'cp9' is not a node in `nodes`",
    ),
    (
        "encapsulation known",
        {"network.encapsulation": "vxlan"},
        {"network.encapsulation": "gre"},
        "network.encapsulation",
        "input should be 'none', 'vxlan' or 'ipip'",
    ),
    (
        "encapsulation mode known",
        {"network.encapsulation": "ipip", "network.encapsulation_mode": "cross-subnet"},
        {"network.encapsulation": "ipip", "network.encapsulation_mode": "sometimes"},
        "network.encapsulation_mode",
        "input should be 'always' or 'cross-subnet'",
    ),
    (
        "cross-subnet needs an encapsulation",
        {"network.encapsulation": "vxlan", "network.encapsulation_mode": "cross-subnet"},
        {"network.encapsulation": "none", "network.encapsulation_mode": "cross-subnet"},
        "network.encapsulation_mode",
        "set network.encapsulation to vxlan (or ipip)",
    ),
    (
        "mtu leaves the pods at least 1280 with vxlan",
        {"network.encapsulation": "vxlan", "network.mtu": 1330},
        {"network.encapsulation": "vxlan", "network.mtu": 1329},
        "network.mtu",
        "1329 is too small: the pods would get 1279 minus 50 for vxlan"[:44],
    ),
    (
        "mtu leaves the pods at least 1280 with ipip",
        {"network.encapsulation": "ipip", "network.mtu": 1300},
        {"network.encapsulation": "ipip", "network.mtu": 1299},
        "network.mtu",
        "at least 1300",
    ),
    (
        "mtu at most a jumbo frame",
        {"network.mtu": 9000},
        {"network.mtu": 65000},
        "network.mtu",
        "above 9216",
    ),
    (
        "vxlan port is an unprivileged port",
        {"network.vxlan_port": 8472},
        {"network.vxlan_port": 80},
        "network.vxlan_port",
        "between 1024 and 65535",
    ),
    (
        "vxlan port outside the NodePort range",
        {"network.vxlan_port": 4789},
        {"network.vxlan_port": 30001},
        "network.vxlan_port",
        "NodePort range",
    ),
    (
        "vxlan vni is 24 bits",
        {"network.vxlan_vni": 16777215},
        {"network.vxlan_vni": 16777216},
        "network.vxlan_vni",
        "between 1 and 16777215",
    ),
    (
        "bgp_asn in range",
        {"network.bgp_asn": 4294967295},
        {"network.bgp_asn": 0},
        "network.bgp_asn",
        "must be between 1 and 4294967295",
    ),
    (
        "files_repo is a URL",
        {"artifacts.files_repo": "file:///srv/mirror"},
        {"artifacts.files_repo": "ftp://mirror/k8s"},
        "artifacts.files_repo",
        "must be an http://, https:// or file:// URL",
    ),
    (
        "label value syntax",
        {"nodes.1.labels": {"disk": "ssd", "empty": ""}},
        {"nodes.1.labels": {"disk": "not ok!"}},
        "nodes[1].labels.disk",
        "must be at most 63 alphanumerics",
    ),
    (
        "label value length",
        {"nodes.1.labels": {"disk": "a" * 63}},
        {"nodes.1.labels": {"disk": "a" * 64}},
        "nodes[1].labels.disk",
        "must be at most 63",
    ),
    (
        "label key syntax",
        {"nodes.1.labels": {"rack_2.zone-a": "x"}},
        {"nodes.1.labels": {"-rack": "x"}},
        "nodes[1].labels.-rack",
        "starting and ending alphanumeric",
    ),
    (
        "label key prefix",
        {"nodes.1.labels": {"topology.kubernetes.io/zone": "rack2"}},
        {"nodes.1.labels": {"Bad_Prefix!/zone": "rack2"}},
        "nodes[1].labels.Bad_Prefix!/zone",
        "the key prefix must be a DNS subdomain, as in example.com/disk",
    ),
    (
        "label value is a string",
        {"nodes.1.labels": {"count": "1"}},
        {"nodes.1.labels": {"count": 1}},
        "nodes[1].labels.count",
        "valid string",
    ),
    (
        "taint has an effect",
        {"nodes.1.taints": ["dedicated=batch:NoSchedule"]},
        {"nodes.1.taints": ["dedicated=batch"]},
        "nodes[1].taints[0]",
        "needs an effect: key=value:NoSchedule",
    ),
    (
        "taint effect known",
        {"nodes.1.taints": ["gpu:NoExecute", "spot=yes:PreferNoSchedule"]},
        {"nodes.1.taints": ["gpu:NoExecute", "a=b:Sometimes"]},
        "nodes[1].taints[1]",
        "must be one of NoSchedule, PreferNoSchedule, NoExecute",
    ),
    (
        "taint key syntax",
        {"nodes.1.taints": ["example.com/gpu=true:NoSchedule"]},
        {"nodes.1.taints": ["bad key=x:NoSchedule"]},
        "nodes[1].taints[0]",
        "the key must be 1-63 alphanumerics",
    ),
    ("name is a string", {}, {"name": None}, "name", "valid string"),
]


@pytest.mark.parametrize(("good", "bad", "field", "says"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rule(good: dict[str, Any], bad: dict[str, Any], field: str, says: str) -> None:
    assert problems(good) == [], "the good variant must be valid"
    assert_problem(problems(bad), field, says)


def test_the_base_file_is_valid() -> None:
    assert problems() == []


@pytest.mark.parametrize("count", [1, 3, 5, 7])
def test_odd_etcd_counts_are_fine(count: int) -> None:
    assert problems({"nodes": _nodes(count, workers=1)}) == []


@pytest.mark.parametrize("count", [2, 4, 6, 8, 9])
def test_even_or_too_many_etcd_members_are_refused(count: int) -> None:
    assert_problem(
        problems({"nodes": _nodes(count)}), "nodes", f"{count} etcd members; use an odd count (1, 3, 5 or 7)"
    )


def test_duplicate_names_name_every_holder() -> None:
    lines = problems({"nodes.1.name": "cp1"})
    assert_problem(lines, "nodes[0].name", "'cp1' is used by more than one node")
    assert_problem(lines, "nodes[1].name", "'cp1' is used by more than one node")


def test_a_missing_required_key_says_add_it() -> None:
    data = copy.deepcopy(GOOD)
    del data["nodes"][1]["address"]
    del data["name"]
    with pytest.raises(spec.SpecError) as caught:
        spec.from_dict(data)
    assert "name: required; add it" in caught.value.problems
    assert "nodes[1].address: required; add it" in caught.value.problems


@pytest.mark.parametrize(
    ("where", "key", "field", "hint"),
    [
        ("", "netwrok", "netwrok", "did you mean `network`?"),
        ("network", "pod_subnett", "network.pod_subnett", "did you mean `pod_subnet`?"),
        ("kubernetes", "verison", "kubernetes.verison", "did you mean `version`?"),
        ("nodes.0", "adress", "nodes[0].adress", "did you mean `address`?"),
        ("ssh", "private_keys", "ssh.private_keys", "did you mean `private_key`?"),
    ],
)
def test_unknown_keys_get_a_did_you_mean(where: str, key: str, field: str, hint: str) -> None:
    data = copy.deepcopy(GOOD)
    target: Any = data
    for k in where.split(".") if where else []:
        target = target[int(k)] if k.isdigit() else target.setdefault(k, {})
    target[key] = "x"
    with pytest.raises(spec.SpecError) as caught:
        spec.from_dict(data)
    assert_problem(caught.value.problems, field, f"unknown key; {hint}")


def test_an_unknown_key_far_from_any_lists_the_known_ones() -> None:
    data = changed({"api_lb.zzz": 1})
    with pytest.raises(spec.SpecError) as caught:
        spec.from_dict(data)
    assert_problem(caught.value.problems, "api_lb.zzz", "unknown key; known keys: kind, port")


BROKEN = """\
name: broken
kubernetes: {version: v1.0.0}
netwrok: {pod_subnet: 10.0.0.0/16}
network:
  service_subnet: 10.233.64.0/24
  encapsulation: none
  encapsulation_mode: cross-subnet
  route_reflectors: [nobody]
nodes:
  - {name: cp1, address: 192.168.250.11, roles: [etcd, control-plane]}
  - {name: cp1, address: 192.168.250.11, roles: [etcd], taints: [x]}
  - {name: w_1, address: 192.168.250.300, roles: [worker], labels: {disk: "no way"}}
"""


def test_every_problem_at_once_one_line_each() -> None:
    """Structural problems (an unknown key) and rule problems come in one report."""
    with pytest.raises(spec.SpecError) as caught:
        spec.parse(BROKEN, source="broken.yaml")
    lines = caught.value.problems
    expected = {
        "netwrok": "did you mean `network`?",
        "kubernetes.version": "is not supported",
        "network.service_subnet": "overlaps network.pod_subnet",
        "network.encapsulation_mode": "cross-subnet encapsulates",
        "network.route_reflectors[0]": "'nobody' is not a node",
        "nodes[0].name": "more than one node",
        "nodes[1].name": "more than one node",
        "nodes[1].address": "already used by nodes[0]",
        "nodes[1].taints[0]": "needs an effect",
        "nodes[2].name": "DNS-1123",
        "nodes[2].address": "not an IP address",
        "nodes[2].labels.disk": "must be at most 63",
        "nodes": "2 etcd members; use an odd count",
    }
    for field, says in expected.items():
        assert_problem(lines, field, says)
    assert len(lines) == len(expected), lines
    rendered = caught.value.lines()
    assert all(line.startswith("broken.yaml: ") and "\n" not in line for line in rendered)


def test_several_structural_problems_come_together() -> None:
    data = changed({"netwrok": {}, "kubernetes.proxy_mode": "userspace", "nodes.1.roles": ["master"]})
    del data["nodes"][0]["address"]
    with pytest.raises(spec.SpecError) as caught:
        spec.from_dict(data)
    fields = {line.split(":")[0] for line in caught.value.problems}
    assert fields == {"netwrok", "kubernetes.proxy_mode", "nodes[1].roles[0]", "nodes[0].address"}


def test_bad_yaml_a_non_mapping_and_a_missing_file_are_one_line() -> None:
    with pytest.raises(spec.SpecError, match=r"line 3: not valid YAML"):
        spec.parse("name: x\nnodes: [\n")
    with pytest.raises(spec.SpecError, match="must be a mapping with at least `name` and `nodes`"):
        spec.parse("- just\n- a list\n")
    with pytest.raises(spec.SpecError, match="must be a mapping"):
        spec.parse("")
    with pytest.raises(spec.SpecError) as caught:
        spec.load("/nonexistent/cluster.yaml")
    assert caught.value.lines() == [
        "/nonexistent/cluster.yaml: cannot read the cluster file: No such file or directory"
    ]


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_samples_load_cleanly(sample: Path) -> None:
    s = spec.load(sample)
    assert s.nodes and s.control_planes and s.etcd_members
    assert spec.check(s) == []


def test_the_samples_are_all_there() -> None:
    assert {p.stem for p in SAMPLES} >= {"single-node", "ha", "large"}


def test_defaults_and_views() -> None:
    s = spec.from_dict(copy.deepcopy(GOOD))
    assert s.kubernetes.version == SUPPORTED_KUBERNETES[-1]
    assert s.network.encapsulation == "none" and s.ssh.port == 22
    assert [n.name for n in s.control_planes] == ["cp1"] and [n.name for n in s.workers] == ["w1"]
    assert s.node("w1").address == "192.168.250.21"
    with pytest.raises(KeyError):
        s.node("nope")


def test_a_route_reflector_listed_twice_is_named() -> None:
    data = {
        "name": "rr",
        "network": {"route_reflectors": ["cp1", "cp1"]},
        "nodes": [{"name": "cp1", "address": "192.0.2.11", "roles": ["etcd", "control-plane"]}],
    }
    with pytest.raises(spec.SpecError) as caught:
        spec.from_dict(data)
    assert caught.value.problems == ["network.route_reflectors[1]: 'cp1' is listed twice; list each reflector once"]
