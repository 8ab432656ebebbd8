"""The trainer's Hydra configs, importable so that other apps can name them (pkg://training.conf: fine-tuning takes its logger group from here)."""
