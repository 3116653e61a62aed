"""The hypothesis of an experiment (its limits) and the verdict over the measurements.

The limits' defaults are provisioner/defaults.py's ``chaos_limits``; the cluster file's
``chaos.limits`` overrides them. A limit is a maximum (times, gaps) or a minimum
(availability), as spec.CHAOS_LIMITS says. Besides the limits, two things must always
hold: the canary's data is intact and the steady state is back at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provisioner.errors import ProvisionerError
from provisioner.spec import CHAOS_LIMITS

UNITS = {"_s": "s", "_pct": "%"}


class HypothesisMissed(ProvisionerError):
    """The experiment ran and was undone, and a limit of its hypothesis was missed."""

    exit_code = 3


@dataclass
class Measurements:
    detection_s: float | None = None
    recovery_s: float | None = None
    api_availability_pct: float | None = None
    api_longest_gap_s: float | None = None
    canary_availability_pct: float | None = None
    canary_longest_gap_s: float | None = None
    leader_election_s: float | None = None
    data_intact: bool | None = None
    steady_after: bool | None = None
    # limits that do not apply to this run (e.g. no leader election when the leader was not hit)
    not_applicable: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: (None if getattr(self, name) is None else round(getattr(self, name), 3)) for name in CHAOS_LIMITS
        }
        out["data_intact"] = self.data_intact
        out["steady_state_after"] = self.steady_after
        return out


@dataclass(frozen=True)
class Check:
    name: str
    limit: str  # as people read it: "<= 60 s", ">= 99 %", "yes"
    measured: str
    status: str  # "ok", "missed", "n/a", "off"

    @property
    def missed(self) -> bool:
        return self.status == "missed"

    def line(self, experiment: str) -> str:
        return f"{experiment}: {self.name} {self.measured}, the hypothesis says {self.limit}"


def _unit(name: str) -> str:
    return next((u for suffix, u in UNITS.items() if name.endswith(suffix)), "")


def fmt(name: str, value: float | None) -> str:
    if value is None:
        return "not measured"
    unit = _unit(name)
    return f"{value:.1f}{' ' if unit == 's' else ''}{unit}"


def evaluate(limits: dict[str, float | None], m: Measurements) -> list[Check]:
    """One check per limit (and for data and steady state), in spec.CHAOS_LIMITS order."""
    checks: list[Check] = []
    for name, kind in CHAOS_LIMITS.items():
        limit = limits.get(name)
        value = getattr(m, name)
        if limit is None:
            checks.append(Check(name, "-", fmt(name, value), "off"))
            continue
        text = f"{'<=' if kind == 'max' else '>='} {fmt(name, limit)}"
        if name in m.not_applicable and value is None:
            checks.append(Check(name, text, "does not apply", "n/a"))
        elif value is None:
            checks.append(Check(name, text, "not measured", "missed"))
        else:
            good = value <= limit if kind == "max" else value >= limit
            checks.append(Check(name, text, fmt(name, value), "ok" if good else "missed"))
    for name, value in (("data_intact", m.data_intact), ("steady_state_after", m.steady_after)):
        measured = "unknown" if value is None else ("yes" if value else "no")
        checks.append(Check(name, "yes", measured, "ok" if value else "missed"))
    return checks


def verdict(checks: list[Check]) -> bool:
    return not any(c.missed for c in checks)


def missed_error(experiment: str, checks: list[Check]) -> HypothesisMissed:
    return HypothesisMissed("\n".join(c.line(experiment) for c in checks if c.missed))
