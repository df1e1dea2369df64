"""Counting what a data builder could not use: problems by reason, listed by record id.

A `DataReport` is filled while records are parsed and tokenised (one reason per rejected record,
the first found), merged across workers, and checked against a maximum bad fraction: above it,
building fails with `DataQualityError`, whose message lists the record ids by reason.

Two kinds of entries:
- problems: the record is not trained on (malformed, image missing, tokenisation mismatch, every
  supervised token beyond the length budget);
- notes: the record is trained on, but the user should know (truncated, `<image>` added or
  moved, text-only, duplicate id).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_IDS_IN_MESSAGE = 20


class DataQualityError(ValueError):
    """Too many records could not be used; the message lists them by reason and id."""


@dataclass
class DataReport:
    total: int = 0
    problems: dict[str, list[str]] = field(default_factory=dict)  # reason → record ids
    notes: dict[str, list[str]] = field(default_factory=dict)  # reason → record ids
    details: dict[str, str] = field(default_factory=dict)  # record id → first problem detail

    @property
    def num_bad(self) -> int:
        return sum(len(ids) for ids in self.problems.values())

    @property
    def num_ok(self) -> int:
        return self.total - self.num_bad

    @property
    def bad_fraction(self) -> float:
        return self.num_bad / self.total if self.total else 0.0

    def add_problem(self, record_id: str, reason: str, detail: str = "") -> None:
        self.problems.setdefault(reason, []).append(record_id)
        if detail and record_id not in self.details:
            self.details[record_id] = f"{reason}: {detail}"

    def add_note(self, record_id: str, reason: str) -> None:
        self.notes.setdefault(reason, []).append(record_id)

    def merge(self, other: DataReport) -> DataReport:
        self.total += other.total
        for reason, ids in other.problems.items():
            self.problems.setdefault(reason, []).extend(ids)
        for reason, ids in other.notes.items():
            self.notes.setdefault(reason, []).extend(ids)
        for key, value in other.details.items():
            self.details.setdefault(key, value)
        return self

    @classmethod
    def merged(cls, reports: Iterable[DataReport]) -> DataReport:
        out = cls()
        for report in reports:
            out.merge(report)
        return out

    def counts(self) -> dict[str, int]:
        return {reason: len(ids) for reason, ids in sorted(self.problems.items())}

    def to_dict(
        self, max_ids: int | None = None, max_note_ids: int | None = None
    ) -> dict[str, Any]:
        """JSON-able summary: counts by reason and the ids (all, or the first `max_ids` of each
        problem and `max_note_ids` of each note; the counts stay complete)."""

        def cap(ids: list[str], limit: int | None = max_ids) -> list[str]:
            return ids if limit is None else ids[:limit]

        return {
            "total": self.total,
            "ok": self.num_ok,
            "bad": self.num_bad,
            "bad_fraction": round(self.bad_fraction, 6),
            "problems": self.counts(),
            "problem_ids": {r: cap(ids) for r, ids in sorted(self.problems.items())},
            "notes": {reason: len(ids) for reason, ids in sorted(self.notes.items())},
            "note_ids": {r: cap(ids, max_note_ids) for r, ids in sorted(self.notes.items())},
            "details": dict(list(self.details.items())[: max_ids or None]),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataReport:
        """Inverse of `to_dict()` (uncapped), for reports that travel through Arrow or JSON."""
        return cls(
            total=int(data["total"]),
            problems={r: list(ids) for r, ids in data.get("problem_ids", {}).items()},
            notes={r: list(ids) for r, ids in data.get("note_ids", {}).items()},
            details=dict(data.get("details", {})),
        )

    def describe(self, max_ids: int = MAX_IDS_IN_MESSAGE) -> str:
        """Human-readable lines: totals, then each reason with its count and first ids."""
        lines = [
            f"{self.total} records: {self.num_ok} usable, {self.num_bad} not "
            f"({100 * self.bad_fraction:.2f}%)"
        ]
        for title, table in (("problem", self.problems), ("note", self.notes)):
            for reason, ids in sorted(table.items()):
                shown = ", ".join(ids[:max_ids]) + (" …" if len(ids) > max_ids else "")
                lines.append(f"  {title} {reason}: {len(ids)} [{shown}]")
        return "\n".join(lines)

    def check(self, max_bad_fraction: float, what: str = "dataset") -> None:
        """Fail, listing record ids by reason, when the bad fraction exceeds the limit."""
        if self.total and self.num_ok == 0:
            raise DataQualityError(f"{what}: no usable record\n{self.describe()}")
        if self.bad_fraction > max_bad_fraction:
            raise DataQualityError(
                f"{what}: {self.num_bad} of {self.total} records "
                f"({100 * self.bad_fraction:.2f}%) cannot be used, above max_bad_fraction="
                f"{max_bad_fraction}\n{self.describe()}"
            )
