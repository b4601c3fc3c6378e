"""The findings draft: measurements judged against the reference table, phrased per structure in RadReport
section order, an impression of the abnormal findings only, as Markdown and JSON."""

from __future__ import annotations

import datetime as _dt
import re
from collections import defaultdict
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from ..progress import ProgressFn
from ..volumes.volume import Volume
from .anatomy import ANATOMY, SECTIONS
from .measure import StructureMeasurement, axial_axis, guess_modality, measure_structures
from .phase import Phase, estimate_phase
from .references import Reference, Verdict, judge_all, load_references

MARK = "[auto]"
DISCLAIMER = (f"Draft generated from segmentation, not a diagnosis. Every line marked {MARK} was written by "
              "medlsam-napari from the label map: verify it against the images, edit it, and remove the mark.")
#: Measures whose value is meaningless for an organ cut by the scan's border.
SIZE_MEASURES = ("volume_ml", "max_diameter_mm", "cc_extent_mm")
#: Solid organs whose mean attenuation below 0 HU means a faulty mask (fat or air inside), not disease.
_SOLID = ("liver", "spleen", "kidney_left", "kidney_right", "pancreas")
_UNITS = {"volume_ml": "mL", "hu_mean": "HU", "liver_minus_spleen_hu": "HU"}
_LABELS = {"volume_ml": "volume", "max_diameter_mm": "maximal 3D diameter", "cc_extent_mm": "craniocaudal length",
           "abdominal_diameter_mm": "abdominal diameter", "thoracic_diameter_mm": "thoracic diameter",
           "tube_diameter_mm": "maximal diameter", "hu_mean": "mean attenuation",
           "liver_minus_spleen_hu": "liver minus spleen attenuation"}


@dataclass(frozen=True)
class Patient:
    sex: str | None = None          # "M" or "F"
    age_years: float | None = None
    source: str = "not given"

    @classmethod
    def from_meta(cls, meta: dict, sex: str | None = None, age: float | None = None) -> "Patient":
        """From the DICOM header values in a Volume's meta, overridden by explicit values."""
        hdr_sex = str(meta.get("patient_sex", "")).strip().upper()[:1] or None
        hdr_age = parse_dicom_age(str(meta.get("patient_age", "")))
        if sex or age is not None:
            return cls((sex or hdr_sex or "").upper()[:1] or None, age if age is not None else hdr_age, "given")
        if hdr_sex in ("M", "F") or hdr_age is not None:
            return cls(hdr_sex if hdr_sex in ("M", "F") else None, hdr_age, "DICOM header")
        return cls()


def parse_dicom_age(text: str) -> float | None:
    """DICOM AS values: '045Y', '006M', '012W', '003D' -> years."""
    m = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY])\s*", text or "")
    if not m:
        return None
    return int(m.group(1)) / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[m.group(2)]


@dataclass
class Judgement:
    measure: str
    value: float
    verdict: Verdict | None
    note: str = ""

    def to_dict(self) -> dict:
        out = {"measure": self.measure, "value": self.value, "unit": _UNITS.get(self.measure, "mm"),
               "note": self.note}
        if self.verdict:
            r = self.verdict.reference
            out.update(verdict=self.verdict.word, abnormal=self.verdict.abnormal, low=r.low, high=r.high,
                       population=r.population, source=r.source)
        return out


@dataclass
class Finding:
    measurement: StructureMeasurement
    sentence: str
    judgements: list[Judgement] = field(default_factory=list)

    @property
    def abnormal(self) -> list[Judgement]:
        return [j for j in self.judgements if j.verdict and j.verdict.abnormal]


@dataclass
class Report:
    image: str
    label: str
    modality: str
    technique: list[str]
    patient: Patient
    phase: Phase
    findings: list[Finding]
    absent: list[str]
    impression: list[str]
    citations: list[tuple[str, str]]       # (source key, citation) in order of first use
    created: str
    generator: str

    def to_markdown(self) -> str:
        lines = [f"# Findings draft: {self.image}", "", f"> {DISCLAIMER}", "", "## Clinical information", ""]
        p = self.patient
        who = ", ".join(x for x in (f"sex {p.sex}" if p.sex else "", f"age {p.age_years:.0f} years"
                                    if p.age_years is not None else "") if x) or "sex and age not known"
        lines += [f"- {MARK} Patient: {who} ({p.source}).", "", "## Technique", ""]
        lines += [f"- {MARK} {t}" for t in self.technique] + ["", "## Findings", ""]
        by_section: dict[str, list[Finding]] = defaultdict(list)
        for f in self.findings:
            by_section[f.measurement.anatomy.section].append(f)
        for section in SECTIONS:
            items = _grouped(by_section.get(section, []))
            if section == "Other structures" and self.absent:
                more = f" and {len(self.absent) - 12} more" if len(self.absent) > 12 else ""
                items.append(f"Named but not segmented (no voxel): {', '.join(self.absent[:12])}{more}.")
            if items:
                lines += [f"### {section}", ""] + [f"- {MARK} {s}" for s in items] + [""]
        lines += ["## Impression", ""]
        lines += [f"{i}. {MARK} {s}" for i, s in enumerate(self.impression, 1)] + [""]
        lines += ["## Measurements", "", "| structure | value | volume (mL) | max 3D diameter (mm) | axes (mm) | "
                  "craniocaudal (mm) | mean ± SD | complete |", "|---|---|---|---|---|---|---|---|"]
        for f in self.findings:
            m = f.measurement
            hu = f"{m.intensity_mean:.0f} ± {m.intensity_sd:.0f}" if m.intensity_mean is not None else ""
            lines.append(f"| {m.name} | {m.value} | {m.volume_ml:,.1f} | {m.max_diameter_mm:.0f} | "
                         f"{' × '.join(f'{a:.0f}' for a in m.axes_mm)} | {m.cc_extent_mm:.0f} | {hu} | "
                         f"{'yes' if m.complete else 'no: ' + ', '.join(m.edges)} |")
        if self.citations:
            lines += ["", "## References", ""] + [f"[{i}] {c}" for i, (_, c) in enumerate(self.citations, 1)]
        lines += ["", f"_{self.generator}, {self.created}; image {self.image}, labels {self.label}._", ""]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "image": self.image, "label": self.label, "modality": self.modality, "created": self.created,
            "generator": self.generator, "disclaimer": DISCLAIMER,
            "patient": {"sex": self.patient.sex, "age_years": self.patient.age_years, "source": self.patient.source},
            "phase": {"name": self.phase.name, "basis": self.phase.basis}, "technique": self.technique,
            "structures": [dict(f.measurement.to_dict(), sentence=f.sentence,
                                judgements=[j.to_dict() for j in f.judgements]) for f in self.findings],
            "absent": self.absent, "impression": self.impression,
            "references": [{"key": k, "citation": c} for k, c in self.citations],
        }


def build_report(image: Volume, label: Volume, names: dict[int, str] | None = None, *,
                 references: list[Reference] | None = None, patient: Patient | None = None,
                 modality: str | None = None, progress: ProgressFn | None = None, cancelled=None) -> Report:
    """Measure ``label`` (on ``image``'s grid) and draft the report."""
    names = dict(names or {})
    measurements = measure_structures(image, label, names, modality=modality, progress=progress,
                                      cancelled=cancelled)
    return draft_report(image, label, measurements, names, references=references, patient=patient,
                        modality=modality)


def draft_report(image: Volume, label: Volume, measurements: list[StructureMeasurement], names: dict[int, str],
                 *, references: list[Reference] | None = None, patient: Patient | None = None,
                 modality: str | None = None) -> Report:
    refs = load_references() if references is None else references
    patient = patient or Patient.from_meta(image.meta)
    modality = modality or guess_modality(image)
    phase = estimate_phase(measurements, modality, image.meta.get("contrast_agent"))
    cite = _Citations()
    by_key = {m.anatomy.key: m for m in measurements}
    findings = [_finding(m, refs, patient, phase, cite, by_key) for m in measurements]
    present = {m.value for m in measurements}
    absent = [n for v, n in sorted(names.items()) if v not in present and v != 0 and n.lower() != "background"]
    g = image.geometry
    axial = axial_axis(image)
    thickness = image.spacing_zyx[axial]
    coverage = image.array.shape[axial] * thickness
    technique = [f"{modality}, {' × '.join(map(str, g.size))} voxels of "
                 f"{' × '.join(f'{s:.2f}' for s in g.spacing)} mm; axial sections {thickness:.2f} mm, "
                 f"craniocaudal coverage {coverage:.0f} mm."]
    if modality == "CT":
        gate = ("attenuation statements made" if phase.unenhanced
                else "attenuation rules for unenhanced CT not applied")
        technique.append(f"Contrast phase (estimated): {phase.name} ({phase.basis}); {gate}.")
    ranked = sorted(((j.verdict.severity, f, j) for f in findings for j in f.abnormal), key=lambda t: -t[0])
    impression = [f"{f.measurement.anatomy.display if f.measurement.anatomy.kind != 'organ' else f.measurement.name}"
                  f": {j.verdict.word} ({_LABELS.get(j.measure, j.measure)} {_fmt(j.value, j.measure)})."
                  for _, f, j in ranked]
    impression = [s[0].upper() + s[1:] for s in impression]
    impression += [f.sentence for f in findings if f.measurement.anatomy.kind == "lesion"]
    if not impression:
        judged = sum(1 for f in findings if any(j.verdict for j in f.judgements))
        cut = sum(1 for f in findings if not f.measurement.complete)
        measured = f"{len(findings)} measured, {cut} incompletely imaged and not judged on size"
        impression = [f"No abnormality among the {judged} structure(s) compared with a reference range ({measured})."
                      if judged else f"No structure was compared with a reference range ({measured}): the table "
                      "holds no reference for what is segmented."]
    try:
        gen = f"medlsam-napari {version('medlsam-napari')}"
    except PackageNotFoundError:
        gen = "medlsam-napari"
    return Report(image.name, label.name, modality, technique, patient, phase, findings, absent, impression,
                  cite.used, _dt.datetime.now().isoformat(timespec="seconds"), gen)


class _Citations:
    def __init__(self) -> None:
        self.used: list[tuple[str, str]] = []

    def __call__(self, ref: Reference) -> int:
        keys = [k for k, _ in self.used]
        if ref.source not in keys:
            self.used.append((ref.source, ref.citation))
            keys.append(ref.source)
        return keys.index(ref.source) + 1


def _fmt(value: float, measure: str) -> str:
    unit = _UNITS.get(measure, "mm")
    return f"{value:,.0f} {unit}" if abs(value) >= 100 or unit != "mL" else f"{value:.1f} {unit}"


def _rows(refs: list[Reference], key: str, measure: str, patient: Patient, phase: Phase) -> tuple[list, str]:
    rows = [r for r in refs if r.structure == key and r.measure == measure]
    rows = [r for r in rows if r.phase is None or (r.phase == "unenhanced" and phase.unenhanced)]
    if any(r.sex for r in rows):
        if patient.sex in ("M", "F"):
            return [r for r in rows if r.sex in (None, patient.sex)], ""
        # sex unknown: the more lenient of the two limits, and say so
        common = [r for r in rows if r.sex is None]
        by_sex = {s: [r for r in rows if r.sex == s] for s in ("M", "F")}
        lenient = max(by_sex.values(), key=lambda rs: max((r.high or 0) for r in rs) if rs else -1)
        return common + lenient, "sex unknown: the less strict limit"
    return rows, ""


def _judge(m: StructureMeasurement, measure: str, value: float | None, refs, patient, phase, cite,
           judgements: list[Judgement]) -> str:
    """' (ref. 825-1,700 mL [1]: normal)' for one measure, or '' when the table has no row for it."""
    if value is None:
        return ""
    rows, note = _rows(refs, m.anatomy.key, measure, patient, phase)
    verdict = judge_all(value, rows)
    judgements.append(Judgement(measure, float(value), verdict, note))
    if verdict is None:
        return ""
    r = verdict.reference
    unit = _UNITS.get(measure, "mm")
    ref_text = r.range_text(unit) if len(rows) == 1 else "; ".join(x.range_text(unit) for x in rows)
    return f" (ref. {ref_text} [{cite(r)}]{'; ' + note if note else ''}: {verdict.word})"


def _finding(m: StructureMeasurement, refs, patient: Patient, phase: Phase, cite, by_key) -> Finding:
    f = Finding(m, "")
    j = f.judgements
    a = m.anatomy
    label = a.display if a.kind not in ("group",) and a.key in ANATOMY else m.name
    if a.kind == "lesion":
        n = len(m.lesions)
        big = m.lesions[0] if m.lesions else None
        f.sentence = (f"{m.name[:1].upper()}{m.name[1:]}: {n} lesion{'s' if n != 1 else ''}, total {m.volume_ml:.1f} mL"
                      + (f"; largest {big.long_axis_mm:.0f} × {big.short_axis_mm:.0f} mm on axial slice "
                         f"{big.slice_index} ({big.volume_ml:.1f} mL)" if big else "") + ".")
        return f
    parts = []
    if not m.complete:
        parts.append(f"incompletely imaged (meets the scan's {' and '.join(m.edges)} edge): no size conclusion; "
                     f"imaged volume {m.volume_ml:,.1f} mL")
        for measure in SIZE_MEASURES:
            j.append(Judgement(measure, float(getattr(m, measure)), None, "incompletely imaged: not judged"))
    elif a.kind == "tube":
        parts.append(f"volume {m.volume_ml:,.1f} mL, craniocaudal length {m.cc_extent_mm:.0f} mm")
    else:
        parts.append(f"volume {m.volume_ml:,.1f} mL" + _judge(m, "volume_ml", m.volume_ml, refs, patient, phase,
                                                              cite, j))
        parts.append(f"maximal 3D diameter {m.max_diameter_mm:.0f} mm"
                     + _judge(m, "max_diameter_mm", m.max_diameter_mm, refs, patient, phase, cite, j))
        parts.append(f"craniocaudal length {m.cc_extent_mm:.0f} mm"
                     + _judge(m, "cc_extent_mm", m.cc_extent_mm, refs, patient, phase, cite, j))
    if a.kind == "tube" and m.tube_diameter_mm is not None:
        if m.abdominal_diameter_mm is not None or m.thoracic_diameter_mm is not None:
            for measure, where in (("abdominal_diameter_mm", "abdominal"), ("thoracic_diameter_mm", "thoracic")):
                value = getattr(m, measure)
                if value is not None:
                    parts.append(f"maximal {where} diameter {value:.0f} mm"
                                 + _judge(m, measure, value, refs, patient, phase, cite, j))
        else:
            judged = _judge(m, "tube_diameter_mm", m.tube_diameter_mm, refs, patient, phase, cite, j)
            level = "" if judged or a.key != "aorta" else " (level not determined: no T12 or kidney label; not judged)"
            parts.append(f"maximal diameter {m.tube_diameter_mm:.0f} mm{judged}{level}")
    if m.components > 1 and a.kind in ("organ",):
        parts.append(f"{m.components} separate parts")
    parts.extend(_attenuation(m, refs, patient, phase, cite, j, by_key))
    f.sentence = f"{label}: " + "; ".join(p for p in parts if p) + "."
    return f


def _attenuation(m, refs, patient, phase, cite, j, by_key) -> list[str]:
    if phase.name == "not CT" or m.intensity_mean is None or m.anatomy.kind not in ("organ",):
        return []
    has_rule = any(r.structure == m.anatomy.key and r.phase for r in refs)
    if m.anatomy.key in _SOLID and m.intensity_mean < 0:
        return [f"mean attenuation {m.intensity_mean:.0f} HU is implausible for this organ: check the mask "
                "(fat or air inside it?)"]
    if not phase.unenhanced:
        return [f"attenuation not assessed ({phase.name} phase)"] if has_rule else []
    where = "" if m.intensity_eroded else ", mask too thin to erode"
    out = [f"mean attenuation {m.intensity_mean:.0f} ± {m.intensity_sd:.0f} HU{where}"
           + _judge(m, "hu_mean", m.intensity_mean, refs, patient, phase, cite, j)]
    spleen = by_key.get("spleen")
    if m.anatomy.key == "liver" and spleen is not None and spleen.intensity_mean is not None:
        diff = m.intensity_mean - spleen.intensity_mean
        out.append(f"liver minus spleen {diff:+.0f} HU"
                   + _judge(m, "liver_minus_spleen_hu", diff, refs, patient, phase, cite, j))
    return out


def _grouped(findings: list[Finding]) -> list[str]:
    """One sentence per structure; grouped families (vertebrae, ribs, lobes, muscles) in one line each."""
    out, groups = [], defaultdict(list)
    for f in findings:
        if f.measurement.anatomy.kind in ("bone", "muscle", "group") and f.measurement.anatomy.key not in ANATOMY:
            groups[f.measurement.anatomy.display].append(f.measurement)
        else:
            out.append(f.sentence)
    for display, ms in groups.items():
        cut = sum(1 for m in ms if not m.complete)
        out.append(f"{display}: {len(ms)} structure{'s' if len(ms) > 1 else ''} segmented "
                   f"({', '.join(m.name for m in ms[:6])}{', …' if len(ms) > 6 else ''}), "
                   f"total {sum(m.volume_ml for m in ms):,.0f} mL"
                   + (f", {cut} incompletely imaged" if cut else "") + "; measurements in the table.")
    return out
