"""Static shapes compile once: the model under ``torch.compile(fullgraph=True)`` over batches of one
(B, T, P) shape with different contents (real lengths, real masked slots) compiles once for
training and once for evaluation, with no data-dependent size in the graph (torch 2.13 captures a
boolean selection or nonzero() with fullgraph, as an unbacked size: still a host sync on GPU), and
gives eager's losses and gradients. CPU, tiny config.

Compiled with the ``aot_eager`` backend: dynamo's graph capture and guards (what decides a
recompile) and AOTAutograd's forward/backward graphs, as with inductor, without minutes of C++
compilation on a 2-core machine."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.backends.registry import lookup_backend
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

from training.model import BertConfig, BertForPreTraining

VOCAB = 101
B, T, P = 4, 16, 5
BATCH_CONTENTS = (
    # (real length per row, real masked slots per row): same shapes, different contents
    ((16, 9, 4, 12), (5, 2, 1, 3)),
    ((7, 16, 16, 3), (1, 5, 4, 0)),
    ((11, 2, 8, 16), (3, 0, 2, 5)),
)


def tiny_config(**overrides) -> BertConfig:
    fields = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=T,
    )
    return BertConfig(**{**fields, **overrides})


def static_batch(lengths, real_slots, seed: int, with_nsp: bool) -> dict:
    """A collated (B, T) batch with P masked slots per row, padded with position 0 / label -100."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (B, T), generator=gen)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    token_type_ids = torch.zeros(B, T, dtype=torch.long)
    positions = torch.zeros(B, P, dtype=torch.long)
    labels = torch.full((B, P), -100)
    for b, (n, k) in enumerate(zip(lengths, real_slots)):
        attention_mask[b, :n] = 1
        token_type_ids[b, n // 2 : n] = 1
        positions[b, :k] = torch.randperm(n - 1, generator=gen)[:k].sort().values + 1  # never [CLS]
        labels[b, :k] = torch.randint(1, VOCAB, (k,), generator=gen)
    input_ids[attention_mask == 0] = 0
    batch = dict(
        input_ids=input_ids,
        token_type_ids=token_type_ids,
        attention_mask=attention_mask,
        masked_lm_positions=positions,
        masked_lm_labels=labels,
    )
    if with_nsp:
        batch["next_sentence_label"] = torch.randint(0, 2, (B,), generator=gen)
    return batch


def batches(with_nsp: bool) -> list[dict]:
    return [static_batch(lengths, slots, seed, with_nsp) for seed, (lengths, slots) in enumerate(BATCH_CONTENTS)]


def twin_models(**overrides) -> tuple[BertForPreTraining, BertForPreTraining]:
    torch.manual_seed(0)
    eager = BertForPreTraining(tiny_config(**overrides))
    compiled = BertForPreTraining(tiny_config(**overrides))
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled


@pytest.fixture
def fresh_dynamo():
    """Every compile counted from zero, and a recompile an error (restored afterwards)."""
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        yield
    torch._dynamo.reset()


class GraphRecorder:
    """A torch.compile backend that keeps each graph dynamo captures (one per compile) and runs it
    through aot_eager."""

    def __init__(self):
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs.append(gm)
        return lookup_backend("aot_eager")(gm, example_inputs)

    @property
    def frame_count(self) -> int:
        return len(self.graphs)

    def data_dependent_sizes(self) -> list[str]:
        """Ops whose output size depends on tensor values (unbacked symbols, e.g. nonzero or a
        boolean selection): each is a host sync on GPU and rules out CUDA graphs."""
        return [
            str(node.target)
            for gm in self.graphs
            for node in gm.graph.nodes
            if isinstance(node.meta.get("example_value"), torch.Tensor)
            and free_unbacked_symbols(node.meta["example_value"])
        ]


def compile_in_place(model: BertForPreTraining, **kwargs) -> GraphRecorder:
    recorder = GraphRecorder()
    keys = list(model.state_dict())
    model.compile(fullgraph=True, backend=recorder, **kwargs)  # in place: no `_orig_mod.` prefix
    assert list(model.state_dict()) == keys
    return recorder


@pytest.mark.parametrize("with_nsp", [True, False])
def test_training_step_compiles_once_and_equals_eager(fresh_dynamo, with_nsp):
    eager, compiled = twin_models(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    counter = compile_in_place(compiled)
    eager.train(), compiled.train()
    for batch in batches(with_nsp):
        ours, ref = compiled(**batch), eager(**batch)
        ours.loss.backward()
        ref.loss.backward()
        torch.testing.assert_close(ours.loss, ref.loss, atol=1e-5, rtol=1e-5)
        assert torch.equal(ours.mlm_count, ref.mlm_count) and torch.equal(ours.mlm_correct, ref.mlm_correct)
        assert (ours.nsp_loss is None) == (not with_nsp)
        grads = dict(eager.named_parameters())
        for name, p in compiled.named_parameters():
            # Without an NSP label eager leaves the pooler's grad None, the compiled graph zeros.
            ref_grad = grads[name].grad if grads[name].grad is not None else torch.zeros_like(p)
            torch.testing.assert_close(p.grad, ref_grad, atol=1e-5, rtol=1e-4, msg=name)
        compiled.zero_grad(), eager.zero_grad()
    assert counter.frame_count == 1  # one graph for the three batches (a recompile would have raised)
    assert counter.data_dependent_sizes() == []


def test_training_with_dropout_compiles_once(fresh_dynamo):
    """Dropout in train mode (the RNG is not a guard): still one compile, finite losses and gradients."""
    _, model = twin_models()
    counter = compile_in_place(model)
    model.train()
    for batch in batches(with_nsp=True):
        out = model(**batch)
        out.loss.backward()
        assert torch.isfinite(out.loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert counter.frame_count == 1


@pytest.mark.parametrize("with_nsp", [True, False])
def test_evaluation_compiles_once_and_equals_eager(fresh_dynamo, with_nsp):
    eager, compiled = twin_models()
    counter = compile_in_place(compiled)
    eager.eval(), compiled.eval()
    with torch.no_grad():
        for batch in batches(with_nsp):
            ours, ref = compiled(**batch), eager(**batch)
            torch.testing.assert_close(ours.loss, ref.loss, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ours.mlm_logits, ref.mlm_logits, atol=1e-5, rtol=1e-5)
            assert ours.mlm_logits.shape == (B * P, VOCAB)  # fixed, whatever the number of real slots
            assert torch.equal(ours.mlm_count, ref.mlm_count) and torch.equal(ours.mlm_correct, ref.mlm_correct)
    assert counter.frame_count == 1
    assert counter.data_dependent_sizes() == []


def test_a_recompile_would_be_caught(fresh_dynamo):
    """The checks above can fail: another P is another shape, and error_on_recompile raises."""
    _, model = twin_models()
    compile_in_place(model)
    model.eval()
    batch = batches(with_nsp=True)[0]
    with torch.no_grad():
        model(**batch)
        shorter = dict(batch, masked_lm_positions=batch["masked_lm_positions"][:, :3])
        shorter["masked_lm_labels"] = batch["masked_lm_labels"][:, :3]
        with pytest.raises(Exception, match="[Rr]ecompil"):
            model(**shorter)


# ---------------------------------------------------------------- the unpadded path: N varies per batch


def collator_layout(attention_mask: torch.Tensor) -> dict:
    """unpad_index (N,) and cu_seqlens (B+1,) int32 as the collator computes them on the host."""
    lengths = attention_mask.sum(dim=1).tolist()
    index = [b * T + t for b, n in enumerate(lengths) for t in range(n)]
    cumulative = [0]
    for n in lengths:
        cumulative.append(cumulative[-1] + n)
    return dict(unpad_index=torch.tensor(index), cu_seqlens=torch.tensor(cumulative, dtype=torch.int32))


@pytest.mark.parametrize("training", [True, False])
def test_unpadded_path_compiles_once_with_a_dynamic_token_count(fresh_dynamo, training):
    """N (real tokens) differs in every batch: marked dynamic (the trainer's job, before the call),
    one graph serves them all, with no data-dependent size inside it."""
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    eager = BertForPreTraining(tiny_config(**no_dropout), unpad=True).train(training)
    compiled = BertForPreTraining(tiny_config(**no_dropout), unpad=True).train(training)
    compiled.load_state_dict(eager.state_dict())
    counter = compile_in_place(compiled)
    token_counts = set()
    for batch in batches(with_nsp=True):
        layout = collator_layout(batch["attention_mask"])
        torch._dynamo.mark_dynamic(layout["unpad_index"], 0)
        token_counts.add(len(layout["unpad_index"]))
        with torch.set_grad_enabled(training):
            ours, ref = compiled(**batch, **layout), eager(**batch, **layout)
        torch.testing.assert_close(ours.loss, ref.loss, atol=1e-5, rtol=1e-5)
        if training:
            ours.loss.backward()
    assert len(token_counts) == len(BATCH_CONTENTS)
    assert counter.frame_count == 1
    assert counter.data_dependent_sizes() == []


def test_unpadded_path_without_collator_indices_has_a_data_dependent_size(fresh_dynamo):
    """The check above can fail: computing the layout from the mask (nonzero) puts a
    data-dependent size in the graph, the host sync the collator's indices remove."""
    torch.manual_seed(0)
    model = BertForPreTraining(tiny_config(), unpad=True).eval()
    counter = compile_in_place(model)
    with torch.no_grad():
        model(**batches(with_nsp=True)[0])
    assert "nonzero" in " ".join(counter.data_dependent_sizes())
