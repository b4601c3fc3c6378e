"""The reference table (data in ``references.json``) and the comparison of a measured value with it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import MedLSAMError

#: A value within this fraction of a limit is "borderline", never abnormal (population limits are soft).
DEFAULT_MARGIN = 0.10
_REQUIRED = ("structure", "measure", "source")


@dataclass(frozen=True)
class Reference:
    structure: str
    measure: str
    low: float | None
    high: float | None
    below: str
    above: str
    sex: str | None
    phase: str | None
    margin: float
    population: str
    source: str      # key into the table's sources
    citation: str

    def range_text(self, unit: str) -> str:
        if self.low is not None and self.high is not None:
            return f"{_num(self.low)}-{_num(self.high)} {unit}"
        return f">= {_num(self.low)} {unit}" if self.low is not None else f"<= {_num(self.high)} {unit}"


@dataclass(frozen=True)
class Verdict:
    word: str          # normal | borderline | small | enlarged | the row's own words
    abnormal: bool
    severity: float    # how far beyond the limit, as a fraction of it (0 when within)
    reference: Reference

    @property
    def borderline(self) -> bool:
        return self.word.startswith("borderline")


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:g}"


def load_references(path: str | os.PathLike[str] | None = None) -> list[Reference]:
    """The bundled table, or a user's file of the same form."""
    if path is None:
        text = resources.files(__package__).joinpath("references.json").read_text(encoding="utf-8")
        where = "bundled references.json"
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise MedLSAMError(f"{path}: cannot read the reference table ({exc.strerror})") from exc
    try:
        data = json.loads(text)
        sources = data["sources"]
        rows = data["rows"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise MedLSAMError(f"{where}: not a reference table (needs 'sources' and 'rows'): {exc}") from exc
    out = []
    for i, r in enumerate(rows):
        missing = [k for k in _REQUIRED if k not in r] + ([] if r.get("source") in sources else ["a known source"])
        if missing or (r.get("low") is None and r.get("high") is None):
            raise MedLSAMError(f"{where}: row {i} lacks {', '.join(missing) or 'a low or high limit'}")
        out.append(Reference(r["structure"], r["measure"], r.get("low"), r.get("high"), r.get("below", "small"),
                             r.get("above", "enlarged"), r.get("sex"), r.get("phase"),
                             float(r.get("margin", DEFAULT_MARGIN)), r.get("population", ""), r["source"],
                             sources[r["source"]]))
    return out


def judge(value: float, ref: Reference) -> Verdict:
    """Compare one value with one row: beyond the limit by more than the margin is abnormal, near it borderline."""
    m = ref.margin
    if ref.high is not None:
        excess = (value - ref.high) / abs(ref.high)
        if excess > m:
            return Verdict(ref.above, True, excess, ref)
        if m > 0 and excess >= -m:
            return Verdict("borderline (upper limit)", False, 0.0, ref)
    if ref.low is not None:
        deficit = (ref.low - value) / abs(ref.low) if ref.low else ref.low - value
        if deficit > m or (m == 0 and value < ref.low):
            return Verdict(ref.below, True, max(deficit, 0.0), ref)
        if m > 0 and deficit >= -m:
            return Verdict("borderline (lower limit)", False, 0.0, ref)
    return Verdict("normal", False, 0.0, ref)


def judge_all(value: float, refs: list[Reference]) -> Verdict | None:
    """The most telling verdict over the rows of one measure: abnormal beats borderline beats normal; among
    abnormal ones the most extreme limit crossed (aneurysmal beats ectatic)."""
    if not refs:
        return None
    verdicts = [judge(value, r) for r in refs]

    def rank(v: Verdict) -> tuple:
        limit = v.reference.high if v.reference.high is not None and value > v.reference.high else v.reference.low
        extremity = 0.0 if limit is None else (limit if value > limit else -limit)
        return (2 if v.abnormal else 1 if v.borderline else 0, extremity if v.abnormal else 0.0)

    return max(verdicts, key=rank)
