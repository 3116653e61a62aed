"""What playbooks/chaos-facts.yml read from the nodes, as data (pure, unit-tested): the fault
still active on each node, its units, partition rules and undo timer, and from the etcd
members their health, the leader, the canary key and etcd's own log of leader changes
(raft's "lost leader", "starting a new election", "elected leader", the peers it saw go)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from provisioner.chaos.timeline import Event

FACTS_TASK = "Chaos | node"


@dataclass
class NodeChaos:
    name: str
    reachable: bool = True
    marker: dict[str, Any] | None = None  # the fault still active here
    units: dict[str, str] = field(default_factory=dict)  # unit -> running, stopped, absent, ...
    partition: bool = False  # the chain of partition rules exists
    timer: str = ""  # the undo timer: active, inactive, ...
    etcd_ok: bool = False  # the member answered its status
    member_id: str = ""  # hex, as etcd logs it
    leader_id: str = ""
    canary_key: str | None = None
    journal: list[str] = field(default_factory=list)


@dataclass
class ChaosFacts:
    nodes: dict[str, NodeChaos]
    members: dict[str, str]  # member id (hex) -> name

    @property
    def active(self) -> dict[str, str]:
        """node -> the fault still active there, in words."""
        return {
            n: f"{m.get('experiment', '?')} of run {m.get('run', '?')}, armed {m.get('armed', '?')}, "
            f"undone by the node's timer {m.get('undo_after_s', '?')} s after that"
            for n, f in self.nodes.items()
            if (m := f.marker) is not None
        }

    @property
    def etcd_healthy(self) -> dict[str, bool]:
        names = set(self.members.values())
        return {n: f.etcd_ok for n, f in self.nodes.items() if n in names}

    @property
    def leader(self) -> str | None:
        votes = {f.leader_id for f in self.nodes.values() if f.etcd_ok and f.leader_id}
        if len(votes) != 1:
            return None
        return self.members.get(votes.pop())

    @property
    def canary_key(self) -> str | None:
        return next((f.canary_key for f in self.nodes.values() if f.canary_key is not None), None)

    def events(self) -> list[Event]:
        """etcd's leader changes and peer losses from every member's log, earliest first
        (the same change seen by several members is kept once per member)."""
        out: list[Event] = []
        for name, f in self.nodes.items():
            for line in f.journal:
                e = journal_event(line, self.members, name)
                if e is not None:
                    out.append(e)
        return sorted(out)


def _hex(value: Any) -> str:
    try:
        return format(int(value), "x")
    except (TypeError, ValueError):
        return ""


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


_RAFT = [
    (re.compile(r"raft\.node: (\w+) elected leader (\w+) at term"), "leader-elected", 2),
    (re.compile(r"raft\.node: (\w+) lost leader (\w+) at term"), "leader-lost", 2),
    (re.compile(r"^(\w+) is starting a new election at term"), "election-started", 1),
    (re.compile(r"^(\w+) became leader at term"), "leader-elected", 1),
]


def journal_event(line: str, members: dict[str, str], seen_by: str) -> Event | None:
    """One line of etcd's JSON log as an event (None: not one we follow)."""
    data = _json(line)
    if not isinstance(data, dict) or "ts" not in data:
        return None
    try:
        t = datetime.fromisoformat(str(data["ts"]).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    msg = str(data.get("msg", ""))
    if msg.startswith("peer became inactive"):
        return Event(t, "peer-inactive", members.get(str(data.get("peer-id", "")), "?"), f"seen by {seen_by}")
    if msg.startswith("peer became active"):
        return Event(t, "peer-active", members.get(str(data.get("peer-id", "")), "?"), f"seen by {seen_by}")
    for pattern, kind, group in _RAFT:
        m = pattern.search(msg)
        if m:
            return Event(t, kind, members.get(m.group(group), m.group(group)), f"seen by {seen_by}")
    return None


def node_chaos(name: str, res: dict[str, Any] | None) -> NodeChaos:
    if res is None:
        return NodeChaos(name, reachable=False)
    raw = res.get("ansible_facts", {}).get("provisioner_chaos_facts", {})
    status = _json(raw.get("etcd_status", ""))
    st = status[0].get("Status", {}) if isinstance(status, list) and status else {}
    marker = _json(raw.get("marker", "")) if raw.get("marker") else None
    return NodeChaos(
        name=name,
        marker=marker if isinstance(marker, dict) else ({"experiment": "unreadable marker"} if marker else None),
        units={k: str(v) for k, v in (raw.get("units") or {}).items()},
        partition=bool(raw.get("partition")),
        timer=str(raw.get("timer") or ""),
        etcd_ok=bool(st),
        member_id=_hex(st.get("header", {}).get("member_id")),
        leader_id=_hex(st.get("leader")),
        canary_key=raw.get("canary_key") if raw.get("canary_key") is not None else None,
        journal=[str(x) for x in raw.get("etcd_journal") or []],
    )


def from_results(hosts: list[str], results: dict[str, dict[str, Any]]) -> ChaosFacts:
    nodes = {h: node_chaos(h, results.get(h)) for h in hosts}
    members: dict[str, str] = {}
    for h in hosts:
        raw = (results.get(h) or {}).get("ansible_facts", {}).get("provisioner_chaos_facts", {})
        data = _json(raw.get("etcd_members", ""))
        for m in (data or {}).get("members", []) if isinstance(data, dict) else []:
            if m.get("name"):
                members[_hex(m.get("ID"))] = m["name"]
    return ChaosFacts(nodes, members)
