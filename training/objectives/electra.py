"""ELECTRA replaced-token detection (Clark et al. 2020): a small generator fills the masked
positions with tokens sampled from its masked-LM softmax, and a discriminator labels every token
of the result original or replaced.

    loss = generator MLM cross-entropy + discriminator_weight x discriminator binary cross-entropy

Both networks are BERT encoders built from ``training.model``'s embeddings and layers. The
generator has ``generator_size_fraction`` of the discriminator's width at the same depth, hidden
size, heads and feed-forward scaled alike as the paper's Table 6 states it (1/4 for Small and
Large, 1/3 for Base; google-research/electra derives heads as hidden/64 and feed-forward as
4 x hidden, the same sizes on every 64-wide-head preset). One embedding module (word, position and
segment tables with their LayerNorm, the variables google-research/electra shares under
``electra/embeddings``) serves both networks, and its word table is also the generator's output
projection. A sampled token equal to the original counts as original.

Parameter names are transformers': under ``generator.`` an ``ElectraForMaskedLM`` state_dict,
under ``discriminator.`` an ``ElectraForPreTraining`` one, so the export is a prefix away and
``save_hf`` writes both as transformers directories (``load_hf`` reads them back).

Shape legend: B batch, T sequence length, P masked-position slots per sequence, V vocabulary,
E embedding width, H and Hg the hidden widths of discriminator and generator, N real tokens of an
unpadded batch.
"""

from __future__ import annotations

import dataclasses
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from training import model as bert
from training.config import ConfigError, ElectraConfig  # ElectraConfig: the objective group's schema
from training.data import MODEL_INPUTS
from training.export import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    checked_vocabulary,
    save_weights,
    write_json,
    write_tokenizer,
)
from training.hf_checkpoint import ARCHITECTURE_KEYS, CheckpointError
from training.labels import IGNORE_INDEX
from training.model import (
    BertConfig,
    BertEmbeddings,
    BertEncoder,
    BertForPreTraining,
    BertModel,
    _cross_entropy_and_hits,
    _gather_predicted,
    additive_attention_mask,
    attention_dtype,
)
from training.objectives import Objective, Statistics

DISCRIMINATOR_DIR = "discriminator"
GENERATOR_DIR = "generator"
"""Sub-directories ``save_hf`` writes: one transformers model directory each."""

GENERATOR_TIED_KEYS = {"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"}
"""Copy -> source in the generator's transformers state_dict (``ElectraForMaskedLM._tied_weights_keys``):
saved once, tied back by the loader."""

STAT_NAMES = (
    "mlm_loss",
    "mlm_accuracy",
    "rtd_loss",
    "rtd_accuracy",
    "replaced_recall",
    "original_accuracy",
    "replaced_fraction",
)
"""The statistics ``ElectraPreTraining.forward`` returns, in this order."""


def embedding_width(disc_cfg: BertConfig, cfg: ElectraConfig) -> int:
    """E: the configured embedding size, else the discriminator's hidden size."""
    return disc_cfg.hidden_size if cfg.embedding_size is None else cfg.embedding_size


def generator_config(disc_cfg: BertConfig, cfg: ElectraConfig) -> BertConfig:
    """The generator's architecture: hidden size, heads and feed-forward width scaled by
    ``generator_size_fraction`` and rounded (at least one head), the rest the discriminator's.
    ConfigError when the rounded sizes do not fit together."""
    fraction = cfg.generator_size_fraction
    hidden = round(disc_cfg.hidden_size * fraction)
    heads = max(1, round(disc_cfg.num_attention_heads * fraction))
    intermediate = round(disc_cfg.intermediate_size * fraction)
    if hidden < 1 or intermediate < 1 or hidden % heads:
        raise ConfigError(
            f"objective.electra.generator_size_fraction={fraction} gives the generator hidden {hidden}, "
            f"{heads} heads and feed-forward {intermediate} from the discriminator's {disc_cfg.hidden_size}, "
            f"{disc_cfg.num_attention_heads}, {disc_cfg.intermediate_size}: choose a fraction that keeps the "
            "hidden size a positive multiple of the heads (1/4, 1/3, 1/2 for the published sizes)"
        )
    return dataclasses.replace(
        disc_cfg, hidden_size=hidden, num_attention_heads=heads, intermediate_size=intermediate, with_nsp_head=False
    )


def _embedding_config(disc_cfg: BertConfig, width: int) -> BertConfig:
    """The config ``BertEmbeddings`` is built from: the discriminator's, at width E. BertEmbeddings
    reads only the table sizes, norm and dropout; one head keeps BertConfig's checks satisfied."""
    return dataclasses.replace(disc_cfg, hidden_size=width, num_attention_heads=1, with_nsp_head=False)


class ElectraModel(nn.Module):
    """The encoder in transformers' ``ElectraModel`` layout: (shared) embeddings of width E, a
    linear ``embeddings_project`` to H when E != H, then BERT's layers.

    ``unpad`` as in ``training.model.BertModel``: embeddings, projection and layers run on the N
    real tokens only."""

    # Which layout a forward runs on: the same rule as BERT's encoder (padded, or unpadded from the
    # collator's indices or the mask); it reads only ``self.unpad``.
    _unpadded_layout = BertModel._unpadded_layout

    def __init__(self, cfg: BertConfig, embeddings: BertEmbeddings, unpad: bool = False):
        super().__init__()
        self.unpad = unpad
        self.embeddings = embeddings  # shared between generator and discriminator: one module, registered twice
        width = embeddings.word_embeddings.embedding_dim
        self.embeddings_project = nn.Linear(width, cfg.hidden_size) if width != cfg.hidden_size else None
        self.encoder = BertEncoder(cfg)

    def _embed(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T) -> (B, T, H), or (N,) -> (N, H): embeddings, then the projection if any."""
        x = self.embeddings(input_ids, token_type_ids, positions)  # (B, T, E) or (N, E)
        return x if self.embeddings_project is None else self.embeddings_project(x)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        unpad_index: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids, token_type_ids, attention_mask (B, T) -> (B, T, H); arguments as
        ``training.model.BertModel.forward`` (zeros at padding on the unpadded path)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        B, T = input_ids.shape
        if T > self.embeddings.position_embeddings.num_embeddings:
            raise ValueError(
                f"sequence length {T} exceeds max_position_embeddings "
                f"{self.embeddings.position_embeddings.num_embeddings}"
            )
        layout = self._unpadded_layout(attention_mask, unpad_index, cu_seqlens, B, T)
        if layout is None:
            x = self._embed(input_ids, token_type_ids)  # (B, T, H)
            bias = None if attention_mask is None else additive_attention_mask(attention_mask, attention_dtype(x))
            return self.encoder(x, bias)  # (B, T, H)
        x = self._embed(layout.unpad(input_ids), layout.unpad(token_type_ids), layout.positions())  # (N, H)
        mask = layout.real_mask() if attention_mask is None else attention_mask  # (B, T)
        bias = additive_attention_mask(mask, attention_dtype(x))  # (B, 1, 1, T), for the padded fallback
        return layout.pad(self.encoder(x, bias, layout))  # (B, T, H)


class ElectraGeneratorPredictions(nn.Module):
    """The generator's head before the vocabulary: dense Hg -> E, GELU, LayerNorm."""

    def __init__(self, cfg: BertConfig, width: int):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, width)
        self.LayerNorm = nn.LayerNorm(width, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))  # (..., E)


class ElectraGenerator(nn.Module):
    """The generator in ``ElectraForMaskedLM``'s layout; ``generator_lm_head`` (E -> V) uses the
    shared word table as its weight (tied by ``ElectraPreTraining.tie_weights``)."""

    def __init__(self, cfg: BertConfig, embeddings: BertEmbeddings, unpad: bool = False):
        super().__init__()
        width = embeddings.word_embeddings.embedding_dim
        self.electra = ElectraModel(cfg, embeddings, unpad)
        self.generator_predictions = ElectraGeneratorPredictions(cfg, width)
        self.generator_lm_head = nn.Linear(width, cfg.vocab_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        masked_lm_positions: torch.Tensor | None = None,
        unpad_index: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """MLM logits: (B*P, V) at the (B, P) ``masked_lm_positions`` slots in row-major order,
        padding slots included (the sparse head, ``training.model._gather_predicted``); (B, T, V) at
        every position without them."""
        hidden = self.electra(input_ids, token_type_ids, attention_mask, unpad_index, cu_seqlens)  # (B, T, Hg)
        if masked_lm_positions is not None:
            hidden, _ = _gather_predicted(hidden, masked_lm_positions, None)  # (B*P, Hg)
        return self.generator_lm_head(self.generator_predictions(hidden))  # (B*P, V) or (B, T, V)


class ElectraDiscriminatorPredictions(nn.Module):
    """The discriminator's head: dense H -> H, GELU, dense H -> 1 (a replaced-token logit)."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dense_prediction = nn.Linear(cfg.hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_prediction(F.gelu(self.dense(x))).squeeze(-1)  # (B, T)


class ElectraDiscriminator(nn.Module):
    """The discriminator in ``ElectraForPreTraining``'s layout."""

    def __init__(self, cfg: BertConfig, embeddings: BertEmbeddings, unpad: bool = False):
        super().__init__()
        self.electra = ElectraModel(cfg, embeddings, unpad)
        self.discriminator_predictions = ElectraDiscriminatorPredictions(cfg)

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        unpad_index: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) ids -> (B, T) logits, positive for "replaced". The head runs on every position,
        padding included (a fixed shape); the loss skips the padding."""
        hidden = self.electra(input_ids, token_type_ids, attention_mask, unpad_index, cu_seqlens)  # (B, T, H)
        return self.discriminator_predictions(hidden)  # (B, T)


def sample_replacements(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """One token per row drawn from softmax(logits / temperature), by Gumbel-max:
    argmax(logits / temperature + g) with g = -log(-log(u)), u uniform from torch's generator on
    the logits' device. No gradient, no host sync, a fixed shape. logits (M, V) -> (M,) long.

    The noise is one fp32 (M, V) tensor, transformed in place."""
    with torch.no_grad():
        noise = torch.rand(logits.shape, device=logits.device, dtype=torch.float32)  # (M, V) in [0, 1)
        noise.clamp_(min=torch.finfo(torch.float32).tiny).log_().neg_().log_().neg_()  # Gumbel(0, 1)
        return noise.add_(logits.detach().float() / temperature).argmax(dim=-1)  # (M,)


def replace_tokens(
    input_ids: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor, sampled: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's input and its labels.

    input_ids (B, T): the masked input; positions, labels, sampled (B, P): the masked slots, their
    original tokens (IGNORE_INDEX at padding slots) and the generator's samples. Returns
    ``corrupted`` (B, T), the input with every real slot's token set to its sample, and
    ``replaced`` (B, T) bool, where ``corrupted`` differs from the original text (the input with
    every real slot's token set to its label): a sample equal to the original is not replaced.

    Padding slots write into a spare column T that is cut off afterwards, so every write has a
    fixed shape and none lands on a real position."""
    B, T = input_ids.shape
    real_slot = labels != IGNORE_INDEX  # (B, P)
    target = torch.where(real_slot, positions, T)  # (B, P), padding slots -> the spare column
    with_spare = F.pad(input_ids, (0, 1))  # (B, T+1)
    original = with_spare.scatter(1, target, labels)[:, :T]  # (B, T)
    corrupted = with_spare.scatter(1, target, sampled.to(input_ids.dtype))[:, :T]  # (B, T)
    return corrupted, corrupted != original


def detection_loss_and_stats(
    logits: torch.Tensor, replaced: torch.Tensor, real: torch.Tensor
) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The discriminator's binary cross-entropy, fp32, averaged over real tokens (0 when there
    are none), and its statistics as (numerator, denominator) pairs.

    logits (B, T), positive for "replaced"; replaced, real (B, T) bool. A token is called replaced
    when its logit is positive."""
    per_token = F.binary_cross_entropy_with_logits(logits.float(), replaced.float(), reduction="none")  # (B, T)
    tokens = real.sum()
    loss = torch.where(real, per_token, 0.0).sum() / tokens.clamp(min=1)
    with torch.no_grad():
        called = logits > 0  # (B, T)
        replaced = replaced & real
        original = ~replaced & real
        n_replaced = replaced.sum()
        stats = {
            "rtd_loss": (loss.detach() * tokens, tokens),
            "rtd_accuracy": (((called == replaced) & real).sum(), tokens),
            "replaced_recall": ((called & replaced).sum(), n_replaced),
            "original_accuracy": ((~called & original).sum(), original.sum()),
            "replaced_fraction": (n_replaced, tokens),
        }
    return loss, stats


class ElectraPreTraining(nn.Module):
    """Generator and discriminator with shared embeddings, trained jointly on one MLM batch.

    ``disc_cfg``: the discriminator's architecture (its ``with_nsp_head`` is ignored: ELECTRA has
    no sentence head). ``unpad``: both encoders run on real tokens only (``training.model.BertModel``)."""

    # BERT's initialisation (normal(0, initializer_range) weights, zero biases, [PAD] row zero);
    # it reads ``self.config.initializer_range``.
    _init_weights = BertForPreTraining._init_weights

    def __init__(self, disc_cfg: BertConfig, cfg: ElectraConfig, unpad: bool = False):
        super().__init__()
        self.config = disc_cfg
        self.electra_config = cfg
        self.generator_config = generator_config(disc_cfg, cfg)
        embeddings = BertEmbeddings(_embedding_config(disc_cfg, embedding_width(disc_cfg, cfg)))
        self.generator = ElectraGenerator(self.generator_config, embeddings, unpad)
        self.discriminator = ElectraDiscriminator(disc_cfg, embeddings, unpad)
        self.apply(self._init_weights)
        self.tie_weights()

    @property
    def embeddings(self) -> BertEmbeddings:
        """The one embedding module both networks read."""
        return self.discriminator.electra.embeddings

    def tie_weights(self) -> None:
        """Share the embedding module and make the generator's output projection its word table.
        Call again after ``to_empty()``, which gives each module its own fresh tensors."""
        self.generator.electra.embeddings = self.discriminator.electra.embeddings
        self.generator.generator_lm_head.weight = self.embeddings.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        masked_lm_positions: torch.Tensor,
        masked_lm_labels: torch.Tensor,
        unpad_index: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """One ELECTRA step on an MLM batch; returns (loss, stats).

        input_ids, attention_mask, token_type_ids (B, T): the masked input as the loader gives it
            (a missing mask: no padding). masked_lm_positions, masked_lm_labels (B, P): the masked
            slots and their original tokens, IGNORE_INDEX (-100) at padding slots.
        unpad_index, cu_seqlens: the collator's layout for a model built with ``unpad``.

        loss: generator MLM loss + discriminator_weight x discriminator BCE, fp32.
        stats: name -> (numerator, denominator), 0-d tensors on the device (losses fp32 sums,
            counts int64), to be summed over micro batches and ranks and reported as their ratio;
            the names are ``STAT_NAMES``. Nothing here reads a value back to the host or selects
            by value, so shapes are fixed and the step compiles once."""
        B, P = masked_lm_positions.shape
        # what both networks read besides their ids: the segments and where the real tokens are
        context = dict(
            token_type_ids=token_type_ids, attention_mask=attention_mask, unpad_index=unpad_index, cu_seqlens=cu_seqlens
        )

        mlm_logits = self.generator(input_ids, masked_lm_positions=masked_lm_positions, **context)  # (B*P, V)
        mlm_loss, mlm_correct, mlm_count = _cross_entropy_and_hits(mlm_logits, masked_lm_labels)

        sampled = sample_replacements(mlm_logits, self.electra_config.temperature).view(B, P)  # detached
        corrupted, replaced = replace_tokens(input_ids, masked_lm_positions, masked_lm_labels, sampled)  # (B, T)
        rtd_logits = self.discriminator(corrupted, **context)  # (B, T)
        real = torch.ones_like(replaced) if attention_mask is None else attention_mask.bool()
        rtd_loss, stats = detection_loss_and_stats(rtd_logits, replaced, real)

        loss = mlm_loss + self.electra_config.discriminator_weight * rtd_loss
        stats["mlm_loss"] = (mlm_loss.detach() * mlm_count, mlm_count)
        stats["mlm_accuracy"] = (mlm_correct, mlm_count)
        return loss, {name: stats[name] for name in STAT_NAMES}


def flops_per_token(
    disc_cfg: BertConfig, cfg: ElectraConfig, seq_len: int, sparse_fraction: float | None = None
) -> float:
    """Training FLOPs (forward + backward) per token of both networks, the model FLOPs MFU counts.

    Each encoder as ``training.model.flops_per_token`` counts it without its MLM head, plus, at
    6 FLOPs per weight and token: the discriminator's head on every token (6H² + 6H), the
    generator's head (6·Hg·E + 6·E·V) on a fraction f of tokens, and each network's
    ``embeddings_project`` (6·E·H) where E differs from its width.

    sparse_fraction: the fraction f of tokens the generator's head runs on (masked slots over
    tokens, as the trainer passes it for BERT); None: every token."""
    gen_cfg = generator_config(disc_cfg, cfg)
    width = embedding_width(disc_cfg, cfg)
    fraction = 1.0 if sparse_fraction is None else float(sparse_fraction)
    encoders = bert.flops_per_token(disc_cfg, seq_len, 0.0) + bert.flops_per_token(gen_cfg, seq_len, 0.0)
    projections = sum(6.0 * width * c.hidden_size for c in (disc_cfg, gen_cfg) if c.hidden_size != width)
    discriminator_head = 6.0 * disc_cfg.hidden_size**2 + 6.0 * disc_cfg.hidden_size
    generator_head = fraction * (6.0 * gen_cfg.hidden_size * width + 6.0 * width * disc_cfg.vocab_size)
    return encoders + projections + discriminator_head + generator_head


# ------------------------------------------------------------------ transformers layout and export


def hf_config_dict(model: ElectraPreTraining, network: str) -> dict:
    """config.json of ``network`` ("discriminator" or "generator") as transformers' ElectraConfig:
    BERT's fields (``BertConfig.to_hf_config_dict``) plus the embedding width."""
    cfg, architecture = _network(model, network)
    width = model.embeddings.word_embeddings.embedding_dim
    return {
        **cfg.to_hf_config_dict(),
        "model_type": "electra",
        "architectures": [architecture],
        "embedding_size": width,
    }


def _network(model: ElectraPreTraining, network: str) -> tuple[BertConfig, str]:
    if network == DISCRIMINATOR_DIR:
        return model.config, "ElectraForPreTraining"
    if network == GENERATOR_DIR:
        return model.generator_config, "ElectraForMaskedLM"
    raise ValueError(f"network must be {DISCRIMINATOR_DIR!r} or {GENERATOR_DIR!r}, got {network!r}")


def discriminator_hf_state_dict(model: ElectraPreTraining) -> dict[str, torch.Tensor]:
    """The discriminator's tensors under ``ElectraForPreTraining``'s names (shared with the model)."""
    return _strip_prefix(model.state_dict(), DISCRIMINATOR_DIR + ".")


def generator_hf_state_dict(model: ElectraPreTraining) -> dict[str, torch.Tensor]:
    """The generator's tensors under ``ElectraForMaskedLM``'s names, the tied output projection
    included (shared with the model)."""
    return _strip_prefix(model.state_dict(), GENERATOR_DIR + ".")


def _strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


def _tensors_to_save(state_dict: dict[str, torch.Tensor], tied: dict[str, str]) -> dict[str, torch.Tensor]:
    """Contiguous fp32 CPU clones, each tied copy left out (safetensors refuses shared storage)."""
    return {
        name: tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
        for name, tensor in state_dict.items()
        if name not in tied
    }


def save_hf(model: ElectraPreTraining, directory: str, data_dir: str) -> str:
    """Write ``directory/discriminator`` (transformers' ``ElectraForPreTraining``) and
    ``directory/generator`` (``ElectraForMaskedLM``), each with config.json, model.safetensors
    (fp32) and the WordPiece tokenizer of the shards in ``data_dir`` (their manifest says how text
    was normalised, which a bare vocab.txt cannot). Returns directory.

    ExportError when the vocabulary file is not the one the manifest names, or the model's
    vocabulary size or [PAD] id differ from the shards'."""
    manifest, vocab_path, vocab = checked_vocabulary(data_dir, model.config)
    weights = {
        DISCRIMINATOR_DIR: _tensors_to_save(discriminator_hf_state_dict(model), {}),
        GENERATOR_DIR: _tensors_to_save(generator_hf_state_dict(model), GENERATOR_TIED_KEYS),
    }
    for network, tensors in weights.items():
        out = os.path.join(directory, network)
        os.makedirs(out, exist_ok=True)
        save_weights(tensors, os.path.join(out, WEIGHTS_FILE))
        write_json(os.path.join(out, CONFIG_FILE), {**hf_config_dict(model, network), "dtype": "float32"})
        write_tokenizer(out, manifest, vocab_path, vocab, model.config.max_position_embeddings)
    return directory


def load_hf(model: ElectraPreTraining, directory: str) -> None:
    """Load the two networks ``save_hf`` wrote (or transformers' ``save_pretrained`` of an
    ``ElectraForPreTraining`` and an ``ElectraForMaskedLM`` with equal embeddings) into ``model``,
    strictly: every tensor present, none extra, shapes equal.

    CheckpointError (a ConfigError) when a directory is missing, its architecture differs from the
    model's, or the two networks' embeddings differ (this model shares one table)."""
    state_dict = {}
    for network in (DISCRIMINATOR_DIR, GENERATOR_DIR):
        weights = _read_network(model, directory, network)
        state_dict.update({f"{network}.{name}": tensor for name, tensor in weights.items()})
    for name, tensor in list(state_dict.items()):
        if name.startswith(f"{DISCRIMINATOR_DIR}.electra.embeddings."):
            twin = GENERATOR_DIR + name[len(DISCRIMINATOR_DIR) :]
            if twin in state_dict and not torch.equal(state_dict[twin], tensor):
                raise CheckpointError(
                    f"{directory}: {twin} differs from {name}; this model shares one embedding module between "
                    "generator and discriminator"
                )
    model.load_state_dict(state_dict, strict=True)


def _read_network(model: ElectraPreTraining, directory: str, network: str) -> dict[str, torch.Tensor]:
    """``directory/network``'s weights in transformers' names, tied copies filled in, after
    checking its config.json against the model's."""
    where = os.path.join(directory, network)
    config_path, weights_path = os.path.join(where, CONFIG_FILE), os.path.join(where, WEIGHTS_FILE)
    if not (os.path.isfile(config_path) and os.path.isfile(weights_path)):
        raise CheckpointError(f"{where} holds no {CONFIG_FILE} and {WEIGHTS_FILE}: give a directory save_hf wrote")
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    expected = hf_config_dict(model, network)
    keys = ("model_type", "embedding_size", *ARCHITECTURE_KEYS)
    differ = {key: (config.get(key), expected[key]) for key in keys if config.get(key) != expected[key]}
    if differ:
        raise CheckpointError(f"{where}: config.json differs from the model's ({{key: (file, model)}}): {differ}")
    weights = load_file(weights_path)
    if network == GENERATOR_DIR:
        for copy, source in GENERATOR_TIED_KEYS.items():
            if copy not in weights and source in weights:
                weights[copy] = weights[source]
    return weights


# ------------------------------------------------------------------ the objective the trainer drives


class ReplacedTokenDetection(Objective):
    """``objective=electra``: the trainer's view of ``ElectraPreTraining``. The model config is the
    discriminator's; the settings (``ElectraConfig``, defaults when None) size the generator. Trains
    on shards without a sentence-pair task (ELECTRA has no sentence head): shards built with
    instances=none, masked dynamically or statically."""

    name = "electra"
    batch_keys = tuple(k for k in MODEL_INPUTS if k != "next_sentence_label")
    sentence_pairs = ("none",)
    architectures = ("bert",)  # both networks are BERT encoders (training.model's layers)
    starts_from_init_from = False  # init_from holds one MLM network; ELECTRA trains two, embeddings shared
    statistic_labels = {
        "mlm_loss": "generator MLM loss",
        "mlm_accuracy": "generator MLM accuracy",
        "rtd_loss": "detection loss",
        "rtd_accuracy": "detection accuracy",
        "replaced_recall": "replaced tokens found",
        "original_accuracy": "original tokens kept",
        "replaced_fraction": "fraction replaced",
    }

    def __init__(self, sentence_pair: str, sparse_head: bool = True, settings: ElectraConfig | None = None):
        # The generator's head runs on the masked slots only, whatever trainer.sparse_mlm_head says
        # (it samples there only): sparse_head is always True, as the FLOPs count needs it.
        super().__init__(sentence_pair, True, ElectraConfig() if settings is None else settings)
        self.statistics = STAT_NAMES

    def build(self, model_cfg: BertConfig, unpad: bool) -> nn.Module:
        return ElectraPreTraining(model_cfg, self.settings, unpad=unpad)

    def loss(self, net, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Statistics]:
        # the generator's head always runs on the masked slots (sparse): it samples there only
        return net(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            token_type_ids=batch.get("token_type_ids"),
            masked_lm_positions=batch["masked_lm_positions"],
            masked_lm_labels=batch["masked_lm_labels"],
            unpad_index=batch.get("unpad_index"),
            cu_seqlens=batch.get("cu_seqlens"),
        )

    def flops_per_token(self, model_cfg: BertConfig, seq_len: int, sparse_fraction: float | None) -> float:
        return flops_per_token(model_cfg, self.settings, seq_len, sparse_fraction)

    def export(self, state_dict: dict[str, torch.Tensor], model_cfg: BertConfig, data_dir: str, out_dir: str) -> str:
        model = ElectraPreTraining(model_cfg, self.settings)
        model.load_state_dict(state_dict)
        return save_hf(model, out_dir, data_dir)
