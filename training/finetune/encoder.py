"""The encoder directories that fine-tuning and ``training.evaluate`` load, through transformers' Auto
classes: this project's three exports and any published encoder in Hugging Face layout.

    BERT        <train output_dir>/hf                       BertForPreTraining / BertForMaskedLM
    ModernBERT  training/models/modern.py save_hf           ModernBertForMaskedLM
    ELECTRA     training/objectives/electra.py save_hf      discriminator/ (ElectraForPreTraining): the
                                                            encoder; generator/ (ElectraForMaskedLM): refused

The Auto class puts the task's head (or none, ``AutoModel``) on the encoder that config.json's
model_type names; what each model's forward takes differs (ModernBERT: no token_type_ids), which
``training/finetune/loop.py`` minds. Errors are ConfigErrors naming ``<name>=<directory>``: one line
from the command line.
"""

from __future__ import annotations

import json
import os
from typing import Any

from training.config import ConfigError

CONFIG_FILE = "config.json"
ELECTRA_GENERATOR = "ElectraForMaskedLM"
"""config.json architectures of an ELECTRA generator (ours, generator/, and Google's releases)."""
ELECTRA_DISCRIMINATOR_DIR = "discriminator"
"""Where training/objectives/electra.py's save_hf writes the discriminator (beside generator/)."""


def read_encoder_config(model_dir: str, name: str = "model_dir") -> dict:
    """config.json of ``model_dir`` once it is known to be an encoder to fine-tune or evaluate;
    ConfigError naming ``name=model_dir`` when it does not exist, has no config.json, or is an
    ELECTRA generator (a small MLM trained to fool the discriminator, which is the encoder)."""
    where = f"{name}={model_dir}"
    if not os.path.isdir(model_dir):
        raise ConfigError(f"{where} does not exist")
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise ConfigError(
            f"{where} has no {CONFIG_FILE}: give a Hugging Face encoder directory (config.json, weights, tokenizer), "
            "e.g. the trainer's output_dir/hf"
        )
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("model_type") == "electra" and ELECTRA_GENERATOR in (config.get("architectures") or []):
        sibling = os.path.join(os.path.dirname(os.path.abspath(model_dir)), ELECTRA_DISCRIMINATOR_DIR)
        instead = sibling if os.path.isdir(sibling) else f"the {ELECTRA_DISCRIMINATOR_DIR}/ directory of the export"
        raise ConfigError(
            f"{where} is an ELECTRA generator ({CONFIG_FILE} architectures {ELECTRA_GENERATOR}); the encoder "
            f"ELECTRA pre-trains is the discriminator: {name}={instead}"
        )
    return config


def load_pretrained(auto_class, model_dir: str, name: str = "model_dir", **kwargs) -> tuple[Any, dict]:
    """``auto_class.from_pretrained(model_dir, output_loading_info=True, **kwargs)``: the model and
    transformers' loading info (missing_keys, unexpected_keys, ...), after ``read_encoder_config``'s
    checks. What transformers cannot load (a model_type it does not know or that has no such head,
    missing weights) is a ConfigError naming ``name=model_dir`` and the first line of its reason."""
    config = read_encoder_config(model_dir, name)
    try:
        return auto_class.from_pretrained(model_dir, output_loading_info=True, **kwargs)
    except (OSError, ValueError) as e:
        reason = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ConfigError(
            f"{name}={model_dir} (model_type {config.get('model_type')!r}): transformers' "
            f"{auto_class.__name__} cannot load it: {reason}"
        ) from e
