"""Report drafting: findings from an image and its label map, measured against reference ranges."""

from .draft import Patient, Report, build_report, draft_report
from .measure import StructureMeasurement, measure_structures
from .references import load_references

__all__ = ["Patient", "Report", "StructureMeasurement", "build_report", "draft_report", "load_references",
           "measure_structures"]
