"""A correction update inside a project: the target's recorded corrected slices, the votes the project's run kept
beside its masks, every target's corrections kept.  Shared by ``medlsam correct --project`` and the annotator."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..options import CorrectionUpdate
from ..project.folder import Project, ProjectError
from ..project.guard import WriteGuard, guard_change
from .update import UpdateResult, correct_label_map
from .votes import load_votes, votes_path


def correct_in_project(project: Project, name: str, target: str, label_map: np.ndarray, image: np.ndarray,
                       spacing_zyx: Sequence[float], method: str | CorrectionUpdate = CorrectionUpdate.AUTO
                       ) -> tuple[np.ndarray, UpdateResult]:
    """``label_map`` (volume ``name``'s, as the annotator has it; ``image`` its voxels) with ``target`` updated from
    its corrected slices; a locked target or one without corrected slices is an error (nothing to update from)."""
    if target in project.locked_targets(name):
        raise ProjectError(f"{target} is locked (reviewed) on {name}; unlock it to update it")
    slices = project.corrected_slices(name, target)
    if not slices:
        raise ProjectError(f"no slice of {target} is corrected on {name}: draw or fix one first")
    votes = load_votes(votes_path(project.folder / project.output_dir, name)).get(target)
    keep = project.all_corrected(name)
    new, result = correct_label_map(label_map, project.target(target).label, slices, method, votes, spacing_zyx,
                                    target, keep, image)
    # the one guarded writer's rules: only this target, never a locked one, never a corrected slice
    new, _ = guard_change(label_map, new, WriteGuard.for_project(project, name, [target]))
    result.changed = int((new != label_map).sum())
    return new, result
