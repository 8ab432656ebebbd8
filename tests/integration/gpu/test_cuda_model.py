"""The model on a CUDA GPU, as the GPU presets run it (bf16, batches of one shape, compiled): parity
with transformers, the SDPA kernel, unpadding, no recompiles. Skipped without a GPU; their CPU twins
are named in each test. bench/gpu_check.sh runs this folder on a fresh GPU machine.

bf16 tolerances are relative to bf16's own error: a bf16 result must be, on average over its
elements, about as close to the fp32 reference as transformers' bf16 result (or the padded path's)
is, not within a hand-picked epsilon; scalar losses within 2%."""

from __future__ import annotations

import pytest
import torch
import transformers

from cuda_batches import collate, perturbed_model, random_examples, small_config
from training.data import dense_mlm_labels, model_inputs
from training.labels import IGNORE_INDEX

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)

B, T, P = 16, 128, 20  # the phase-1 shape at a small micro batch


def cuda_batch(seed: int, unpad: bool = False) -> dict[str, torch.Tensor]:
    batch = collate(random_examples(B, T, P, seed), T, P, unpad=unpad)
    return {k: v.cuda() for k, v in batch.items()}


def transformers_twin(ours) -> torch.nn.Module:
    """transformers' BertForPreTraining (SDPA) with our weights, strict."""
    cfg = transformers.BertConfig(**ours.config.to_hf_config_dict(), attn_implementation="sdpa")
    theirs = transformers.BertForPreTraining(cfg)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return theirs


def masked_logits_of_transformers(theirs, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' loss and its MLM logits at our (B*P) slots, padding slots dropped."""
    out = theirs(
        input_ids=batch["input_ids"],
        token_type_ids=batch["token_type_ids"],
        attention_mask=batch["attention_mask"],
        labels=dense_mlm_labels(batch),
        next_sentence_label=batch["next_sentence_label"],
    )
    rows = torch.arange(B, device=batch["input_ids"].device)[:, None].expand(B, P)
    real = batch["masked_lm_labels"] != IGNORE_INDEX
    return out.loss, out.prediction_logits[rows[real], batch["masked_lm_positions"][real]].float()


def masked_logits_of_ours(ours, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    out = ours(**model_inputs(batch))
    real = batch["masked_lm_labels"].reshape(-1) != IGNORE_INDEX
    return out.loss, out.mlm_logits[real].float()


def mean_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.float() - reference.float()).abs().mean())


def assert_as_close_as(value: torch.Tensor, baseline: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    """``value`` is at most twice as far from ``reference`` as ``baseline`` (another bf16 computation of
    it) is, on average: a wrong result (attention across rows, a lost bias) is orders of magnitude off."""
    floor = 1e-3 * float(reference.float().abs().mean())
    assert mean_error(value, reference) <= 2 * mean_error(baseline, reference) + floor, what


@torch.no_grad()
def test_bf16_parity_with_transformers():
    """Same weights and batch, no dropout: in fp32 ours equals transformers on CUDA; in bf16 weights
    (DeepSpeed's bf16 mode) ours is as close to that fp32 result as transformers' bf16 is.
    CPU twin: tests/unit/test_model.py::test_matches_transformers_with_its_weights (fp32)."""
    ours = perturbed_model(small_config(), seed=1).cuda().eval()
    theirs = transformers_twin(ours).cuda().eval()
    batch = cuda_batch(seed=1)
    ref_loss, ref_logits = masked_logits_of_transformers(theirs, batch)
    loss, logits = masked_logits_of_ours(ours, batch)
    torch.testing.assert_close(logits, ref_logits, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(loss, ref_loss, atol=1e-4, rtol=1e-4)
    ours.bfloat16(), theirs.bfloat16()
    their_loss, their_logits = masked_logits_of_transformers(theirs, batch)
    our_loss, our_logits = masked_logits_of_ours(ours, batch)
    assert_as_close_as(our_logits, their_logits, ref_logits, "masked-slot logits")
    torch.testing.assert_close(our_loss.float(), their_loss.float(), rtol=2e-2, atol=0.0)


def train_step(model, batch: dict) -> torch.Tensor:
    loss = model(**model_inputs(batch)).loss
    loss.backward()
    return loss.detach()


def test_attention_runs_on_flash_or_memory_efficient_sdpa():
    """With SDPA restricted to its flash and memory-efficient kernels (the math kernel would keep
    T x T scores: bench/sizing.py), a padded bf16 training step runs (the additive mask takes the
    memory-efficient kernel), and a batch without padding, which goes without a mask
    (training.objectives.mlm.forward_inputs), runs on flash alone. SDPA raises when no allowed kernel fits.
    CPU twin: none (CPU SDPA has other kernels); the attention's values: tests/unit/test_model.py."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = perturbed_model(small_config(), seed=2).cuda().bfloat16().train()
    padded = cuda_batch(seed=2)
    assert int(padded["num_tokens"]) < padded["input_ids"].numel()  # it has padding
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        assert torch.isfinite(train_step(model, padded))
    full = {k: v for k, v in padded.items() if k != "attention_mask"}
    full["input_ids"] = torch.where(full["input_ids"] == 0, 7, full["input_ids"])  # every position real
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        assert torch.isfinite(train_step(model, full))


def test_unpadded_model_equals_padded_model_in_bf16():
    """trainer.unpad on CUDA (variable-length attention, the collator's unpad_index and cu_seqlens),
    no dropout, under bf16 autocast: its masked-slot logits and gradients are as close to the fp32
    padded model's as the padded model's under autocast are, its loss within 2%. CPU twins:
    tests/unit/test_model.py (unpadded = padded, fp32) and tests/unit/test_unpadded_attention.py (its
    CUDA kernels against padded attention)."""
    cfg = small_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    batch = cuda_batch(seed=3, unpad=True)
    results = {}
    for name, unpad, dtype in (
        ("reference", False, None),
        ("padded", False, torch.bfloat16),
        ("unpadded", True, torch.bfloat16),
    ):
        model = perturbed_model(cfg, seed=3, unpad=unpad).cuda().train()
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss, logits = masked_logits_of_ours(model, batch)
        loss.backward()
        grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        results[name] = (loss.detach(), logits.detach(), grads)
    (ref_loss, ref_logits, ref_grads), (_, pad_logits, pad_grads) = results["reference"], results["padded"]
    loss, logits, grads = results["unpadded"]
    assert_as_close_as(logits, pad_logits, ref_logits, "masked-slot logits")
    assert_as_close_as(grads, pad_grads, ref_grads, "gradients")
    torch.testing.assert_close(loss, ref_loss, rtol=2e-2, atol=0.0)


def test_compiled_model_does_not_recompile_over_fixed_shape_batches():
    """nn.Module.compile(fullgraph=True, dynamic=False), as trainer.compile does with
    data.pad_to_max_length: training steps over batches of one (B, T, P) shape with other lengths
    and mask counts compile once (torch._dynamo.config.error_on_recompile raises on a second), and
    the compiled loss is eager's. CPU twin: tests/unit/test_model_static_shapes.py."""
    cfg = small_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    eager = perturbed_model(cfg, seed=4).cuda().bfloat16().train()
    compiled = perturbed_model(cfg, seed=4).cuda().bfloat16().train()
    compiled.compile(fullgraph=True, dynamic=False)
    optimizer = torch.optim.AdamW(compiled.parameters(), lr=1e-4)
    batches = [cuda_batch(seed=s) for s in (10, 11, 12, 13)]
    first = train_step(compiled, batches[0])
    torch.testing.assert_close(first, train_step(eager, batches[0]), atol=2e-2, rtol=2e-2)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for batch in batches:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            assert torch.isfinite(train_step(compiled, batch))
