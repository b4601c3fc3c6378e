"""The learning loop: a slice network pretrained by Volume Fusion and fine-tuned on reviewed volumes."""
