"""The unpadded encoder (BertModel(unpad=True)) against the padded one: values, gradients and position
embeddings, with the collator's unpad_index/cu_seqlens and without them; the nested-jagged attention
that serves CUDA training, checked on CPU; the CUDA kernels where a GPU is present.

Tolerances: fp32 on CPU, 1e-5 absolute on values and gradients (the two paths sum in another order);
bf16 autocast on CUDA, 5e-2 on values and 5% relative (in norm) on each gradient: a wrong mask or
position moves them by far more."""

from __future__ import annotations

import pytest
import torch

import training.model as model_module
from training.model import BertConfig, BertForPreTraining, Unpadded, jagged_attention

VOCAB = 89
LENGTHS = (12, 7, 3, 10)  # right-padded rows; T = 12
T = max(LENGTHS)
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_config(**overrides) -> BertConfig:
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertConfig(**{**fields, **overrides})


def collator_layout(lengths, seq_len: int) -> dict:
    """What the collator computes on the host: flat positions of the real tokens, row-major, and
    cumulative lengths (written out by hand here, independently of the model's fallback)."""
    index = [b * seq_len + t for b, n in enumerate(lengths) for t in range(n)]
    cumulative = [0]
    for n in lengths:
        cumulative.append(cumulative[-1] + n)
    return dict(
        unpad_index=torch.tensor(index, dtype=torch.long),
        cu_seqlens=torch.tensor(cumulative, dtype=torch.int32),
    )


def make_batch(seed: int = 0, lengths=LENGTHS) -> dict:
    gen = torch.Generator().manual_seed(seed)
    B = len(lengths)
    input_ids = torch.randint(1, VOCAB, (B, T), generator=gen)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    token_type_ids = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        attention_mask[b, :n] = 1
        token_type_ids[b, n // 2 : n] = 1
    input_ids[attention_mask == 0] = 0
    positions = torch.tensor([[1, 4, 7, 10], [2, 5, 0, 0], [1, 0, 0, 0], [3, 8, 9, 0]])
    labels = torch.full_like(positions, -100)
    for b, count in enumerate((4, 2, 1, 3)):
        labels[b, :count] = torch.randint(1, VOCAB, (count,), generator=gen)
    return dict(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        attention_mask=attention_mask,
        masked_lm_positions=positions,
        masked_lm_labels=labels,
        next_sentence_label=torch.tensor([0, 1, 1, 0]),
    )


def padded_and_unpadded(seed: int, **overrides) -> tuple[BertForPreTraining, BertForPreTraining]:
    torch.manual_seed(seed)
    padded = BertForPreTraining(tiny_config(**overrides))
    with torch.no_grad():  # non-trivial biases and norms, so a wrong one shows
        for p in padded.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    unpadded = BertForPreTraining(tiny_config(**overrides), unpad=True)
    unpadded.load_state_dict(padded.state_dict())
    return padded, unpadded


def assert_same_gradients(model: torch.nn.Module, reference: torch.nn.Module, atol: float, rtol: float) -> None:
    ref = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[name].grad, atol=atol, rtol=rtol, msg=name)


# ---------------------------------------------------------------- unpadded = padded (CPU)


@pytest.mark.parametrize("with_collator_indices", [True, False])
def test_unpadded_equals_padded_values_and_gradients(with_collator_indices):
    padded, unpadded = padded_and_unpadded(seed=1)
    batch = make_batch(seed=1)
    layout = collator_layout(LENGTHS, T) if with_collator_indices else {}
    rows_seen = []
    hook = unpadded.bert.encoder.layer[1].attention.self.query.register_forward_hook(
        lambda module, args, output: rows_seen.append(tuple(args[0].shape))
    )
    a, b = padded(**batch), unpadded(**batch, **layout)
    hook.remove()
    assert rows_seen == [(sum(LENGTHS), 32)]  # the projections ran on the 32 real tokens, not 4 x 12
    for field in ("loss", "mlm_logits", "nsp_logits", "mlm_correct", "mlm_count"):
        torch.testing.assert_close(getattr(b, field), getattr(a, field), atol=1e-5, rtol=1e-5, msg=field)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        ha = padded.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
        hb = unpadded.bert(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"], **layout)
    torch.testing.assert_close(hb[real], ha[real], atol=1e-5, rtol=1e-5)
    assert torch.count_nonzero(hb[~real]) == 0
    a.loss.backward(), b.loss.backward()
    assert_same_gradients(unpadded, padded, atol=1e-5, rtol=1e-4)


def test_collator_indices_alone_need_no_attention_mask():
    """With unpad_index/cu_seqlens the mask is redundant: the padded fallback derives it from them."""
    padded, unpadded = padded_and_unpadded(seed=2)
    padded.eval(), unpadded.eval()
    batch = make_batch(seed=2)
    with torch.no_grad():
        a = padded(**batch)
        b = unpadded(**{**batch, "attention_mask": None}, **collator_layout(LENGTHS, T))
    torch.testing.assert_close(b.loss, a.loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.mlm_logits, a.mlm_logits, atol=1e-5, rtol=1e-5)


def test_positions_restart_in_every_row_and_embeddings_match():
    given = collator_layout(LENGTHS, T)
    layout = Unpadded(given["unpad_index"], given["cu_seqlens"], batch_size=len(LENGTHS), seq_len=T)
    assert layout.positions().tolist() == [t for n in LENGTHS for t in range(n)]
    padded, unpadded = padded_and_unpadded(seed=3)
    padded.eval(), unpadded.eval()
    batch = make_batch(seed=3)
    seen = {}
    hooks = [
        m.bert.embeddings.register_forward_hook(lambda module, args, output, key=key: seen.__setitem__(key, output))
        for key, m in (("padded", padded), ("unpadded", unpadded))
    ]
    with torch.no_grad():
        padded(**batch), unpadded(**batch, **collator_layout(LENGTHS, T))
    for hook in hooks:
        hook.remove()
    real = batch["attention_mask"].bool()
    assert seen["unpadded"].shape == (sum(LENGTHS), 32)
    torch.testing.assert_close(seen["unpadded"], seen["padded"][real])  # (N, H) in row-major order


def test_fallback_layout_equals_the_collators():
    mask = make_batch()["attention_mask"]
    fallback = Unpadded.from_mask(mask)
    expected = collator_layout(LENGTHS, T)
    assert torch.equal(fallback.index, expected["unpad_index"])
    assert torch.equal(fallback.cu_seqlens, expected["cu_seqlens"]) and fallback.cu_seqlens.dtype == torch.int32
    assert torch.equal(fallback.real_mask(), mask.bool())


def test_padded_model_ignores_the_collator_indices():
    padded, _ = padded_and_unpadded(seed=4)
    padded.eval()
    batch = make_batch(seed=4)
    with torch.no_grad():
        torch.testing.assert_close(padded(**batch, **collator_layout(LENGTHS, T)).loss, padded(**batch).loss)


def test_unpadded_training_with_dropout_runs_and_differs_between_calls():
    _, model = padded_and_unpadded(seed=5, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    batch = make_batch(seed=5)
    model.train()
    first = model(**batch, **collator_layout(LENGTHS, T))
    second = model(**batch, **collator_layout(LENGTHS, T))
    assert torch.isfinite(first.loss) and not torch.equal(first.loss, second.loss)
    first.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_layout_arguments_are_checked():
    _, model = padded_and_unpadded(seed=6)
    batch = make_batch()
    layout = collator_layout(LENGTHS, T)
    with pytest.raises(ValueError, match="together"):
        model(**batch, unpad_index=layout["unpad_index"])
    with pytest.raises(ValueError, match="int32"):
        model(**batch, unpad_index=layout["unpad_index"], cu_seqlens=layout["cu_seqlens"].long())
    with pytest.raises(ValueError, match=r"\(B\+1,\)"):
        model(**batch, unpad_index=layout["unpad_index"], cu_seqlens=layout["cu_seqlens"][:-1])


# ---------------------------------------------------------------- the CUDA training kernel, on CPU


def padded_reference(q, k, v, num_heads, layout, dropout_p=0.0):
    """The CPU fallback: pad, dense SDPA with the additive mask, unpad."""
    bias = model_module.additive_attention_mask(layout.real_mask(), q.dtype)
    y = model_module._padded_attention(layout.pad(q), layout.pad(k), layout.pad(v), num_heads, bias, dropout_p)
    return layout.unpad(y)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")  # CPU math backend
def test_jagged_attention_equals_padded_attention_values_and_gradients():
    """``jagged_attention`` (what CUDA training with dropout runs) on CPU's math backend: the same
    values and gradients as the padded fallback, and it runs with dropout and backward."""
    layout = Unpadded.from_mask(make_batch()["attention_mask"])
    gen = torch.Generator().manual_seed(7)
    qkv = [torch.randn(sum(LENGTHS), 32, generator=gen, requires_grad=True) for _ in range(3)]
    jagged = jagged_attention(*qkv, num_heads=4, layout=layout, dropout_p=0.0)  # (N, H)
    grads = torch.autograd.grad(jagged.square().sum(), qkv)
    reference = padded_reference(*qkv, 4, layout)
    ref_grads = torch.autograd.grad(reference.square().sum(), qkv)
    assert jagged.shape == (sum(LENGTHS), 32)
    torch.testing.assert_close(jagged, reference, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    dropped = jagged_attention(*qkv, num_heads=4, layout=layout, dropout_p=0.5)
    dropped.sum().backward()
    assert not torch.allclose(dropped, jagged) and all(torch.isfinite(t.grad).all() for t in qkv)


# ---------------------------------------------------------------- CUDA (bench/gpu_check.sh)


CUDA_SHAPE = dict(hidden_size=128, num_attention_heads=2, intermediate_size=256)  # 64-wide heads, as in BERT


def assert_close_in_norm(model: torch.nn.Module, reference: torch.nn.Module, rel: float) -> None:
    ref = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        want = ref[name].grad.float()
        assert (p.grad.float() - want).norm() <= rel * want.norm() + 1e-6, name


def count_calls(monkeypatch, name: str) -> list:
    calls, real = [], getattr(model_module, name)

    def counting(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(model_module, name, counting)
    return calls


@requires_cuda
def test_cuda_eval_takes_varlen_attention_and_equals_padded(monkeypatch):
    varlen_calls = count_calls(monkeypatch, "_flash_varlen_attention")
    padded, unpadded = padded_and_unpadded(seed=8, **CUDA_SHAPE)
    padded.cuda().eval(), unpadded.cuda().eval()
    batch = {k: v.cuda() for k, v in make_batch(seed=8).items()}
    layout = {k: v.cuda() for k, v in collator_layout(LENGTHS, T).items()}
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = padded(**batch), unpadded(**batch, **layout)
    assert len(varlen_calls) == 2  # one per layer
    torch.testing.assert_close(b.mlm_logits.float(), a.mlm_logits.float(), atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(b.loss, a.loss, atol=5e-2, rtol=5e-2)


@requires_cuda
def test_cuda_varlen_training_without_dropout_equals_padded_gradients(monkeypatch):
    varlen_calls = count_calls(monkeypatch, "_flash_varlen_attention")
    padded, unpadded = padded_and_unpadded(seed=9, **CUDA_SHAPE)
    padded.cuda().train(), unpadded.cuda().train()  # dropout 0: varlen serves training too
    batch = {k: v.cuda() for k, v in make_batch(seed=9).items()}
    layout = {k: v.cuda() for k, v in collator_layout(LENGTHS, T).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = padded(**batch), unpadded(**batch, **layout)
    a.loss.backward(), b.loss.backward()
    assert len(varlen_calls) == 2
    torch.testing.assert_close(b.loss, a.loss, atol=5e-2, rtol=5e-2)
    assert_close_in_norm(unpadded, padded, rel=0.05)


@requires_cuda
@pytest.mark.parametrize("lengths", [LENGTHS, (12, 7, 0, 10)])  # the second with a fully padded row
def test_cuda_training_with_dropout_takes_jagged_attention(monkeypatch, lengths):
    jagged_calls = count_calls(monkeypatch, "jagged_attention")
    _, model = padded_and_unpadded(seed=10, attention_probs_dropout_prob=0.1, **CUDA_SHAPE)
    model.cuda().train()
    batch = make_batch(seed=10, lengths=lengths)
    batch["masked_lm_labels"][torch.tensor(lengths) == 0] = -100
    batch = {k: v.cuda() for k, v in batch.items()}
    layout = {k: v.cuda() for k, v in collator_layout(lengths, T).items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(**batch, **layout)
    out.loss.backward()
    assert len(jagged_calls) == 2 and torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@requires_cuda
def test_cuda_jagged_attention_equals_padded_in_bf16():
    layout = Unpadded.from_mask(make_batch()["attention_mask"].cuda())
    gen = torch.Generator(device="cuda").manual_seed(11)
    qkv = [torch.randn(sum(LENGTHS), 256, generator=gen, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
    jagged = jagged_attention(*qkv, num_heads=4, layout=layout, dropout_p=0.0)
    torch.testing.assert_close(jagged, padded_reference(*qkv, 4, layout), atol=5e-2, rtol=5e-2)
