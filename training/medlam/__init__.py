"""MedLAM: a self-supervised 3D localizer (relative distance regression + multi-scale similarity)."""
