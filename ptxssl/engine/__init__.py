"""What every training command shares: the config dataclasses and their YAML overlay
(config.py), the seeded per-epoch sampling (data.py) and the Lightning Trainer with its run
folder, checkpoints and resume (trainer.py). `pretrain` and `transfer` build on it."""
