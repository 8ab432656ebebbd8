"""The BERT model against the installed transformers (names, numbers, parameter counts), the sparse
MLM head against the dense one, weight tying, and the FLOPs formula. CPU, tiny configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
import transformers

import training.model as model_module
from training.model import (
    BertConfig,
    BertForPreTraining,
    flops_per_token,
)
from training.models import bert_presets, preset_fields

VOCAB = 97
LENGTHS = (12, 9, 5)  # real tokens per sequence; T = 12, the rest is padding


def tiny_config(**overrides) -> BertConfig:
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    return BertConfig(**{**fields, **overrides})


def hf_model(cfg: BertConfig, attn_implementation: str = "sdpa"):
    hf_cfg = transformers.BertConfig(**cfg.to_hf_config_dict(), attn_implementation=attn_implementation)
    cls = transformers.BertForPreTraining if cfg.with_nsp_head else transformers.BertForMaskedLM
    return cls(hf_cfg)


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (BERT's init leaves biases at 0 and LayerNorm at 1, which would
    hide a missing bias or a swapped norm)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen) * 0.1
        p.copy_(1.0 + noise if "LayerNorm.weight" in name else noise)


def make_batch(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    B, T = len(LENGTHS), max(LENGTHS)
    input_ids = torch.randint(1, VOCAB, (B, T), generator=gen)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    token_type_ids = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(LENGTHS):
        attention_mask[b, :n] = 1
        token_type_ids[b, n // 2 : n] = 1
    input_ids[attention_mask == 0] = 0
    # Masked slots per sequence, padded with position 0 / label -100 (the data contract's layout).
    positions = torch.tensor([[1, 4, 7, 10], [2, 5, 0, 0], [3, 0, 0, 0]])
    labels = torch.full_like(positions, -100)
    for b, count in enumerate((4, 2, 1)):
        labels[b, :count] = torch.randint(1, VOCAB, (count,), generator=gen)
    return dict(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        attention_mask=attention_mask,
        masked_lm_positions=positions,
        masked_lm_labels=labels,
        next_sentence_label=torch.tensor([0, 1, 1]),
    )


def dense_labels(batch: dict) -> torch.Tensor:
    """The same targets in transformers' (B, T) layout."""
    out = torch.full_like(batch["input_ids"], -100)
    for b, (pos, lab) in enumerate(zip(batch["masked_lm_positions"], batch["masked_lm_labels"])):
        real = lab != -100
        out[b, pos[real]] = lab[real]
    return out


def unique_param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() skips tied duplicates


# ---------------------------------------------------------------- names and layouts


@pytest.mark.parametrize("with_nsp_head", [True, False])
def test_state_dict_keys_and_shapes_equal_transformers(with_nsp_head):
    cfg = tiny_config(with_nsp_head=with_nsp_head)
    ours, theirs = BertForPreTraining(cfg).state_dict(), hf_model(cfg).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert "cls.predictions.bias" in ours and "cls.predictions.decoder.bias" in ours
    assert ("bert.pooler.dense.weight" in ours) == with_nsp_head
    assert ("cls.seq_relationship.weight" in ours) == with_nsp_head


def test_loads_transformers_file_layouts_strictly():
    """Older transformers persisted position_ids; save_pretrained/safetensors keep one of a tied pair."""
    model = BertForPreTraining(tiny_config())
    source = hf_model(tiny_config())
    randomize(source)
    state = dict(source.state_dict())
    for key in ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"):
        state.pop(key)
    state["bert.embeddings.position_ids"] = torch.arange(16)[None]
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.cls.predictions.decoder.weight, source.bert.embeddings.word_embeddings.weight)
    assert torch.equal(model.cls.predictions.decoder.bias, source.cls.predictions.bias)

    only_decoder_bias = dict(source.state_dict())
    only_decoder_bias.pop("cls.predictions.bias")
    model.load_state_dict(only_decoder_bias, strict=True)


# ---------------------------------------------------------------- numerical parity


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_matches_transformers_with_its_weights(attn_implementation):
    cfg = tiny_config()
    theirs = hf_model(cfg, attn_implementation)
    randomize(theirs)
    ours = BertForPreTraining(cfg)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    batch = make_batch()
    labels = dense_labels(batch)

    with torch.no_grad():
        ref = theirs(
            input_ids=batch["input_ids"],
            token_type_ids=batch["token_type_ids"],
            attention_mask=batch["attention_mask"],
            labels=labels,
            next_sentence_label=batch["next_sentence_label"],
        )
        out = ours(
            batch["input_ids"],
            batch["token_type_ids"],
            batch["attention_mask"],
            next_sentence_label=batch["next_sentence_label"],
            dense_mlm_labels=labels,
        )

    assert out.mlm_logits.shape == ref.prediction_logits.shape == (3, 12, VOCAB)
    torch.testing.assert_close(out.mlm_logits, ref.prediction_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.nsp_logits, ref.seq_relationship_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, out.mlm_loss + out.nsp_loss)


def test_transformers_matches_ours_with_our_weights():
    cfg = tiny_config()
    ours = BertForPreTraining(cfg)
    randomize(ours, seed=1)
    theirs = hf_model(cfg)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    batch = make_batch(seed=1)
    with torch.no_grad():
        ref = theirs(
            input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"], attention_mask=batch["attention_mask"]
        )
        out = ours(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    torch.testing.assert_close(out.mlm_logits, ref.prediction_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.nsp_logits, ref.seq_relationship_logits, atol=1e-5, rtol=1e-5)
    assert out.loss is None and out.mlm_count is None


def test_mlm_only_model_matches_transformers_masked_lm():
    cfg = tiny_config(with_nsp_head=False)
    theirs = hf_model(cfg)
    randomize(theirs, seed=2)
    ours = BertForPreTraining(cfg)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    batch = make_batch(seed=2)
    labels = dense_labels(batch)
    with torch.no_grad():
        ref = theirs(
            input_ids=batch["input_ids"],
            token_type_ids=batch["token_type_ids"],
            attention_mask=batch["attention_mask"],
            labels=labels,
        )
        out = ours(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], dense_mlm_labels=labels)
    torch.testing.assert_close(out.mlm_logits, ref.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)
    assert out.nsp_logits is None and out.nsp_loss is None
    with pytest.raises(ValueError, match="no NSP head"):
        ours(batch["input_ids"], next_sentence_label=batch["next_sentence_label"])


# ---------------------------------------------------------------- sparse MLM head


def test_sparse_head_equals_dense_head_at_masked_positions():
    model = BertForPreTraining(tiny_config())
    randomize(model, seed=3)
    model.eval()
    batch = make_batch(seed=3)
    rows_seen = []
    hook = model.cls.predictions.decoder.register_forward_hook(
        lambda module, args, output: rows_seen.append(args[0].shape[:-1])
    )

    with torch.no_grad():
        sparse = model(**batch)
        dense = model(
            batch["input_ids"],
            batch["token_type_ids"],
            batch["attention_mask"],
            next_sentence_label=batch["next_sentence_label"],
            dense_mlm_labels=dense_labels(batch),
        )
    hook.remove()

    real = batch["masked_lm_labels"] != -100  # (B, P): 7 real slots, 5 padding
    b_idx, p_idx = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")  # every (b, p) slot
    expected = dense.mlm_logits[b_idx, batch["masked_lm_positions"][b_idx, p_idx]].reshape(12, VOCAB)
    assert sparse.mlm_logits.shape == (3 * 4, VOCAB)
    # The vocabulary projection ran on the B*P = 12 slots (a fixed count, padding slots included),
    # not on the 3 x 12 positions; the loss ignores the 5 padding slots.
    assert rows_seen[0] == (12,) and rows_seen[1] == (3, 12)
    torch.testing.assert_close(sparse.mlm_logits, expected, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sparse.mlm_loss, dense.mlm_loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(sparse.loss, dense.loss, atol=1e-6, rtol=1e-6)
    assert sparse.mlm_count.item() == dense.mlm_count.item() == 7
    assert sparse.mlm_correct.item() == dense.mlm_correct.item()
    hits = (expected[real.reshape(-1)].argmax(-1) == batch["masked_lm_labels"][real]).sum().item()
    assert sparse.mlm_correct.item() == hits
    assert sparse.nsp_count.item() == 3
    assert sparse.nsp_correct.item() == (sparse.nsp_logits.argmax(-1) == batch["next_sentence_label"]).sum().item()


def test_sparse_head_without_labels_predicts_every_slot():
    model = BertForPreTraining(tiny_config()).eval()
    batch = make_batch()
    with torch.no_grad():
        out = model(
            batch["input_ids"],
            batch["token_type_ids"],
            batch["attention_mask"],
            masked_lm_positions=batch["masked_lm_positions"],
        )
    assert out.mlm_logits.shape == (3 * 4, VOCAB) and out.loss is None


def test_batch_without_masked_tokens_has_zero_mlm_loss_not_nan():
    model = BertForPreTraining(tiny_config())
    batch = make_batch()
    batch["masked_lm_labels"] = torch.full_like(batch["masked_lm_labels"], -100)
    out = model(**batch)
    assert out.mlm_count.item() == 0 and out.mlm_loss.item() == 0.0
    assert torch.isfinite(out.loss)
    out.loss.backward()


def boolean_selection_mlm_loss(model: BertForPreTraining, batch: dict) -> tuple[torch.Tensor, int, int]:
    """The masked-LM loss, hits and count computed the old way: padding slots dropped by a boolean
    selection before the head (a data-dependent size), mean cross-entropy over what is left."""
    hidden = model.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])  # (B, T, H)
    B, T, H = hidden.shape
    flat = (batch["masked_lm_positions"] + T * torch.arange(B)[:, None]).reshape(-1)  # (B*P,)
    labels = batch["masked_lm_labels"].reshape(-1)
    real = labels != -100
    logits = model.cls.predictions(hidden.reshape(B * T, H)[flat[real]])  # (N, V)
    loss = F.cross_entropy(logits, labels[real]) if real.any() else logits.sum() * 0.0
    return loss, int((logits.argmax(-1) == labels[real]).sum()), int(real.sum())


@pytest.mark.parametrize("real_slots", [(4, 2, 1), (0, 4, 3), (4, 4, 4), (0, 0, 0), (1, 0, 2)])
def test_fixed_slot_head_equals_the_boolean_selection_head(real_slots):
    """All B*P slots through the head, padding skipped by ignore_index: the same loss, hits, count
    and gradients as dropping the padding slots first, whatever the number of real slots."""
    model = BertForPreTraining(tiny_config())
    randomize(model, seed=8)
    model.eval()
    batch = make_batch(seed=8)
    gen = torch.Generator().manual_seed(sum(real_slots))
    batch["masked_lm_positions"] = torch.randint(1, 5, (3, 4), generator=gen)
    labels = torch.full((3, 4), -100)
    for b, count in enumerate(real_slots):
        labels[b, :count] = torch.randint(1, VOCAB, (count,), generator=gen)
        batch["masked_lm_positions"][b, count:] = 0  # the collator's padding slots
    batch["masked_lm_labels"] = labels
    batch.pop("next_sentence_label")

    out = model(**batch)
    assert out.mlm_logits.shape == (3 * 4, VOCAB)
    out.mlm_loss.backward()
    fixed_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    ref_loss, ref_correct, ref_count = boolean_selection_mlm_loss(model, batch)
    ref_loss.backward()

    torch.testing.assert_close(out.mlm_loss, ref_loss, atol=1e-6, rtol=1e-6)
    assert out.mlm_count.item() == ref_count == sum(real_slots)
    assert out.mlm_correct.item() == ref_correct
    ref_grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert fixed_grads.keys() == ref_grads.keys()
    for name, grad in ref_grads.items():
        torch.testing.assert_close(fixed_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("unpad", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_fully_padded_row_gives_finite_output(unpad, training):
    """Evaluation pads a short batch with rows of only padding: finite everywhere, not NaN."""
    model = BertForPreTraining(tiny_config(), unpad=unpad).train(training)
    batch = make_batch(seed=9)
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        batch[key][2] = 0  # row 2: all padding
    batch["masked_lm_labels"][2] = -100
    out = model(**batch)
    hidden = model.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    assert torch.isfinite(hidden).all() and torch.isfinite(out.mlm_logits).all()
    assert torch.isfinite(out.nsp_logits).all() and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def record_sdpa_masks(monkeypatch) -> list:
    """(query dtype, attn_mask) of every scaled_dot_product_attention call (the real one runs)."""
    seen, real_sdpa = [], F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kwargs):
        seen.append((q.dtype, attn_mask))
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return seen


def test_attention_mask_is_built_once_per_forward_and_not_without_padding(monkeypatch):
    builds, real_build = [], model_module.additive_attention_mask

    def counting(*args, **kwargs):
        builds.append(args)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(model_module, "additive_attention_mask", counting)
    sdpa_calls = record_sdpa_masks(monkeypatch)
    model = BertForPreTraining(tiny_config(num_hidden_layers=3)).eval()
    batch = make_batch()
    with torch.no_grad():
        model(**batch)
        assert len(builds) == 1 and len(sdpa_calls) == 3  # one mask, shared by the 3 layers
        assert all(mask is sdpa_calls[0][1] for _, mask in sdpa_calls)
        assert sdpa_calls[0][1].shape == (3, 1, 1, 12)
        builds.clear(), sdpa_calls.clear()
        model(**{**batch, "attention_mask": None})
    assert builds == [] and len(sdpa_calls) == 3
    assert all(mask is None for _, mask in sdpa_calls)  # no mask at all: flash-eligible


def test_attention_mask_is_in_the_dtype_sdpa_sees(monkeypatch):
    """fp32 without autocast; under autocast the projections, hence q, are bf16, and so is the mask."""
    sdpa_calls = record_sdpa_masks(monkeypatch)
    model = BertForPreTraining(tiny_config()).eval()
    batch = make_batch()
    with torch.no_grad():
        model(**batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(**batch)
    dtypes = [(q_dtype, mask.dtype) for q_dtype, mask in sdpa_calls]
    assert dtypes == [(torch.float32, torch.float32)] * 2 + [(torch.bfloat16, torch.bfloat16)] * 2
    assert torch.isfinite(out.loss)
    assert sdpa_calls[-1][1].min() == torch.finfo(torch.bfloat16).min  # the padding, at bf16's floor


def test_padding_does_not_leak_into_real_positions():
    model = BertForPreTraining(tiny_config())
    randomize(model, seed=4)
    model.eval()
    batch = make_batch(seed=4)
    changed = batch["input_ids"].clone()
    changed[batch["attention_mask"] == 0] = 5  # different ids behind the mask
    with torch.no_grad():
        a = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]).mlm_logits
        b = model(changed, batch["token_type_ids"], batch["attention_mask"]).mlm_logits
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(a[real], b[real])


def test_unpadded_encoder_equals_the_padded_one_values_and_gradients():
    """Dense layers on the real tokens only: the same weights give the same losses, hidden
    states at real tokens and gradients (no dropout), and the heads see zeros at the padding."""
    padded = BertForPreTraining(tiny_config())
    randomize(padded, seed=6)
    unpadded = BertForPreTraining(tiny_config(), unpad=True)
    unpadded.load_state_dict(padded.state_dict())
    padded.eval(), unpadded.eval()
    batch = make_batch(seed=6)
    rows_seen = []
    hook = unpadded.bert.encoder.layer[0].intermediate.dense.register_forward_hook(
        lambda module, args, output: rows_seen.append(tuple(args[0].shape))
    )
    a, b = padded(**batch), unpadded(**batch)
    hook.remove()
    assert rows_seen == [(sum(LENGTHS), 32)]  # 26 real tokens, not 3 x 12 positions
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.mlm_logits, a.mlm_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.nsp_logits, a.nsp_logits, atol=1e-5, rtol=1e-5)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        ha = padded.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        hb = unpadded.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    torch.testing.assert_close(hb[real], ha[real], atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(hb[~real]) == 0
    a.loss.backward(), b.loss.backward()
    grads_b = dict(unpadded.named_parameters())
    for name, p in padded.named_parameters():
        torch.testing.assert_close(grads_b[name].grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_unpadded_encoder_without_padding_or_mask_and_in_training_mode():
    model = BertForPreTraining(tiny_config(), unpad=True)
    batch = make_batch(seed=7)
    full = dict(batch, attention_mask=torch.ones_like(batch["attention_mask"]))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**full).loss, model(**{**batch, "attention_mask": None}).loss)
    model.train()
    out = model(**batch)  # dropout on the (N, H) rows
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_dropout_only_in_training_mode():
    model = BertForPreTraining(tiny_config(hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5))
    batch = make_batch()
    args = (batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    with torch.no_grad():
        assert not torch.equal(model(*args).mlm_logits, model(*args).mlm_logits)
        model.eval()
        assert torch.equal(model(*args).mlm_logits, model(*args).mlm_logits)


# ---------------------------------------------------------------- tying and gradients


def test_decoder_is_tied_to_word_embeddings_and_gradients_flow():
    model = BertForPreTraining(tiny_config())
    emb = model.bert.embeddings.word_embeddings.weight
    head = model.cls.predictions
    assert head.decoder.weight is emb
    assert head.decoder.weight.data_ptr() == emb.data_ptr()
    assert head.bias is head.decoder.bias
    names = [name for name, _ in model.named_parameters()]
    assert "cls.predictions.decoder.weight" not in names  # counted once, under the embedding's name

    batch = make_batch()
    model(**batch).loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # A token that never appears in the input gets gradient only through the output projection.
    unused = sorted(set(range(1, VOCAB)) - set(batch["input_ids"].unique().tolist()))[0]
    assert emb.grad[unused].abs().sum() > 0

    # Tying survives a load (load_state_dict copies into the shared tensor).
    other = BertForPreTraining(tiny_config())
    randomize(other, seed=5)
    model.load_state_dict(other.state_dict(), strict=True)
    assert head.decoder.weight is emb and torch.equal(emb, other.bert.embeddings.word_embeddings.weight)


def test_every_parameter_gets_gradient_without_nsp_head():
    model = BertForPreTraining(tiny_config(with_nsp_head=False))
    batch = make_batch()
    batch.pop("next_sentence_label")
    out = model(**batch)
    assert out.nsp_logits is None and out.nsp_count is None
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())  # DDP would reject unused ones


def test_initialization_follows_bert():
    cfg = tiny_config(hidden_size=64, intermediate_size=256, vocab_size=2000)
    model = BertForPreTraining(cfg)
    layer = model.bert.encoder.layer[0]
    assert abs(layer.intermediate.dense.weight.std().item() - 0.02) < 0.002
    assert abs(model.bert.embeddings.word_embeddings.weight[1:].std().item() - 0.02) < 0.002
    assert torch.all(layer.intermediate.dense.bias == 0) and torch.all(model.cls.predictions.bias == 0)
    assert torch.all(layer.output.LayerNorm.weight == 1) and torch.all(layer.output.LayerNorm.bias == 0)
    assert torch.all(model.bert.embeddings.word_embeddings.weight[0] == 0)
    assert layer.output.LayerNorm.eps == 1e-12


# ---------------------------------------------------------------- config, presets, FLOPs


@pytest.mark.parametrize("name", sorted(bert_presets()))
def test_preset_parameter_count_equals_transformers(name):
    cfg = BertConfig(vocab_size=30522, **preset_fields(name))
    assert cfg.intermediate_size == 4 * cfg.hidden_size
    assert name == "minilm_l6" or cfg.num_attention_heads * 64 == cfg.hidden_size  # MiniLM: 32-wide heads
    with torch.device("meta"):  # shapes only: no memory, no init cost, so base and large are cheap
        ours, theirs = BertForPreTraining(cfg), hf_model(cfg)
    assert unique_param_count(ours) == unique_param_count(theirs)
    assert ours.state_dict().keys() == theirs.state_dict().keys()


def test_published_sizes():
    def count(name):
        with torch.device("meta"):
            return unique_param_count(BertForPreTraining(BertConfig(vocab_size=30522, **preset_fields(name))))

    assert count("base") == 110_106_428  # "110M"
    # 336.2M with the pre-training heads; the paper rounds BERT-Large to "340M".
    assert 330e6 < count("large") < 345e6
    assert (preset_fields("tiny")["num_hidden_layers"], preset_fields("tiny")["hidden_size"]) == (2, 128)
    assert (preset_fields("large")["num_hidden_layers"], preset_fields("large")["num_attention_heads"]) == (24, 16)


def test_config_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(hidden_size=30)
    with pytest.raises(ValueError, match="pad_token_id"):
        tiny_config(pad_token_id=VOCAB)
    with pytest.raises(ValueError, match="dropout"):
        tiny_config(hidden_dropout_prob=1.0)
    with pytest.raises(ValueError, match="positive int"):
        tiny_config(num_hidden_layers=0)


def test_sequence_longer_than_position_table_is_rejected():
    model = BertForPreTraining(tiny_config(max_position_embeddings=8))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.ones(1, 9, dtype=torch.long))


def test_hf_config_dict_round_trips_through_transformers():
    cfg = tiny_config(hidden_dropout_prob=0.05, pad_token_id=3)
    d = cfg.to_hf_config_dict()
    hf_cfg = transformers.BertConfig(**d)
    for field in dataclasses.fields(cfg):
        if field.name != "with_nsp_head":
            assert getattr(hf_cfg, field.name) == getattr(cfg, field.name), field.name
    assert hf_cfg.hidden_act == "gelu" and hf_cfg.tie_word_embeddings
    assert d["architectures"] == ["BertForPreTraining"]
    assert tiny_config(with_nsp_head=False).to_hf_config_dict()["architectures"] == ["BertForMaskedLM"]


def test_flops_per_token_follows_reference_formula():
    cfg = BertConfig(vocab_size=30522, **preset_fields("base"))
    h, L, V, s = 768, 12, 30522, 128
    body = 72 * h**2 * L + 12 * s * h * L
    head = 6 * h**2 + 6 * h * V
    assert flops_per_token(cfg, s) == body + head == 667_948_032
    assert flops_per_token(cfg, s, sparse_fraction=0.15) == pytest.approx(body + 0.15 * head)
    # REFERENCE.md section 3 rounds these to 668 and 545 MFLOP/token.
    assert round(flops_per_token(cfg, s) / 1e6) == 668
    assert round(flops_per_token(cfg, s, sparse_fraction=0.15) / 1e6) == 545
    # Sparse head saves about 18% at base/128, as the reference says.
    assert 1 - flops_per_token(cfg, s, 0.15) / flops_per_token(cfg, s) == pytest.approx(0.18, abs=0.01)
    with pytest.raises(ValueError):
        flops_per_token(cfg, s, sparse_fraction=1.5)
