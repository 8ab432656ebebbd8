"""The trainer's Hydra configs (python -m training), shipped as the package training.conf (pkg://training.conf: fine-tuning takes its logger group from here)."""
