"""A ModernBERT-style encoder as the trainer selects it: ``model.architecture=modern`` (model=modern_*).

The network is ``training.models.modern.ModernBertForMaskedLM`` (``ModernConfig``; Warner et al. 2024).
It has no sentence head, so it trains on shards built with instances=none only. Its export is
transformers' ``ModernBertForMaskedLM`` with the shards' WordPiece tokenizer (``modern.save_hf``), and
``trainer.init_from`` reads such a directory back (ours, or transformers' save_pretrained of one of
this shape and vocabulary). Presets: conf/train/model/{modern_small,modern_base}.yaml.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from training.config import ConfigError, ModelConfig, check_model_fields, check_schema_is_the_architectures
from training.models import Architecture


@dataclass
class ModernModelConfig(ModelConfig):
    """The ``model`` node of a ModernBERT-style encoder (``modern_model_schema``); defaults are ModernBERT-base's."""

    architecture: str = "modern"
    """modern: this schema's architecture."""
    hidden_size: int = 768
    """Width H of every hidden state."""
    num_hidden_layers: int = 22
    """Number L of transformer layers."""
    num_attention_heads: int = 12
    """Attention heads per layer; must divide hidden_size into an even head size (rotary pairs)."""
    intermediate_size: int = 1152
    """GeGLU inner width I (Wi projects H to 2I: value and gate)."""
    max_position_embeddings: int = 512
    """Longest sequence accepted (rotary positions: no table, so any length fits the weights)."""
    global_attn_every_n_layers: int = 3
    """Layer i attends globally when i % n == 0 (the first included), through the window otherwise."""
    local_attention: int = 128
    """Window of local layers in tokens (w/2 on either side); even."""
    global_rope_theta: float = 160_000.0
    """Rotary base of global layers."""
    local_rope_theta: float = 10_000.0
    """Rotary base of local layers."""
    norm_eps: float = 1e-5
    """LayerNorm epsilon."""
    embedding_dropout: float = 0.0
    """Dropout after the embedding norm."""
    attention_dropout: float = 0.0
    """Dropout on attention probabilities and the attention block's output."""
    mlp_dropout: float = 0.0
    """Dropout inside the GeGLU block."""
    initializer_range: float = 0.02
    """Std of the truncated-normal init (output projections: it / sqrt(2L))."""

    def __post_init__(self):
        check_schema_is_the_architectures(self, "modern")
        check_model_fields(
            self,
            positive=(
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "max_position_embeddings",
                "global_attn_every_n_layers",
                "local_attention",
            ),
            fractions=("embedding_dropout", "attention_dropout", "mlp_dropout"),
        )
        if (self.hidden_size // self.num_attention_heads) % 2 or self.local_attention % 2:
            raise ConfigError(
                f"model.hidden_size / model.num_attention_heads ({self.hidden_size // self.num_attention_heads}) "
                f"and model.local_attention ({self.local_attention}) must be even (rotary pairs; w/2 either side)"
            )
        for name in ("global_rope_theta", "local_rope_theta", "norm_eps", "initializer_range"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)!r}")


class ModernBert(Architecture):
    name = "modern"
    schema = ModernModelConfig
    hf_model_type = "modernbert"
    hf_class = "ModernBertForMaskedLM"

    @property
    def config_class(self) -> type:
        from training.models.modern import ModernConfig

        return ModernConfig

    def manifest_fields(self, schema_cfg: ModernModelConfig, vocab_size: int, sentence_pair: str, pad_token_id: int):
        if sentence_pair != "none":
            from training.data import DataContractError

            raise DataContractError(
                f"model.architecture=modern has no sentence head, but these shards were built with "
                f"sentence-pair task {sentence_pair!r}: rebuild them with the data job's instances=none, "
                f"or train a BERT preset (model=base, ...)"
            )
        return {"vocab_size": vocab_size, "pad_token_id": pad_token_id}

    def build_mlm(self, model_cfg, unpad: bool):
        from training.models.modern import ModernBertForMaskedLM

        return ModernBertForMaskedLM(model_cfg, unpad=unpad)

    def flops_per_token(self, model_cfg, seq_len: int, sparse_fraction: float | None) -> float:
        from training.models.modern import flops_per_token

        return flops_per_token(model_cfg, seq_len, sparse_fraction)

    def export_mlm(self, state_dict: dict, model_cfg, data_dir: str, out_dir: str) -> str:
        """Loads ``state_dict`` strictly into a CPU model first (missing, unexpected or misshapen
        tensors fail here), then ``modern.save_hf`` with the shards' vocabulary once
        ``export.checked_vocabulary`` has matched it to the manifest and the model."""
        from training.export import checked_vocabulary
        from training.models.modern import ModernBertForMaskedLM, save_hf

        manifest, vocab_path, _ = checked_vocabulary(data_dir, model_cfg)
        model = ModernBertForMaskedLM(model_cfg)
        model.load_state_dict(state_dict, strict=True)
        return save_hf(model, out_dir, vocab_path, manifest)

    def check_init_from(self, directory: str, model_cfg, manifest) -> None:
        from pipeline.contract import VOCAB_FILE, read_vocab
        from pipeline.tokenization import vocab_sha256

        theirs = self.hf_config(directory, model_cfg)
        differ = [
            f"{key} {value} in the checkpoint, {getattr(model_cfg, key)} here"
            for key, value in self.record(theirs).items()
            if value != self.record(model_cfg)[key]
        ]
        if differ:
            raise ConfigError(
                f"trainer.init_from={directory} does not fit this model: {'; '.join(differ)}; run with the "
                f"model preset and model.* values it was trained with"
            )
        vocab_path = os.path.join(directory, VOCAB_FILE)
        if not os.path.isfile(vocab_path) or vocab_sha256(read_vocab(vocab_path)) != manifest.vocab_sha256:
            raise ConfigError(
                f"trainer.init_from={directory} has no {VOCAB_FILE} or another vocabulary than the shards "
                f"(sha256 {manifest.vocab_sha256[:12]}): its embeddings index its own vocabulary, so make the "
                f"shards with it: python -m pipeline ... tokenizer=vocab_file tokenizer.vocab_file={vocab_path}"
            )
        self.weights_path(directory)

    def load_init_from(self, model, directory: str) -> dict:
        from safetensors.torch import load_file

        path = self.weights_path(directory)
        try:
            model.load_state_dict(load_file(path), strict=True)  # the model's hook ties the decoder back
        except RuntimeError as e:
            raise ConfigError(f"trainer.init_from={directory} does not fit this model: {e}") from e
        return {"path": directory, "weights_file": os.path.basename(path), "fresh": [], "unused": []}

    def hf_config(self, directory: str, model_cfg):
        """Our ModernConfig of the directory's config.json (pad id from the run's ``model_cfg``)."""
        from training.export import CONFIG_FILE
        from training.models.modern import ModernConfig

        with open(os.path.join(directory, CONFIG_FILE), encoding="utf-8") as f:
            hf = json.load(f)
        try:
            return ModernConfig.from_hf_config_dict({**hf, "pad_token_id": model_cfg.pad_token_id})
        except ValueError as e:
            raise ConfigError(f"trainer.init_from={directory}: {e}") from e

    @staticmethod
    def weights_path(directory: str) -> str:
        from training.export import WEIGHTS_FILE

        path = os.path.join(directory, WEIGHTS_FILE)
        if not os.path.isfile(path):
            raise ConfigError(f"trainer.init_from={directory} holds no {WEIGHTS_FILE} (give a run's output_dir/hf)")
        return path
