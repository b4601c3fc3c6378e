"""Volume Fusion self-supervised pretraining and the PCT-Net segmentation network (MIS-FM)."""
