"""The collator's fixed shapes (P, T, B), its padding rows and unpadded layout, and the dense MLM
labels built without a host sync, on small hand-written examples."""

import numpy as np
import pytest
import torch

from training.data import MODEL_INPUTS, Collator, Example, ExampleBatch, dense_mlm_labels, model_inputs
from training.labels import IGNORE_INDEX

PAD = 0


def example(ids, b_start, positions, label, example_id):
    ids = np.array(ids)
    positions = np.array(positions, dtype=np.int64)
    return Example(ids, b_start, positions, ids[positions] + 100, label, example_id)


EXAMPLES = [
    example([2, 10, 11, 3, 12, 3], 4, [1, 4], 1, 7),
    example([2, 13, 3], 3, [1], 0, 9),
    example([2, 14, 15, 16, 3], 5, [1, 2, 3], 1, 4),
]


def test_unset_options_keep_todays_batches():
    """P: the most predictions in the batch; T: the longest sequence (rounded to the multiple); B: the examples."""
    batch = Collator(pad_id=PAD, with_sentence_label=True)(EXAMPLES[:2])
    assert batch["input_ids"].tolist() == [[2, 10, 11, 3, 12, 3], [2, 13, 3, 0, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]
    assert batch["masked_lm_positions"].tolist() == [[1, 4], [1, 0]]
    assert batch["masked_lm_labels"].tolist() == [[110, 112], [113, IGNORE_INDEX]]
    assert batch["next_sentence_label"].tolist() == [1, 0] and batch["example_id"].tolist() == [7, 9]
    assert batch["num_tokens"].item() == 9 and batch["num_examples"].item() == 2
    assert "unpad_index" not in batch and "cu_seqlens" not in batch
    assert all(t.dtype == torch.long for t in batch.values())
    padded = Collator(pad_id=PAD, with_sentence_label=False, pad_to_multiple_of=4)(EXAMPLES)
    assert padded["input_ids"].shape == (3, 8) and "next_sentence_label" not in padded
    assert padded["attention_mask"].sum().item() == padded["num_tokens"].item() == 14


def test_a_batch_and_its_list_of_examples_collate_alike():
    collate = Collator(pad_id=PAD, with_sentence_label=True, predictions_per_seq=4, unpad=True)
    a, b = collate(EXAMPLES), collate(ExampleBatch.of(EXAMPLES))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [e.example_id for e in ExampleBatch.of(EXAMPLES)] == [7, 9, 4]


def test_predictions_padded_to_p_and_more_refused():
    batch = Collator(pad_id=PAD, with_sentence_label=True, predictions_per_seq=5)(EXAMPLES)
    assert batch["masked_lm_positions"].tolist() == [[1, 4, 0, 0, 0], [1, 0, 0, 0, 0], [1, 2, 3, 0, 0]]
    assert (batch["masked_lm_labels"] == IGNORE_INDEX).sum(1).tolist() == [3, 4, 2]
    with pytest.raises(ValueError, match="example 4 has 3 masked positions, more than the collator's "):
        Collator(pad_id=PAD, with_sentence_label=True, predictions_per_seq=2)(EXAMPLES)


def test_length_fixed_by_pad_to_length_and_longer_refused():
    batch = Collator(pad_id=PAD, with_sentence_label=True, pad_to_multiple_of=8, pad_to_length=10)(EXAMPLES[1:2])
    assert batch["input_ids"].tolist() == [[2, 13, 3] + [PAD] * 7]
    assert batch["attention_mask"].sum().item() == 3
    with pytest.raises(ValueError, match="example 7 has 6 tokens, more than the collator's pad_to_length=5"):
        Collator(pad_id=PAD, with_sentence_label=True, pad_to_length=5)(EXAMPLES)


def test_short_batch_filled_with_rows_that_count_for_nothing():
    batch = Collator(pad_id=PAD, with_sentence_label=True, predictions_per_seq=3, batch_size=5)(EXAMPLES[:2])
    assert batch["input_ids"].shape == (5, 6) and batch["masked_lm_positions"].shape == (5, 3)
    padding = slice(2, 5)
    assert (batch["input_ids"][padding] == PAD).all() and (batch["attention_mask"][padding] == 0).all()
    assert (batch["token_type_ids"][padding] == 0).all()
    assert (batch["masked_lm_positions"][padding] == 0).all()
    assert (batch["masked_lm_labels"][padding] == IGNORE_INDEX).all()
    assert batch["next_sentence_label"].tolist() == [1, 0] + [IGNORE_INDEX] * 3
    assert batch["example_id"].tolist() == [7, 9, -1, -1, -1]
    assert batch["num_tokens"].item() == 9 and batch["num_examples"].item() == 2
    with pytest.raises(ValueError, match="3 examples for a collator of batch_size=2"):
        Collator(pad_id=PAD, with_sentence_label=True, batch_size=2)(EXAMPLES)


def test_unpadded_layout_is_where_the_attention_mask_is_one():
    collate = Collator(pad_id=PAD, with_sentence_label=False, pad_to_length=8, batch_size=4, unpad=True)
    batch = collate(EXAMPLES)
    mask = batch["attention_mask"]
    assert torch.equal(batch["unpad_index"], mask.reshape(-1).nonzero().squeeze(1))
    assert batch["unpad_index"].dtype == torch.long
    assert batch["cu_seqlens"].tolist() == [0, 6, 9, 14, 14] and batch["cu_seqlens"].dtype == torch.int32
    flat = batch["input_ids"].reshape(-1)[batch["unpad_index"]]
    assert flat.tolist() == [t for e in EXAMPLES for t in e.input_ids.tolist()]
    assert {"unpad_index", "cu_seqlens"} <= set(MODEL_INPUTS) <= set(batch) | {"next_sentence_label"}
    assert set(model_inputs(batch)) == set(MODEL_INPUTS) - {"next_sentence_label"}


def boolean_indexed_mlm_labels(batch):
    """dense_mlm_labels as it was: boolean-mask indexing (a data-dependent size, a host sync on GPU)."""
    positions, labels = batch["masked_lm_positions"], batch["masked_lm_labels"]
    dense = torch.full_like(batch["input_ids"], IGNORE_INDEX)
    rows = torch.arange(positions.shape[0])[:, None].expand_as(positions)
    real = labels != IGNORE_INDEX
    dense[rows[real], positions[real]] = labels[real]
    return dense


def random_batch(generator, B=16, T=32, P=6, with_position_0=False):
    """Sparse predictions like the collator's: sorted distinct positions, padding slots at (0, -100)."""
    positions = torch.zeros(B, P, dtype=torch.long)
    labels = torch.full((B, P), IGNORE_INDEX, dtype=torch.long)
    for b in range(B):
        n = int(torch.randint(0, P + 1, (1,), generator=generator))
        low = 0 if with_position_0 else 1
        positions[b, :n] = (torch.randperm(T - low, generator=generator)[:n] + low).sort().values
        labels[b, :n] = torch.randint(5, 1000, (n,), generator=generator)
    return {
        "input_ids": torch.zeros(B, T, dtype=torch.long),
        "masked_lm_positions": positions,
        "masked_lm_labels": labels,
    }


def test_dense_labels_by_scatter_equal_the_boolean_indexed_ones():
    generator = torch.Generator().manual_seed(0)
    for with_position_0 in (False, True):  # [CLS] is never masked, but a label at 0 is still kept
        for _ in range(20):
            batch = random_batch(generator, with_position_0=with_position_0)
            dense = dense_mlm_labels(batch)
            assert dense.shape == (16, 32) and dense.is_contiguous()
            assert torch.equal(dense, boolean_indexed_mlm_labels(batch))
    batch = Collator(pad_id=PAD, with_sentence_label=True, predictions_per_seq=4)(EXAMPLES)
    assert torch.equal(dense_mlm_labels(batch), boolean_indexed_mlm_labels(batch))


def test_dense_labels_trace_as_one_graph():
    """No data-dependent size: the function traces as one graph without a break (the old one breaks
    at each boolean selection: nonzero's size depends on the data)."""
    batch = random_batch(torch.Generator().manual_seed(1))
    torch._dynamo.reset()
    ours = torch._dynamo.explain(dense_mlm_labels)(batch)
    assert (ours.graph_count, ours.graph_break_count) == (1, 0)
    old = torch._dynamo.explain(boolean_indexed_mlm_labels)(batch)
    assert old.graph_break_count > 0 and "nonzero" in str(old.break_reasons[0].reason)
