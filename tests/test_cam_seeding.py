"""CAM seeding pieces against hand computations: UM fusion, the geodesic distance (brute-force Dijkstra), GSE,
slice tags; and bad tags refused."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from medlsam_training.cam.fusion import binary_entropy, mean_fusion, um_fusion
from medlsam_training.cam.geodesic import geodesic_distance
from medlsam_training.cam.gse import best_threshold, gse_refine, seed_points
from medlsam_training.cam.tags import (
    ABSENT,
    PRESENT,
    UNKNOWN,
    TagError,
    read_tags,
    require_usable,
    tags_from_mask,
    tags_from_ranges,
)


def test_um_fusion_matches_hand_computation() -> None:
    a = np.array([[0.9, 0.5], [0.1, 0.0]])
    b = np.array([[0.6, 0.5], [0.8, 1.0]])
    h = lambda c: -(c * np.log(c + 1e-6) + (1 - c) * np.log(1 - c + 1e-6))  # noqa: E731
    w_a, w_b = np.exp(-h(a)), np.exp(-h(b))
    raw = (w_a * a + w_b * b) / (w_a + w_b + 1e-6)
    fused, unc = um_fusion([a, b])
    assert np.allclose(fused, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-6)
    assert np.allclose(unc, (h(a) + h(b)) / 2, atol=1e-6)
    # a certain pixel outweighs an uncertain one: (0.9 vs 0.6) leans to 0.9 more than the mean does
    assert raw[0, 0] > 0.75
    assert binary_entropy(np.array([0.5]))[0] == pytest.approx(np.log(2), rel=1e-4)
    assert np.allclose(mean_fusion([a, b]), ((a + b) / 2 - 0.45) / (0.75 - 0.45))


def _dijkstra_reference(image: np.ndarray, seeds: np.ndarray, spacing, lam: float) -> np.ndarray:
    ny, nx = image.shape
    idx = np.arange(image.size).reshape(image.shape)
    rows, cols, costs = [], [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            ys, xs = np.mgrid[max(0, -dy):ny - max(0, dy), max(0, -dx):nx - max(0, dx)]
            length2 = (dy * spacing[0]) ** 2 + (dx * spacing[1]) ** 2
            diff = image[ys + dy, xs + dx] - image[ys, xs]
            rows.append(idx[ys, xs].ravel())
            cols.append(idx[ys + dy, xs + dx].ravel())
            costs.append(np.sqrt((1 - lam) * length2 + lam * diff * diff).ravel() + 1e-12)
    graph = coo_matrix((np.concatenate(costs), (np.concatenate(rows), np.concatenate(cols))),
                       shape=(image.size, image.size)).tocsr()
    return dijkstra(graph, indices=np.flatnonzero(seeds), min_only=True).reshape(image.shape)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_geodesic_distance_equals_dijkstra_with_spacing(lam: float) -> None:
    rng = np.random.default_rng(3)
    image = ndimage_smooth(rng.normal(size=(23, 31)))
    seeds = np.zeros(image.shape, bool)
    seeds[4, 7] = seeds[18, 25] = True
    spacing = (2.5, 0.8)
    reference = _dijkstra_reference(image, seeds, spacing, lam)
    assert np.allclose(geodesic_distance(image, seeds, spacing, lam, iterations=8), reference, atol=1e-6)
    # the default two sweeps are close (a path rarely turns back twice)
    assert np.abs(geodesic_distance(image, seeds, spacing, lam) - reference).mean() < 0.05 * reference.mean() + 1e-9


def ndimage_smooth(a: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(a, 1.5)


def test_geodesic_3d_is_euclidean_in_a_flat_image() -> None:
    """(Its speed is measured by benchmarks/geodesic_speed.py: a wall-clock bound failed on a loaded machine.)"""
    image = np.zeros((9, 9, 9))
    seeds = np.zeros(image.shape, bool)
    seeds[4, 4, 4] = True
    d = geodesic_distance(image, seeds, (3.0, 1.0, 1.0), lam=0.0)
    assert d[4, 4, 8] == pytest.approx(4.0) and d[7, 4, 4] == pytest.approx(9.0)
    assert d[5, 5, 5] == pytest.approx(np.sqrt(9 + 1 + 1))


def test_threshold_seeds_and_gse_recover_a_disc_from_a_partial_cam() -> None:
    from scipy import ndimage

    yy, xx = np.mgrid[0:64, 0:64]
    disc = (yy - 30) ** 2 + (xx - 34) ** 2 <= 12 ** 2
    image = np.where(disc, 1.0, -1.0) + np.random.default_rng(1).normal(0, 0.1, disc.shape)
    # a CAM as classifiers make them: on the most discriminative part only, blurred
    part = (yy - 33) ** 2 + (xx - 37) ** 2 <= 6 ** 2
    cam = ndimage.gaussian_filter(part.astype(float), 4)
    cam = cam / cam.max()
    t = best_threshold(cam, image)
    seeds = seed_points(cam >= t, (1.0, 1.0), margin=5)
    assert disc[tuple(seeds.foreground[0])] and not disc[tuple(seeds.background.T)].any()
    _, mask, _ = gse_refine(cam, image, (1.0, 1.0))
    dice = lambda a, b: 2 * (a & b).sum() / (a.sum() + b.sum())  # noqa: E731
    assert dice(cam >= t, disc) < 0.65      # the thresholded CAM covers the part
    assert dice(mask, disc) > 0.85          # the expansion reaches the disc's edge


def test_seed_of_a_crescent_lies_inside_it() -> None:
    yy, xx = np.mgrid[0:60, 0:60]
    crescent = ((yy - 30) ** 2 + (xx - 30) ** 2 <= 20 ** 2) & ((yy - 30) ** 2 + (xx - 36) ** 2 > 17 ** 2)
    centroid = np.round(np.argwhere(crescent).mean(0)).astype(int)
    assert not crescent[tuple(centroid)]  # the centroid falls outside: why it is not the seed
    assert crescent[tuple(seed_points(crescent, (1.0, 1.0)).foreground[0])]


def test_tags_from_masks_ranges_and_files(tmp_path) -> None:
    mask = np.zeros((6, 4, 4), bool)
    mask[2:4, 1, 1] = True
    assert tags_from_mask(mask).tolist() == [ABSENT, ABSENT, PRESENT, PRESENT, ABSENT, ABSENT]
    tags = tags_from_ranges(6, [[2, 3]], [[0, 0], [5, 5]])
    assert tags.tolist() == [ABSENT, UNKNOWN, PRESENT, PRESENT, UNKNOWN, ABSENT]
    with pytest.raises(TagError, match="outside the volume's 0-5"):
        tags_from_ranges(6, [[4, 9]], where="case/liver")
    with pytest.raises(TagError, match="no slice tagged present"):
        require_usable(np.array([ABSENT, UNKNOWN]), "case/liver")
    with pytest.raises(TagError, match="no slice tagged absent"):
        require_usable(np.array([PRESENT, UNKNOWN]), "case/liver")
    csv = tmp_path / "tags.csv"
    csv.write_text("case,target,first,last,state\npt_1,liver,3,9,present\npt_1,liver,0,1,absent\n")
    assert read_tags(csv) == {"pt_1": {"liver": {"present": [[3, 9]], "absent": [[0, 1]]}}}
    csv.write_text("case,target,first,last,state\npt_1,liver,3,9,maybe\n")
    with pytest.raises(TagError, match="state must be present or absent"):
        read_tags(csv)


# --- the command line on phantoms (real training, a few steps) ---------------------------------------------

from typer.testing import CliRunner  # noqa: E402

from medlsam_training.cli import app  # noqa: E402
from medlsam_training.volumes.io import read_volume  # noqa: E402
from medlsam_training.volumes.phantom import write_phantom_dataset  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def phantoms_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("cam")
    write_phantom_dataset(root / "data", n=3, size=(64, 56, 24), spacing=(5.4, 5.4, 9.0))
    model = root / "cam.pt"
    result = runner.invoke(app, ["cam-seed", "train", "--data", str(root / "data"), "--targets", "liver,spleen",
                                 "--out", str(model), "--epochs", "1", "--slices-per-epoch", "96"])
    assert result.exit_code == 0, result.output
    return root, model


def test_cli_trains_and_seeds_with_the_image_geometry(phantoms_and_model) -> None:
    root, model = phantoms_and_model
    case = root / "data" / "phantom_001"
    out = root / "seeds"
    result = runner.invoke(app, ["cam-seed", "run", "--model", str(model), "--image", str(case / "image.nii.gz"),
                                 "--label", str(case / "label.nii.gz"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    image = read_volume(case / "image.nii.gz")
    for kind in ("umcam", "gse", "uncertainty", "pseudo"):
        written = read_volume(out / f"image_liver_{kind}.nii.gz")
        assert written.geometry.is_close(image.geometry)
    soft = read_volume(out / "image_liver_umcam.nii.gz").array
    assert soft.min() >= 0 and soft.max() <= 1


def test_cli_refuses_bad_tags(phantoms_and_model, tmp_path) -> None:
    root, model = phantoms_and_model
    image = root / "data" / "phantom_001" / "image.nii.gz"
    tags = tmp_path / "tags.json"
    tags.write_text('{"image": {"liver": {"present": [[10, 99]]}}}')
    result = runner.invoke(app, ["cam-seed", "run", "--model", str(model), "--image", str(image), "--tags", str(tags),
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "outside the volume's 0-23" in result.output
    tags.write_text('{"image": {"pancreas": {"present": [[3, 5]]}}}')
    result = runner.invoke(app, ["cam-seed", "run", "--model", str(model), "--image", str(image), "--tags", str(tags),
                                 "--targets", "pancreas", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "not one the classifier learned" in result.output
    tags.write_text('{"image": {"liver": {"present": [], "absent": [[0, 3]]}}}')
    result = runner.invoke(app, ["cam-seed", "run", "--model", str(model), "--image", str(image), "--tags", str(tags),
                                 "--targets", "liver", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no slice tagged present" in result.output
    result = runner.invoke(app, ["cam-seed", "train", "--data", str(root / "data"), "--targets", "pancreas",
                                 "--out", str(tmp_path / "x.pt"), "--epochs", "1"])
    assert result.exit_code == 2 and "no case has a label named pancreas" in result.output
    result = runner.invoke(app, ["cam-seed", "run", "--model", str(image), "--image", str(image), "--tags", str(tags),
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not a CAM slice-classifier checkpoint" in result.output
