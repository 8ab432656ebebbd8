"""The data job's Hydra configs (python -m pipeline), shipped in the wheel as the package pipeline.conf."""
