"""BERT for pre-training (masked LM + optional next-sentence head), in plain torch.

One config dataclass in, one module out. Parameter names are those of Hugging Face
transformers' `BertForPreTraining` (or `BertForMaskedLM` when there is no NSP head), so a
state_dict moves between the two with `strict=True` in both directions and a checkpoint can be
exported for the transformers ecosystem with `BertConfig.to_hf_config_dict()`. That is also why
a few attributes are spelled `LayerNorm`, and why one attention submodule is called `self`.

Shape legend in comments: B batch, T sequence length, H hidden size, nh heads, hs head size,
I intermediate size, V vocabulary size, P masked-position slots per sequence, N real (non-padding)
tokens of an unpadded batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from training.labels import IGNORE_INDEX
from training.models import ARCHITECTURE


@dataclass
class BertConfig:
    """Architecture of a BERT encoder and its pre-training heads. Fields marked ``ARCHITECTURE`` are
    what a run record keeps (``training.models.Architecture.record``)."""

    vocab_size: int = field(metadata=ARCHITECTURE)
    """Number of WordPiece ids; the tokenizer's vocabulary size."""
    hidden_size: int = field(metadata=ARCHITECTURE)
    """Width H of every hidden state."""
    num_hidden_layers: int = field(metadata=ARCHITECTURE)
    """Number L of transformer layers."""
    num_attention_heads: int = field(metadata=ARCHITECTURE)
    """Attention heads per layer; must divide hidden_size."""
    intermediate_size: int = field(metadata=ARCHITECTURE)
    """Width of the feed-forward block (4H in every published BERT)."""
    max_position_embeddings: int = field(default=512, metadata=ARCHITECTURE)
    """Longest sequence the learned position table covers."""
    type_vocab_size: int = field(default=2, metadata=ARCHITECTURE)
    """Number of segment ids (0 = sentence A, 1 = sentence B)."""
    hidden_dropout_prob: float = 0.1
    """Dropout on embeddings and on each residual branch."""
    attention_probs_dropout_prob: float = 0.1
    """Dropout on attention probabilities (inside scaled_dot_product_attention)."""
    layer_norm_eps: float = 1e-12
    """LayerNorm epsilon, BERT's 1e-12."""
    initializer_range: float = 0.02
    """Std of the normal init of every weight matrix and embedding."""
    pad_token_id: int = 0
    """Id of [PAD]; its input embedding starts at zero and gets no gradient from the input side."""
    with_nsp_head: bool = field(default=True, metadata=ARCHITECTURE)
    """Build the pooler and the 2-way sentence head (NSP or SOP); False for objective "none"."""

    def __post_init__(self) -> None:
        for name in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_attention_heads {self.num_attention_heads}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not self.layer_norm_eps > 0 or not self.initializer_range > 0:
            raise ValueError("layer_norm_eps and initializer_range must be positive")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is outside the vocabulary of {self.vocab_size}")

    @property
    def head_size(self) -> int:
        """Width hs of one attention head."""
        return self.hidden_size // self.num_attention_heads

    def to_hf_config_dict(self) -> dict:
        """The same architecture as a transformers `BertConfig` dict (what `config.json` holds).

        `transformers.BertConfig(**d)` then builds a model whose state_dict has exactly our keys:
        `BertForPreTraining` with the NSP head, `BertForMaskedLM` without it.
        """
        return {
            "model_type": "bert",
            "architectures": ["BertForPreTraining" if self.with_nsp_head else "BertForMaskedLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "gelu",  # exact (erf) GELU in transformers, as here
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "initializer_range": self.initializer_range,
            "layer_norm_eps": self.layer_norm_eps,
            "pad_token_id": self.pad_token_id,
            "tie_word_embeddings": True,
        }


def flops_per_token(cfg: BertConfig, seq_len: int, sparse_fraction: float | None = None) -> float:
    """Training FLOPs (forward + backward) per token: the model FLOPs that MFU counts.

        72·h²·L  +  12·s·h·L  +  f·(6h² + 6hV)
        dense       attention    MLM head (transform + vocabulary projection) on a fraction f of tokens

    A weight costs 6 FLOPs per token it touches (2 forward, 4 backward). A layer has 4h² weights
    in its attention projections and 2·h·I in its feed-forward block, which is written here in that
    form and equals 72·h²·L whenever I = 4h (every preset); attention scores and mixing add
    12·s·h·L (s = sequence length). Embeddings, pooler, NSP head, norms and softmax are left out.

    sparse_fraction: None runs the head on every token (f = 1); otherwise the fraction of tokens it
    runs on (masked positions only), e.g. 0.15. BERT-Base at s=128 gives 667.9 MFLOP/token dense
    and 545.4 with 15%.
    """
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}")
    fraction = 1.0 if sparse_fraction is None else float(sparse_fraction)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"sparse_fraction must be in [0, 1], got {sparse_fraction}")
    # ffn: I in the formula above
    h, L, ffn, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size
    dense_layers = 6.0 * (4 * h * h + 2 * h * ffn) * L
    attention = 12.0 * seq_len * h * L
    mlm_head = 6.0 * h * h + 6.0 * h * V
    return dense_layers + attention + fraction * mlm_head


@dataclass
class PreTrainingOutput:
    """What one forward pass returns. Losses and counts are None when their labels were not given.

    Counts are 0-d long tensors (left on the device, no sync) so a trainer can sum them across
    steps and ranks and take accuracy = correct / count.
    """

    loss: torch.Tensor | None
    """mlm_loss + nsp_loss (whichever were computed), a scalar."""
    mlm_loss: torch.Tensor | None
    """Cross-entropy averaged over predicted tokens."""
    nsp_loss: torch.Tensor | None
    """Cross-entropy of the sentence head averaged over the batch."""
    mlm_logits: torch.Tensor
    """(B, T, V) on the dense path; (B*P, V) on the sparse path, one row per masked-position slot
    in row-major (b, p) order, padding slots (label -100) included."""
    nsp_logits: torch.Tensor | None
    """(B, 2), None without an NSP head."""
    mlm_correct: torch.Tensor | None
    """Predicted tokens whose argmax is the label."""
    mlm_count: torch.Tensor | None
    """Predicted tokens (labels other than -100)."""
    nsp_correct: torch.Tensor | None
    """Sequences whose sentence-head argmax is the label."""
    nsp_count: torch.Tensor | None
    """Sequences with a sentence label."""


class BertEmbeddings(nn.Module):
    """Word + segment + learned position embeddings, then LayerNorm and dropout."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, positions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """input_ids, token_type_ids (B, T) -> (B, T, H); or, unpadded, (N,) each with their
        ``positions`` (N,) -> (N, H)."""
        if positions is None:
            positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,); no buffer to checkpoint
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (B, T, H) or (N, H)
        x = x + self.position_embeddings(positions)  # (T, H) broadcast over B, or (N, H)
        return self.dropout(self.LayerNorm(x))


class Unpadded:
    """Where the real tokens of a padded (B, T) batch are, in the flattened B*T positions.

    ``index`` (N,) long: flat positions of the real tokens, row-major, so each row's tokens are
    contiguous and in order. ``cu_seqlens`` (B+1,) int32: cumulative real lengths, ``cu_seqlens[0]
    = 0``; row b's tokens are ``index[cu_seqlens[b]:cu_seqlens[b + 1]]``. The encoder's dense layers
    run on (N, H); attention runs on whole sequences (``BertSelfAttention``)."""

    def __init__(self, index: torch.Tensor, cu_seqlens: torch.Tensor, batch_size: int, seq_len: int):
        B, T = batch_size, seq_len
        if index.dim() != 1:
            raise ValueError(f"unpad_index must be (N,), got {tuple(index.shape)}")
        if tuple(cu_seqlens.shape) != (B + 1,):
            raise ValueError(f"cu_seqlens must be (B+1,) = ({B + 1},), got {tuple(cu_seqlens.shape)}")
        if cu_seqlens.dtype != torch.int32:
            raise ValueError(f"cu_seqlens must be int32 (what variable-length attention takes), got {cu_seqlens.dtype}")
        self.index, self.cu_seqlens, self.B, self.T = index, cu_seqlens, B, T

    @classmethod
    def from_mask(cls, attention_mask: torch.Tensor) -> Unpadded:
        """From the (B, T) mask, for callers without the collator's indices. nonzero() has a
        data-dependent size: one host sync per forward on GPU (torch.compile captures it as an
        unbacked size, which also rules out CUDA graphs)."""
        B, T = attention_mask.shape
        index = attention_mask.reshape(-1).nonzero().squeeze(1)  # (N,)
        lengths = attention_mask.sum(dim=1, dtype=torch.int32)  # (B,)
        cu_seqlens = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))  # (B+1,)
        return cls(index, cu_seqlens, B, T)

    def positions(self) -> torch.Tensor:
        """(N,) position of each real token in its row, for the position embeddings."""
        return self.index % self.T

    def real_mask(self) -> torch.Tensor:
        """(B, T) bool, True at real tokens: the mask the padded attention fallback needs."""
        real = torch.zeros(self.B * self.T, dtype=torch.bool, device=self.index.device)
        return real.index_fill(0, self.index, True).view(self.B, self.T)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (N, ...)."""
        return x.reshape(self.B * self.T, *x.shape[2:]).index_select(0, self.index)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) -> (B, T, ...), zeros at the padding."""
        out = x.new_zeros(self.B * self.T, *x.shape[1:]).index_copy(0, self.index, x)
        return out.view(self.B, self.T, *x.shape[1:])


def additive_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) with 1/True at real tokens -> (B, 1, 1, T) bias: 0 for keys that may be attended,
    the dtype's most negative finite value for padding.

    Additive rather than boolean: a row of only padding (evaluation pads a short batch with such
    rows) then gets a uniform softmax and a finite output instead of NaN. ``dtype`` must be the
    one SDPA sees q in (see ``attention_dtype``); SDPA rejects a float mask of another dtype."""
    keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    bias = torch.zeros(keep.shape, dtype=dtype, device=attention_mask.device)
    return bias.masked_fill(~keep, torch.finfo(dtype).min)


def attention_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype of q, k, v: autocast's when it is on for ``hidden``'s device type (the
    projections then run in it), else the hidden state's own."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return hidden.dtype


def _padded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, bias: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """q, k, v (B, T, H); bias (B, 1, 1, T) additive or None (then SDPA may take its flash kernel).
    Returns (B, T, H)."""
    B, T, H = q.shape
    q = q.view(B, T, num_heads, -1).transpose(1, 2)  # (B, nh, T, hs)
    k = k.view(B, T, num_heads, -1).transpose(1, 2)  # (B, nh, T, hs)
    v = v.view(B, T, num_heads, -1).transpose(1, 2)  # (B, nh, T, hs)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)  # (B, nh, T, hs)
    return y.transpose(1, 2).reshape(B, T, H)


def _flash_varlen_ready(q: torch.Tensor, dropout_p: float) -> bool:
    """Whether ``varlen_attn`` (FlashAttention's variable-length kernel) can run: CUDA, half
    precision, and no attention dropout (it has no dropout argument)."""
    return q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and dropout_p == 0.0


def _flash_varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, layout: Unpadded
) -> torch.Tensor:
    """q, k, v (N, H) -> (N, H) through ``torch.nn.attention.varlen.varlen_attn`` (CUDA only).
    The longest sequence is given as T, an upper bound known without reading lengths back."""
    from torch.nn.attention.varlen import varlen_attn  # recent torch; only reached on CUDA

    N, H = q.shape
    q, k, v = (t.view(N, num_heads, -1) for t in (q, k, v))  # (N, nh, hs)
    cu = layout.cu_seqlens
    return varlen_attn(q, k, v, cu, cu, layout.T, layout.T).reshape(N, H)


def jagged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, layout: Unpadded, dropout_p: float
) -> torch.Tensor:
    """q, k, v (N, H) -> (N, H): SDPA over nested jagged tensors built on ``cu_seqlens``. On CUDA
    SDPA dispatches them to the variable-length flash or memory-efficient kernel, with dropout.

    min_seqlen=1 and max_seqlen=T are given so that nothing reads the lengths back to the host
    (NJT would otherwise compute them with .item()). min_seqlen only steers SDPA's kernel choice
    (fused kernels are refused for a length-0 sequence); it holds for rows that are examples (at
    least [CLS] [SEP]). A fully padded row (a short batch padded to B) breaks it; FlashAttention's
    variable-length kernels skip empty sequences, which the CUDA test with such a row checks."""
    N, H = q.shape

    def heads_first(t: torch.Tensor) -> torch.Tensor:  # (N, H) -> (B, nh, j, hs), j jagged
        nt = torch.nested.nested_tensor_from_jagged(
            t.view(N, num_heads, -1), offsets=layout.cu_seqlens, min_seqlen=1, max_seqlen=layout.T
        )  # (B, j, nh, hs)
        return nt.transpose(1, 2)

    y = F.scaled_dot_product_attention(heads_first(q), heads_first(k), heads_first(v), dropout_p=dropout_p)
    return y.transpose(1, 2).values().reshape(N, H)  # (B, nh, j, hs) -> (N, H)


class BertSelfAttention(nn.Module):
    """Bidirectional multi-head attention.

    Padded input (B, T, H): torch's scaled_dot_product_attention, with the additive mask or, when
    the batch has no padding, none (flash-eligible).

    Unpadded input (N, H) with its ``Unpadded`` layout, one kernel chosen by device and dropout:

    - CUDA, fp16/bf16, attention dropout inactive (p = 0 or eval): ``varlen_attn``, FlashAttention
      on the packed tokens. It has no dropout argument, hence the condition; it has no CPU kernel
      (torch 2.13 CPU: NotImplementedError for aten::_flash_attention_forward).
    - CUDA with attention dropout active (training): SDPA on nested jagged tensors
      (``jagged_attention``), which reaches the variable-length flash/efficient kernels with dropout.
    - Otherwise (CPU; CUDA fp32 without dropout): pad q, k, v to (B, T, H), dense SDPA with the
      mask, unpad. Measured on torch 2.13 CPU (2 threads, 4 heads of 64, 60-70% real tokens):
      nested-jagged SDPA is correct (forward, backward, dropout) but runs the math backend
      sequence by sequence, 4.4x slower than padded SDPA at B=32/T=128 in eval (43.8 vs 9.9 ms),
      2.5x in training (81 vs 33 ms), 1.2-4.7x at B=8/T=512; it reads lengths to the host and
      cannot be compiled with fullgraph (aten._nested_tensor_from_tensor_list has no fake kernel).
      The padded fallback compiles.
    The CUDA branches are unmeasured here (no GPU): ``tests/unit/test_unpadded_attention.py``
    checks them against the padded path when CUDA is present."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.dropout_p = cfg.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, layout: Unpadded | None = None) -> torch.Tensor:
        """x (B, T, H), or (N, H) with its ``layout``; bias (B, 1, 1, T) additive mask, or None for
        no padding (built once per forward by ``BertModel``). Returns x's shape."""
        q, k, v = self.query(x), self.key(x), self.value(x)  # x's shape
        dropout_p = self.dropout_p if self.training else 0.0
        if layout is None:
            return _padded_attention(q, k, v, self.num_heads, bias, dropout_p)  # (B, T, H)
        if _flash_varlen_ready(q, dropout_p):
            return _flash_varlen_attention(q, k, v, self.num_heads, layout)  # (N, H)
        if q.is_cuda and dropout_p > 0.0:
            return jagged_attention(q, k, v, self.num_heads, layout, dropout_p)  # (N, H)
        q, k, v = layout.pad(q), layout.pad(k), layout.pad(v)  # (B, T, H)
        return layout.unpad(_padded_attention(q, k, v, self.num_heads, bias, dropout_p))  # (N, H)


class BertResidualOutput(nn.Module):
    """Projection back to H, dropout, residual add, LayerNorm (post-norm, as in BERT)."""

    def __init__(self, in_features: int, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, branch: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(branch)) + residual)  # (B, T, H)


class BertAttention(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(cfg)  # the name transformers uses, hence `attention.self.query`
        self.output = BertResidualOutput(cfg.hidden_size, cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, layout: Unpadded | None = None) -> torch.Tensor:
        return self.output(self.self(x, bias, layout), x)  # x's shape


class BertIntermediate(nn.Module):
    """First feed-forward projection, H -> I, with exact (erf) GELU."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # (B, T, I)


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertResidualOutput(cfg.intermediate_size, cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, layout: Unpadded | None = None) -> torch.Tensor:
        x = self.attention(x, bias, layout)  # (B, T, H) or (N, H)
        return self.output(self.intermediate(x), x)  # x's shape


class BertEncoder(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None, layout: Unpadded | None = None) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, bias, layout)
        return x  # x's shape


class BertPooler(nn.Module):
    """tanh(dense(hidden state of [CLS])), the input of the sentence head."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H)


class BertModel(nn.Module):
    """The encoder: token ids to contextual hidden states. The pooler is built but not applied here.

    ``unpad``: with padding, embeddings, projections, feed-forward blocks and norms run on the N
    real tokens only (``Unpadded``), not on all B*T positions, and attention on variable-length
    sequences where the device allows (``BertSelfAttention``); the same weights and, without
    dropout, the same hidden states at real tokens. It pays when batches carry much padding
    (phase 2 at 512) and costs a gather/scatter per layer when they do not."""

    def __init__(self, cfg: BertConfig, unpad: bool = False):
        super().__init__()
        self.unpad = unpad
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = BertEncoder(cfg)
        # Without a sentence head the pooler would get no gradient (DDP rejects unused
        # parameters); transformers' BertForMaskedLM leaves it out for the same layout.
        self.pooler = BertPooler(cfg) if cfg.with_nsp_head else None

    def forward(
        self,
        input_ids: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        unpad_index: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """input_ids, token_type_ids, attention_mask (B, T) -> (B, T, H).

        attention_mask: 1 for real tokens, 0 for padding; None for a batch without padding, which
            then runs with no mask at all (SDPA's flash kernel stays eligible).
        unpad_index (N,) long, cu_seqlens (B+1,) int32: where the real tokens are (``Unpadded``),
            computed by the collator on the host so that the unpadded path needs no nonzero();
            used only by a model built with ``unpad``, computed from the mask when not given.
        The additive attention mask is built here, once per forward, in the dtype SDPA sees."""
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
            x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
            bias = None if attention_mask is None else additive_attention_mask(attention_mask, attention_dtype(x))
            return self.encoder(x, bias)  # (B, T, H)
        x = self.embeddings(layout.unpad(input_ids), layout.unpad(token_type_ids), layout.positions())  # (N, H)
        mask = layout.real_mask() if attention_mask is None else attention_mask  # (B, T)
        bias = additive_attention_mask(mask, attention_dtype(x))  # (B, 1, 1, T), for the padded fallback
        return layout.pad(self.encoder(x, bias, layout))  # (B, T, H), zeros at the padding

    def _unpadded_layout(
        self,
        attention_mask: torch.Tensor | None,
        unpad_index: torch.Tensor | None,
        cu_seqlens: torch.Tensor | None,
        B: int,
        T: int,
    ) -> Unpadded | None:
        """The layout the unpadded path runs on; None for the padded path (no ``unpad``, or a
        batch without padding)."""
        if (unpad_index is None) != (cu_seqlens is None):
            raise ValueError("give unpad_index and cu_seqlens together (both come from the collator), or neither")
        if not self.unpad:
            return None
        if unpad_index is not None:
            return Unpadded(unpad_index, cu_seqlens, B, T)
        return None if attention_mask is None else Unpadded.from_mask(attention_mask)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))  # (..., H)


class BertLMPredictionHead(nn.Module):
    """Transform, then scores over the vocabulary with the word-embedding matrix (tied) plus a bias."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(cfg)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        # One bias parameter under both names transformers' state_dict carries
        # (`cls.predictions.bias` and `cls.predictions.decoder.bias`, tied there too).
        self.bias = self.decoder.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))  # (..., V)


class BertPreTrainingHeads(nn.Module):
    def __init__(self, cfg: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(cfg)
        self.seq_relationship = nn.Linear(cfg.hidden_size, 2) if cfg.with_nsp_head else None


class BertForPreTraining(nn.Module):
    """BERT encoder with the masked-LM head and, if configured, the next-sentence (or SOP) head."""

    def __init__(self, cfg: BertConfig, unpad: bool = False):
        super().__init__()
        self.config = cfg
        self.bert = BertModel(cfg, unpad=unpad)
        self.cls = BertPreTrainingHeads(cfg)
        self.apply(self._init_weights)
        self.tie_weights()
        self.register_load_state_dict_pre_hook(_accept_transformers_layouts)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def tie_weights(self) -> None:
        """Make the MLM decoder use the word-embedding matrix. Call again after `to_empty()`,
        which gives each module its own fresh tensors."""
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        self.cls.predictions.bias = self.cls.predictions.decoder.bias

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
        """Run the encoder and heads; compute losses for whichever labels are given.

        input_ids, token_type_ids, attention_mask: (B, T) long; token types default to 0 and a
            missing mask means no padding.
        masked_lm_positions: (B, P) long, positions to predict (sparse head), P fixed per run
            (max_predictions_per_seq) so shapes do not change between batches. The head runs on all
            B*P slots, so the H x V projection skips the unmasked positions; padding slots (position
            0, label -100) are computed and then ignored by the loss: no data-dependent selection,
            no host sync.
        masked_lm_labels: (B, P) long, the original token ids at those positions, -100 for padding.
        next_sentence_label: (B,) long, 0 = B follows A, 1 = random (or swapped, for SOP).
        dense_mlm_labels: (B, T) long, -100 where there is nothing to predict; the head then runs
            on every position (transformers' layout). Not together with masked_lm_positions.
        unpad_index, cu_seqlens: where the real tokens are, for a model built with ``unpad``
            (see ``BertModel.forward``).
        """
        if masked_lm_positions is not None and dense_mlm_labels is not None:
            raise ValueError("give masked_lm_positions (sparse head) or dense_mlm_labels, not both")
        if masked_lm_labels is not None and masked_lm_positions is None:
            raise ValueError("masked_lm_labels needs masked_lm_positions")
        if next_sentence_label is not None and self.cls.seq_relationship is None:
            raise ValueError("next_sentence_label given but the model has no NSP head")

        hidden = self.bert(input_ids, token_type_ids, attention_mask, unpad_index, cu_seqlens)  # (B, T, H)

        if masked_lm_positions is not None:
            rows, mlm_labels = _gather_predicted(hidden, masked_lm_positions, masked_lm_labels)  # (B*P, H), (B*P,)
            mlm_logits = self.cls.predictions(rows)  # (B*P, V)
        else:
            mlm_logits = self.cls.predictions(hidden)  # (B, T, V)
            mlm_labels = dense_mlm_labels  # (B, T) or None

        nsp_logits = None
        if self.cls.seq_relationship is not None:
            nsp_logits = self.cls.seq_relationship(self.bert.pooler(hidden))  # (B, 2)

        mlm_loss = mlm_correct = mlm_count = None
        if mlm_labels is not None:
            mlm_loss, mlm_correct, mlm_count = _cross_entropy_and_hits(mlm_logits, mlm_labels)
        nsp_loss = nsp_correct = nsp_count = None
        if next_sentence_label is not None:
            nsp_loss, nsp_correct, nsp_count = _cross_entropy_and_hits(nsp_logits, next_sentence_label)

        losses = [part for part in (mlm_loss, nsp_loss) if part is not None]
        return PreTrainingOutput(
            loss=sum(losses[1:], losses[0]) if losses else None,
            mlm_loss=mlm_loss,
            nsp_loss=nsp_loss,
            mlm_logits=mlm_logits,
            nsp_logits=nsp_logits,
            mlm_correct=mlm_correct,
            mlm_count=mlm_count,
            nsp_correct=nsp_correct,
            nsp_count=nsp_count,
        )


def _gather_predicted(
    hidden: torch.Tensor, positions: torch.Tensor, labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Hidden states at every masked-position slot, padding slots included.

    hidden (B, T, H); positions and labels (B, P). Returns rows (B*P, H) and labels (B*P,), in
    row-major (b, p) order. A fixed number of rows, whatever the number of real slots: no
    data-dependent size (which would be a host sync on GPU and a recompile under torch.compile);
    the loss's ignore_index skips the padding slots' rows.
    """
    B, T, H = hidden.shape
    if positions.dim() != 2 or positions.shape[0] != B:
        raise ValueError(f"masked_lm_positions must be (B, P) with B={B}, got {tuple(positions.shape)}")
    if labels is not None and labels.shape != positions.shape:
        raise ValueError(
            f"masked_lm_labels {tuple(labels.shape)} must match masked_lm_positions {tuple(positions.shape)}"
        )
    offsets = T * torch.arange(B, device=positions.device)[:, None]  # (B, 1)
    flat = (positions + offsets).reshape(-1)  # (B*P,) row indices into (B*T, H)
    rows = hidden.reshape(B * T, H).index_select(0, flat)  # (B*P, H)
    return rows, None if labels is None else labels.reshape(-1)


def _cross_entropy_and_hits(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean cross-entropy over labels other than -100, plus (correct, count) as long tensors.

    logits (..., C), labels (...). The loss is taken in fp32. Divided by max(count, 1): a batch
    with nothing to predict gives loss 0 rather than NaN.
    """
    logits = logits.reshape(-1, logits.shape[-1])  # (M, C)
    labels = labels.reshape(-1)  # (M,)
    valid = labels != IGNORE_INDEX
    count = valid.sum()
    loss = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
    loss = loss / count.clamp(min=1)
    with torch.no_grad():
        correct = ((logits.argmax(dim=-1) == labels) & valid).sum()
    return loss, correct, count


_TRANSFORMERS_BUFFERS = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")
"""Buffers some transformers versions saved in state_dicts; this model has none to load them into."""

_TIED_ALIASES = (
    ("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
    ("cls.predictions.decoder.bias", "cls.predictions.bias"),
    ("cls.predictions.bias", "cls.predictions.decoder.bias"),
)
"""(key, key it shares its tensor with): a file may store only one of a tied pair."""


def _accept_transformers_layouts(
    module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
) -> None:
    """load_state_dict pre-hook: drop transformers' persisted position/type-id buffers and fill in
    tied keys a file left out (save_pretrained and safetensors store a shared tensor once), so
    `strict=True` loads any of those layouts."""
    for key in _TRANSFORMERS_BUFFERS:
        state_dict.pop(prefix + key, None)
    for alias, source in _TIED_ALIASES:
        if prefix + alias not in state_dict and prefix + source in state_dict:
            state_dict[prefix + alias] = state_dict[prefix + source]
