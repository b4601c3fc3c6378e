"""How the atlas's vote and the network's probability are mixed, learned per target from the reviewed volumes.

Every volume that a run or a pre-segmentation combined before it was reviewed keeps, beside its mask, the atlas's
votes and that network's probability (``.votes/``, the network as the last voter): its reviewed mask says which mix
would have been right, on a volume that network never trained on.  Per target, the (network share, threshold) with
the best mean Dice over those volumes is chosen and kept only where it beats the fixed mix
(``pipeline.combination_share``) leave-one-out; otherwise the fixed mix stays, and the record says why.  The choice is
stored in the network's checkpoint (``meta["combination"]``), which every run and pre-segmentation with that network
reads (``SliceNetPredictor.share``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..correction.votes import TemplateVotes, load_votes, votes_path
from ..project.folder import Project
from ..project.pipeline import combination_share
from ..volumes.io import read_label

#: the network's share of the mix (0: the atlas alone, 1: the network alone) and the thresholds tried
SHARES = np.round(np.linspace(0.0, 1.0, 11), 2)
THRESHOLDS = np.round(np.arange(0.20, 0.801, 0.05), 2)
#: leave-one-out needs two volumes to choose on and one to score; fewer cannot tell a mix from noise
MIN_VOLUMES = 3


@dataclass
class Sample:
    """One reviewed volume's stored combination of one target, on the votes' box."""

    volume: str
    atlas: np.ndarray  # the atlas's vote in [0, 1]
    network: np.ndarray  # the network's probability
    truth: np.ndarray  # the reviewed mask
    outside: int  # reviewed voxels outside the box (no mix reaches them)


@dataclass
class Combination:
    """A target's mix: the network's ``share`` and the ``threshold``, and what chose them."""

    share: float
    threshold: float
    learned: bool  # False: the fixed mix (too few volumes, or the learned one was not ahead leave-one-out)
    volumes: list[str] = field(default_factory=list)  # the reviewed volumes it was chosen on
    loo_dice: float | None = None  # mean Dice, leave-one-out, of the mix chosen on the other volumes
    fixed_loo_dice: float | None = None  # the fixed mix on the same volumes
    why: str = ""

    def to_meta(self) -> dict:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict) -> "Combination":
        return cls(float(meta["share"]), float(meta["threshold"]), bool(meta.get("learned", False)),
                   [str(v) for v in meta.get("volumes", [])], meta.get("loo_dice"), meta.get("fixed_loo_dice"),
                   str(meta.get("why", "")))


def sample(name: str, votes: TemplateVotes | None, truth: np.ndarray) -> Sample | None:
    """The combination stored for one target of one reviewed volume (None: not a combination of the atlas and a
    network, or nothing reviewed of it)."""
    if votes is None or not votes.network or votes.own or len(votes.weights) < 2 or not truth.any():
        return None
    atlas = TemplateVotes(votes.box, votes.warped[:-1], votes.weights[:-1], votes.threshold).vote()
    inside = truth[votes.box.slices]
    return Sample(name, atlas, votes.warped[-1], inside, int(truth.sum() - inside.sum()))


def dice_table(s: Sample) -> np.ndarray:
    """Dice of every (share, threshold) of :data:`SHARES` x :data:`THRESHOLDS` on one sample."""
    truth = s.truth.ravel()
    total = float(truth.sum() + s.outside)
    out = np.empty((len(SHARES), len(THRESHOLDS)))
    for i, w in enumerate(SHARES):
        mix = (w * s.network + (1.0 - w) * s.atlas).ravel()
        above = mix[None, :] >= THRESHOLDS[:, None]
        tp = (above & truth[None, :]).sum(1)
        out[i] = 2.0 * tp / np.maximum(above.sum(1) + total, 1.0)
    return out


def grid_index(share: float, threshold: float) -> tuple[int, int]:
    """The (share, threshold) cell of :func:`dice_table`'s grid."""
    return int(np.argmin(np.abs(SHARES - share))), int(np.argmin(np.abs(THRESHOLDS - threshold)))


def choose(tables: list[np.ndarray], names: list[str]) -> Combination:
    """The mix of best mean Dice on ``tables``, kept where it beats the fixed mix leave-one-out."""
    fixed = combination_share(True)
    if len(tables) < MIN_VOLUMES:
        return Combination(*fixed, False, names, why=f"{len(tables)} reviewed volume(s) with a stored combination; "
                                                     f"{MIN_VOLUMES} are needed to learn one")
    stack = np.stack(tables)  # (volumes, shares, thresholds)
    fi = grid_index(*fixed)
    loo = []
    for k in range(len(tables)):
        rest = np.delete(stack, k, axis=0).mean(0)
        i, j = np.unravel_index(int(np.argmax(rest)), rest.shape)
        loo.append(stack[k, i, j])
    loo_dice, fixed_dice = float(np.mean(loo)), float(stack[:, fi[0], fi[1]].mean())
    i, j = np.unravel_index(int(np.argmax(stack.mean(0))), stack.shape[1:])
    if loo_dice <= fixed_dice:
        return Combination(*fixed, False, names, round(loo_dice, 4), round(fixed_dice, 4),
                           "the learned mix was not ahead of the fixed one leave-one-out")
    return Combination(float(SHARES[i]), float(THRESHOLDS[j]), True, names, round(loo_dice, 4), round(fixed_dice, 4))


def reviewed_samples(project: Project, targets: list[str], volumes: list) -> dict[str, list[Sample]]:
    """Per target, the stored combinations of the training's volumes (``project_loop.training_set``: reviewed or
    locked, each with the targets its mask holds) with their reviewed masks; template volumes are left out."""
    out: dict[str, list[Sample]] = {t: [] for t in targets}
    for tv in volumes:
        if project.entry(tv.name).template:
            continue
        held = [t for t in tv.targets if t in out]
        stored = load_votes(votes_path(tv.mask.parent, tv.name))
        if not any(t in stored for t in held):
            continue
        label = read_label(tv.mask, allow_empty=True).array
        for t in held:
            s = sample(tv.name, stored.get(t), label == project.target(t).label)
            if s is not None:
                out[t].append(s)
    return out


def learn_combination(project: Project, targets: list[str], volumes: list) -> dict[str, Combination]:
    """Each target's mix, chosen on the training's volumes (:func:`reviewed_samples`)."""
    found = reviewed_samples(project, targets, volumes)
    return {t: choose([dice_table(s) for s in samples], [s.volume for s in samples]) for t, samples in found.items()}


def summary(combination: dict[str, Combination]) -> str:
    """One line for the CLI and the dock."""
    parts = []
    for t, c in combination.items():
        if c.learned:
            parts.append(f"{t}: network share {c.share:.1f}, threshold {c.threshold:.2f} (leave-one-out Dice "
                         f"{c.loo_dice:.3f} vs {c.fixed_loo_dice:.3f} fixed, {len(c.volumes)} volumes)")
        else:
            parts.append(f"{t}: fixed mix ({c.why})")
    return "atlas + network mix: " + "; ".join(parts) if parts else ""
