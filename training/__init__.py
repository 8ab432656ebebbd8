"""Pre-training of BERT-style encoders: the model (`training.model`) and, around it, the DeepSpeed trainer."""
