#!/usr/bin/python
"""Ansible module of the reset role: remove the packet filter rules a cluster made.

- iptables and ip6tables (whichever backend ``iptables`` is): every chain whose name starts
  with one of ``chain_prefixes`` (KUBE-, CNI-), every rule that jumps to one or mentions
  one of ``comments`` (the NAT-outgoing rule). Each table that had one is saved, filtered
  and restored as a whole (``iptables-restore`` replaces only the tables it is given), so
  the rules of anything else on the host stay, in their order.
- nftables: the tables named in ``nft_tables`` (kube-proxy's nftables mode), in any family.
- ipsets whose name starts with one of ``chain_prefixes`` (kube-proxy's IPVS mode), after
  the rules that use them are gone.

A tool the node lacks is skipped (a node without ipset or nft had none of its objects).
Check mode reports what would be removed and changes nothing; a node with nothing left
reports ``changed: false``.
"""

from __future__ import annotations

import re

DOCUMENTATION = r"""
module: reset_netfilter
short_description: Remove the iptables, ip6tables, nftables and ipset objects of a cluster
options:
  chain_prefixes:
    description: Chains (and ipsets) whose names start with one of these are removed, with every rule naming them.
    type: list
    elements: str
    default: [KUBE-, CNI-]
  comments:
    description: Rules that contain one of these strings (their comment) are removed.
    type: list
    elements: str
    default: []
  nft_tables:
    description: nftables tables of these names are deleted, in every family.
    type: list
    elements: str
    default: [kube-proxy]
"""

RETURN = r"""
removed:
  description: What was (or in check mode would be) removed, one line per table, nft table or ipset.
  type: list
  elements: str
"""

SAVE = {"iptables": ("iptables-save", "iptables-restore"), "ip6tables": ("ip6tables-save", "ip6tables-restore")}


def split_tables(dump: str) -> dict[str, list[str]]:
    """``iptables-save`` output as table name -> its lines (``*table`` ... ``COMMIT``)."""
    tables: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in dump.splitlines():
        if line.startswith("*"):
            current = tables.setdefault(line[1:].strip(), [])
        if current is not None and not line.startswith("#"):
            current.append(line)
        if line.strip() == "COMMIT":
            current = None
    return tables


def _ours(word: str, prefixes: list[str]) -> bool:
    return any(word.startswith(p) for p in prefixes)


def filter_table(lines: list[str], prefixes: list[str], comments: list[str]) -> tuple[list[str], int, int]:
    """The table without the cluster's chains and the rules that name them; returns the new
    lines, the chains dropped and the rules dropped."""
    kept: list[str] = []
    chains = rules = 0
    for line in lines:
        if line.startswith(":"):
            if _ours(line[1:].split()[0], prefixes):
                chains += 1
                continue
        elif line.startswith("-A ") or line.startswith("-I "):
            words = re.split(r"\s+", line)
            if any(_ours(w.strip('"'), prefixes) for w in words) or any(c in line for c in comments):
                rules += 1
                continue
        kept.append(line)
    return kept, chains, rules


def nft_tables_to_delete(listing: str, names: list[str]) -> list[tuple[str, str]]:
    """``nft list tables`` output -> the (family, name) pairs to delete."""
    found = []
    for line in listing.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "table" and words[2] in names:
            found.append((words[1], words[2]))
    return found


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "chain_prefixes": {"type": "list", "elements": "str", "default": ["KUBE-", "CNI-"]},
            "comments": {"type": "list", "elements": "str", "default": []},
            "nft_tables": {"type": "list", "elements": "str", "default": ["kube-proxy"]},
        },
        supports_check_mode=True,
    )
    prefixes: list[str] = module.params["chain_prefixes"]
    comments: list[str] = module.params["comments"]
    removed: list[str] = []

    def which(name: str) -> str | None:
        return module.get_bin_path(name, opt_dirs=["/usr/sbin", "/sbin"])

    def run(argv: list[str], data: str | None = None) -> str:
        rc, out, err = module.run_command(argv, data=data, binary_data=data is not None)
        if rc != 0:
            module.fail_json(msg=f"{' '.join(argv)} failed (rc {rc}): {(err or out).strip()[-300:]}", removed=removed)
        return out

    for family, (save, restore) in SAVE.items():
        save_bin, restore_bin = which(save), which(restore)
        if not save_bin or not restore_bin:
            continue
        changed_tables = []
        for table, lines in split_tables(run([save_bin])).items():
            kept, chains, rules = filter_table(lines, prefixes, comments)
            if chains or rules:
                changed_tables.append(kept)
                removed.append(f"{family} {table}: {chains} chains, {rules} rules")
        if changed_tables and not module.check_mode:
            run([restore_bin, "-w"], data="\n".join(line for t in changed_tables for line in t) + "\n")

    nft = which("nft")
    if nft and module.params["nft_tables"]:
        for fam, name in nft_tables_to_delete(run([nft, "list", "tables"]), module.params["nft_tables"]):
            removed.append(f"nft table {fam} {name}")
            if not module.check_mode:
                run([nft, "delete", "table", fam, name])

    ipset = which("ipset")
    if ipset:
        for name in run([ipset, "list", "-n"]).split():
            if _ours(name, prefixes):
                removed.append(f"ipset {name}")
                if not module.check_mode:
                    run([ipset, "destroy", name])

    module.exit_json(changed=bool(removed), removed=removed)


if __name__ == "__main__":
    main()
