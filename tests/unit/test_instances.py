"""create_instances against the original algorithm's invariants (shared/REFERENCE.md section 1)."""

import numpy as np
import pytest

from pipeline.instances import InstanceParams, TokenizedDocument, assemble, create_instances, truncate_seq_pair
from pipeline.tokenization import masking_vocabulary

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]


def pool_of(n_docs=30, seed=0, max_sent=25):
    rng = np.random.default_rng(seed)
    return [
        TokenizedDocument.from_sentences(
            1000 + d, [rng.integers(5, 100, rng.integers(1, max_sent)).tolist() for _ in range(rng.integers(2, 30))]
        )
        for d in range(n_docs)
    ]


@pytest.mark.parametrize("objective", ["nsp", "sop", "none"])
def test_lengths_within_bounds_and_segments_non_empty(objective):
    pool = pool_of()
    params = InstanceParams(64, 0.1, objective)
    vocab = masking_vocabulary(VOCAB)
    for i in range(len(pool)):
        for raw in create_instances(pool, i, params, np.random.default_rng(i)):
            tokens, _, (b_start,) = assemble([raw], vocab)
            assert len(tokens) <= 64 and len(raw.tokens_a) >= 1
            assert tokens[0] == vocab.cls_id and tokens[-1] == vocab.sep_id
            if objective == "none":
                assert len(raw.tokens_b) == 0 and b_start == len(tokens) and raw.label == -1
            else:
                assert len(raw.tokens_b) >= 1 and tokens[b_start - 1] == vocab.sep_id
                assert raw.label in (0, 1)


def test_nsp_random_b_comes_from_another_document_continuation_from_the_same():
    pool = pool_of(40)
    for i, doc in enumerate(pool):
        for raw in create_instances(pool, i, InstanceParams(64, 0.1, "nsp"), np.random.default_rng(i)):
            assert (raw.doc_id_b != doc.doc_id) == (raw.label == 1)


def test_continuation_pairs_are_contiguous_text_of_the_document():
    # Sentences made of consecutive ids: a continuation pair (before truncation) is one run.
    doc = TokenizedDocument.from_sentences(1, [list(range(10 * k + 5, 10 * k + 15)) for k in range(12)])
    other = TokenizedDocument.from_sentences(2, [[99] * 7] * 5)
    for seed in range(30):
        for raw in create_instances([doc, other], 0, InstanceParams(512, 0.0, "nsp"), np.random.default_rng(seed)):
            if raw.label == 0:
                joined = np.concatenate([raw.tokens_a, raw.tokens_b])
                assert np.all(np.diff(joined) == 1)


def test_unused_sentences_are_put_back_after_a_random_b():
    # With max length large, every chunk is the whole rest of the document: after a random B,
    # the sentences after A must start the next instance.
    doc = TokenizedDocument.from_sentences(1, [[10 + k] * 3 for k in range(20)])
    other = TokenizedDocument.from_sentences(2, [[99] * 3] * 5)
    raws = create_instances([doc, other], 0, InstanceParams(30, 0.0, "nsp"), np.random.default_rng(3))
    firsts = [int(r.tokens_a[0]) for r in raws]
    lasts = [int(r.tokens_a[-1]) if r.label == 1 else int(r.tokens_b[-1]) for r in raws]
    # Coverage: A segments start where the previous instance's used text ended (no gaps).
    assert firsts[0] == 10
    for prev_last, first in zip(lasts, firsts[1:]):
        assert first == prev_last + 1


def test_sop_negative_is_the_swapped_pair():
    doc = TokenizedDocument.from_sentences(1, [list(range(10 * k + 5, 10 * k + 15)) for k in range(12)])
    for seed in range(20):
        for raw in create_instances([doc], 0, InstanceParams(200, 0.0, "sop"), np.random.default_rng(seed)):
            order = np.diff(np.concatenate([raw.tokens_a, raw.tokens_b]))
            assert raw.doc_id_b == 1
            if raw.label == 0:
                assert np.all(order == 1)
            else:
                assert raw.tokens_a[0] > raw.tokens_b[-1]


def test_single_document_pool_never_mislabels():
    doc = TokenizedDocument.from_sentences(1, [[10] * 50] * 6)  # single-sentence chunks need a random B
    raws = create_instances([doc], 0, InstanceParams(40, 0.0, "nsp"), np.random.default_rng(0))
    assert all(r.label == 0 for r in raws)


def test_truncate_seq_pair_trims_the_longer_side():
    a, b = np.arange(100), np.arange(100, 130)
    ta, tb = truncate_seq_pair(a, b, 50, np.random.default_rng(0))
    assert len(ta) + len(tb) == 50 and len(tb) == 25 and len(ta) == 25
    # Trimmed only at the ends: the kept part is a contiguous run.
    assert np.all(np.diff(ta) == 1) and np.all(np.diff(tb) == 1)


def _truncate_one_token_at_a_time(a, b, max_num_tokens, rng):
    """The original's loop, literally (REFERENCE section 1, step 5), with the same coins."""
    a, b = list(a), list(b)
    excess = len(a) + len(b) - max_num_tokens
    coins = (rng.random(excess) < 0.5).tolist() if excess > 0 else []
    for front in coins:
        trunc = a if len(a) > len(b) else b
        del trunc[0 if front else -1]
    return a, b


@pytest.mark.parametrize(
    "la,lb,limit",
    [
        (100, 30, 50),
        (30, 100, 50),
        (40, 40, 50),
        (41, 40, 50),
        (40, 41, 50),
        (60, 10, 64),
        (10, 60, 12),
        (5, 5, 9),
        (125, 1, 125),
        (1, 125, 125),
        (3, 7, 10),
        (200, 199, 3),
    ],
)
def test_truncate_seq_pair_equals_the_token_by_token_loop(la, lb, limit):
    for seed in range(20):
        a, b = np.arange(la), np.arange(1000, 1000 + lb)
        ta, tb = truncate_seq_pair(a, b, limit, np.random.default_rng(seed))
        ra, rb = _truncate_one_token_at_a_time(a, b, limit, np.random.default_rng(seed))
        assert ta.tolist() == ra and tb.tolist() == rb


def test_none_objective_keeps_every_token_of_the_document():
    doc = TokenizedDocument.from_sentences(
        1, [list(range(k, k + 30)) for k in range(0, 900, 30)] + [list(range(2000, 2200))]
    )
    raws = create_instances([doc], 0, InstanceParams(64, 0.0, "none"), np.random.default_rng(0))
    assert np.array_equal(np.concatenate([r.tokens_a for r in raws]), doc.ids)
    assert max(len(r.tokens_a) for r in raws) <= 62


def test_tokenized_document_travels_as_uint16_and_comes_back_unchanged():
    import pickle

    small = TokenizedDocument.from_sentences(7, [[1, 2, 3], [65535, 5]])
    data = pickle.dumps(small, protocol=5)
    back = pickle.loads(data)
    assert back.doc_id == 7 and back.ids.dtype == np.int32 and back.bounds.dtype == np.int64
    assert back.ids.tolist() == [1, 2, 3, 65535, 5] and back.bounds.tolist() == [0, 3, 5]
    wide = TokenizedDocument.from_sentences(8, [[1 << 16, 1]] * 100)  # ids past uint16 stay int32
    assert pickle.loads(pickle.dumps(wide)).ids.tolist() == [1 << 16, 1] * 100
    narrow = TokenizedDocument.from_sentences(9, [[1, 2]] * 100)
    assert len(pickle.dumps(narrow)) < len(pickle.dumps(wide)) - 300  # 2 bytes a token, not 4
