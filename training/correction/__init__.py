"""Corrections in 3D: the axial slices an annotator drew or fixed are constraints, and an update carries them to the
slices not touched (:mod:`.update`); the atlas's per-template warped masks are kept beside a run's masks so that an
update can re-fuse them without registering again (:mod:`.votes`)."""

from .constraints import keep_corrected
from .update import UpdateResult, correct_label_map, fill_between, refuse, shift_toward, update_target
from .votes import TemplateVotes, load_votes, save_votes, votes_path, with_probability

__all__ = ["TemplateVotes", "UpdateResult", "correct_label_map", "fill_between", "keep_corrected", "load_votes",
           "refuse", "save_votes", "shift_toward", "update_target", "votes_path",
           "with_probability"]
