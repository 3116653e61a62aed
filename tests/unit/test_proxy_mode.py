"""kube-proxy's mode (``kubernetes.proxy_mode``): preflight refuses ``ipvs`` on a kernel without
IP_VS, naming the host and the module, before anything runs; the probe that reads the kernel
runs for real over SSH against this host (which has no IP_VS); the node gets Debian's
nftables for ``nftables`` mode."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from jinja2 import Environment

from provisioner import preflight, spec
from tests.unit.test_preflight import GOOD_FACTS, Sshd, sshd  # noqa: F401 (the fixture)


def cluster(proxy_mode: str, address: str = "192.0.2.11", port: int = 22, key: str = "~/.ssh/id_ed25519") -> Any:
    return spec.from_dict(
        {
            "name": "pm",
            "kubernetes": {"proxy_mode": proxy_mode},
            # kube-router's policy controller and ipvs exclude each other (spec.py)
            "network": {"policy": proxy_mode != "ipvs"},
            "ssh": {"user": "root", "private_key": key, "port": port},
            "nodes": [
                {"name": "cp1", "address": address, "roles": ["etcd", "control-plane"]},
                {"name": "w1", "address": "192.0.2.21", "roles": ["worker"]},
            ],
        }
    )


def judged(proxy_mode: str, facts: dict[str, str], node: str = "w1") -> dict[str, preflight.Check]:
    s = cluster(proxy_mode)
    return {c.name: c for c in preflight.judge(s.node(node), s, facts, {})}


def test_ipvs_on_a_kernel_without_ip_vs_fails_naming_the_host_and_the_module() -> None:
    facts = {**GOOD_FACTS, "kmod_ip_vs": "missing", "kernel": "6.18.44"}
    check = judged("ipvs", facts)["kernel ip_vs"]
    assert not check.ok and not check.warning
    assert check.detail.startswith(
        "kubernetes.proxy_mode ipvs needs the kernel module ip_vs, and kernel 6.18.44 has none"
    )
    assert check.detail.endswith("set kubernetes.proxy_mode to iptables or nftables")
    report = preflight.HostReport("w1", "192.0.2.21", list(judged("ipvs", facts).values()))
    line = str(preflight.PreflightFailed([report])).splitlines()[1]
    assert line.startswith("w1 (192.0.2.21): kernel ip_vs: kubernetes.proxy_mode ipvs needs the kernel module ip_vs")


def test_nothing_probed_for_ip_vs_fails_rather_than_passes() -> None:
    assert not judged("ipvs", GOOD_FACTS)["kernel ip_vs"].ok


@pytest.mark.parametrize("state", ["loaded", "builtin", "module"])
def test_ipvs_passes_where_the_kernel_has_ip_vs(state: str) -> None:
    check = judged("ipvs", {**GOOD_FACTS, "kmod_ip_vs": state, "kernel": "6.1.0-18-amd64"})["kernel ip_vs"]
    assert check.ok, check.detail


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_other_modes_probe_and_check_no_kernel_module(mode: str) -> None:
    s = cluster(mode)
    assert (
        "kmod_" not in preflight.probe_for(s.node("w1"), s) and preflight.probe_for(s.node("w1"), s) == preflight.PROBE
    )
    assert not [c for c in preflight.judge(s.node("w1"), s, GOOD_FACTS, {}) if c.name.startswith("kernel")]
    assert "\nm=ip_vs;" in preflight.probe_for(cluster("ipvs").node("w1"), cluster("ipvs"))


def _host_has_ip_vs() -> bool:
    release = os.uname().release
    if Path("/sys/module/ip_vs").exists():
        return True
    modules = Path("/proc/modules")
    if modules.exists() and any(line.startswith("ip_vs ") for line in modules.read_text().splitlines()):
        return True
    builtin = Path(f"/lib/modules/{release}/modules.builtin")
    if builtin.exists() and "/ip_vs.ko" in builtin.read_text():
        return True
    return (
        any(Path(f"/lib/modules/{release}").rglob("ip_vs.ko*")) if Path(f"/lib/modules/{release}").exists() else False
    )


def test_the_kernel_probe_reads_this_host_over_real_ssh(sshd: Sshd, tmp_path: Path) -> None:  # noqa: F811
    """The probe runs on a real host (this one, over SSH): its answer agrees with what this
    process sees of the kernel; this machine has no IP_VS, so the run is refused."""
    s = cluster("ipvs", "127.0.0.1", sshd.port, str(sshd.good_key))
    [r] = preflight.run(s, [s.node("cp1")], cluster_dir=tmp_path / "cluster")
    assert r.facts["kernel"] == os.uname().release
    check = {c.name: c for c in r.checks}["kernel ip_vs"]
    assert check.ok == _host_has_ip_vs(), check.detail
    if not check.ok:
        assert r.facts["kmod_ip_vs"] == "missing"
        line = "cp1 (127.0.0.1): kernel ip_vs: kubernetes.proxy_mode ipvs needs the kernel module ip_vs, and kernel "
        assert line + f"{os.uname().release} has none" in str(preflight.PreflightFailed([r]))


def test_nftables_mode_installs_debians_nftables_on_the_nodes() -> None:
    """kube-proxy's nftables mode runs the `nft` command (knftables): the node gets the package."""
    defaults = Path(__file__).resolve().parents[2] / "provisioner/playbooks/roles/preinstall/defaults/main.yml"
    raw = yaml.safe_load(defaults.read_text())["preinstall_packages_proxy"]
    rendered = {mode: Environment().from_string(raw).render(kube_proxy_mode=mode) for mode in ("nftables", "iptables")}
    assert ast.literal_eval(rendered["nftables"]) == ["nftables"]
    assert ast.literal_eval(rendered["iptables"]) == []
