"""Weak-label CAM seeding: slice tags -> 2D classifier -> multi-depth CAMs fused by certainty (UM-CAM) -> geodesic
seed expansion (GSE) -> pseudo-masks that seed annotation."""
