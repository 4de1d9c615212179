"""Scenario results: the table printed at the end and the JSON written next to it (pure formatting)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, ERROR, NOT_IMPLEMENTED, NOT_AVAILABLE = (
    "pass",
    "FAIL",
    "ERROR",
    "not implemented",
    "not available",
)


@dataclass
class Result:
    scenario: str
    title: str
    status: str
    lost: int | None = None
    duplicates: int | None = None
    counts_exact: bool | None = None
    recovery_s: float | None = None
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def table(results: list[Result]) -> str:
    header = ("scenario", "title", "result", "lost", "duplicates", "counts exact", "recovery s", "took s")
    rows = [
        (
            r.scenario,
            r.title,
            r.status,
            _cell(r.lost),
            _cell(r.duplicates),
            _cell(r.counts_exact),
            _cell(r.recovery_s),
            _cell(r.seconds) if r.seconds else "-",
        )
        for r in results
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [
        " | ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    for r in results:
        for p in r.problems:
            lines.append(f"  {r.scenario}: {p}")
    return "\n".join(lines)
