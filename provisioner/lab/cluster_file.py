"""The lab's cluster file over an existing one: the lab's new nodes are appended to it, and
nothing else of it changes (issue 13).

`lab up` writes ``clusters/<lab>/cluster.yaml`` once; the user then edits it (a Kubernetes
version, labels, taints, any setting, comments). A later `lab up --nodes N` that adds nodes
must keep all of that, so ``merge`` parses the file with ruamel.yaml (round-trip: line and
column of every node) and splices the new node entries in as text right after the last node,
in the layout of the node before them: every other byte of the file stays as it was. The
result is checked (parsed again, it must be the old file's data plus the new nodes). Only the
nodes new to the lab are added (lab.json keeps the ones the file was given): a node the user
renamed or deleted stays so. A file that cannot take them safely (a lab node renamed or moved
so that it clashes with a new one, an unusual layout) is refused with one line that says what
to add by hand.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from provisioner import yamlio
from provisioner.lab.host import LabError

PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$")
RESERVED = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}  # YAML 1.1 reads these as non-strings


class MergeRefused(LabError):
    """The existing cluster file cannot take the lab's new nodes safely; nothing was changed."""


@dataclass(frozen=True)
class Merged:
    text: str
    added: list[str]


def _scalar(value: str) -> str:
    # node names, IPv4 addresses and roles are plain; anything else is double-quoted (JSON is YAML)
    plain = PLAIN.match(value) and not value.isdigit() and value.lower() not in RESERVED
    return value if plain else json.dumps(value)


def entry(node: dict[str, Any]) -> str:
    """A node as one flow mapping: what the refusal asks the user to add by hand."""
    roles = ", ".join(_scalar(r) for r in node["roles"])
    return f"{{name: {_scalar(node['name'])}, address: {_scalar(node['address'])}, roles: [{roles}]}}"


def _refuse(path: str, why: str, missing: list[dict[str, Any]], fix: bool = True) -> MergeRefused:
    add = "; ".join(f"- {entry(n)}" for n in missing)
    return MergeRefused(
        f"lab up: {path} cannot take the lab's new nodes safely ({why}); nothing was changed: "
        f"{'fix that, ' if fix else ''}add {'them' if len(missing) > 1 else 'it'} under `nodes:` by hand "
        f"({add}) and run `lab up` again"
    )


def _load(text: str) -> Any:
    from ruamel.yaml import YAML  # only `lab up` over an existing file needs it

    return YAML(typ="rt").load(text)


def _render(node: dict[str, Any], last: Any, item_line: str, col: int, lines: list[str]) -> list[str]:
    """``node`` as text in the layout of ``last`` (the file's last node, a ruamel CommentedMap
    whose value starts at ``col`` of ``item_line``): ``- {..}`` or a block mapping, roles in
    flow or block style as ``last`` has them."""
    prefix = item_line[:col]  # "- ", "  - ", "-   " ...
    if last.fa.flow_style():
        return [prefix + entry(node)]
    pad = " " * col
    out = [f"{prefix}name: {_scalar(node['name'])}", f"{pad}address: {_scalar(node['address'])}"]
    roles = last.get("roles")
    if roles is not None and hasattr(roles, "fa") and not roles.fa.flow_style() and len(roles):
        r_line, r_col = roles.lc.item(0)
        r_prefix = lines[r_line][:r_col]
        if r_prefix.strip() == "-":
            out.append(f"{pad}roles:")
            out.extend(r_prefix + _scalar(r) for r in node["roles"])
            return out
    out.append(f"{pad}roles: [{', '.join(_scalar(r) for r in node['roles'])}]")
    return out


def merge(text: str, new_nodes: list[dict[str, Any]], path: str = "cluster.yaml") -> Merged:
    """``text`` (an existing cluster file) with ``new_nodes`` appended to its ``nodes``.

    ``new_nodes`` are the nodes `lab up` adds to the lab (``name``, ``address``, ``roles``),
    in lab order; the lab's other nodes are the user's to keep, rename, move or delete. A new
    node the file already has (same name and address: added by hand) is not added again. A
    new node whose name the file gives a node at another address, or whose address the file
    gives another node, clashes: MergeRefused, nothing changed. Returns the text unchanged
    when there is nothing to add."""
    from ruamel.yaml.error import YAMLError

    try:
        doc = _load(text)
    except YAMLError as exc:
        first = " ".join(str(exc).split())
        raise MergeRefused(f"lab up: {path} is not valid YAML ({first}); fix it, or delete it for a new one") from None
    nodes = doc.get("nodes") if hasattr(doc, "get") else None
    file_nodes = [n for n in nodes if hasattr(n, "get")] if nodes is not None and hasattr(nodes, "lc") else None
    by_name = {str(n.get("name")): n for n in file_nodes or []}
    by_address = {str(n.get("address")): n for n in file_nodes or []}

    missing: list[dict[str, Any]] = []
    clashes: list[str] = []
    for node in new_nodes:
        name, address = node["name"], node["address"]
        held, holder = by_name.get(name), by_address.get(address)
        if held is not None and str(held.get("address")) == address:
            continue  # already there
        missing.append(node)
        if held is not None:  # a lab node renamed to this name, or a node moved away from this address
            clashes.append(f"its node {name} is at {held.get('address')}, the lab's new node {name} at {address}")
        elif holder is not None:  # a lab node moved onto this address, or renamed from this name
            clashes.append(f"its node {holder.get('name')} is at {address}, the address of the lab's new node {name}")
    if clashes:
        raise _refuse(path, "; ".join(clashes), missing)
    if not missing:
        return Merged(text, [])
    if file_nodes is None or len(file_nodes) != len(nodes) or not len(nodes) or nodes.fa.flow_style():
        raise _refuse(path, "its `nodes` is not a block list of node mappings", missing, fix=False)

    lines = text.splitlines(keepends=True)
    last = nodes[-1]
    item_line, col = nodes.lc.item(len(nodes) - 1)
    # The last node ends before the next top-level key (or at the end of the file); blank lines
    # and comments left of the node's keys there (the next key's, the file's last) stay after
    # the new nodes; a comment indented as the node's keys stays with the node.
    keys = list(doc)
    after = keys.index("nodes") + 1
    end = doc.lc.key(keys[after])[0] if after < len(keys) else len(lines)

    def outside(line: str) -> bool:
        stripped = line.lstrip()
        return not stripped or (stripped.startswith("#") and len(line) - len(stripped) < col)

    while end > item_line + 1 and outside(lines[end - 1]):
        end -= 1
    plain = [line.rstrip("\n") for line in lines]
    new = [line + "\n" for node in missing for line in _render(node, last, plain[item_line], col, plain)]
    head = lines[:end]
    if head and not head[-1].endswith("\n"):
        head[-1] += "\n"
    merged = "".join(head + new + lines[end:])

    expected = yamlio.load(text)
    expected["nodes"] += [{"name": n["name"], "address": n["address"], "roles": list(n["roles"])} for n in missing]
    try:
        ok = yamlio.load(merged) == expected
    except yamlio.YAMLError:
        ok = False
    if not ok:
        raise _refuse(path, "its layout could not be extended safely", missing, fix=False)
    return Merged(merged, [n["name"] for n in missing])
