"""A ModernBERT-style encoder for masked-LM pre-training, in plain torch.

Pre-norm LayerNorms without biases, GeGLU feed-forward blocks, rotary position embeddings with
one base for global layers and another for local ones, attention global every n-th layer and a
sliding window otherwise, a final norm, no biases in linear layers, the MLM decoder tied to the
token embeddings (Warner et al. 2024, "Smarter, Better, Faster, Longer"). No sentence head.

Parameter names are those of transformers' ``ModernBertForMaskedLM`` (transformers 5), so a
state_dict moves between the two with ``strict=True`` in both directions; ``save_hf`` writes a
directory ``transformers.AutoModelForMaskedLM`` loads as that class. ``forward`` takes the
arguments and returns the ``PreTrainingOutput`` of ``training.model.BertForPreTraining``, so the
same trainer drives either; the unpadded layout (``Unpadded``) and the sparse MLM head over fixed
(B, P) slots are that module's too, imported rather than copied.

Attention routes, chosen once per forward for each kind of layer (global, local):

- padded (B, T, H): torch SDPA with an additive mask: padding keys only for global layers (None
  without padding, so the flash kernel stays eligible), padding and the window for local ones,
  (B, 1, T, T), built once per forward (B=256, T=512: 128 MiB in bf16; the unpadded route on
  CUDA needs none).
- unpadded (N, H), CUDA, fp16/bf16, no attention dropout: FlashAttention's variable-length
  kernel (``varlen_attn``), which takes the window as ``window_size`` = (w/2, w/2).
- unpadded, CUDA with attention dropout: global layers through SDPA on nested jagged tensors
  (``jagged_attention``); it takes no mask, so local layers cannot express their window there
  and take the next route instead.
- unpadded otherwise (CPU, fp32, local layers with dropout): q, k, v padded back to (B, T, H),
  SDPA with the padded route's mask, unpadded again.

Shape legend: B batch, T sequence length, H hidden size, nh heads, hs head size, I GeGLU inner
width, V vocabulary size, P masked-position slots per sequence, N real tokens of an unpadded batch.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from functools import partial
from typing import TYPE_CHECKING, Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from training.model import (
    PreTrainingOutput,
    Unpadded,
    _cross_entropy_and_hits,
    _gather_predicted,
    _padded_attention,
    additive_attention_mask,
    attention_dtype,
    jagged_attention,
)
from training.models import ARCHITECTURE

if TYPE_CHECKING:
    from pipeline.contract import ShardManifest

INIT_CUTOFF = 2.0
"""Weights start truncated-normal, cut at this many standard deviations (transformers'
``initializer_cutoff_factor`` default)."""


@dataclass
class ModernConfig:
    """Architecture of a ModernBERT-style encoder and its MLM head. Fields marked ``ARCHITECTURE`` are
    what a run record keeps (``training.models.Architecture.record``)."""

    vocab_size: int = field(metadata=ARCHITECTURE)
    """Number of WordPiece ids; the tokenizer's vocabulary size."""
    hidden_size: int = field(metadata=ARCHITECTURE)
    """Width H of every hidden state."""
    num_hidden_layers: int = field(metadata=ARCHITECTURE)
    """Number L of transformer layers."""
    num_attention_heads: int = field(metadata=ARCHITECTURE)
    """Attention heads per layer; must divide hidden_size into an even head size (rotary pairs)."""
    intermediate_size: int = field(metadata=ARCHITECTURE)
    """GeGLU inner width I: Wi projects H to 2I (value and gate), Wo projects I back to H."""
    max_position_embeddings: int = field(default=512, metadata=ARCHITECTURE)
    """Longest sequence accepted (rotary positions have no table; transformers' config records it)."""
    global_attn_every_n_layers: int = field(default=3, metadata=ARCHITECTURE)
    """Layer i attends globally when i % n == 0 (the first layer included), through a window otherwise."""
    local_attention: int = field(default=128, metadata=ARCHITECTURE)
    """Window width of local layers, in tokens: each token sees local_attention/2 on either side."""
    global_rope_theta: float = field(default=160_000.0, metadata=ARCHITECTURE)
    """Rotary base of global layers."""
    local_rope_theta: float = field(default=10_000.0, metadata=ARCHITECTURE)
    """Rotary base of local layers."""
    norm_eps: float = 1e-5
    """LayerNorm epsilon."""
    embedding_dropout: float = 0.0
    """Dropout after the embedding norm."""
    attention_dropout: float = 0.0
    """Dropout on attention probabilities and on the attention block's output (as transformers)."""
    mlp_dropout: float = 0.0
    """Dropout between the GeGLU product and Wo."""
    initializer_range: float = 0.02
    """Std of the embeddings and input projections; output projections get it / sqrt(2L)."""
    pad_token_id: int = 0
    """Id of [PAD]; its embedding row starts at zero and gets no gradient."""

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "global_attn_every_n_layers",
            "local_attention",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        if self.head_size % 2:
            raise ValueError(f"head size {self.head_size} is odd; rotary embeddings rotate pairs of dimensions")
        if self.local_attention % 2:
            raise ValueError(f"local_attention {self.local_attention} must be even: the window is w/2 on either side")
        for name in ("global_rope_theta", "local_rope_theta", "norm_eps", "initializer_range"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("embedding_dropout", "attention_dropout", "mlp_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is outside the vocabulary of {self.vocab_size}")

    @property
    def head_size(self) -> int:
        """Width hs of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @property
    def with_nsp_head(self) -> bool:
        """No sentence (NSP/SOP) head: the model trains on shards built with instances=none only."""
        return False

    @property
    def window_half(self) -> int:
        """Keys a local layer's token sees on either side of itself."""
        return self.local_attention // 2

    def is_local_layer(self, index: int) -> bool:
        """Whether layer ``index`` attends through the sliding window (transformers' layer_types rule)."""
        return index % self.global_attn_every_n_layers != 0

    @property
    def num_global_layers(self) -> int:
        return sum(not self.is_local_layer(i) for i in range(self.num_hidden_layers))

    def to_hf_config_dict(
        self, cls_token_id: int | None = None, sep_token_id: int | None = None, mask_token_id: int | None = None
    ) -> dict:
        """The same architecture as a transformers ``ModernBertConfig`` dict (what config.json holds).

        The special ids come from the tokenizer (``save_hf`` reads them from the vocabulary);
        [CLS] doubles as bos and [SEP] as eos, as in ModernBERT's own config. None leaves one unset
        rather than at transformers' defaults, which lie outside a WordPiece vocabulary.
        The legacy keys (global_attn_every_n_layers, global/local_rope_theta) are read by
        transformers 4.48+ and converted by 5 into layer_types and rope_parameters.
        """
        for name, value in (("cls", cls_token_id), ("sep", sep_token_id), ("mask", mask_token_id)):
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"{name}_token_id {value} is outside the vocabulary of {self.vocab_size}")
        return {
            "model_type": "modernbert",
            "architectures": ["ModernBertForMaskedLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "global_attn_every_n_layers": self.global_attn_every_n_layers,
            "local_attention": self.local_attention,
            "global_rope_theta": self.global_rope_theta,
            "local_rope_theta": self.local_rope_theta,
            "norm_eps": self.norm_eps,
            "embedding_dropout": self.embedding_dropout,
            "attention_dropout": self.attention_dropout,
            "mlp_dropout": self.mlp_dropout,
            "initializer_range": self.initializer_range,
            "initializer_cutoff_factor": INIT_CUTOFF,
            "hidden_activation": "gelu",  # exact (erf) GELU in transformers, as here
            "classifier_activation": "gelu",
            "norm_bias": False,
            "attention_bias": False,
            "mlp_bias": False,
            "classifier_bias": False,
            "decoder_bias": True,
            "tie_word_embeddings": True,
            "pad_token_id": self.pad_token_id,
            "cls_token_id": cls_token_id,
            "bos_token_id": cls_token_id,
            "sep_token_id": sep_token_id,
            "eos_token_id": sep_token_id,
            "mask_token_id": mask_token_id,
        }

    @classmethod
    def from_hf_config_dict(cls, hf: dict) -> ModernConfig:
        """Our config from a ModernBERT config.json (ours or a published one), for reading an
        export back. Raises ValueError for an architecture this module does not build."""
        if hf.get("model_type") != "modernbert":
            raise ValueError(f"model_type {hf.get('model_type')!r} is not modernbert")
        differing = {key: hf[key] for key, value in _BUILT_WITH.items() if key in hf and hf[key] != value}
        if differing:
            raise ValueError(f"config.json sets {differing}; this model is built with {_BUILT_WITH}")
        values = {f.name: hf[f.name] for f in fields(cls) if f.name in hf}
        return cls(**(values | _layout_and_rope_of_transformers_5(hf)))


_BUILT_WITH = {
    "norm_bias": False,
    "attention_bias": False,
    "mlp_bias": False,
    "classifier_bias": False,
    "decoder_bias": True,
    "hidden_activation": "gelu",
    "classifier_activation": "gelu",
}
"""ModernBertConfig settings this module does not make configurable (ModernBERT's own)."""


def _layout_and_rope_of_transformers_5(hf: dict) -> dict:
    """global_attn_every_n_layers and the rotary bases from the layer_types and rope_parameters
    that transformers 5 writes (they win over the legacy keys when both are present)."""
    out = {}
    rope = hf.get("rope_parameters") or {}
    for kind, name in (("full_attention", "global_rope_theta"), ("sliding_attention", "local_rope_theta")):
        if "rope_theta" in (rope.get(kind) or {}):
            out[name] = rope[kind]["rope_theta"]
    layer_types = hf.get("layer_types")
    if layer_types:
        global_at = [i for i, kind in enumerate(layer_types) if kind == "full_attention"]
        every = global_at[1] if len(global_at) > 1 else len(layer_types)
        if [i for i in range(len(layer_types)) if i % every == 0] != global_at:
            raise ValueError(f"layer_types {layer_types} are not global every n-th layer from the first")
        out["global_attn_every_n_layers"] = every
    return out


def flops_per_token(cfg: ModernConfig, seq_len: int, sparse_fraction: float | None = None) -> float:
    """Training FLOPs (forward + backward) per token, counted as ``training.model.flops_per_token``
    counts BERT's:

        6·(4h² + 3h·I)·L  +  12·h·(s·Lg + min(w, s)·Ll)  +  f·(6h² + 6hV)
        dense               attention                      MLM head on a fraction f of tokens

    A weight costs 6 FLOPs per token it touches. A layer's weights: Wqkv and Wo (4h²), Wi (h·2I)
    and Wo (I·h). Attention scores and mixing cost 12·h per key a query sees: s keys in the Lg
    global layers, min(w, s) in the Ll local ones (w = local_attention; a token sees w/2 on either
    side, w+1 keys in all, fewer near the ends: w is the round figure). Embeddings, norms,
    rotary and softmax are left out. sparse_fraction: None runs the head on every token,
    otherwise the fraction of tokens it runs on (masked positions only).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    fraction = 1.0 if sparse_fraction is None else float(sparse_fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"sparse_fraction must be in [0, 1], got {sparse_fraction}")
    h, L, inner, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size
    global_layers = cfg.num_global_layers
    dense_layers = 6.0 * (4 * h * h + 3 * h * inner) * L
    keys_seen = seq_len * global_layers + min(cfg.local_attention, seq_len) * (L - global_layers)
    attention = 12.0 * h * keys_seen
    mlm_head = 6.0 * h * h + 6.0 * h * V
    return dense_layers + attention + fraction * mlm_head


# ----------------------------------------------------------------------------- attention routes


class AttentionContext(NamedTuple):
    """What every layer of one kind (global or local) shares in one forward pass."""

    cos: torch.Tensor
    """(T, 1, hs) padded or (N, 1, hs) unpadded, fp32: rotary cosines at each token's position."""
    sin: torch.Tensor
    """Same shape: the sines."""
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    """q, k, v (rotated, x's shape (B, T, H) or (N, H)) -> attention output of the same shape."""


def rotary_cos_sin(positions: torch.Tensor, head_size: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (M,) -> cos, sin (M, 1, hs) in fp32, the angles of transformers' default rope:
    dimension pair (j, j + hs/2) turns by position / theta^(2j/hs). Computed per forward (no
    buffer: nothing to checkpoint, nothing ``to_empty`` loses)."""
    exponents = torch.arange(0, head_size, 2, dtype=torch.float32, device=positions.device) / head_size
    inv_freq = 1.0 / (theta**exponents)  # (hs/2,)
    angles = positions.float()[:, None] * inv_freq  # (M, hs/2)
    angles = torch.cat((angles, angles), dim=-1)[:, None, :]  # (M, 1, hs)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_heads: int) -> torch.Tensor:
    """x (B, T, H) or (N, H), token-major; cos/sin from ``rotary_cos_sin`` at the same tokens.
    Rotates each head's halves in fp32 (as transformers) and returns x's shape and dtype."""
    heads = x.view(*x.shape[:-1], num_heads, -1).float()  # (B, T, nh, hs) or (N, nh, hs)
    first, second = heads.chunk(2, dim=-1)
    rotated = torch.cat((-second, first), dim=-1)
    return (heads * cos + rotated * sin).to(x.dtype).view(x.shape)


def window_keep(seq_len: int, window_half: int, device: torch.device) -> torch.Tensor:
    """(T, T) bool, True where key j is within window_half of query i (|i - j| <= w/2, as
    transformers' bidirectional sliding-window mask). Depends on T only: a static shape."""
    idx = torch.arange(seq_len, device=device)
    return (idx[:, None] - idx[None, :]).abs() <= window_half


def attention_bias(
    attention_mask: torch.Tensor | None, seq_len: int, window_half: int | None, dtype: torch.dtype, device
) -> torch.Tensor | None:
    """The additive mask of the padded route: (B, 1, 1, T) padding only (global), (B, 1, T, T)
    padding and window, (T, T) window without padding; None when nothing is masked. 0 where a key
    may be attended, the dtype's most negative finite value elsewhere (a fully masked row gets a
    uniform softmax, not NaN)."""
    if window_half is None:
        return None if attention_mask is None else additive_attention_mask(attention_mask, dtype)
    keep = window_keep(seq_len, window_half, device)  # (T, T)
    if attention_mask is not None:
        keep = keep & attention_mask.bool()[:, None, None, :]  # (B, 1, T, T)
    return torch.zeros(keep.shape, dtype=dtype, device=device).masked_fill(~keep, torch.finfo(dtype).min)


def _repadded_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    layout: Unpadded,
    bias: torch.Tensor | None,
    dropout_p: float,
) -> torch.Tensor:
    """q, k, v (N, H) -> (N, H): padded to (B, T, H) for SDPA with ``bias``, unpadded again."""
    q, k, v = layout.pad(q), layout.pad(k), layout.pad(v)  # (B, T, H)
    return layout.unpad(_padded_attention(q, k, v, num_heads, bias, dropout_p))


def _jagged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, layout: Unpadded, dropout_p: float
) -> torch.Tensor:
    """``training.model.jagged_attention`` on contiguous inputs (v is a column slice of Wqkv's output)."""
    return jagged_attention(q, k, v.contiguous(), num_heads, layout, dropout_p)


def _flash_varlen_windowed(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, layout: Unpadded, window_half: int | None
) -> torch.Tensor:
    """q, k, v (N, H) -> (N, H) through ``varlen_attn`` (CUDA, fp16/bf16), with key j visible from
    query i when i - w/2 <= j <= i + w/2 (``window_size``), or every key for window_half None.
    The longest sequence is given as T, an upper bound known without reading lengths back."""
    from torch.nn.attention.varlen import varlen_attn  # recent torch; only reached on CUDA

    N, H = q.shape
    q, k, v = (t.contiguous().view(N, num_heads, -1) for t in (q, k, v))  # (N, nh, hs)
    window = (-1, -1) if window_half is None else (window_half, window_half)
    cu = layout.cu_seqlens
    return varlen_attn(q, k, v, cu, cu, layout.T, layout.T, window_size=window).reshape(N, H)


# ----------------------------------------------------------------------------- modules


def _layer_norm(cfg: ModernConfig) -> nn.LayerNorm:
    return nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps, bias=False)


class ModernBertEmbeddings(nn.Module):
    """Token embeddings, LayerNorm, dropout (positions enter through rotary attention)."""

    def __init__(self, cfg: ModernConfig):
        super().__init__()
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.norm = _layer_norm(cfg)
        self.drop = nn.Dropout(cfg.embedding_dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.tok_embeddings(input_ids)))  # (B, T, H) or (N, H)


class ModernBertAttention(nn.Module):
    """Fused q/k/v projection, rotary positions, attention by the context's route, output projection."""

    def __init__(self, cfg: ModernConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.Wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=False)
        self.Wo = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.out_drop = nn.Dropout(cfg.attention_dropout)

    def forward(self, x: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        """x (B, T, H) or (N, H) -> x's shape."""
        q, k, v = self.Wqkv(x).chunk(3, dim=-1)  # x's shape each; transformers' (3, nh, hs) split
        q = apply_rotary(q, context.cos, context.sin, self.num_heads)
        k = apply_rotary(k, context.cos, context.sin, self.num_heads)
        return self.out_drop(self.Wo(context.attend(q, k, v)))


class ModernBertMLP(nn.Module):
    """GeGLU: Wi to 2I, GELU(first half) * second half, dropout, Wo back to H."""

    def __init__(self, cfg: ModernConfig):
        super().__init__()
        self.Wi = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.drop = nn.Dropout(cfg.mlp_dropout)
        self.Wo = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.Wi(x).chunk(2, dim=-1)  # (..., I) each
        return self.Wo(self.drop(F.gelu(value) * gate))  # (..., H)


class ModernBertEncoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)). The first layer has no
    attention norm (its input is the normed embedding), hence no ``layers.0.attn_norm`` weight."""

    def __init__(self, cfg: ModernConfig, index: int):
        super().__init__()
        self.is_local = cfg.is_local_layer(index)
        self.attn_norm = nn.Identity() if index == 0 else _layer_norm(cfg)
        self.attn = ModernBertAttention(cfg)
        self.mlp_norm = _layer_norm(cfg)
        self.mlp = ModernBertMLP(cfg)

    def forward(self, x: torch.Tensor, context: AttentionContext) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), context)  # (B, T, H) or (N, H)
        return x + self.mlp(self.mlp_norm(x))


class ModernBertModel(nn.Module):
    """The encoder: token ids to contextual hidden states, after a final norm.

    ``unpad``: embeddings, projections, feed-forward blocks and norms run on the N real tokens
    only (``Unpadded``), attention by the routes in the module docstring; the same weights and,
    without dropout, the same hidden states at real tokens as the padded path."""

    def __init__(self, cfg: ModernConfig, unpad: bool = False):
        super().__init__()
        self.config = cfg
        self.unpad = unpad
        self.embeddings = ModernBertEmbeddings(cfg)
        self.layers = nn.ModuleList(ModernBertEncoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.final_norm = _layer_norm(cfg)
        self.has_local = any(layer.is_local for layer in self.layers)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        unpad_index: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids, attention_mask (B, T) -> (B, T, H); zeros at the padding on the unpadded path.

        attention_mask: 1 for real tokens, 0 for padding; None for a batch without padding.
        unpad_index (N,) long, cu_seqlens (B+1,) int32: the collator's layout of the real tokens,
            used by a model built with ``unpad`` (computed from the mask when not given)."""
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {T} exceeds max_position_embeddings {self.config.max_position_embeddings}"
            )
        layout = _unpadded_layout(self.unpad, attention_mask, unpad_index, cu_seqlens, B, T)
        if layout is None:
            x = self.embeddings(input_ids)  # (B, T, H)
            positions = torch.arange(T, device=input_ids.device)  # (T,)
        else:
            x = self.embeddings(layout.unpad(input_ids))  # (N, H)
            positions = layout.positions()  # (N,)
            if attention_mask is None:
                attention_mask = layout.real_mask()  # (B, T), for the re-padded route
        global_context = self._context(x, positions, attention_mask, layout, local=False)
        local_context = self._context(x, positions, attention_mask, layout, local=True) if self.has_local else None
        for layer in self.layers:
            x = layer(x, local_context if layer.is_local else global_context)
        x = self.final_norm(x)
        return x if layout is None else layout.pad(x)  # (B, T, H)

    def _context(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None,
        layout: Unpadded | None,
        local: bool,
    ) -> AttentionContext:
        """Rotary angles and the attention route of global (local=False) or local layers, for
        hidden states x (B, T, H) or (N, H) at ``positions``."""
        cfg = self.config
        T = positions.shape[0] if layout is None else layout.T
        theta = cfg.local_rope_theta if local else cfg.global_rope_theta
        cos, sin = rotary_cos_sin(positions, cfg.head_size, theta)
        # A window that spans the whole sequence masks nothing: the global route then serves.
        window_half = cfg.window_half if local and T - 1 > cfg.window_half else None
        return AttentionContext(cos, sin, self._route(x, attention_mask, layout, window_half))

    def _route(
        self, x: torch.Tensor, attention_mask: torch.Tensor | None, layout: Unpadded | None, window_half: int | None
    ) -> Callable:
        """attend(q, k, v) for this forward: see the module docstring for which and why."""
        cfg = self.config
        num_heads = cfg.num_attention_heads
        dropout_p = cfg.attention_dropout if self.training else 0.0
        half_precision = attention_dtype(x) in (torch.float16, torch.bfloat16)
        if layout is not None and x.is_cuda and half_precision and dropout_p == 0.0:
            return partial(_flash_varlen_windowed, num_heads=num_heads, layout=layout, window_half=window_half)
        if layout is not None and x.is_cuda and window_half is None:
            return partial(_jagged_attention, num_heads=num_heads, layout=layout, dropout_p=dropout_p)
        T = x.shape[1] if layout is None else layout.T
        bias = attention_bias(attention_mask, T, window_half, attention_dtype(x), x.device)
        if layout is None:
            return partial(_padded_attention, num_heads=num_heads, bias=bias, dropout_p=dropout_p)
        return partial(_repadded_attention, num_heads=num_heads, layout=layout, bias=bias, dropout_p=dropout_p)


def _unpadded_layout(
    unpad: bool,
    attention_mask: torch.Tensor | None,
    unpad_index: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    B: int,
    T: int,
) -> Unpadded | None:
    """The layout the unpadded path runs on; None for the padded path (no ``unpad``, or a batch
    without padding and without the collator's indices). As ``BertModel._unpadded_layout``."""
    if (unpad_index is None) != (cu_seqlens is None):
        raise ValueError("give unpad_index and cu_seqlens together (both come from the collator), or neither")
    if not unpad:
        return None
    if unpad_index is not None:
        return Unpadded(unpad_index, cu_seqlens, B, T)
    return None if attention_mask is None else Unpadded.from_mask(attention_mask)


class ModernBertPredictionHead(nn.Module):
    """dense -> GELU -> LayerNorm, before the vocabulary projection."""

    def __init__(self, cfg: ModernConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.norm = _layer_norm(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(F.gelu(self.dense(x)))  # (..., H)


class ModernBertForMaskedLM(nn.Module):
    """The encoder with its MLM head; the decoder's weight is the token-embedding matrix (tied),
    its bias its own. ``unpad``: run the encoder on the real tokens only (``ModernBertModel``)."""

    def __init__(self, cfg: ModernConfig, unpad: bool = False):
        super().__init__()
        self.config = cfg
        self.model = ModernBertModel(cfg, unpad=unpad)
        self.head = ModernBertPredictionHead(cfg)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        self._init_weights()
        self.tie_weights()
        self.register_load_state_dict_pre_hook(_fill_tied_decoder)

    @torch.no_grad()
    def _init_weights(self) -> None:
        """As transformers' ModernBERT: truncated normal (cut at INIT_CUTOFF std), std r for the
        embeddings and input projections, r / sqrt(2L) for output projections and the head's
        dense; norms at 1, the decoder bias at 0. The [PAD] row starts at zero."""
        r = self.config.initializer_range
        out = r / math.sqrt(2.0 * self.config.num_hidden_layers)

        def truncated_normal(weight: torch.Tensor, std: float) -> None:
            nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-INIT_CUTOFF * std, b=INIT_CUTOFF * std)

        embeddings = self.model.embeddings.tok_embeddings
        truncated_normal(embeddings.weight, r)
        embeddings.weight[embeddings.padding_idx].zero_()
        for layer in self.model.layers:
            truncated_normal(layer.attn.Wqkv.weight, r)
            truncated_normal(layer.attn.Wo.weight, out)
            truncated_normal(layer.mlp.Wi.weight, r)
            truncated_normal(layer.mlp.Wo.weight, out)
        truncated_normal(self.head.dense.weight, out)
        nn.init.zeros_(self.decoder.bias)

    def tie_weights(self) -> None:
        """Make the decoder use the token-embedding matrix. Call again after ``to_empty()``."""
        self.decoder.weight = self.model.embeddings.tok_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        masked_lm_positions: torch.Tensor | None = None,
        masked_lm_labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        dense_mlm_labels: torch.Tensor | None = None,
        unpad_index: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> PreTrainingOutput:
        """``BertForPreTraining.forward``'s arguments and output, without the sentence head.

        token_type_ids: accepted and ignored (ModernBERT has no segment embeddings).
        masked_lm_positions, masked_lm_labels (B, P): the sparse head over fixed slots, padding
            slots at position 0 with label -100; dense_mlm_labels (B, T): the head on every token.
        next_sentence_label: refused (ValueError); nsp_* fields of the output are None.
        """
        if next_sentence_label is not None:
            raise ValueError("next_sentence_label given but this model has no sentence head")
        if masked_lm_positions is not None and dense_mlm_labels is not None:
            raise ValueError("give masked_lm_positions (sparse head) or dense_mlm_labels, not both")
        if masked_lm_labels is not None and masked_lm_positions is None:
            raise ValueError("masked_lm_labels needs masked_lm_positions")

        hidden = self.model(input_ids, attention_mask, unpad_index, cu_seqlens)  # (B, T, H)
        if masked_lm_positions is not None:
            rows, labels = _gather_predicted(hidden, masked_lm_positions, masked_lm_labels)  # (B*P, H), (B*P,)
            logits = self.decoder(self.head(rows))  # (B*P, V)
        else:
            logits = self.decoder(self.head(hidden))  # (B, T, V)
            labels = dense_mlm_labels  # (B, T) or None

        loss = correct = count = None
        if labels is not None:
            loss, correct, count = _cross_entropy_and_hits(logits, labels)
        return PreTrainingOutput(
            loss=loss,
            mlm_loss=loss,
            nsp_loss=None,
            mlm_logits=logits,
            nsp_logits=None,
            mlm_correct=correct,
            mlm_count=count,
            nsp_correct=None,
            nsp_count=None,
        )


# ----------------------------------------------------------------------------- transformers layout

TIED_KEYS = {"decoder.weight": "model.embeddings.tok_embeddings.weight"}
"""Copy -> source, as transformers' ``ModernBertForMaskedLM._tied_weights_keys``: files store the
source only (safetensors refuses tensors that share memory); the loaders tie the copy back."""


def _fill_tied_decoder(
    module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
) -> None:
    """load_state_dict pre-hook: a file written by save_pretrained or ``save_hf`` stores the tied
    decoder weight once, as the token embeddings; fill it in so ``strict=True`` loads it. The
    rotary buffers of transformers' model are not persistent, so no state_dict carries them."""
    for copy, source in TIED_KEYS.items():
        if prefix + copy not in state_dict and prefix + source in state_dict:
            state_dict[prefix + copy] = state_dict[prefix + source]


def to_hf_state_dict(model: ModernBertForMaskedLM) -> dict[str, torch.Tensor]:
    """The tensors a transformers checkpoint of ``model`` holds: every state_dict key but the tied
    copy, each a contiguous fp32 CPU clone (nothing shared with training, nothing half precision).
    ``ModernBertForMaskedLM.load_state_dict(..., strict=True)`` reads it back (the hook ties the
    decoder); transformers' from_pretrained does the same for the saved file."""
    return {
        name: tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
        for name, tensor in model.state_dict().items()
        if name not in TIED_KEYS
    }


@dataclass(frozen=True)
class WordPieceCasing:
    """How the text was normalised before WordPiece, for a vocabulary without its shard manifest:
    the three settings of a manifest that ``training.export.tokenizer_files`` reads."""

    lowercase: bool = True
    """Lowercased (an uncased vocabulary)."""
    strips_accents: bool = True
    """Accents stripped (BERT uncased does both)."""
    keep_letters: bool = False
    """Letters written with marks (й, ё) kept while stripping accents."""


MODEL_INPUT_NAMES = ["input_ids", "attention_mask"]
"""What the exported tokenizer returns: ModernBERT takes no token_type_ids."""


def save_hf(
    model: ModernBertForMaskedLM,
    directory: str,
    vocab_file: str,
    casing: ShardManifest | WordPieceCasing | None = None,
) -> str:
    """Write a transformers directory: ``AutoModelForMaskedLM.from_pretrained(directory)`` gives a
    ``ModernBertForMaskedLM`` with these weights, ``AutoTokenizer`` this project's WordPiece
    tokenizer, and ``pipeline("fill-mask", model=directory)`` works.

        directory/
          config.json               ModernConfig.to_hf_config_dict(), special ids from the vocabulary
          model.safetensors         to_hf_state_dict(model)
          vocab.txt                 a copy of vocab_file
          tokenizer_config.json     training.export.tokenizer_files, returning no token types
          special_tokens_map.json
          tokenizer.json            the WordPiece tokenizer the shards were made with (always: see below)

    casing: the shards' manifest (its vocabulary hash is then checked against vocab_file too), or
    a WordPieceCasing; None: uncased, BERT's default. Raises ExportError when the vocabulary does
    not fit the model (size, [PAD] id) and ContractError when it lacks BERT's special tokens.
    Imports the export machinery here, so importing this module loads torch alone. Returns directory.
    """
    import shutil

    from pipeline import contract
    from pipeline.tokenization import build_tokenizer, vocab_sha256
    from training.export import (
        CONFIG_FILE,
        SPECIAL_TOKENS_MAP_FILE,
        TOKENIZER_CONFIG_FILE,
        TOKENIZER_FILE,
        WEIGHTS_FILE,
        ExportError,
        save_weights,
        tokenizer_files,
        write_json,
    )

    cfg = model.config
    casing = WordPieceCasing() if casing is None else casing
    vocab = contract.read_vocab(vocab_file)
    if isinstance(casing, contract.ShardManifest) and vocab_sha256(vocab) != casing.vocab_sha256:
        raise ExportError(
            f"{vocab_file} is not the vocabulary the manifest names (sha256 {casing.vocab_sha256[:12]}...)"
        )
    if len(vocab) != cfg.vocab_size:
        raise ExportError(f"model vocab_size {cfg.vocab_size} != {len(vocab)} tokens in {vocab_file}")
    special = contract.SpecialTokens.from_vocab(vocab)
    if special.pad != cfg.pad_token_id:
        raise ExportError(f"model pad_token_id {cfg.pad_token_id} != [PAD] id {special.pad} in {vocab_file}")

    os.makedirs(directory, exist_ok=True)
    save_weights(to_hf_state_dict(model), os.path.join(directory, WEIGHTS_FILE))
    hf_config = cfg.to_hf_config_dict(cls_token_id=special.cls, sep_token_id=special.sep, mask_token_id=special.mask)
    write_json(os.path.join(directory, CONFIG_FILE), {**hf_config, "dtype": "float32"})
    shutil.copyfile(vocab_file, os.path.join(directory, contract.VOCAB_FILE))
    tokenizer_config, special_tokens_map = tokenizer_files(casing, cfg.max_position_embeddings)
    tokenizer_config["model_input_names"] = MODEL_INPUT_NAMES
    write_json(os.path.join(directory, TOKENIZER_CONFIG_FILE), tokenizer_config)
    write_json(os.path.join(directory, SPECIAL_TOKENS_MAP_FILE), special_tokens_map)
    # Always written: transformers 5 maps model_type modernbert to the tokenizers backend, which
    # reads tokenizer.json and ignores tokenizer_class; this one is the job's own tokenizer.
    tokenizer = build_tokenizer(vocab, casing.lowercase, casing.strips_accents, casing.keep_letters)
    tokenizer.save(os.path.join(directory, TOKENIZER_FILE))
    return directory
