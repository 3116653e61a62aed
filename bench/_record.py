"""Append benchmark rows to BENCHMARKS.md (one table per benchmark, newest row last)."""

from __future__ import annotations

import platform
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def record(section: str, columns: list[str], values: list[str]) -> None:
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n\nWritten by `bench/*.py`.\n"
    header = f"## {section}"
    stamp = time.strftime("%Y-%m-%d %H:%M")
    row = "| " + " | ".join([stamp, platform.node() or "?", *values]) + " |"
    if header not in text:
        cols = ["date", "machine", *columns]
        text = text.rstrip() + f"\n\n{header}\n\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n"
        text += row + "\n"
    else:
        head, _, rest = text.partition(header)
        lines = rest.splitlines()
        end = len(lines)
        for i, line in enumerate(lines[1:], 1):
            if line.startswith("## "):
                end = i
                break
        table_end = max(i for i in range(end) if lines[i].startswith("|")) + 1
        lines.insert(table_end, row)
        text = head + header + "\n".join(lines) + ("\n" if not rest.endswith("\n") else "")
        if not text.endswith("\n"):
            text += "\n"
    BENCHMARKS.write_text(text)
    print(row)


def verdict(value: float, target: float) -> str:
    """``value`` beside its target: "17 (met)" or "41 (target <= 30: missed)"."""
    shown = f"{value:.2f}".rstrip("0").rstrip(".")
    return shown + (" (met)" if value <= target else f" (target <= {target:g}: missed)")
