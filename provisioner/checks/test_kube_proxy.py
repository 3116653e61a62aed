"""kube-proxy runs in the mode the cluster file names (``kubernetes.proxy_mode``), and its
Service rules are where that mode puts them: iptables mode in the KUBE-SERVICES chain of the
node's iptables, nftables mode in its own nftables table ``ip kube-proxy`` (and no
KUBE-SERVICES chain), ipvs mode on the kube-ipvs0 dummy interface."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provisioner.checks.conftest import Node

# kube-proxy's metrics endpoint (metricsBindAddress in its configuration) says which mode runs
PROXY_MODE_URL = "http://127.0.0.1:10249/proxyMode"
READ_URL = (
    "python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())'"
)


def test_kube_proxy_runs_in_the_files_mode(host: Any, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("k8s_cluster")
    wanted = hostvars.get("kube_proxy_mode", "iptables")
    out = host.run(f"{READ_URL} {PROXY_MODE_URL}")
    assert out.rc == 0, f"kube-proxy's {PROXY_MODE_URL} does not answer: {out.stderr.strip()[-200:]}"
    assert out.stdout.strip() == wanted, f"kube-proxy runs in {out.stdout.strip()} mode, the file says {wanted}"


def test_kube_proxy_rules_where_its_mode_puts_them(host: Any, node: Node, hostvars: dict[str, Any]) -> None:
    node.require("k8s_cluster")
    mode = hostvars.get("kube_proxy_mode", "iptables")
    nat = host.run("iptables-save -t nat")
    assert nat.rc == 0, f"iptables-save: {nat.stderr.strip()}"
    iptables_chain = ":KUBE-SERVICES " in nat.stdout
    if mode == "iptables":
        assert iptables_chain, "no KUBE-SERVICES chain in the nat table: kube-proxy has not synced its rules"
    elif mode == "nftables":
        table = host.run("nft list table ip kube-proxy")
        assert table.rc == 0, f"no nftables table ip kube-proxy: {table.stderr.strip()[-200:]}"
        assert "chain services" in table.stdout, "table ip kube-proxy has no services chain"
        assert not iptables_chain, "a KUBE-SERVICES iptables chain is here: an iptables-mode kube-proxy ran"
    else:  # ipvs
        assert host.interface("kube-ipvs0").exists, "no kube-ipvs0 interface"
