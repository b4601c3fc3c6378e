"""Dock tools beyond the annotator (fine-tuning, CAM seeding, coreset, reports); each thin over ``training``."""
