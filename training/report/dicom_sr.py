"""The report's measurements as a DICOM Structured Report (TID 1500 Measurement Report) on the source series."""

from __future__ import annotations

import os
from pathlib import Path

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes

from ..errors import MedLSAMError
from ..volumes.atomic import atomic_path
from .draft import Report

_ML = hd.sr.CodedConcept("ml", "UCUM", "milliliter")
_FINDING = hd.sr.CodedConcept("121071", "DCM", "Finding")


def _group(finding, algorithm: hd.sr.AlgorithmIdentification, ct: bool) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    m = finding.measurement
    code, meaning = m.anatomy.snomed
    # a tube's diameter is its calibre (largest inscribed diameter of its sections), not its end-to-end Feret
    diameter = m.tube_diameter_mm if m.tube_diameter_mm is not None else m.max_diameter_mm
    values = [(codes.SCT.Volume, m.volume_ml, _ML, None),
              (codes.SCT.Diameter, diameter, codes.UCUM.Millimeter, codes.SCT.Maximum),
              (codes.SCT.Length, m.cc_extent_mm, codes.UCUM.Millimeter, None)]
    if m.intensity_mean is not None and ct:
        values.append((codes.DCM.AttenuationCoefficient, m.intensity_mean, codes.UCUM.HounsfieldUnit, codes.SCT.Mean))
    measurements = [hd.sr.Measurement(name=n, value=float(v), unit=u, derivation=d, algorithm_id=algorithm)
                    for n, v, u, d in values]
    judged = [j for j in finding.judgements if j.verdict is not None]
    evaluations = []
    if judged:
        value = codes.SCT.Abnormal if any(j.verdict.abnormal for j in judged) else codes.SCT.Normal
        evaluations.append(hd.sr.QualitativeEvaluation(_FINDING, value))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{m.name} (label {m.value})"),
        finding_type=hd.sr.CodedConcept(code, "SCT", meaning), algorithm_id=algorithm,
        measurements=measurements, qualitative_evaluations=evaluations or None)


def write_measurement_report(report: Report, evidence: list[pydicom.Dataset], out: str | os.PathLike[str]) -> Path:
    """Write ``report``'s measurements as a Comprehensive 3D SR (draft: not complete, not verified)."""
    if not evidence:
        raise MedLSAMError(f"{out}: no source DICOM headers given; a structured report needs them")
    algorithm = hd.sr.AlgorithmIdentification(name="medlsam-napari report draft",
                                              version=report.generator.split()[-1])
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="medlsam-napari", manufacturer_name="medlsam-napari"))
    groups = [_group(f, algorithm, report.modality == "CT") for f in report.findings]
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion if report.modality == "CT"
        else hd.sr.CodedConcept("25056-3", "LN", "MRI unspecified body region"),
        imaging_measurements=groups)
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence, content=content, series_instance_uid=hd.UID(), series_number=9001,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medlsam-napari",
            series_description="medlsam-napari findings draft (from segmentation)",
            is_complete=False, is_final=False, is_verified=False)
    except (ValueError, AttributeError, TypeError) as exc:
        source = getattr(evidence[0], "filename", None) or "the source series"
        raise MedLSAMError(f"{source}: its DICOM header cannot be referenced by a structured report ({exc})") from exc
    out = Path(out)
    with atomic_path(out) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return out
