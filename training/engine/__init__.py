"""Training infrastructure shared by every network: the one training loop (``loop.fit``), the one checkpoint loader
(weights only), learning-rate schedules, augmentation, DDP set-up and TOML configs."""
