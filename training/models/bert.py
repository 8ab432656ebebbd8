"""BERT (Devlin et al. 2018) as the trainer selects it: ``model.architecture=bert``, the default.

The network is ``training.model.BertForPreTraining`` (``BertConfig``); its export is transformers'
``BertForPreTraining`` (``BertForMaskedLM`` without the sentence head, ``training.export.export_hf``);
``trainer.init_from`` reads a transformers BERT directory through ``training.hf_checkpoint``.
Presets: conf/train/model/{tiny,mini,small,medium,base,large,minilm_l6}.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from training.config import ConfigError, ModelConfig, check_model_fields, check_schema_is_the_architectures
from training.models import Architecture


@dataclass
class BertModelConfig(ModelConfig):
    """The ``model`` node of a BERT (``bert_model_schema``); the fields of ``training.model.BertConfig`` a preset chooses."""

    architecture: str = "bert"
    """bert: this schema's architecture."""
    hidden_size: int = 768
    """Width H of every hidden state."""
    num_hidden_layers: int = 12
    """Number L of transformer layers."""
    num_attention_heads: int = 12
    """Attention heads per layer (H/64 in every published BERT); must divide hidden_size."""
    intermediate_size: int = 3072
    """Width of the feed-forward block (4H in every published BERT)."""
    hidden_dropout_prob: float = 0.1
    """Dropout on embeddings and on each residual branch."""
    attention_probs_dropout_prob: float = 0.1
    """Dropout on attention probabilities."""
    max_position_embeddings: int = 512
    """Longest sequence the position table covers; 512 so phase 2 can start from phase 1's weights."""
    type_vocab_size: int = 2
    """Number of segment ids."""
    layer_norm_eps: float = 1e-12
    """LayerNorm epsilon, BERT's 1e-12."""
    initializer_range: float = 0.02
    """Std of the normal init of weight matrices and embeddings."""
    with_nsp_head: Optional[bool] = None
    """Build the sentence (NSP/SOP) head; null: from the manifest's objective (none -> no head)."""

    def __post_init__(self):
        check_schema_is_the_architectures(self, "bert")
        check_model_fields(
            self,
            positive=(
                "hidden_size",
                "num_hidden_layers",
                "num_attention_heads",
                "intermediate_size",
                "max_position_embeddings",
                "type_vocab_size",
            ),
            fractions=("hidden_dropout_prob", "attention_probs_dropout_prob"),
        )
        if not (self.layer_norm_eps > 0 and self.initializer_range > 0):
            raise ConfigError("model.layer_norm_eps and model.initializer_range must be positive")


class Bert(Architecture):
    name = "bert"
    schema = BertModelConfig
    hf_model_type = "bert"
    hf_class = "BertForPreTraining (BertForMaskedLM without the sentence head)"

    @property
    def config_class(self) -> type:
        from training.model import BertConfig

        return BertConfig

    def manifest_fields(self, schema_cfg: BertModelConfig, vocab_size: int, sentence_pair: str, pad_token_id: int):
        has_pairs = sentence_pair != "none"
        if schema_cfg.with_nsp_head is not None and schema_cfg.with_nsp_head != has_pairs:
            raise ConfigError(
                f"model.with_nsp_head is {schema_cfg.with_nsp_head} but the shards' objective is "
                f"{sentence_pair!r}; leave model.with_nsp_head null to follow the manifest"
            )
        return {"vocab_size": vocab_size, "pad_token_id": pad_token_id, "with_nsp_head": has_pairs}

    def build_mlm(self, model_cfg, unpad: bool):
        from training.model import BertForPreTraining

        return BertForPreTraining(model_cfg, unpad=unpad)

    def flops_per_token(self, model_cfg, seq_len: int, sparse_fraction: float | None) -> float:
        from training.model import flops_per_token

        return flops_per_token(model_cfg, seq_len, sparse_fraction)

    def export_mlm(self, state_dict: dict, model_cfg, data_dir: str, out_dir: str) -> str:
        from training.export import export_hf

        return export_hf(state_dict, model_cfg, data_dir, out_dir)

    def check_init_from(self, directory: str, model_cfg, manifest) -> None:
        from training import hf_checkpoint

        hf_checkpoint.check_fits(hf_checkpoint.HFCheckpoint.open(directory, "trainer.init_from"), model_cfg, manifest)

    def load_init_from(self, model, directory: str) -> dict:
        from training import hf_checkpoint

        return hf_checkpoint.load_into(model, hf_checkpoint.HFCheckpoint.open(directory, "trainer.init_from")).to_dict()
