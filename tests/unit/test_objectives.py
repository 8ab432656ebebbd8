"""The objective seam (training/objectives): the registry and its refusals, the MLM objective's
statistics summed as the trainer sums them (training/step_statistics.py), and the path from a
collated batch to a step's statistics vector without a host read and compiling once. CPU, tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from test_model_static_shapes import GraphRecorder, fresh_dynamo, tiny_config  # noqa: F401 (a fixture)
from training.config import ConfigError
from training.data import Collator, DataContractError, Example
from training.labels import IGNORE_INDEX
from training.model import BertForPreTraining
from training.objectives import LOSS, create, device_batch
from training.objectives.mlm import MaskedLanguageModeling
from training.step_statistics import HOST_COUNTS, StatisticsLayout, host_count, host_counts

VOCAB, T, P, PAD = 101, 16, 5, 0


def examples(seed: int, lengths=(16, 9, 4, 12), with_pairs: bool = True) -> list[Example]:
    """Random sequences of these lengths, up to P masked positions each (never [CLS] at 0)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(lengths):
        ids = rng.integers(1, VOCAB, n)
        positions = np.sort(rng.choice(np.arange(1, n), size=min(P, n - 1, 1 + i), replace=False)).astype(np.int64)
        label = int(rng.integers(0, 2)) if with_pairs else -1
        out.append(
            Example(ids, n // 2 if with_pairs else n, positions, rng.integers(1, VOCAB, len(positions)), label, i)
        )
    return out


def collated(seed: int, with_pairs: bool = True, **kwargs) -> dict[str, torch.Tensor]:
    collate = Collator(pad_id=PAD, with_sentence_label=with_pairs, predictions_per_seq=P, pad_to_length=T)
    return collate(examples(seed, with_pairs=with_pairs, **kwargs))


def tiny_model(with_pairs: bool) -> BertForPreTraining:
    torch.manual_seed(0)
    return BertForPreTraining(tiny_config(with_nsp_head=with_pairs)).eval()


# --- the registry -------------------------------------------------------------------------------


def test_mlm_reports_the_sentence_statistics_only_for_shards_with_pairs():
    for task in ("nsp", "sop"):
        assert create("mlm", task).statistics == ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy")
    assert create("mlm", "none").statistics == ("mlm_loss", "mlm_accuracy")


def test_an_unknown_objective_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown objective 'bert2'.*\['electra', 'mlm'"):
        create("bert2", "nsp")


class PairlessMLM(MaskedLanguageModeling):
    """An objective that trains on shards without sentence pairs only, as ELECTRA's may."""

    name = "pairless"
    sentence_pairs = ("none",)


def test_shards_of_a_sentence_pair_task_the_objective_does_not_train_on_are_refused():
    with pytest.raises(DataContractError, match="objective pairless trains on shards whose sentence-pair task is none"):
        PairlessMLM("nsp")
    with pytest.raises(DataContractError, match="rebuild them with the data job's instances=none"):
        PairlessMLM("sop")
    assert PairlessMLM("none").statistics == ("mlm_loss", "mlm_accuracy")


def test_build_refuses_a_model_whose_sentence_head_disagrees_with_the_shards():
    with pytest.raises(ValueError, match="with_nsp_head=True does not match the shards' sentence-pair task 'none'"):
        create("mlm", "none").build(tiny_config(with_nsp_head=True), unpad=False)
    assert create("mlm", "nsp").build(tiny_config(with_nsp_head=True), unpad=False).cls.seq_relationship is not None


# --- statistics as the trainer sums them ---------------------------------------------------------


def step_statistics(objective, model, batches) -> tuple[StatisticsLayout, torch.Tensor]:
    """What the trainer does for one step: each micro batch's device row, summed, then the host counts."""
    layout = StatisticsLayout(objective.statistics)
    on_device, on_host = layout.zeros(torch.device("cpu")), torch.zeros(len(HOST_COUNTS), dtype=torch.float64)
    for batch in batches:
        loss, stats = objective.loss(model, device_batch(batch, objective.batch_keys, torch.device("cpu")))
        on_device += layout.device_row(loss, stats)
        on_host += host_counts(batch)
    return layout, torch.cat([on_device, on_host])


@pytest.mark.parametrize("sparse_head", [True, False])
def test_mlm_statistics_are_means_over_every_predicted_token_and_sequence(sparse_head):
    """Over two micro batches with different numbers of masked tokens: mlm_loss and accuracy over
    all their tokens together, nsp over all sequences, loss the mean of the two backpropagated losses."""
    model, objective = tiny_model(True), create("mlm", "nsp", sparse_head=sparse_head)
    batches = [collated(1), collated(2, lengths=(5, 16, 16, 3))]
    layout, totals = step_statistics(objective, model, batches)
    summary = layout.summarise(totals)
    assert list(summary) == [LOSS, "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"]

    with torch.no_grad():
        outs = [model(**{k: v for k, v in b.items() if k in objective.batch_keys}) for b in batches]
        logits = torch.cat([o.mlm_logits for o in outs])  # (2*B*P, V): sparse head, padding slots included
        labels = torch.cat([b["masked_lm_labels"].reshape(-1) for b in batches])
        nsp_logits = torch.cat([o.nsp_logits for o in outs])
        nsp_labels = torch.cat([b["next_sentence_label"] for b in batches])
    predicted = labels != IGNORE_INDEX
    assert outs[0].mlm_count != outs[1].mlm_count  # else token- and batch-weighting would agree
    assert summary["mlm_loss"] == pytest.approx(F.cross_entropy(logits[predicted], labels[predicted]).item(), rel=1e-6)
    hits = (logits[predicted].argmax(-1) == labels[predicted]).double().mean().item()
    assert summary["mlm_accuracy"] == pytest.approx(hits, rel=1e-12)
    assert summary["nsp_loss"] == pytest.approx(F.cross_entropy(nsp_logits, nsp_labels).item(), rel=1e-6)
    assert summary[LOSS] == pytest.approx(float(sum(o.loss for o in outs)) / 2, rel=1e-6)
    assert host_count(totals, layout, "predictions") == int(predicted.sum())
    assert host_count(totals, layout, "tokens") == sum(int(b["attention_mask"].sum()) for b in batches)
    assert host_count(totals, layout, "samples") == 8


def test_a_non_finite_loss_adds_nothing_and_an_empty_sum_reports_nothing():
    layout = StatisticsLayout(("mlm_loss", "mlm_accuracy"))
    count = torch.tensor(7)
    stats = {"mlm_loss": (torch.tensor(14.0, dtype=torch.float64), count), "mlm_accuracy": (torch.tensor(3), count)}
    bad = layout.device_row(torch.tensor(float("nan")), stats)
    assert torch.equal(bad, torch.zeros(layout.size, dtype=torch.float64))
    assert layout.summarise(bad) == {}
    good = layout.device_row(torch.tensor(2.5), stats)
    assert layout.summarise(good + bad) == {LOSS: 2.5, "mlm_loss": 2.0, "mlm_accuracy": 3 / 7}
    no_tokens = {"mlm_loss": (torch.tensor(0.0), torch.tensor(0)), "mlm_accuracy": (torch.tensor(0), torch.tensor(0))}
    assert layout.summarise(layout.device_row(torch.tensor(1.0), no_tokens)) == {LOSS: 1.0}


def test_statistics_other_than_the_declared_ones_are_refused():
    layout = StatisticsLayout(("mlm_loss",))
    with pytest.raises(ValueError, match=r"returned statistics \['mlm_los'\], it declared \['mlm_loss'\]"):
        layout.device_row(torch.tensor(1.0), {"mlm_los": (torch.tensor(1.0), torch.tensor(1))})


# --- no host read, one compile --------------------------------------------------------------------


class HostReads(TorchDispatchMode):
    """Records every op whose result the host must wait for on a GPU (tests/sync_probe.py's list)."""

    READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default}

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.READS or func is torch.ops.aten.masked_select.default:
            self.seen.append(str(func))
        elif func is torch.ops.aten.index.Tensor and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]
        ):
            self.seen.append("boolean-mask indexing")
        return func(*args, **(kwargs or {}))


def objective_and_net(name: str, task: str, sparse_head: bool = True):
    """A registered objective for ``task`` shards and the tiny network it builds (train mode)."""
    objective = create(name, task, sparse_head=sparse_head)
    torch.manual_seed(0)
    return objective, objective.build(tiny_config(with_nsp_head=task != "none"), unpad=False).train()


@pytest.mark.parametrize(
    "name, task, sparse_head",
    [
        ("mlm", "nsp", True),
        ("mlm", "nsp", False),
        ("mlm", "none", True),
        ("mlm", "none", False),
        ("electra", "none", True),
    ],
)
def test_a_training_micro_batch_reads_nothing_on_the_host(name, task, sparse_head):
    with_pairs = task != "none"
    objective, model = objective_and_net(name, task, sparse_head)
    layout = StatisticsLayout(objective.statistics)
    batch = collated(3, with_pairs=with_pairs)
    with HostReads() as reads:
        loss, stats = objective.loss(model, device_batch(batch, objective.batch_keys, torch.device("cpu")))
        row = layout.device_row(loss, stats)
        loss.backward()
    assert reads.seen == []
    assert row.shape == (layout.size,) and row.dtype == torch.float64


@pytest.mark.parametrize("name, task", [("mlm", "nsp"), ("electra", "none")])
def test_the_objective_step_compiles_once_over_batches_of_one_shape(fresh_dynamo, name, task):  # noqa: F811
    """The model's loss and the statistics row under fullgraph: one graph for three batches of
    different contents, no data-dependent size (a recompile would raise)."""
    objective, model = objective_and_net(name, task)
    layout = StatisticsLayout(objective.statistics)
    recorder = GraphRecorder()

    @torch.compile(fullgraph=True, backend=recorder, dynamic=False)
    def micro_batch(batch):
        loss, stats = objective.loss(model, batch)
        return loss, layout.device_row(loss, stats)

    for seed, lengths in enumerate([(16, 9, 4, 12), (7, 16, 16, 3), (11, 2, 8, 16)]):
        loss, row = micro_batch(
            device_batch(
                collated(seed, with_pairs=task != "none", lengths=lengths), objective.batch_keys, torch.device("cpu")
            )
        )
        loss.backward()
        assert torch.isfinite(row).all()
    assert recorder.frame_count == 1
    assert recorder.data_dependent_sizes() == []


def test_device_batch_moves_the_objectives_keys_and_drops_the_mask_without_padding():
    objective = create("mlm", "nsp")
    padded = collated(4, lengths=(16, 9, 4, 12))
    moved = device_batch(padded, objective.batch_keys, torch.device("cpu"))
    assert set(moved) == set(objective.batch_keys) & set(padded) and "example_id" not in moved
    assert "attention_mask" in moved
    full = collated(4, lengths=(16, 16, 16, 16))
    assert "attention_mask" not in device_batch(full, objective.batch_keys, torch.device("cpu"))


def test_electra_trains_on_shards_without_sentence_pairs_and_reports_both_networks():
    from training.objectives.electra import STAT_NAMES, ElectraConfig

    assert create("electra", "none").statistics == STAT_NAMES
    assert create("electra", "none").settings == ElectraConfig()
    for task in ("nsp", "sop"):
        with pytest.raises(DataContractError, match="instances=none"):
            create("electra", task)
    objective, net = objective_and_net("electra", "none")
    layout = StatisticsLayout(objective.statistics)
    batch = device_batch(collated(5, with_pairs=False), objective.batch_keys, torch.device("cpu"))
    loss, stats = objective.loss(net, batch)
    totals = layout.summarise(layout.device_row(loss, stats))
    assert set(totals) >= {"loss", "mlm_loss", "rtd_loss", "rtd_accuracy"} and np.isfinite(totals["loss"])
    assert 0.0 <= totals["rtd_accuracy"] <= 1.0
    assert objective.flops_per_token(tiny_config(with_nsp_head=False), 16, 0.3) > 0


# --- the modern architecture (training.models: model.architecture=modern) under the same checks ---------


def modern_objective_and_net(unpad: bool):
    """MLM on shards without sentence pairs, and a tiny ModernBERT-style network (train mode):
    3 layers, the middle two local with a window of 8 of the 16 tokens, so both routes run."""
    from training.models.modern import ModernConfig

    cfg = ModernConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=48,
        local_attention=8,
        pad_token_id=PAD,
    )
    objective = create("mlm", "none")
    torch.manual_seed(0)
    return objective, objective.build(cfg, unpad=unpad).train()


def modern_batch(seed: int, unpad: bool, lengths=(16, 9, 4, 12)) -> dict[str, torch.Tensor]:
    """A device batch as the trainer gives it; unpadded, the collator's layout with N marked dynamic."""
    collate = Collator(pad_id=PAD, with_sentence_label=False, predictions_per_seq=P, pad_to_length=T, unpad=unpad)
    batch = device_batch(collate(examples(seed, with_pairs=False, lengths=lengths)), MLM_KEYS, torch.device("cpu"))
    if unpad:
        torch._dynamo.mark_dynamic(batch["unpad_index"], 0)  # N differs per batch
    return batch


MLM_KEYS = create("mlm", "none").batch_keys


@pytest.mark.parametrize("unpad", [False, True])
def test_a_modern_training_micro_batch_reads_nothing_on_the_host(unpad):
    objective, model = modern_objective_and_net(unpad)
    layout = StatisticsLayout(objective.statistics)
    batch = modern_batch(3, unpad)
    with HostReads() as reads:
        loss, stats = objective.loss(model, batch)
        row = layout.device_row(loss, stats)
        loss.backward()
    assert reads.seen == []
    assert row.shape == (layout.size,) and torch.isfinite(row).all()


@pytest.mark.parametrize("unpad", [False, True])
def test_the_modern_mlm_step_compiles_once_padded_and_unpadded(fresh_dynamo, unpad):  # noqa: F811
    objective, model = modern_objective_and_net(unpad)
    layout = StatisticsLayout(objective.statistics)
    recorder = GraphRecorder()

    @torch.compile(fullgraph=True, backend=recorder, dynamic=False)
    def micro_batch(batch):
        loss, stats = objective.loss(model, batch)
        return loss, layout.device_row(loss, stats)

    for seed, lengths in enumerate([(16, 9, 4, 12), (7, 16, 16, 3), (11, 2, 8, 16)]):
        loss, row = micro_batch(modern_batch(seed, unpad, lengths))
        loss.backward()
        assert torch.isfinite(row).all()
    assert recorder.frame_count == 1
    assert recorder.data_dependent_sizes() == []
