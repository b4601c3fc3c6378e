"""Contrast phase estimated from the blood pool (aorta, else another great vessel); it gates every HU statement."""

from __future__ import annotations

from dataclasses import dataclass

from .measure import StructureMeasurement

#: Unenhanced blood is about 35-55 HU; below this the scan is taken as unenhanced.
UNENHANCED_MAX_HU = 70.0
#: Above this the blood pool is opacified; between the two the phase is not decided (late phase, anaemia).
ENHANCED_MIN_HU = 100.0
_BLOOD = ("aorta", "pulmonary_artery", "inferior_vena_cava", "heart")


@dataclass(frozen=True)
class Phase:
    name: str     # unenhanced | arterial | portal venous | contrast-enhanced | unknown | not CT
    basis: str    # what it was decided from, for the technique line

    @property
    def unenhanced(self) -> bool:
        return self.name == "unenhanced"


def estimate_phase(measurements: list[StructureMeasurement], modality: str, contrast_agent: str | None = None
                   ) -> Phase:
    """Phase from the mean HU of the blood pool (eroded masks), with the DICOM contrast tag as a hint."""
    if modality != "CT":
        return Phase("not CT", f"{modality}: intensities are not Hounsfield units")
    by_key = {m.anatomy.key: m for m in measurements if m.intensity_mean is not None and m.intensity_eroded}
    vessel = next((by_key[k] for k in _BLOOD if k in by_key), None)
    header = f"; DICOM contrast agent '{contrast_agent}'" if contrast_agent else ""
    if vessel is None:
        if contrast_agent:
            return Phase("contrast-enhanced", f"DICOM contrast agent '{contrast_agent}' (no vessel segmented)")
        return Phase("unknown", "no blood vessel segmented and no contrast tag in the header")
    hu = vessel.intensity_mean
    basis = f"{vessel.anatomy.display.lower()} {hu:.0f} HU{header}"
    if hu < UNENHANCED_MAX_HU and not contrast_agent:
        return Phase("unenhanced", basis)
    if hu < ENHANCED_MIN_HU:
        return Phase("unknown", basis + " (between unenhanced and opacified blood)")
    portal = by_key.get("portal_vein")
    if vessel.anatomy.key == "aorta" and portal is not None:
        ratio = portal.intensity_mean / hu
        if ratio < 0.6:
            return Phase("arterial", f"{basis}, portal vein {portal.intensity_mean:.0f} HU")
        return Phase("portal venous", f"{basis}, portal vein {portal.intensity_mean:.0f} HU")
    return Phase("contrast-enhanced", basis)
