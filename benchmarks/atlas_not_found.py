"""Atlas localizer: the evidence that decides found / not found, on scans the reported figures never use.

Present: the H&N protocol's templates (first five recommended train-pats holding each organ) in the next
recommended train-pats patients, organs they have contoured.  Absent: the same templates' brainstem, parotids
and mandible in the unlabelled chest and abdomen CTs of ``../shared/data/ct_unlabelled`` (no head in them), and
the torso templates (liver, spleen, kidneys of ``ct/ts_example``) in those train-pats patients.  Per target: the
templates' median match (NCC of the affinely aligned region), median share in the scan, face spread, and the
localizer's decision.

    python benchmarks/atlas_not_found.py --n 6        # ~8 min on the 2-core CPU
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from localization import DEFAULT_DATA, HN_DATA, hn_split, hn_templates_and_queries  # noqa: E402

from medlsam_training.localization.extreme_points import extreme_points_from_mask  # noqa: E402
from medlsam_training.localization.localize import MAX_SPREAD_MM, MIN_IN_SCAN, MIN_MATCH, AtlasLocalizer, Template  # noqa: E402
from medlsam_training.volumes.datasets import find_cases  # noqa: E402
from medlsam_training.volumes.io import read_volume  # noqa: E402

UNLABELLED = DEFAULT_DATA.parent / "ct_unlabelled"
NO_HEAD = ("cmb_crc_chest", "contrast_abdomen", "midrc_ricord_chest", "lidc_chest_154677", "siemens_chest",
           "cptac_pda_lung_bases_abdomen", "thorax_4dct_phase00")
HN_VALUES = {"brainstem": 1, "spinal_cord": 2, "parotid_right": 3, "parotid_left": 4, "esophagus": 5, "larynx": 6,
             "mandible": 7}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6, help="train-pats queries (after the tuning set's eight)")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    cache: dict = {}
    templates, _ = hn_templates_and_queries(HN_DATA, 5, 0, cache)
    by_name = {c.name: c for c in find_cases(HN_DATA, require_labels=True)}
    names = [n for n in hn_split(HN_DATA, "train-pats") if n not in cache][8:8 + args.n]
    torso_case = next(c for c in find_cases(DEFAULT_DATA, require_labels=True) if c.name == "ts_example")
    image, label = torso_case.load()
    eps = [extreme_points_from_mask(n, v, image, label) for v, n in torso_case.label_names.items()
           if n in ("liver", "spleen", "kidney_right", "kidney_left")]
    torso = [Template(image, eps, {ep.target: label.array == ep.mask_label for ep in eps})]
    keep = ("brainstem", "parotid_right", "parotid_left", "mandible")
    hn_absent = [Template(t.volume, [ep for ep in t.targets if ep.target in keep],
                          {o: m for o, m in t.masks.items() if o in keep}) for t in templates]
    hn_absent = [t for t in hn_absent if t.targets]
    loc = AtlasLocalizer(per_target=False)
    print(f"rule: found when median match >= {MIN_MATCH}, median share in the scan >= {MIN_IN_SCAN}, "
          f"spread <= {MAX_SPREAD_MM} mm (two templates or more)\n")
    print("| set | query | target | match | spread mm | decision |\n|---|---|---|---|---|---|")
    errors = {"present": [0, 0], "absent": [0, 0]}

    def run(kind: str, query_name: str, query, tpls, present) -> None:
        for r in loc.localize(query, tpls):
            truth = present(r.target)
            if truth is None:  # not contoured: unknown
                continue
            decided = r.status != "not found"
            errors[kind][0] += decided != truth
            errors[kind][1] += 1
            match = "-" if r.similarity is None else f"{r.similarity:.2f}"
            print(f"| {kind} | {query_name} | {r.target} | {match} | {r.spread_mm:.1f} | {r.status}"
                  f"{'' if decided == truth else ' **wrong**'} |", flush=True)

    for n in names:
        img, lab = by_name[n].load()
        counts = {o: int((lab.array == v).sum()) for o, v in HN_VALUES.items()}
        run("present", n, img, templates, lambda o, c=counts: True if c.get(o, 0) >= 200 else None)
    for n in NO_HEAD:
        run("absent", n, read_volume(UNLABELLED / f"{n}.nii.gz"), hn_absent, lambda o: False)
    for n in names:
        run("absent", f"{n} (torso templates)", by_name[n].load()[0], torso, lambda o: False)
    print()
    for kind, (wrong, total) in errors.items():
        print(f"{kind}: {wrong} wrong of {total}")


if __name__ == "__main__":
    main()
