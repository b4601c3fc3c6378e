"""Coreset pieces against hand computations and brute force: k-center greedy, Data-SI and GradNorm on a tiny
linear model, the online and offline rules on constructed values, suspicious-label flags."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from medlsam_training.coreset.kcenter import cover_radius, k_center_greedy
from medlsam_training.coreset.rules import (
    dice_dynamics,
    offline_coreset,
    online_cluster_rule,
)
from medlsam_training.coreset.valuation import data_si_values, gradnorm_values, per_sample_gradients, predicted_sgd_step


def test_k_center_greedy_is_within_twice_the_optimal_radius_and_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.normal(size=(9, 2))
        k = 3
        picks = k_center_greedy(x, k)
        best = min(cover_radius(x, list(c)) for c in itertools.combinations(range(9), k))
        assert cover_radius(x, picks) <= 2 * best + 1e-9
        # naive reference: recompute every distance at every step
        first = int(np.argmin(((x - x.mean(0)) ** 2).sum(1)))
        naive = [first]
        while len(naive) < k:
            d = [min(np.linalg.norm(x[i] - x[j]) for j in naive) if i not in naive else -1 for i in range(9)]
            naive.append(int(np.argmax(d)))
        assert picks == naive
    assert k_center_greedy(x, 2, chosen=[0, 1])[0] not in (0, 1)
    with pytest.raises(ValueError, match="budget 10"):
        k_center_greedy(x, 10)


def test_data_si_and_gradnorm_match_a_hand_computation_on_a_linear_model() -> None:
    torch.manual_seed(0)
    model = nn.Linear(2, 1, bias=False)
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0], [3.0, 0.0]])
    y = torch.tensor([[1.0], [0.0], [2.0]])
    loss = lambda out, t: ((out - t) ** 2).sum()  # noqa: E731
    grads = per_sample_gradients(model, ["weight"], x, y, loss)
    w = model.weight.detach()[0]
    by_hand = torch.stack([2 * (w @ xi - yi[0]) * xi for xi, yi in zip(x, y)])
    assert torch.allclose(grads["weight"][:, 0], by_hand, atol=1e-6)

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = predicted_sgd_step(opt, model, {"weight": grads["weight"].mean(0)})
    assert torch.allclose(step["weight"][0], -0.1 * by_hand.mean(0), atol=1e-6)
    groups, si = data_si_values(grads, step)
    assert groups == ["weight"]
    assert torch.allclose(si[:, 0], (by_hand * (-0.1 * by_hand.mean(0))).mean(1), atol=1e-6)
    _, gn = gradnorm_values(grads)
    assert torch.allclose(gn[:, 0], (by_hand ** 2).sum(1), atol=1e-5)


def test_predicted_momentum_step_equals_the_optimizers_own_step() -> None:
    torch.manual_seed(1)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    for _ in range(2):
        g = {n: torch.randn_like(p) for n, p in model.named_parameters()}
        predicted = predicted_sgd_step(opt, model, g)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        for n, p in model.named_parameters():
            p.grad = g[n].clone()
        opt.step()
        for n, p in model.named_parameters():
            assert torch.allclose(p.detach() - before[n], predicted[n], atol=1e-7)


def test_online_rule_drops_the_majority_cluster_and_scales_the_learning_rate() -> None:
    rng = np.random.default_rng(0)
    bulk = rng.normal(1.0, 0.01, size=(60, 2))
    spread = rng.uniform(5, 20, size=(40, 2))
    keep, scale = online_cluster_rule(np.concatenate([bulk, spread]))
    assert not keep[:60].any() and keep[60:].all() and scale == pytest.approx(0.4)
    balanced = np.concatenate([rng.normal(c, 0.01, size=(10, 2)) for c in range(10)])
    keep, scale = online_cluster_rule(balanced)
    assert keep.all() and scale == 1.0


def test_offline_rule_keeps_mid_band_samples_within_the_budget() -> None:
    values = np.ones((10, 200))
    values[:, :5] = 1e-4        # learned at once: below 0.1 x the epoch mean every epoch
    values[:, 5] = 1000.0       # an outlier: above 40 x the epoch mean (about 6)
    picked = offline_coreset(values, budget=50)
    assert len(picked) == 50 and not set(picked.tolist()) & set(range(6))
    assert len(offline_coreset(values, budget=198)) == 198  # too few qualify: the highest counts fill the budget
    with pytest.raises(ValueError, match="budget 300"):
        offline_coreset(values, budget=300)


def test_dice_dynamics_score() -> None:
    dice = np.array([[0.1, 0.8, 0.5], [0.3, 0.9, 0.5]])
    assert np.allclose(dice_dynamics(dice), [0.2, 0.85, 0.5])


# --- the commands on phantoms -----------------------------------------------------------------------------

from typer.testing import CliRunner  # noqa: E402

from medlsam_training.cli import app  # noqa: E402
from medlsam_training.volumes.phantom import write_phantom_dataset  # noqa: E402

runner = CliRunner()


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("coreset")
    write_phantom_dataset(root / "data", n=6, size=(48, 40, 16), spacing=(7.0, 7.0, 12.0))
    return root


def test_value_writes_values_selection_suspicious_ranking_plot_and_probe(phantoms) -> None:
    out = phantoms / "value"
    result = runner.invoke(app, ["value", "--data", str(phantoms / "data"), "--targets", "liver,spleen", "--out",
                                 str(out), "--budget", "0.5", "--steps", "8", "--value-every", "4"])
    assert result.exit_code == 0, result.output
    import csv
    import json

    rows = list(csv.DictReader(open(out / "values.csv")))
    assert len(rows) == 6 * 2 and {"loss_liver", "dice_spleen", "gradnorm", "data_si"} <= set(rows[0])
    sel = json.loads((out / "selection.json").read_text())
    assert all(len(v) == 3 for v in sel["selections"].values()) and len(sel["suspicious"]) == 1
    ranked = list(csv.DictReader(open(out / "suspicious.csv")))
    assert list(ranked[0]) == ["volume", "score", "rank", "reason", "worst_slice_z_mm"]
    assert [int(r["rank"]) for r in ranked] == list(range(1, 7))
    assert [float(r["score"]) for r in ranked] == sorted((float(r["score"]) for r in ranked), reverse=True)
    assert ranked[0]["reason"].split(":")[0] in ("liver", "spleen") and "the median" in ranked[0]["reason"]
    assert (out / "values.png").read_bytes()[:4] == b"\x89PNG"
    from medlsam_training.coreset.run import load_probe

    assert load_probe(out / "probe.pt", 2) is not None


def test_value_and_suggest_refuse_bad_input(phantoms, tmp_path) -> None:
    data = str(phantoms / "data")
    for budget, message in (("0", "give a fraction"), ("6", "not fewer than the 6 volumes"), ("1.5", "fraction")):
        result = runner.invoke(app, ["value", "--data", data, "--targets", "liver", "--out", str(tmp_path / "o"),
                                     "--budget", budget, "--steps", "2"])
        assert result.exit_code == 2 and message in result.output, result.output
    unlabelled = tmp_path / "pool"
    unlabelled.mkdir()
    import shutil

    shutil.copy(phantoms / "data" / "phantom_000" / "image.nii.gz", unlabelled / "a.nii.gz")
    result = runner.invoke(app, ["value", "--data", str(unlabelled), "--targets", "liver", "--out",
                                 str(tmp_path / "o"), "--budget", "1"])
    assert result.exit_code == 2 and "have no label map" in result.output
    bogus = tmp_path / "bogus.pt"
    import torch

    torch.save({"state_dict": {"conv.weight": torch.zeros(3)}}, bogus)
    result = runner.invoke(app, ["suggest", "--pool", data, "--budget", "2", "--out", str(tmp_path / "s.csv"),
                                 "--probe", str(bogus), "--targets", "liver"])
    assert result.exit_code == 2 and "not a probe checkpoint of this architecture" in result.output


def test_suggest_ranks_a_pool_away_from_labelled_volumes(phantoms, tmp_path) -> None:
    data = phantoms / "data"
    pool = tmp_path / "pool"
    labelled_dir = tmp_path / "done"
    import shutil

    for i, name in enumerate(sorted(p.name for p in data.iterdir() if p.is_dir())):
        shutil.copytree(data / name, (labelled_dir if i < 2 else pool) / name)
    result = runner.invoke(app, ["suggest", "--pool", str(pool), "--labelled", str(labelled_dir), "--budget", "2",
                                 "--out", str(tmp_path / "next.csv")])
    assert result.exit_code == 0, result.output
    import csv

    rows = list(csv.DictReader(open(tmp_path / "next.csv")))
    assert [r["rank"] for r in rows] == ["1", "2"] and {r["case"] for r in rows} <= {p.name for p in pool.iterdir()}
