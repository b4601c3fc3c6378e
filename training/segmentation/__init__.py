"""From a box or a fused prior to a mask: the SAM-family segmenters and their cached slice embeddings, slice
preparation, propagation through the volume, and how a new mask merges into a label map (the label policies)."""
