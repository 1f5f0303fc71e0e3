"""Training engine: builds a lightning.Trainer from config; callbacks, checkpoints, signals, run directory."""
