"""Fine-tuning's Hydra configs (python -m training.finetune), shipped as the package training.finetune.conf."""
