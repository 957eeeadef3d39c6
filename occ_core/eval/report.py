"""Typed metric reports: a per-class table plus a summary, as text, JSON and Markdown."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field


def _fmt(v: float | None, scale: float) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return f"{v * scale:.2f}" if scale != 1.0 else f"{v:.4f}"


def _json_num(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None  # JSON has no nan: null means "undefined" (class absent)
    return v


@dataclass
class ClassRow:
    """One class of a per-class table: ``values`` maps a column name to a value (nan = undefined)."""

    name: str
    values: dict[str, float]


@dataclass
class MetricReport:
    """A metric's result.

    Attributes:
        title: what was measured (metric, protocol, mask, ...).
        columns: per-class column names, in order.
        rows: one ClassRow per evaluated class.
        summary: headline numbers (e.g. ``{"mIoU": 0.41}``), fractions in [0, 1] unless
            ``percent`` is False for them (errors in metres, m/s).
        percent: summary/column keys shown as percentages in text and Markdown.
        frames: number of samples accumulated.
        notes: protocol notes printed under the table.
    """

    title: str
    columns: list[str]
    rows: list[ClassRow]
    summary: dict[str, float]
    percent: list[str] = field(default_factory=list)
    frames: int = 0
    notes: list[str] = field(default_factory=list)

    def _scale(self, key: str) -> float:
        return 100.0 if key in self.percent else 1.0

    def _table(self) -> tuple[list[str], list[list[str]]]:
        head = ["class", *self.columns]
        body = [[r.name, *(_fmt(r.values.get(c), self._scale(c)) for c in self.columns)] for r in self.rows]
        return head, body

    def to_text(self) -> str:
        head, body = self._table()
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
        line = "  ".join("-" * w for w in widths)
        out = [f"{self.title} ({self.frames} frames)", line, "  ".join(h.ljust(w) for h, w in zip(head, widths)), line]
        out += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(b, widths))) for b in body]
        out.append(line)
        out += [f"{k}: {_fmt(v, self._scale(k))}" + (" %" if k in self.percent else "") for k, v in self.summary.items()]
        out += [f"note: {n}" for n in self.notes]
        return "\n".join(out)

    def to_markdown(self) -> str:
        head, body = self._table()
        out = [f"### {self.title} ({self.frames} frames)", "", "| " + " | ".join(head) + " |",
               "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        out += ["| " + " | ".join(b) + " |" for b in body]
        out += ["", "| summary | value |", "|---|---:|"]
        out += [f"| {k}{' (%)' if k in self.percent else ''} | {_fmt(v, self._scale(k))} |" for k, v in self.summary.items()]
        out += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(out).rstrip() + "\n"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["summary"] = {k: _json_num(v) for k, v in self.summary.items()}
        d["rows"] = [{"name": r.name, "values": {k: _json_num(v) for k, v in r.values.items()}} for r in self.rows]
        return d

    def to_json(self, indent: int = 2) -> str:
        """JSON with raw fractions (not percentages); nan and inf are written as null."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)
