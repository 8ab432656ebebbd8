"""A BERT directory in Hugging Face layout as weights of this project's model: a published
checkpoint (bert-base-uncased, BioBERT, MiniLM...) or our own export (``training/export.py``).

    model_dir/
      config.json                       model_type bert: the architecture, read into BertConfig
      model.safetensors                 or pytorch_model.bin (read with weights_only=True)
      vocab.txt                         the WordPiece vocabulary the embeddings index
      tokenizer_config.json             optional: do_lower_case, strip_accents

Our parameter names are transformers' (training/model.py), so the names need no table; what
differs between the layouts a published directory comes in is handled in ``to_our_names``:

- ``BertForPreTraining`` / ``BertForMaskedLM`` (``bert.*``, ``cls.*``): our names as they are;
- a bare ``BertModel`` (``embeddings.*``, ``encoder.*``, ``pooler.*``, no heads, e.g. MiniLM):
  ``bert.`` prepended;
- old TensorFlow-converted files: ``LayerNorm.gamma`` / ``LayerNorm.beta`` for weight / bias;
- tied copies (``export.TIED_KEYS``) stored once, and transformers' persisted ``position_ids``
  buffer: filled in / dropped by the model's own load hook (``model._accept_transformers_layouts``).

``load_into`` loads such a state dict into a ``BertForPreTraining`` already initialised as a
fresh run would be: the heads the checkpoint lacks (MLM transform and bias, pooler, NSP) keep
that initialisation and are reported, as are tensors of the checkpoint this model has no place
for (a pooler without a sentence head, a fine-tuned classifier). Missing encoder tensors are
an error. Imports no DeepSpeed and no transformers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

import torch

from pipeline import contract
from pipeline.tokenization import vocab_sha256
from training.config import ConfigError
from training.export import CONFIG_FILE, TIED_KEYS, TOKENIZER_CONFIG_FILE, WEIGHTS_FILE
from training.model import BertConfig, BertForPreTraining, BertModel
from training.models import bert_presets

PYTORCH_WEIGHTS_FILE = "pytorch_model.bin"
WEIGHTS_FILES = (WEIGHTS_FILE, PYTORCH_WEIGHTS_FILE)
"""Weight files looked for, in this order (safetensors first: no pickle)."""

ARCHITECTURE_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "vocab_size",
    "layer_norm_eps",
)
"""config.json keys that must equal the model's (same names in our BertConfig and ModelConfig)."""

SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
"""The keys a BERT ``model=`` preset sets (conf/train/model/*.yaml, ``training.models.presets``)."""

ENCODER_PREFIXES = ("embeddings.", "encoder.", "pooler.")
"""Top-level modules of transformers' bare BertModel; in BertForPreTraining they sit under ``bert.``."""

FRESH_PREFIXES = ("cls.", "bert.pooler.")
"""Tensors a checkpoint may lack: they start as in a fresh run. Any other missing one is an error."""


class CheckpointError(ConfigError):
    """A directory that is not a usable BERT checkpoint, or one that does not fit the run."""


@dataclass(frozen=True)
class HFCheckpoint:
    """An opened Hugging Face BERT directory (only small files read so far)."""

    directory: str
    name: str
    """The config key that named it (``trainer.init_from``, ``model_dir``), for messages."""
    config: dict
    """config.json."""
    weights_path: str
    vocab_path: Optional[str]
    tokenizer_config: dict = field(default_factory=dict)
    """tokenizer_config.json, or {} without one."""

    @classmethod
    def open(cls, directory: str, name: str) -> "HFCheckpoint":
        """Check that ``directory`` holds a BERT our model can represent; CheckpointError naming
        ``name=directory`` and what is wrong otherwise."""
        where = f"{name}={directory}"
        if not os.path.exists(directory):
            raise CheckpointError(f"{where} does not exist")
        config_path = os.path.join(directory, CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise CheckpointError(
                f"{where} has no {CONFIG_FILE}: give a Hugging Face BERT directory "
                f"(config.json, {' or '.join(WEIGHTS_FILES)}, vocab.txt)"
            )
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        model_type = config.get("model_type")
        if model_type != "bert":
            raise CheckpointError(f"{where} is a {model_type!r} model (config.json model_type), not BERT")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise CheckpointError(
                f"{where} uses position_embedding_type={config['position_embedding_type']!r}; "
                "this model has absolute position embeddings only"
            )
        if config.get("hidden_act", "gelu") != "gelu":
            raise CheckpointError(f"{where} uses hidden_act={config['hidden_act']!r}; this model has exact GELU only")
        missing = [key for key in ARCHITECTURE_KEYS if key not in config and key != "layer_norm_eps"]
        if missing:
            raise CheckpointError(f"{where}: config.json lacks {missing}")
        weights = next(
            (os.path.join(directory, f) for f in WEIGHTS_FILES if os.path.isfile(os.path.join(directory, f))), None
        )
        if weights is None:
            raise CheckpointError(
                f"{where} holds neither {' nor '.join(WEIGHTS_FILES)} (a sharded or "
                "TensorFlow checkpoint: save it as one file with transformers' save_pretrained)"
            )
        vocab = os.path.join(directory, contract.VOCAB_FILE)
        tokenizer_config = {}
        tokenizer_config_path = os.path.join(directory, TOKENIZER_CONFIG_FILE)
        if os.path.isfile(tokenizer_config_path):
            with open(tokenizer_config_path, encoding="utf-8") as f:
                tokenizer_config = json.load(f)
        return cls(directory, name, config, weights, vocab if os.path.isfile(vocab) else None, tokenizer_config)

    @property
    def where(self) -> str:
        return f"{self.name}={self.directory}"

    def architecture(self) -> dict:
        """ARCHITECTURE_KEYS as config.json gives them (layer_norm_eps defaults to BERT's 1e-12)."""
        return {key: self.config.get(key, 1e-12) for key in ARCHITECTURE_KEYS}

    def bert_config(self, with_nsp_head: bool = False) -> BertConfig:
        """Our BertConfig of this architecture (dropouts and init range from config.json)."""
        pad = self.config.get("pad_token_id")
        return BertConfig(
            **self.architecture(),
            with_nsp_head=with_nsp_head,
            hidden_dropout_prob=self.config.get("hidden_dropout_prob", 0.1),
            attention_probs_dropout_prob=self.config.get("attention_probs_dropout_prob", 0.1),
            initializer_range=self.config.get("initializer_range", 0.02),
            pad_token_id=0 if pad is None else pad,
        )

    def vocab(self) -> list[str]:
        if self.vocab_path is None:
            raise CheckpointError(
                f"{self.where} has no {contract.VOCAB_FILE} (the WordPiece vocabulary its "
                "embeddings index): put the checkpoint's vocab.txt beside its config.json"
            )
        return contract.read_vocab(self.vocab_path)

    @property
    def lowercase(self) -> Optional[bool]:
        """tokenizer_config.json's do_lower_case; None when it does not say."""
        value = self.tokenizer_config.get("do_lower_case")
        return None if value is None else bool(value)

    def tokenizer(self):
        """WordPiece over vocab.txt as transformers' BertTokenizer(Fast) of this directory would
        tokenise (``pipeline.tokenization.build_tokenizer``): do_lower_case and strip_accents from
        tokenizer_config.json; without do_lower_case, decided from the vocabulary's pieces. An
        export of shards that kept letters with marks (``training.export``) is read from its
        tokenizer.json, which holds the job's own normaliser."""
        from pipeline.tokenization import build_tokenizer, decide_casing

        tokenizer_json = os.path.join(self.directory, "tokenizer.json")
        if self.tokenizer_config.get("tokenizer_class") == "PreTrainedTokenizerFast" and os.path.isfile(tokenizer_json):
            from tokenizers import Tokenizer

            return Tokenizer.from_file(tokenizer_json)
        vocab = self.vocab()
        lowercase = self.lowercase if self.lowercase is not None else decide_casing(vocab).lowercase
        return build_tokenizer(vocab, lowercase, self.tokenizer_config.get("strip_accents"))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights on the CPU, in our names (``to_our_names``)."""
        if self.weights_path.endswith(".safetensors"):
            from safetensors.torch import load_file

            weights = load_file(self.weights_path)
        else:
            weights = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        return to_our_names(weights)


def is_hf_directory(path: str) -> bool:
    """Whether ``path`` is a directory with a config.json (a Hugging Face model directory)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def to_our_names(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers BERT state dict in the names of ``training.model.BertForPreTraining``:
    ``bert.`` before a bare BertModel's keys, ``gamma``/``beta`` of old files as weight/bias."""
    out = {}
    for key, tensor in weights.items():
        if key.startswith(ENCODER_PREFIXES):
            key = "bert." + key
        if key.endswith("LayerNorm.gamma"):
            key = key[: -len("gamma")] + "weight"
        elif key.endswith("LayerNorm.beta"):
            key = key[: -len("beta")] + "bias"
        out[key] = tensor
    return out


# --- does it fit the run ---------------------------------------------------------------------


def fitting_overrides(arch: dict) -> str:
    """The ``model=`` preset or ``model.*`` overrides that give a model of architecture ``arch``
    (ARCHITECTURE_KEYS), e.g. ``model=base`` or ``model.hidden_size=384 model.num_hidden_layers=6 ...``."""
    shape = {key: arch[key] for key in SHAPE_KEYS}
    preset = next((name for name, fields in bert_presets().items() if fields == shape), None)
    parts = [f"model={preset}"] if preset else [f"model.{key}={value}" for key, value in shape.items()]
    defaults = BertConfig(vocab_size=1, **shape)
    parts += [
        f"model.{key}={arch[key]}"
        for key in ("max_position_embeddings", "type_vocab_size", "layer_norm_eps")
        if arch[key] != getattr(defaults, key)
    ]
    return " ".join(parts)


def check_fits(checkpoint: HFCheckpoint, bert_cfg: BertConfig, manifest: contract.ShardManifest) -> None:
    """The checkpoint's vocabulary is the shards' (by sha256, as the manifest records it) and its
    architecture is the configured model's; CheckpointError saying what to change otherwise.

    Reads config.json and vocab.txt only: cheap enough to run before anything is built."""
    vocab = checkpoint.vocab()
    digest = vocab_sha256(vocab)
    if digest != manifest.vocab_sha256:
        raise CheckpointError(
            f"{checkpoint.where} has another vocabulary than the shards: its vocab.txt has {len(vocab):,} tokens "
            f"(sha256 {digest[:12]}), data_dir's {manifest.vocab_size:,} (sha256 {manifest.vocab_sha256[:12]}); its "
            f"embeddings index its own vocabulary, so make the shards with it: python -m pipeline ... "
            f"tokenizer=vocab_file tokenizer.vocab_file={checkpoint.vocab_path}"
        )
    if checkpoint.lowercase is not None and checkpoint.lowercase != manifest.lowercase:
        raise CheckpointError(
            f"{checkpoint.where} lowercases its input (tokenizer_config.json do_lower_case="
            f"{str(checkpoint.lowercase).lower()}) but the shards were made with lowercase="
            f"{str(manifest.lowercase).lower()}: make them with tokenizer.lowercase="
            f"{str(checkpoint.lowercase).lower()}"
        )
    arch = checkpoint.architecture()
    if arch["vocab_size"] != len(vocab):
        raise CheckpointError(
            f"{checkpoint.where}: its embedding table has {arch['vocab_size']:,} rows (config.json "
            f"vocab_size) for the {len(vocab):,} tokens of its vocab.txt; this trainer needs "
            "one row per token"
        )
    differ = [
        f"{key} {arch[key]} in the checkpoint, {getattr(bert_cfg, key)} here"
        for key in ARCHITECTURE_KEYS
        if arch[key] != getattr(bert_cfg, key)
    ]
    if differ:
        raise CheckpointError(
            f"{checkpoint.where} does not fit this model: {'; '.join(differ)}; "
            f"run with {fitting_overrides(arch)}, the checkpoint's architecture"
        )


# --- loading ---------------------------------------------------------------------------------


@dataclass
class InitReport:
    """What ``load_into`` did, for the log and the run's record (run_config.json)."""

    path: str
    weights_file: str
    fresh: list[str]
    """Our tensors the checkpoint lacks (each tied pair once): initialised as a fresh run would."""
    unused: list[str]
    """The checkpoint's tensors this model has no place for."""

    def to_dict(self) -> dict:
        return {"path": self.path, "weights_file": self.weights_file, "fresh": self.fresh, "unused": self.unused}


def load_into(model: BertForPreTraining, checkpoint: HFCheckpoint) -> InitReport:
    """Copy the checkpoint's weights into ``model`` (already initialised); the tensors it lacks
    keep their initialisation. CheckpointError when a tensor has another shape or an encoder
    tensor is missing (check_fits has compared the architectures already)."""
    weights = checkpoint.state_dict()
    expected = model.state_dict()
    wrong = [
        f"{k} {tuple(v.shape)}, this model {tuple(expected[k].shape)}"
        for k, v in weights.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if wrong:
        raise CheckpointError(
            f"{checkpoint.where}: {len(wrong)} tensors of another shape than this model's: {wrong[:2]}"
        )
    loaded = model.load_state_dict(weights, strict=False)
    model.tie_weights()
    missing = [k for k in loaded.missing_keys if not (k in TIED_KEYS and TIED_KEYS[k] in loaded.missing_keys)]
    broken = [k for k in missing if not k.startswith(FRESH_PREFIXES)]
    if broken:
        raise CheckpointError(
            f"{checkpoint.where} lacks {len(broken)} encoder tensors, e.g. {broken[:3]}: not a complete BERT checkpoint"
        )
    return InitReport(
        checkpoint.directory, os.path.basename(checkpoint.weights_path), sorted(missing), sorted(loaded.unexpected_keys)
    )


def load_encoder(directory: str, name: str = "model_dir") -> tuple[HFCheckpoint, BertModel]:
    """The checkpoint's encoder (embeddings and layers, no pooler, no heads) as our BertModel,
    in eval mode on the CPU; CheckpointError (naming ``name=directory``) if it is not a BERT."""
    checkpoint = HFCheckpoint.open(directory, name)
    model = BertForPreTraining(checkpoint.bert_config(with_nsp_head=False))
    load_into(model, checkpoint)
    return checkpoint, model.bert.eval()
