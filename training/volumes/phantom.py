"""A deterministic, procedural abdominal CT phantom (SYNTHETIC data, not a patient).

Each seed gives another "patient": body habitus, fat thickness, organ positions, sizes and shapes
(smoothly deformed ellipsoids) vary, so templates on one phantom and queries on another make a real
few-shot test with known truth.  Intensities are in Hounsfield units as in a portal-venous CT; partial
volume blur and quantum noise are added.  The project ships this instead of real data.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .atomic import write_json_atomic
from .io import write_volume
from .volume import Volume

LABEL_NAMES: dict[int, str] = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "aorta", 6: "spine"}
DEFAULT_SIZE = (192, 160, 96)  # x, y, z voxels: the field holds the liver dome and both kidneys whole
DEFAULT_SPACING = (1.8, 1.8, 3.0)  # mm


@dataclass
class Phantom:
    image: Volume
    label: Volume
    label_names: dict[int, str]


class _Painter:
    """Paints tissues in order (later ones cover earlier ones) on a physical-mm grid.

    Coordinates are kept as broadcastable 1D axes so each shape is evaluated only inside its own
    bounding block, which keeps a phantom to about a second.
    """

    def __init__(self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, rng: np.random.Generator):
        self.axes = (xs, ys, zs)
        self.x, self.y, self.z = xs[None, None, :], ys[None, :, None], zs[:, None, None]
        self.rng = rng
        shape = (zs.size, ys.size, xs.size)
        self.hu = np.full(shape, -1000.0, dtype=np.float32)
        self.label = np.zeros(shape, dtype=np.uint8)

    def _block(self, lo, hi) -> tuple[slice, slice, slice]:
        sl = []
        for axis, a, b in zip(self.axes, lo, hi):
            idx = np.nonzero((axis >= a) & (axis <= b))[0]
            sl.append(slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0))
        return tuple(sl[::-1])

    def ellipsoid(self, centre, radii, wobble: float = 0.0) -> np.ndarray:
        """Boolean mask of an ellipsoid whose surface is displaced by up to ``wobble`` mm per axis."""
        reach = np.asarray(radii) + 2 * wobble
        block = self._block(np.asarray(centre) - reach, np.asarray(centre) + reach)
        x, y, z = self.x[..., block[2]], self.y[:, block[1]], self.z[block[0]]
        d = [0.0, 0.0, 0.0]
        if wobble:
            for axis in range(3):
                for _ in range(2):  # two smooth sinusoids per axis
                    k = self.rng.normal(size=3)
                    k *= 2 * np.pi / (self.rng.uniform(60, 140) * np.linalg.norm(k))
                    d[axis] = d[axis] + wobble * np.sin(k[0] * x + k[1] * y + k[2] * z + self.rng.uniform(0, 2 * np.pi))
        inside = (((x + d[0] - centre[0]) / radii[0]) ** 2 + ((y + d[1] - centre[1]) / radii[1]) ** 2
                  + ((z + d[2] - centre[2]) / radii[2]) ** 2) <= 1.0
        mask = np.zeros(self.hu.shape, dtype=bool)
        mask[block] = inside
        return mask

    def paint(self, mask: np.ndarray, hu: float, label: int | None = None, within: np.ndarray | None = None) -> None:
        mask = np.broadcast_to(mask, self.hu.shape)  # in-plane shapes extend along z
        if within is not None:
            mask = mask & within
        self.hu[mask] = hu
        self.label[mask] = 0 if label is None else label


def make_phantom(
    seed: int = 0,
    size: tuple[int, int, int] = DEFAULT_SIZE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
) -> Phantom:
    """Generate phantom number ``seed``: an int16 HU image and a uint8 label map (see LABEL_NAMES)."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = size
    # Physical grid (LPS, mm) centred in-plane; z spans the upper abdomen with a per-patient shift.
    origin = (-(nx - 1) * spacing[0] / 2, -(ny - 1) * spacing[1] / 2 - 10.0, -(nz - 1) * spacing[2] / 2)
    zs = origin[2] + np.arange(nz) * spacing[2]
    ys = origin[1] + np.arange(ny) * spacing[1]
    xs = origin[0] + np.arange(nx) * spacing[0]
    # Where the field of view falls on this patient: as in a real abdominal CT it runs from the lung bases
    # past the kidneys' lower poles, so the solid organs lie inside it (only the aorta and spine run through).
    zs = zs + rng.uniform(5, 25)
    p = _Painter(xs.astype(np.float32), ys.astype(np.float32), zs.astype(np.float32), rng)
    x, y, z = p.x, p.y, p.z

    s = rng.uniform(0.92, 1.08)  # habitus
    j = lambda v: v + rng.uniform(-8, 8)  # noqa: E731 - organ position jitter (mm)
    r = lambda v: v * s * rng.uniform(0.9, 1.1)  # noqa: E731 - organ size jitter

    # Body wall: subcutaneous fat, muscle, then the abdominal cavity filled with visceral fat.
    a, b = 155 * s * (1 + 0.03 * np.sin(z / 80.0)), 112 * s * (1 + 0.02 * np.cos(z / 60.0))
    fat_mm = rng.uniform(12, 28)
    body = (x / a) ** 2 + ((y - 5) / b) ** 2 <= 1
    inner = (x / (a - fat_mm)) ** 2 + ((y - 5) / (b - fat_mm)) ** 2 <= 1
    cavity = (x / (a - fat_mm - 11)) ** 2 + ((y - 5) / (b - fat_mm - 11)) ** 2 <= 1
    p.paint(body, -105)
    p.paint(inner, 48)
    p.paint(cavity, -90)

    # Lung bases at the top of the field, bowel loops (some with gas) in the anterior cavity.
    for side in (-1, 1):
        p.paint(p.ellipsoid((side * 75, j(25), j(175)), (r(70), r(75), r(80)), wobble=4), -840, within=cavity)
    for _ in range(14):
        centre = (rng.uniform(-90, 90), rng.uniform(-70, 10), rng.uniform(-120, 30))
        loop = p.ellipsoid(centre, (rng.uniform(12, 24), rng.uniform(10, 20), rng.uniform(15, 35)), wobble=3)
        p.paint(loop, rng.uniform(25, 45), within=cavity)
        if rng.random() < 0.4:
            p.paint(p.ellipsoid(centre, (6, 6, 8)), -900, within=cavity)

    # Psoas muscles, inferior vena cava (unlabelled distractors near the labelled organs).
    vy = 48 * s  # centre of the vertebral bodies
    for side in (-1, 1):
        p.paint(p.ellipsoid((side * 36, vy + 5, -120), (15 * s, 18 * s, 130), wobble=2), 50, within=inner)
        p.paint(p.ellipsoid((side * 34, vy + 50, 0), (24 * s, 20 * s, 400)), 50, within=inner)  # erector spinae
    ivc_x = j(-24)
    p.paint(((x - ivc_x) / 12) ** 2 + ((y - vy + 14) / 11) ** 2 <= 1, 135, within=cavity)

    # Solid organs with their labels.
    liver = p.ellipsoid((j(-62), j(-5), j(55)), (r(80), r(75), r(70)), wobble=6)
    liver |= p.ellipsoid((j(15), j(-40), j(70)), (r(48), r(36), r(38)), wobble=4)
    p.paint(liver, 108, 1, within=cavity)
    p.paint(p.ellipsoid((j(85), j(35), j(50)), (r(30), r(50), r(50)), wobble=4), 118, 2, within=cavity)
    for side, value in ((-1, 3), (1, 4)):
        centre = (side * j(62), j(vy), j(-10 if side < 0 else 0))
        radii = (r(26), r(30), r(55))
        kidney = p.ellipsoid(centre, radii, wobble=2)
        kidney &= ~p.ellipsoid((centre[0] - side * 24, centre[1] - 10, centre[2]), (12, 10, 18))  # hilum
        p.paint(kidney, 185, value, within=cavity)
        p.paint(p.ellipsoid(centre, tuple(0.55 * v for v in radii)) & kidney, 125, value)

    # Aorta (gently curved along z), then the spine which nothing covers.
    ax = j(12) + 4 * np.sin(z / 70.0)
    ar = 11 * s * rng.uniform(0.9, 1.15)
    p.paint(((x - ax) / ar) ** 2 + ((y - vy + 30) / ar) ** 2 <= 1, 175, 5, within=cavity)
    vertebral_body = (x / 20) ** 2 + ((y - vy) / 17) ** 2 <= 1
    arch = ((x / 19) ** 2 + ((y - vy - 30) / 15) ** 2 <= 1) & ~((x / 9) ** 2 + ((y - vy - 29) / 8) ** 2 <= 1)
    spinous = (np.abs(x) <= 4) & (y > vy + 40) & (y < vy + 62)
    period, phase = 33.0, rng.uniform(0, 33.0)
    disc = np.mod(z + phase, period) < 7.0
    bone = (vertebral_body | arch | spinous) & ~(disc & vertebral_body)
    p.paint(bone, 260, 6)
    p.paint(bone & ~ndimage.binary_erosion(bone, iterations=1), 720, 6)  # cortical shell
    p.paint(vertebral_body & disc, 90)
    p.paint(((x / 9) ** 2 + ((y - vy - 29) / 8) ** 2 <= 1), 15)  # spinal canal

    hu = ndimage.gaussian_filter(p.hu, sigma=0.7)  # partial volume
    hu += rng.normal(0.0, 14.0, size=hu.shape).astype(np.float32)
    image = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    meta = {"synthetic": True, "phantom_seed": seed, "modality": "CT"}
    name = Path(f"phantom_{seed:03d}")
    return Phantom(
        Volume(image, spacing, origin, path=name, meta=meta),
        Volume(p.label, spacing, origin, path=name, meta=meta),
        dict(LABEL_NAMES),
    )


def write_phantom_dataset(out_dir: str | os.PathLike[str], n: int = 4, first_seed: int = 0,
                          size: tuple[int, int, int] = DEFAULT_SIZE,
                          spacing: tuple[float, float, float] = DEFAULT_SPACING) -> list[Path]:
    """Write ``n`` phantoms as case folders ``phantom_XXX/{image,label}.nii.gz`` + ``labels.json``."""
    out_dir = Path(out_dir)
    folders = []
    for seed in range(first_seed, first_seed + n):
        ph = make_phantom(seed, size=size, spacing=spacing)
        folder = out_dir / f"phantom_{seed:03d}"
        write_volume(ph.image, folder / "image.nii.gz")
        write_volume(ph.label, folder / "label.nii.gz")
        write_json_atomic({str(k): v for k, v in ph.label_names.items()}, folder / "labels.json")
        folders.append(folder)
    (out_dir / "README.txt").write_text(
        "SYNTHETIC procedural abdominal CT phantoms generated by medlsam-napari (medlsam_training.volumes.phantom).\n"
        f"Not patient data. Labels: {json.dumps(LABEL_NAMES)}\n", encoding="utf-8")
    return folders
