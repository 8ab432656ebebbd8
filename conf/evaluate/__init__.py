"""The zero-shot evaluation's Hydra config (python -m training.evaluate), shipped as the package training.evaluate_conf."""
