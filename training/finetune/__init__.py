"""Fine-tuning a pre-trained BERT (our export or any Hugging Face BERT) on GLUE-style tasks.

``python -m training.finetune task=<preset> data_dir=<task files> model_dir=<HF BERT> output_dir=<dir>``:
config in config.py, task kinds behind the interface in kinds.py, the loop in loop.py.
"""
