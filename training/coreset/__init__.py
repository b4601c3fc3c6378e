"""Coreset suggestions: which volumes to annotate next (k-center + uncertainty), which labelled volumes are
redundant (Data-SI, GradNorm, Dice dynamics), and which labels look wrong."""
