"""Structure names of label maps (TotalSegmentator v1/v2, OpenKBP, the project's phantom, free text) mapped to
one anatomy key, its report section, its kind and a SNOMED CT code."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Report sections in the order of the RSNA RadReport templates (neck, chest, then the "CT abdomen and pelvis"
#: findings order), followed by what those templates leave to free text.
SECTIONS = ("Head and neck", "Chest", "Liver", "Gallbladder and bile ducts", "Pancreas", "Spleen", "Adrenal glands",
            "Kidneys and ureters", "Urinary bladder", "Pelvic organs", "Bowel", "Vessels", "Bones", "Muscles",
            "Lesions", "Other structures")


@dataclass(frozen=True)
class Anatomy:
    """What the report knows about one structure."""

    key: str            # canonical name, with side: "kidney_right"
    display: str        # "Right kidney"
    section: str
    kind: str           # organ | tube | lesion | bone | muscle | group
    snomed: tuple[str, str] = ("91723000", "Anatomical structure")  # code, meaning (side kept in the name)


def _a(key: str, display: str, section: str, kind: str = "organ", code: str = "", meaning: str = "") -> Anatomy:
    return Anatomy(key, display, section, kind, (code, meaning) if code else ("91723000", "Anatomical structure"))


# SNOMED CT codes as used by DICOM's segmentation property categories (CID 7166 and neighbours).
_KNOWN = [
    _a("brainstem", "Brainstem", "Head and neck", "organ", "15926001", "Brainstem"),
    _a("brain", "Brain", "Head and neck", "organ", "12738006", "Brain"),
    _a("spinal_cord", "Spinal cord", "Head and neck", "organ", "2748008", "Spinal cord"),
    _a("parotid_right", "Right parotid gland", "Head and neck", "organ", "45289007", "Parotid gland"),
    _a("parotid_left", "Left parotid gland", "Head and neck", "organ", "45289007", "Parotid gland"),
    _a("submandibular_right", "Right submandibular gland", "Head and neck", "organ", "54019009", "Submandibular gland"),
    _a("submandibular_left", "Left submandibular gland", "Head and neck", "organ", "54019009", "Submandibular gland"),
    _a("mandible", "Mandible", "Head and neck", "bone", "91609006", "Mandible"),
    _a("larynx", "Larynx", "Head and neck", "organ", "4596009", "Larynx"),
    _a("thyroid_gland", "Thyroid gland", "Head and neck", "organ", "69748006", "Thyroid"),
    _a("trachea", "Trachea", "Chest", "organ", "44567001", "Trachea"),
    _a("esophagus", "Oesophagus", "Chest", "organ", "32849002", "Esophagus"),
    _a("lung", "Lungs", "Chest", "group", "39607008", "Lung"),
    _a("heart", "Heart", "Chest", "organ", "80891009", "Heart"),
    _a("pulmonary_artery", "Pulmonary artery", "Vessels", "tube", "81040000", "Pulmonary artery"),
    _a("liver", "Liver", "Liver", "organ", "10200004", "Liver"),
    _a("gallbladder", "Gallbladder", "Gallbladder and bile ducts", "organ", "28231008", "Gallbladder"),
    _a("pancreas", "Pancreas", "Pancreas", "organ", "15776009", "Pancreas"),
    _a("spleen", "Spleen", "Spleen", "organ", "78961009", "Spleen"),
    _a("adrenal_gland_right", "Right adrenal gland", "Adrenal glands", "organ", "23451007", "Adrenal gland"),
    _a("adrenal_gland_left", "Left adrenal gland", "Adrenal glands", "organ", "23451007", "Adrenal gland"),
    _a("kidney_right", "Right kidney", "Kidneys and ureters", "organ", "9846003", "Right kidney"),
    _a("kidney_left", "Left kidney", "Kidneys and ureters", "organ", "18639004", "Left kidney"),
    _a("urinary_bladder", "Urinary bladder", "Urinary bladder", "organ", "89837001", "Urinary bladder"),
    _a("prostate", "Prostate", "Pelvic organs", "organ", "41216001", "Prostate"),
    _a("stomach", "Stomach", "Bowel", "organ", "69695003", "Stomach"),
    _a("duodenum", "Duodenum", "Bowel", "organ", "38848004", "Duodenum"),
    _a("small_bowel", "Small bowel", "Bowel", "organ", "30315005", "Small intestine"),
    _a("colon", "Colon", "Bowel", "organ", "71854001", "Colon"),
    _a("aorta", "Aorta", "Vessels", "tube", "15825003", "Aorta"),
    _a("inferior_vena_cava", "Inferior vena cava", "Vessels", "tube", "64131007", "Inferior vena cava"),
    _a("portal_vein", "Portal and splenic veins", "Vessels", "tube", "32764006", "Portal vein"),
    _a("spine", "Spine", "Bones", "bone", "421060004", "Spine"),
    _a("sternum", "Sternum", "Bones", "bone", "56873002", "Sternum"),
]
ANATOMY: dict[str, Anatomy] = {a.key: a for a in _KNOWN}

_SYNONYMS = {
    "brain_stem": "brainstem", "spinalcord": "spinal_cord", "cord": "spinal_cord",
    "gall_bladder": "gallbladder", "bladder": "urinary_bladder", "oesophagus": "esophagus",
    "thyroid": "thyroid_gland", "ivc": "inferior_vena_cava", "vena_cava_inferior": "inferior_vena_cava",
    "portal_vein_and_splenic_vein": "portal_vein", "portal_splenic_vein": "portal_vein",
    "pulmonary_trunk": "pulmonary_artery", "main_pulmonary_artery": "pulmonary_artery",
    "small_intestine": "small_bowel", "bowel_small": "small_bowel", "large_bowel": "colon",
    "heart_myocardium": "heart", "vertebral_column": "spine", "adrenal_right": "adrenal_gland_right",
    "adrenal_left": "adrenal_gland_left", "aorta_thoracic": "aorta", "aorta_abdominal": "aorta",
}
_SIDES = {"right": "right", "r": "right", "rt": "right", "left": "left", "l": "left", "lt": "left"}
_SIDED = ("kidney", "parotid", "submandibular", "adrenal_gland")
# Families that the report groups into one line (many parts, no size rule): regex -> (group display, section, kind)
_GROUPS = [
    (r"^vertebra[e]?_?[ctls]\d+$|^sacrum$", "Vertebrae", "Bones", "bone"),
    (r"^rib_(left|right)_\d+$|^costal_cartilages$", "Ribs", "Bones", "bone"),
    (r"^(humerus|scapula|clavicula|femur|hip|skull|carpal)(_(left|right))?$", "Other bones", "Bones", "bone"),
    (r"^(gluteus_\w+|autochthon|iliopsoas)_(left|right)$", "Muscles", "Muscles", "muscle"),
    (r"^lung_(upper|middle|lower)_lobe_(left|right)$|^lung_(left|right)$", "Lungs", "Chest", "group"),
    (r"^(pulmonary_vein|brachiocephalic_\w+|subclavian_artery_\w+|common_carotid_artery_\w+|superior_vena_cava"
     r"|atrial_appendage_left|iliac_(artery|vena)_\w+)$", "Other vessels", "Vessels", "group"),
]
_LESION = re.compile(r"(tumou?r|lesion|nodule|metasta|cyst|mass|neoplasm|gtv|cancer|carcinoma)")


def normalise(name: str) -> str:
    """'Kidney (Right)' -> 'kidney_right'; lower case, words joined by underscores."""
    return re.sub(r"_+", "_", re.sub(r"[^a-z0-9]+", "_", name.strip().lower())).strip("_")


def _with_side(key: str) -> str:
    """'right_kidney', 'kidney_r', 'parotid_l' -> 'kidney_right', 'parotid_left'."""
    parts = key.split("_")
    for i in (0, len(parts) - 1):
        if len(parts) > 1 and parts[i] in _SIDES:
            rest = "_".join(parts[:i] + parts[i + 1:])
            if rest in _SIDED or rest in ("adrenal", "parotid_gland", "submandibular_gland"):
                base = {"adrenal": "adrenal_gland", "parotid_gland": "parotid",
                        "submandibular_gland": "submandibular"}.get(rest, rest)
                return f"{base}_{_SIDES[parts[i]]}"
    return key


def lookup(name: str) -> Anatomy:
    """The anatomy of a label name; unknown names get their own entry in 'Other structures' (kind 'organ')."""
    key = _with_side(_SYNONYMS.get(normalise(name), normalise(name)))
    key = _SYNONYMS.get(key, key)
    if key in ANATOMY:
        return ANATOMY[key]
    if _LESION.search(key):
        return Anatomy(key, name.strip(), "Lesions", "lesion", ("52988006", "Lesion"))
    for pattern, display, section, kind in _GROUPS:
        if re.match(pattern, key):
            return Anatomy(key, display, section, kind)
    return Anatomy(key, name.strip() or key, "Other structures", "organ")
