"""Unit tests of the day-2 planning in provisioner.apply: what scale adds and who must
learn of it, what remove-node refuses, and the version guards. No node is contacted."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner import apply, spec
from provisioner.cli import app
from provisioner.state import ClusterDir

SAMPLES = Path(__file__).resolve().parents[2] / "inventory" / "sample"


def _ctx(tmp_path: Path, nodes: list[dict] | None = None, applied: list[str] | None = None) -> apply.Context:
    data = spec.load(SAMPLES / "ha.yaml").model_dump(mode="json")
    if nodes is not None:
        data["nodes"] = nodes
    s = spec.from_dict(data)
    cdir = ClusterDir.for_cluster(s.name, tmp_path)
    ctx = apply.Context(spec=s, cdir=cdir, command="test", quiet=True)
    if applied is not None:
        cdir.write_applied(
            {n.name: {"address": n.address, "roles": list(n.roles)} for n in s.nodes if n.name in applied}
        )
    return ctx


def test_scale_adding_workers_touches_no_control_plane(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, applied=["cp1", "cp2", "cp3", "w1"])
    v = apply.scale_vars(ctx)
    assert v["scale_new_nodes"] == ["w2"]
    assert v["scale_new_etcd"] == [] and v["scale_new_control_planes"] == []
    assert v["scale_existing_control_planes"] == []


def test_scale_adding_control_planes_lists_members_and_existing_api_servers(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, applied=["cp1", "w1", "w2"])
    v = apply.scale_vars(ctx)
    assert v["scale_new_nodes"] == ["cp2", "cp3"]
    assert v["scale_new_etcd"] == ["cp2", "cp3"]  # joined one at a time by the playbook
    assert v["scale_new_control_planes"] == ["cp2", "cp3"]
    assert v["scale_existing_control_planes"] == ["cp1"]
    assert v["scale_etcd_via"] == "cp1"
    assert "etcd member add cp2, cp3" in apply.ScalePlaybook().dry_run(ctx)


def test_scale_refuses_changed_or_vanished_nodes(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, applied=["cp1", "cp2", "cp3", "w1", "w2"])
    ctx.cdir.write_applied({**ctx.cdir.read_applied(), "w9": {"address": "192.168.250.29", "roles": ["worker"]}})
    with pytest.raises(apply.ScaleError, match="w9 are no longer in the file; use `cluster remove-node`"):
        apply.new_nodes(ctx)
    applied = ctx.cdir.read_applied()
    del applied["w9"]
    applied["w1"] = {"address": "192.168.250.99", "roles": ["worker"]}
    ctx.cdir.write_applied(applied)
    with pytest.raises(apply.ScaleError, match="node w1: its address or roles changed"):
        apply.new_nodes(ctx)


def test_scale_needs_a_created_cluster(tmp_path: Path) -> None:
    with pytest.raises(apply.ScaleError, match="records no nodes; run `cluster create` first"):
        apply.new_nodes(_ctx(tmp_path))


def test_remove_node_refuses_the_last_control_plane_and_unknown_nodes(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, applied=["cp1", "cp2", "cp3", "w1", "w2"])
    with pytest.raises(apply.ScaleError, match="would leave no control plane"):
        apply.RemoveNodes(["cp1", "cp2", "cp3"]).check(ctx)
    with pytest.raises(apply.ScaleError, match="w7 is not in the cluster file"):
        apply.RemoveNodes(["w7"]).check(ctx)
    apply.RemoveNodes(["cp3"]).check(ctx)  # two remain: allowed (quorum is checked on the members)
    assert "etcd member remove cp3" in apply.RemoveNodes(["cp3"]).dry_run(ctx)


def test_version_guard_refuses_a_version_change(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    ctx.cdir.write_version("v1.36.3")
    with pytest.raises(apply.VersionError, match=r"kubernetes.version: .*cluster upgrade --to v1.37.2"):
        apply.VersionGuard().run(ctx)
    ctx.cdir.write_version("v1.37.2")
    apply.VersionGuard().run(ctx)


def test_upgrade_check_skew(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    ctx.cdir.write_version("v1.36.3")
    apply.UpgradeCheck("v1.37.2").run(ctx)
    with pytest.raises(apply.VersionError, match=r"--to: v1\.35\.0 is not supported"):
        apply.UpgradeCheck("v1.35.0").run(ctx)
    ctx.cdir.write_version("v1.37.2")
    with pytest.raises(apply.VersionError, match="downgrades are not supported"):
        apply.UpgradeCheck("v1.36.3").run(ctx)


def test_create_refuses_a_version_change_before_contacting_any_node(tmp_path: Path) -> None:
    """A refusal that came from preflight would name a host; the guard must answer first.
    Should it not, nothing is reached: the nodes are in TEST-NET-1 (192.0.2.0/24, never
    routed, unlike the sample's lab subnet) and the SSH key does not exist."""
    cdir = ClusterDir.for_cluster("ha", tmp_path).ensure()
    cdir.write_version("v1.36.3")
    text = (SAMPLES / "ha.yaml").read_text().replace("192.168.250.", "192.0.2.")
    cluster = tmp_path / "ha.yaml"
    cluster.write_text(text.replace("~/.ssh/id_ed25519", str(tmp_path / "no-such-key")))
    result = CliRunner().invoke(app, ["cluster", "create", "-f", str(cluster), "--state-dir", str(tmp_path), "--quiet"])
    assert result.exit_code == 2  # the file is at fault; nothing was touched
    assert "kubernetes.version: the cluster runs v1.36.3" in result.output
    assert "preflight" not in result.output


def test_create_sends_new_etcd_members_to_scale(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, applied=["cp1", "w1", "w2"])
    with pytest.raises(apply.ScaleError, match=r"nodes\[cp2, cp3\]: new etcd members .* `provisioner cluster scale`"):
        apply.MembershipGuard().run(ctx)
    ctx = _ctx(tmp_path / "b", applied=["cp1", "cp2", "cp3", "w1"])
    apply.MembershipGuard().run(ctx)  # a new worker through create is fine: create converges
