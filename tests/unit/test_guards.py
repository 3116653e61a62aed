"""Unit tests of the guards: facts gathered from the nodes -> what a command may do.
Facts are built here as data (the playbook that gathers them runs in the e2e tests)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from provisioner import guards, pki, spec
from provisioner.facts import ClusterFacts, K8sNode, NodeFacts, ca_fingerprint, from_results

SAMPLES = Path(__file__).resolve().parents[2] / "inventory" / "sample"
SERVICE_IP = "10.233.0.1"


@pytest.fixture
def ha() -> spec.ClusterSpec:
    return spec.load(SAMPLES / "ha.yaml")


def running(s: spec.ClusterSpec, version: str = "v1.37.2", ca: str | None = "sha256:aa", only: list[str] | None = None):
    """Facts of a cluster where ``only`` (default: every node) runs ``version``."""
    names = only if only is not None else [n.name for n in s.nodes]
    nodes = {}
    for n in s.nodes:
        on = n.name in names
        nodes[n.name] = NodeFacts(
            n.name,
            kube_version=version if on else None,
            apiserver_version=version if on and "control-plane" in n.roles else None,
            etcd_version="v3.6.16" if on and "etcd" in n.roles else None,
            ca=ca if on else None,
            etcd_ca=ca if on and "etcd" in n.roles else None,
        )
    return ClusterFacts(
        nodes=nodes,
        etcd_members=sorted(n.name for n in s.etcd_members if n.name in names),
        k8s_nodes={n.name: K8sNode(n.name, n.address, "control-plane" in n.roles) for n in s.nodes if n.name in names},
    )


# -- version ----------------------------------------------------------------------------


def test_version_guard_allows_the_running_version_and_a_fresh_cluster(ha: spec.ClusterSpec) -> None:
    assert guards.version(ha, running(ha, ha.kubernetes.version)) == []
    assert guards.version(ha, running(ha, only=[])) == []


def test_version_guard_refuses_an_upgrade_and_a_downgrade(ha: spec.ClusterSpec) -> None:
    old = ha.model_copy(update={"kubernetes": ha.kubernetes.model_copy(update={"version": "v1.36.3"})})
    (line,) = guards.version(old, running(old, "v1.37.2"))
    assert line.startswith("kubernetes.version: the cluster runs v1.37.2 and the file says v1.36.3")
    assert "downgrades are not supported" in line
    new = ha.model_copy(update={"kubernetes": ha.kubernetes.model_copy(update={"version": "v1.37.2"})})
    (line,) = guards.version(new, running(new, "v1.36.3"))
    assert "upgrade with `provisioner cluster upgrade --to v1.37.2`" in line


def test_an_interrupted_upgrade_is_named(ha: spec.ClusterSpec) -> None:
    facts = running(ha, "v1.37.2")
    facts.nodes["w1"].kube_version = "v1.36.3"
    (line,) = guards.version(ha, facts)
    assert "v1.36.3 on w1" in line and "finish it with `provisioner cluster upgrade --to v1.37.2`" in line
    assert guards.running_version(facts) == "v1.36.3"


# -- PKI ---------------------------------------------------------------------------------


def test_lost_state_dir_against_a_live_cluster_is_refused(ha: spec.ClusterSpec, tmp_path: Path) -> None:
    facts = running(ha, ca="sha256:" + "ab" * 32)
    lines = guards.pki(facts, guards.controller_cas(tmp_path / "pki"), tmp_path / "pki")
    assert len(lines) == len(ha.nodes)
    assert lines[0].startswith("cp1: the node trusts the cluster CA sha256:abab")
    assert "has none: this state directory did not create the cluster" in lines[0]
    assert "copy the cluster directory" in lines[0]


def test_another_clusters_pki_is_refused_and_the_same_pki_passes(ha: spec.ClusterSpec, tmp_path: Path) -> None:
    pki.ensure(ha, tmp_path / "pki", SERVICE_IP, 6444)
    ours = guards.controller_cas(tmp_path / "pki")
    assert ours["ca"] == ca_fingerprint((tmp_path / "pki" / "ca.crt").read_bytes())
    same = running(ha, ca=ours["ca"])
    for n in same.nodes.values():
        n.etcd_ca = ours["etcd_ca"] if n.etcd_ca else None
    assert guards.pki(same, ours, tmp_path / "pki") == []
    other = running(ha, ca="sha256:" + "cd" * 32)
    lines = guards.pki(other, ours, tmp_path / "pki")
    assert lines and "this is another cluster's PKI" in lines[0]
    assert guards.pki(running(ha, only=[]), ours, tmp_path / "pki") == []  # nothing installed yet


# -- membership (create) and scale --------------------------------------------------------


def test_create_refuses_new_etcd_members_but_converges_new_workers(ha: spec.ClusterSpec) -> None:
    facts = running(ha, only=["cp1", "w1"])
    (line,) = guards.membership(ha, facts)
    assert line.startswith("nodes[cp2, cp3]: new etcd members join a running cluster with `provisioner cluster scale`")
    facts = running(ha, only=["cp1", "cp2", "cp3", "w1"])
    assert guards.membership(ha, facts) == []  # w2 is a new worker: create converges it


def test_an_etcd_member_missing_from_the_file_is_refused(ha: spec.ClusterSpec) -> None:
    facts = running(ha)
    assert facts.etcd_members is not None
    facts.etcd_members.append("cp9")
    lines = guards.membership(ha, facts)
    assert any(line.startswith("etcd member cp9 is not an etcd node in the file") for line in lines)


def test_scale_adds_only_the_nodes_that_run_nothing(ha: spec.ClusterSpec) -> None:
    added, problems = guards.new_nodes(ha, running(ha, only=["cp1", "cp2", "cp3", "w1"]))
    assert added == ["w2"] and problems == []
    added, problems = guards.new_nodes(ha, running(ha, only=[]))
    assert problems == ["no node of the file runs the cluster yet; run `provisioner cluster create` first"]


def test_scale_refuses_a_moved_node_a_vanished_node_and_a_silent_one(ha: spec.ClusterSpec) -> None:
    facts = running(ha)
    assert facts.k8s_nodes is not None
    facts.k8s_nodes["w1"].address = "192.168.250.99"
    facts.k8s_nodes["w9"] = K8sNode("w9", "192.168.250.29", False)
    facts.nodes["w2"].reachable = False
    _, problems = guards.new_nodes(ha, facts)
    assert "w2: did not answer fact gathering; bring it back or check SSH" in problems
    assert any("node w1: the cluster knows it at 192.168.250.99" in p for p in problems)
    assert any(p.startswith("Node w9 is no longer in the file") for p in problems)


def test_remove_node_refusals(ha: spec.ClusterSpec) -> None:
    facts = running(ha, only=["cp1", "cp2", "cp3", "w1"])
    assert guards.removable(ha, facts, ["w1"]) == []
    assert guards.removable(ha, facts, ["w7"]) == ["w7 is not in the cluster file; nothing to remove"]
    assert guards.removable(ha, facts, ["w2"]) == ["w2 is not part of the cluster yet"]
    lines = guards.removable(ha, running(ha), ["cp1", "cp2", "cp3"])
    assert any("would leave no control plane" in line for line in lines)
    assert any("would leave no etcd member" in line for line in lines)


def test_guard_error_ends_with_nothing_changed() -> None:
    err = guards.GuardError(["a", "b"])
    assert err.lines() == ["a", "b", "nothing was changed"] and err.exit_code == 2


# -- facts from the playbook's results ---------------------------------------------------


def test_facts_from_results(ha: spec.ClusterSpec, tmp_path: Path) -> None:
    pki.ensure(ha, tmp_path, SERVICE_IP, 6444)
    ca = (tmp_path / "ca.crt").read_bytes()
    conflist = {
        "plugins": [{"type": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.233.65.0/24"}]]}}]
    }
    members = {"members": [{"name": "cp1", "peerURLs": ["https://x:2380"]}, {"peerURLs": ["https://y:2380"]}]}
    nodes = {
        "items": [
            {
                "metadata": {"name": "cp1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
                "spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.250.11"}]},
            }
        ]
    }
    res = {
        "ansible_facts": {
            "provisioner_node_facts": {
                "binaries": {
                    "kubelet": "/opt/provisioner/kubernetes/v1.37.2/kubelet",
                    "kube-apiserver": "/opt/provisioner/kubernetes/v1.37.2/kube-apiserver",
                    "etcd": "",
                },
                "files": {
                    "ca": base64.b64encode(ca).decode(),
                    "etcd_ca": "",
                    "cni": base64.b64encode(json.dumps(conflist).encode()).decode(),
                },
                "etcd_members": json.dumps(members),
                "k8s_nodes": json.dumps(nodes),
            }
        }
    }
    facts = from_results(["cp1", "w1"], {"cp1": res})
    cp1 = facts.nodes["cp1"]
    assert (cp1.kube_version, cp1.apiserver_version, cp1.etcd_version) == ("v1.37.2", "v1.37.2", None)
    assert cp1.ca == ca_fingerprint(ca) and cp1.etcd_ca is None and cp1.pod_block == "10.233.65.0/24"
    assert not facts.nodes["w1"].reachable and facts.unreachable == ["w1"]
    assert facts.etcd_members == ["(unstarted https://y:2380)", "cp1"]
    assert facts.k8s_nodes is not None
    k = facts.k8s_nodes["cp1"]
    assert k.address == "192.168.250.11" and k.control_plane
    assert k.taints == ["node-role.kubernetes.io/control-plane:NoSchedule"]
    assert facts.pod_blocks() == {"cp1": "10.233.65.0/24"}


# -- upgrade skew (from the facts) --------------------------------------------------------


def _skew(s: spec.ClusterSpec, target: str, facts: ClusterFacts, tmp_path: Path) -> list[str]:
    from provisioner import apply
    from provisioner.state import ClusterDir

    ctx = apply.Context(spec=s, cdir=ClusterDir.for_cluster(s.name, tmp_path), command="test", quiet=True)
    ctx.facts = facts
    return apply.upgrade_skew(target)(ctx)


def test_upgrade_skew_is_judged_from_what_the_nodes_run(ha: spec.ClusterSpec, tmp_path: Path) -> None:
    assert _skew(ha, "v1.37.2", running(ha, "v1.36.3"), tmp_path) == []
    assert _skew(ha, "v1.36.3", running(ha, "v1.37.2"), tmp_path) == [
        "--to: v1.36.3 is older than the running v1.37.2; downgrades are not supported"
    ]
    assert _skew(ha, "v1.37.2", running(ha, only=[]), tmp_path) == [
        "no node of ha runs Kubernetes; run `cluster create` first"
    ]
    half = running(ha, "v1.37.2")
    half.nodes["w1"].kube_version = "v1.36.3"  # interrupted: a re-run continues from the oldest
    assert _skew(ha, "v1.37.2", half, tmp_path) == []
