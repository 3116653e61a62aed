"""Unit tests of the cluster file: every validation rule, good and bad, each error naming
the field path and what to do; all problems reported at once; the samples load."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from provisioner import spec

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "inventory" / "sample").glob("*.yaml"))

GOOD: dict[str, Any] = {
    "name": "demo",
    "kubernetes": {"version": "v1.37.2"},
    "network": {"pod_subnet": "10.233.64.0/18", "service_subnet": "10.233.0.0/18", "node_prefix": 24},
    "nodes": [
        {"name": "cp1", "address": "192.168.250.11", "roles": ["etcd", "control-plane"]},
        {"name": "w1", "address": "192.168.250.21", "roles": ["worker"]},
    ],
}


def problems(change: dict[str, Any] | None = None, **top: Any) -> list[str]:
    data = copy.deepcopy(GOOD)
    data.update(top)
    for path, value in (change or {}).items():
        target = data
        keys = path.split(".")
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target.setdefault(k, {})
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    try:
        spec.from_dict(data)
    except spec.SpecError as exc:
        return exc.problems
    return []


def one(lines: list[str], startswith: str, contains: str) -> None:
    hits = [line for line in lines if line.startswith(startswith)]
    assert hits, f"no problem for {startswith}: {lines}"
    assert any(contains in h for h in hits), hits


def test_the_good_file_is_valid() -> None:
    assert problems() == []


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_samples_load(sample: Path) -> None:
    assert spec.load(sample).nodes


@pytest.mark.parametrize("name", ["Bad_Name", "-w1", "w1-", "a" * 64])
def test_node_names_are_dns1123(name: str) -> None:
    one(problems({"nodes.1.name": name}), "nodes[1].name", "DNS-1123")


def test_node_names_are_unique() -> None:
    one(problems({"nodes.1.name": "cp1"}), "nodes[1].name", "must be unique")


@pytest.mark.parametrize("address", ["10.0.0", "not-an-ip", "192.168.250.300"])
def test_addresses_are_valid(address: str) -> None:
    one(problems({"nodes.1.address": address}), "nodes[1].address", "give the node's IPv4 address")


def test_addresses_are_unique() -> None:
    one(problems({"nodes.1.address": "192.168.250.11"}), "nodes[1].address", "already used by nodes[0]")


def test_at_least_one_control_plane() -> None:
    one(problems({"nodes.0.roles": ["etcd", "worker"]}), "nodes:", "control-plane")


@pytest.mark.parametrize("count", [2, 4])
def test_etcd_count_is_odd(count: int) -> None:
    nodes = [
        {"name": f"cp{i}", "address": f"192.168.250.{10 + i}", "roles": ["etcd", "control-plane"]}
        for i in range(1, count + 1)
    ]
    one(problems(nodes=nodes), "nodes:", "odd count")


@pytest.mark.parametrize("count", [1, 3, 5])
def test_odd_etcd_counts_are_fine(count: int) -> None:
    nodes = [
        {"name": f"cp{i}", "address": f"192.168.250.{10 + i}", "roles": ["etcd", "control-plane"]}
        for i in range(1, count + 1)
    ]
    assert problems(nodes=nodes) == []


def test_no_etcd_member() -> None:
    one(problems({"nodes.0.roles": ["control-plane"]}), "nodes:", "role etcd")


def test_cidrs_are_valid() -> None:
    one(problems({"network.pod_subnet": "10.233.64.1/18"}), "network.pod_subnet", "not a valid CIDR")
    one(problems({"network.service_subnet": "banana"}), "network.service_subnet", "not a valid CIDR")


def test_pod_and_service_networks_do_not_overlap() -> None:
    one(problems({"network.service_subnet": "10.233.64.0/24"}), "network.service_subnet", "overlaps")


def test_networks_do_not_hold_node_addresses() -> None:
    lines = problems({"network.pod_subnet": "192.168.0.0/16"})
    one(lines, "nodes[0].address", "inside network.pod_subnet")


def test_node_prefix_leaves_room_for_every_node() -> None:
    lines = problems({"network.pod_subnet": "10.233.64.0/24", "network.node_prefix": 25})
    assert lines == []
    nodes = GOOD["nodes"] + [{"name": "w2", "address": "192.168.250.22", "roles": ["worker"]}]
    one(
        problems({"network.pod_subnet": "10.233.64.0/24", "network.node_prefix": 25}, nodes=nodes),
        "network.node_prefix",
        "raise node_prefix or widen pod_subnet",
    )
    one(problems({"network.node_prefix": 16}), "network.node_prefix", "must be between")


def test_kubernetes_version_is_supported() -> None:
    one(problems({"kubernetes.version": "v1.20.0"}), "kubernetes.version", "use one of v1.36.3, v1.37.2")


def test_route_reflectors_are_nodes() -> None:
    assert problems({"network.route_reflectors": ["cp1"]}) == []
    one(problems({"network.route_reflectors": ["cp9"]}), "network.route_reflectors[0]", "not a node")


def test_ipip_is_refused_until_it_exists() -> None:
    one(problems({"network.encapsulation": "ipip"}), "network.encapsulation", "not supported yet")


def test_labels_follow_kubernetes_syntax() -> None:
    assert problems({"nodes.1.labels": {"example.com/disk": "ssd", "zone": "a"}}) == []
    one(problems({"nodes.1.labels": {"disk": "not ok!"}}), "nodes[1].labels.disk", "value")
    one(problems({"nodes.1.labels": {"Bad_Prefix!/x": "y"}}), "nodes[1].labels", "prefix")


def test_taints_follow_kubernetes_syntax() -> None:
    assert problems({"nodes.1.taints": ["dedicated=batch:NoSchedule", "gpu:NoExecute"]}) == []
    one(problems({"nodes.1.taints": ["dedicated=batch"]}), "nodes[1].taints[0]", "needs an effect")
    one(problems({"nodes.1.taints": ["a=b:Sometimes"]}), "nodes[1].taints[0]", "must be one of")


def test_unknown_keys_get_a_did_you_mean() -> None:
    one(problems(netwrok={}), "netwrok", "did you mean `network`?")
    one(problems({"network.pod_subnett": "10.0.0.0/16"}), "network.pod_subnett", "did you mean `pod_subnet`?")
    one(problems({"nodes.0.adress": "1.2.3.4"}), "nodes[0].adress", "did you mean `address`?")


def test_every_problem_at_once_one_line_each() -> None:
    data = copy.deepcopy(GOOD)
    data["nodes"][1]["name"] = "cp1"
    data["nodes"][1]["taints"] = ["x"]
    data["network"]["route_reflectors"] = ["nobody"]
    data["kubernetes"]["version"] = "v1.0.0"
    with pytest.raises(spec.SpecError) as caught:
        spec.from_dict(data, source="c.yaml")
    fields = [line.split(":")[0] for line in caught.value.problems]
    assert {"kubernetes.version", "nodes[1].name", "nodes[1].taints[0]", "network.route_reflectors[0]"} <= set(fields)
    assert all("\n" not in line for line in caught.value.lines())
    assert all(line.startswith("c.yaml: ") for line in caught.value.lines())


def test_bad_yaml_and_missing_file_are_one_line() -> None:
    with pytest.raises(spec.SpecError, match="line 3: not valid YAML"):
        spec.parse("name: x\nnodes: [\n")
    with pytest.raises(spec.SpecError, match="cannot read the cluster file"):
        spec.load("/nonexistent/cluster.yaml")
