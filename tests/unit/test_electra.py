"""ELECTRA (training/objectives/electra.py): both networks against transformers' ElectraForPreTraining
and ElectraForMaskedLM on the same weights, the shared embeddings, the corrupted input and its labels,
the loss and the statistics by hand, sampling, one compile with fixed shapes, FLOPs from the modules,
and the export read by transformers' Auto classes and back. CPU, tiny configs.

Parity (fp32, a padded batch, real positions compared; printed by the parity tests under ``-s``),
max |ours - transformers| on torch 2.13 CPU with transformers 5.24, asserted below 1e-5:

    transformers attention   discriminator logits   generator logits (dense and sparse head)
    sdpa                     0                      0
    eager                    <= 1.7e-7              <= 6.0e-7
    (the same with E = H and E < H, padded and unpadded)"""

from __future__ import annotations

import math
import os

import pytest
import torch
import transformers

from pipeline import contract
from pipeline.tokenization import build_tokenizer, vocab_sha256
from test_model import randomize
from test_model_static_shapes import GraphRecorder
from training import model as bert
from training.config import ConfigError
from training.export import ExportError
from training.hf_checkpoint import CheckpointError
from training.models import preset_fields
from training.objectives.electra import (
    DISCRIMINATOR_DIR,
    GENERATOR_DIR,
    STAT_NAMES,
    ElectraConfig,
    ElectraPreTraining,
    detection_loss_and_stats,
    discriminator_hf_state_dict,
    flops_per_token,
    generator_config,
    generator_hf_state_dict,
    hf_config_dict,
    load_hf,
    replace_tokens,
    sample_replacements,
    save_hf,
)

WORDS = "the cat dog sat on a mat and ran to house tree bird river town old new stone rain".split()
VOCAB = [*contract.SpecialTokens.NAMES.values(), *WORDS, *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
V = len(VOCAB)
B, T, P = 3, 12, 4
LENGTHS = (12, 9, 5)  # real tokens per row; the rest is padding
TOLERANCE = 1e-5


def disc_config(**overrides) -> bert.BertConfig:
    fields = dict(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return bert.BertConfig(**{**fields, **overrides})


def electra_model(embedding_size=None, unpad=False, seed=0, **electra_fields) -> ElectraPreTraining:
    torch.manual_seed(seed)
    cfg = ElectraConfig(generator_size_fraction=0.5, embedding_size=embedding_size, **electra_fields)
    return ElectraPreTraining(disc_config(), cfg, unpad=unpad)


def make_batch(seed: int = 0, lengths=LENGTHS) -> dict:
    """A collated MLM batch: (B, T) with padding, P slots per row (real slots never [CLS]); padding
    slots at position 0 with label -100; the input holds [MASK] at the real slots."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, V, (B, T), generator=gen)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    token_type_ids = torch.zeros(B, T, dtype=torch.long)
    positions = torch.zeros(B, P, dtype=torch.long)
    labels = torch.full((B, P), -100)
    for b, n in enumerate(lengths):
        attention_mask[b, :n] = 1
        token_type_ids[b, n // 2 : n] = 1
        k = min(P, n // 3)
        positions[b, :k] = torch.randperm(n - 1, generator=gen)[:k].sort().values + 1
        labels[b, :k] = input_ids[b, positions[b, :k]]
        input_ids[b, positions[b, :k]] = VOCAB.index("[MASK]")
    input_ids[attention_mask == 0] = 0
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=token_type_ids,
        masked_lm_positions=positions,
        masked_lm_labels=labels,
    )


def network_inputs(batch: dict) -> dict:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def ratio(stats, name) -> float:
    numerator, denominator = stats[name]
    return numerator.item() / denominator.item()


# ------------------------------------------------------------------ configuration


def test_generator_is_a_fraction_of_the_discriminator_as_in_the_paper():
    base = bert.BertConfig(vocab_size=V, **preset_fields("base"))
    gen = generator_config(base, ElectraConfig(generator_size_fraction=1 / 3))
    assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size) == (256, 4, 1024)  # ELECTRA-Base
    assert gen.num_hidden_layers == base.num_hidden_layers
    small = bert.BertConfig(
        vocab_size=V, hidden_size=256, num_hidden_layers=12, num_attention_heads=4, intermediate_size=1024
    )
    gen = generator_config(small, ElectraConfig())  # 1/4, ELECTRA-Small
    assert (gen.hidden_size, gen.num_attention_heads, gen.intermediate_size) == (64, 1, 256)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(generator_size_fraction=0.0), "generator_size_fraction"),
        (dict(generator_size_fraction=1.5), "generator_size_fraction"),
        (dict(discriminator_weight=0.0), "discriminator_weight"),
        (dict(temperature=0.0), "temperature"),
        (dict(embedding_size=0), "embedding_size"),
    ],
)
def test_config_rejects_what_cannot_run(fields, message):
    with pytest.raises(ConfigError, match=message):
        ElectraConfig(**fields)


def test_a_fraction_that_splits_heads_unevenly_is_a_config_error():
    with pytest.raises(ConfigError, match="multiple of the heads"):
        ElectraPreTraining(disc_config(), ElectraConfig(generator_size_fraction=0.6))  # hidden 19, 2 heads


# ------------------------------------------------------------------ parity with transformers


def hf_twin(model: ElectraPreTraining, network: str, attn_implementation: str):
    cfg = transformers.ElectraConfig(**hf_config_dict(model, network), attn_implementation=attn_implementation)
    if network == DISCRIMINATOR_DIR:
        twin, state_dict = transformers.ElectraForPreTraining(cfg), discriminator_hf_state_dict(model)
    else:
        twin, state_dict = transformers.ElectraForMaskedLM(cfg), generator_hf_state_dict(model)
    twin.load_state_dict(state_dict, strict=True)
    return twin.eval()


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("unpad", [False, True])
@pytest.mark.parametrize("embedding_size", [None, 16])
def test_both_networks_match_transformers(embedding_size, unpad, attn_implementation):
    """E = H (32): the generator (16 wide) has embeddings_project; E = 16: the discriminator has it."""
    model = electra_model(embedding_size, unpad).eval()
    randomize(model)
    batch = make_batch()
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        ours_disc = model.discriminator(**network_inputs(batch))
        ours_gen = model.generator(**network_inputs(batch))  # (B, T, V)
        ours_sparse = model.generator(**network_inputs(batch), masked_lm_positions=batch["masked_lm_positions"])
        ref_disc = hf_twin(model, DISCRIMINATOR_DIR, attn_implementation)(**network_inputs(batch)).logits
        ref_gen = hf_twin(model, GENERATOR_DIR, attn_implementation)(**network_inputs(batch)).logits
    assert ours_disc.shape == (B, T) and ours_gen.shape == (B, T, V) and ours_sparse.shape == (B * P, V)
    disc_diff = (ours_disc - ref_disc)[real].abs().max().item()
    gen_diff = (ours_gen - ref_gen)[real].abs().max().item()
    rows = (batch["masked_lm_positions"] + T * torch.arange(B)[:, None]).reshape(-1)
    sparse_diff = (ours_sparse - ref_gen.reshape(B * T, V)[rows]).abs().max().item()
    print(
        f"\nparity E={embedding_size} unpad={unpad} {attn_implementation}: discriminator {disc_diff:.2e}, "
        f"generator {gen_diff:.2e}, generator sparse head {sparse_diff:.2e}"
    )
    assert ref_disc.abs().max() > 0.1 and ref_gen.abs().max() > 0.1  # not a comparison of zeros
    assert disc_diff < TOLERANCE and gen_diff < TOLERANCE and sparse_diff < TOLERANCE


def test_state_dicts_have_exactly_transformers_keys():
    model = electra_model(embedding_size=16)
    for network, cls in ((DISCRIMINATOR_DIR, "ElectraForPreTraining"), (GENERATOR_DIR, "ElectraForMaskedLM")):
        cfg = transformers.ElectraConfig(**hf_config_dict(model, network))
        theirs = getattr(transformers, cls)(cfg).state_dict()
        ours = discriminator_hf_state_dict(model) if network == DISCRIMINATOR_DIR else generator_hf_state_dict(model)
        assert sorted(ours) == sorted(theirs)
        assert all(ours[k].shape == theirs[k].shape for k in ours)


# ------------------------------------------------------------------ shared embeddings


def test_embeddings_are_one_module_and_a_step_moves_both_networks():
    model = electra_model(embedding_size=16)
    gen_view, disc_view = model.generator.electra.embeddings, model.discriminator.electra.embeddings
    assert gen_view is disc_view
    assert model.generator.generator_lm_head.weight is disc_view.word_embeddings.weight
    shared = {id(p) for p in disc_view.parameters()}
    # one set of parameters: the generator's and discriminator's own, plus the embeddings once
    assert len(list(model.parameters())) == len(
        {id(p) for p in model.generator.parameters()} | {id(p) for p in model.discriminator.parameters()}
    )
    assert shared <= {id(p) for p in model.generator.parameters()}

    batch = make_batch()
    for network, inputs in (
        (model.generator, dict(network_inputs(batch), masked_lm_positions=batch["masked_lm_positions"])),
        (model.discriminator, network_inputs(batch)),
    ):
        model.zero_grad()
        network(**inputs).float().pow(2).mean().backward()
        assert disc_view.word_embeddings.weight.grad.abs().sum() > 0  # each network's loss reaches the table
        assert disc_view.position_embeddings.weight.grad.abs().sum() > 0

    before_gen = gen_view.word_embeddings.weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.zero_grad()
    loss, _ = model(**batch)
    loss.backward()
    optimizer.step()
    after = model.generator.electra.embeddings.word_embeddings.weight
    assert not torch.equal(after, before_gen)
    assert torch.equal(after, model.discriminator.electra.embeddings.word_embeddings.weight)
    assert torch.equal(after, model.generator.generator_lm_head.weight)


# ------------------------------------------------------------------ corrupted input and labels


def test_replaced_is_exactly_where_the_corrupted_input_differs_from_the_original():
    input_ids = torch.tensor([[2, 4, 4, 7, 9, 3], [2, 4, 8, 3, 0, 0]])  # 4 = [MASK]
    positions = torch.tensor([[1, 2, 0], [1, 0, 0]])  # row 0: two real slots; padding slots at 0
    labels = torch.tensor([[5, 6, -100], [8, -100, -100]])
    sampled = torch.tensor([[5, 11, 12], [13, 14, 15]])  # slot (0, 0) samples the original
    corrupted, replaced = replace_tokens(input_ids, positions, labels, sampled)
    assert corrupted.tolist() == [[2, 5, 11, 7, 9, 3], [2, 13, 8, 3, 0, 0]]  # position 0 untouched by padding slots
    assert replaced.tolist() == [
        [False, False, True, False, False, False],
        [False, True, False, False, False, False],
    ]


def test_replace_tokens_on_random_batches_against_a_loop():
    for seed in range(5):
        batch = make_batch(seed)
        gen = torch.Generator().manual_seed(100 + seed)
        sampled = torch.randint(5, 9, (B, P), generator=gen)  # few ids: many samples equal the original
        corrupted, replaced = replace_tokens(
            batch["input_ids"], batch["masked_lm_positions"], batch["masked_lm_labels"], sampled
        )
        original = batch["input_ids"].clone()
        expected_input = batch["input_ids"].clone()
        for b in range(B):
            for p in range(P):
                if batch["masked_lm_labels"][b, p] != -100:
                    original[b, batch["masked_lm_positions"][b, p]] = batch["masked_lm_labels"][b, p]
                    expected_input[b, batch["masked_lm_positions"][b, p]] = sampled[b, p]
        assert torch.equal(corrupted, expected_input)
        assert torch.equal(replaced, expected_input != original)


def test_a_sampler_sure_of_the_original_replaces_nothing():
    labels = torch.tensor([3, 17, 8, 20])
    logits = torch.nn.functional.one_hot(labels, V).float() * 1e4
    assert torch.equal(sample_replacements(logits), labels)


def force_generator(model: ElectraPreTraining, token: int) -> None:
    """Every sample becomes ``token`` (its output bias dwarfs every other logit)."""
    with torch.no_grad():
        model.generator.generator_lm_head.bias.fill_(-1e4)
        model.generator.generator_lm_head.bias[token] = 1e4


def force_discriminator(model: ElectraPreTraining, call_replaced: bool) -> None:
    with torch.no_grad():
        model.discriminator.discriminator_predictions.dense_prediction.bias.fill_(1e4 if call_replaced else -1e4)


def test_a_generator_that_predicts_the_original_leaves_nothing_replaced():
    model = electra_model().eval()
    batch = make_batch()
    token = VOCAB.index("cat")
    labels = batch["masked_lm_labels"]
    batch["masked_lm_labels"] = torch.where(labels == -100, labels, token)  # the original is `token` everywhere
    force_generator(model, token)
    _, stats = model(**batch)
    assert stats["replaced_fraction"][0].item() == 0
    assert stats["replaced_recall"][1].item() == 0
    assert stats["mlm_accuracy"][0].item() == stats["mlm_accuracy"][1].item() == (labels != -100).sum().item()


def test_stats_by_hand_with_known_replacements_and_calls():
    """The generator always samples `cat`; the slots whose original is `cat` stay original. Then a
    discriminator that calls everything replaced, and one that calls nothing."""
    batch = make_batch(seed=3)
    token = VOCAB.index("cat")
    labels = batch["masked_lm_labels"]
    labels[0, 0] = token  # one real slot whose original is the sample
    real_slots = (labels != -100).sum().item()
    n_replaced = ((labels != -100) & (labels != token)).sum().item()
    n_real = sum(LENGTHS)
    assert 0 < n_replaced < real_slots
    for call_replaced in (True, False):
        model = electra_model().eval()
        force_generator(model, token)
        force_discriminator(model, call_replaced)
        _, stats = model(**batch)
        assert set(stats) == set(STAT_NAMES)
        as_numbers = {name: (num.item(), den.item()) for name, (num, den) in stats.items()}
        assert as_numbers["replaced_fraction"] == (n_replaced, n_real)
        assert as_numbers["mlm_accuracy"] == (1, real_slots)  # only the `cat` slot is predicted right
        if call_replaced:
            assert as_numbers["replaced_recall"] == (n_replaced, n_replaced)
            assert as_numbers["original_accuracy"] == (0, n_real - n_replaced)
            assert as_numbers["rtd_accuracy"] == (n_replaced, n_real)
        else:
            assert as_numbers["replaced_recall"] == (0, n_replaced)
            assert as_numbers["original_accuracy"] == (n_real - n_replaced, n_real - n_replaced)
            assert as_numbers["rtd_accuracy"] == (n_real - n_replaced, n_real)
        # a logit of ±1e4 on each token: BCE 1e4 on the wrongly called tokens, 0 on the others
        wrong = (n_real - n_replaced) if call_replaced else n_replaced
        assert ratio(stats, "rtd_loss") == pytest.approx(1e4 * wrong / n_real, rel=1e-4)


def test_detection_stats_on_a_hand_made_example():
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0], [-0.5, 1.0, 4.0, 0.0]])
    replaced = torch.tensor([[True, False, False, True], [False, True, True, False]])
    real = torch.tensor([[True, True, True, True], [True, True, False, False]])
    loss, stats = detection_loss_and_stats(logits, replaced, real)
    # called replaced (logit > 0): (0,0) yes/replaced, (0,1) no/original, (0,2) yes/original,
    # (0,3) no/replaced, (1,0) no/original, (1,1) yes/replaced; row 1's last two are padding
    as_numbers = {name: (num.item(), den.item()) for name, (num, den) in stats.items()}
    assert as_numbers["rtd_accuracy"] == (4, 6)
    assert as_numbers["replaced_recall"] == (2, 3)
    assert as_numbers["original_accuracy"] == (2, 3)
    assert as_numbers["replaced_fraction"] == (3, 6)

    def bce(x, y):
        return math.log1p(math.exp(-x)) if y else math.log1p(math.exp(x))

    by_hand = sum(bce(x, y) for x, y in [(2.0, 1), (-1.0, 0), (0.5, 0), (-3.0, 1), (-0.5, 0), (1.0, 1)]) / 6
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    assert as_numbers["rtd_loss"][0] == pytest.approx(6 * by_hand, rel=1e-6)
    assert loss.dtype == torch.float32


def test_loss_is_generator_mlm_plus_weighted_discriminator_bce():
    batch = make_batch()
    losses = {}
    for weight in (50.0, 1.0):
        model = electra_model(discriminator_weight=weight).eval()
        torch.manual_seed(7)
        loss, stats = model(**batch)
        assert loss.item() == pytest.approx(ratio(stats, "mlm_loss") + weight * ratio(stats, "rtd_loss"), rel=1e-5)
        losses[weight] = (loss.item(), ratio(stats, "rtd_loss"))
    (loss_50, rtd), (loss_1, rtd_again) = losses[50.0], losses[1.0]
    assert rtd == pytest.approx(rtd_again, rel=1e-6)  # same weights and noise: the same corrupted batch
    assert loss_50 - loss_1 == pytest.approx(49 * rtd, rel=1e-4)


def test_generator_gets_no_gradient_through_the_samples():
    """The samples are detached: the generator's own weights get the same gradient whatever the
    discriminator's weight (only the shared embeddings see the discriminator's loss); the
    discriminator's gradient scales with it."""
    grads = {}
    batch = make_batch()
    for weight in (50.0, 5.0):
        model = electra_model(discriminator_weight=weight)
        torch.manual_seed(3)
        loss, stats = model(**batch)
        loss.backward()
        assert all(not t.requires_grad for pair in stats.values() for t in pair)
        grads[weight] = {name: p.grad.clone() for name, p in model.named_parameters()}
    generator_own = [n for n in grads[50.0] if n.startswith("generator.") and ".embeddings." not in n]
    discriminator_own = [n for n in grads[50.0] if n.startswith("discriminator.") and ".embeddings." not in n]
    assert generator_own and discriminator_own
    for name in generator_own:
        torch.testing.assert_close(grads[50.0][name], grads[5.0][name], atol=1e-6, rtol=1e-5, msg=name)
    for name in discriminator_own:
        torch.testing.assert_close(grads[50.0][name], 10 * grads[5.0][name], atol=1e-6, rtol=1e-4, msg=name)


def test_samples_follow_the_softmax_at_the_temperature():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    rows = 40_000
    torch.manual_seed(0)
    for temperature in (1.0, 0.5):
        sampled = sample_replacements(logits.expand(rows, -1), temperature)
        frequencies = torch.bincount(sampled, minlength=5).float() / rows
        torch.testing.assert_close(frequencies, torch.softmax(logits / temperature, dim=0), atol=0.01, rtol=0)


# ------------------------------------------------------------------ compile with fixed shapes


def test_training_step_compiles_once_with_fullgraph_and_equals_eager():
    torch._dynamo.reset()
    eager = electra_model()
    compiled = electra_model()
    compiled.load_state_dict(eager.state_dict())
    recorder = GraphRecorder()
    compiled.compile(fullgraph=True, backend=recorder)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed, lengths in enumerate([LENGTHS, (5, 12, 7), (8, 8, 12)]):
            batch = make_batch(seed, lengths)
            torch.manual_seed(seed)
            ours, ours_stats = compiled(**batch)
            torch.manual_seed(seed)
            ref, ref_stats = eager(**batch)
            ours.backward(), ref.backward()
            torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
            for name in STAT_NAMES:
                torch.testing.assert_close(ours_stats[name], ref_stats[name], atol=1e-4, rtol=1e-5)
            grads = dict(eager.named_parameters())
            for name, p in compiled.named_parameters():
                torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)
            compiled.zero_grad(), eager.zero_grad()
    assert recorder.frame_count == 1
    assert recorder.data_dependent_sizes() == []
    torch._dynamo.reset()


# ------------------------------------------------------------------ FLOPs


def test_flops_count_every_matmul_weight_of_both_networks():
    """6 FLOPs per weight per token touched, from the modules themselves: the generator's head on a
    fraction f of tokens, everything else on every token, plus 12·s·h·L attention per network."""
    seq_len, fraction = 12, 0.25
    model = electra_model(embedding_size=16)  # the discriminator has embeddings_project
    head = {model.generator.generator_predictions.dense, model.generator.generator_lm_head}
    weights = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            weights += module.weight.numel() * (fraction if module in head else 1.0)
    attention = sum(
        12.0 * seq_len * c.hidden_size * c.num_hidden_layers for c in (model.config, model.generator_config)
    )
    expected = 6.0 * weights + attention
    assert flops_per_token(model.config, model.electra_config, seq_len, fraction) == pytest.approx(expected)
    assert flops_per_token(model.config, model.electra_config, seq_len) > expected  # dense head: more


# ------------------------------------------------------------------ export


@pytest.fixture
def data_dir(tmp_path):
    """A data directory as far as the export reads it: manifest.json and vocab.txt (no shards)."""
    path = tmp_path / "shards"
    path.mkdir()
    (path / contract.VOCAB_FILE).write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    manifest = contract.ShardManifest(
        schema_version=contract.SCHEMA_VERSION,
        vocab_file=contract.VOCAB_FILE,
        vocab_sha256=vocab_sha256(VOCAB),
        vocab_size=V,
        lowercase=True,
        special_tokens=vars(contract.SpecialTokens.from_vocab(VOCAB)),
        max_seq_length=16,
        objective="none",
        masking=contract.MaskingSpec("dynamic", 0.15, P, False, 1),
        seed=1,
        shards=[],
    )
    (path / contract.MANIFEST_FILE).write_text(manifest.to_json(), encoding="utf-8")
    return str(path)


def test_export_loads_in_transformers_auto_classes_with_strict_keys_and_round_trips(tmp_path, data_dir):
    model = electra_model(embedding_size=16).eval()
    randomize(model)
    out = save_hf(model, str(tmp_path / "hf"), data_dir)
    batch = make_batch()
    real = batch["attention_mask"].bool()
    auto = {
        DISCRIMINATOR_DIR: (transformers.AutoModelForPreTraining, "ElectraForPreTraining", model.discriminator),
        GENERATOR_DIR: (transformers.AutoModelForMaskedLM, "ElectraForMaskedLM", model.generator),
    }
    for network, (auto_class, class_name, ours) in auto.items():
        directory = os.path.join(out, network)
        loaded, info = auto_class.from_pretrained(directory, output_loading_info=True)
        assert type(loaded).__name__ == class_name
        assert {k: v for k, v in info.items() if v} == {}  # no missing, unexpected or mismatched keys
        with torch.no_grad():
            diff = (loaded.eval()(**network_inputs(batch)).logits - ours(**network_inputs(batch)))[real]
        assert diff.abs().max().item() < TOLERANCE
        tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
        text = "The cat sat on a mat"
        expected = build_tokenizer(VOCAB, lowercase=True).encode(text).ids
        assert tokenizer(text)["input_ids"] == expected
        assert len(expected) > 3 and VOCAB.index("[UNK]") not in expected

    fresh = electra_model(embedding_size=16, seed=1)
    assert not torch.equal(fresh.embeddings.word_embeddings.weight, model.embeddings.word_embeddings.weight)
    load_hf(fresh, out)
    for (name, theirs), (other, ours) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert name == other and torch.equal(theirs, ours), name
    assert fresh.generator.generator_lm_head.weight is fresh.embeddings.word_embeddings.weight  # still tied


def test_load_hf_refuses_another_architecture_or_unshared_embeddings(tmp_path, data_dir):
    model = electra_model()
    out = save_hf(model, str(tmp_path / "hf"), data_dir)
    wider = ElectraPreTraining(disc_config(), ElectraConfig(generator_size_fraction=0.25))
    with pytest.raises(CheckpointError, match="hidden_size"):
        load_hf(wider, out)

    # the generator saved by transformers with its own embeddings: this model cannot share them
    generator = transformers.AutoModelForMaskedLM.from_pretrained(os.path.join(out, GENERATOR_DIR))
    with torch.no_grad():
        generator.electra.embeddings.position_embeddings.weight.add_(1.0)
    generator.save_pretrained(os.path.join(out, GENERATOR_DIR))
    with pytest.raises(CheckpointError, match="shares one embedding"):
        load_hf(model, out)


def test_export_checks_the_vocabulary(tmp_path, data_dir):
    model = ElectraPreTraining(disc_config(vocab_size=V + 1), ElectraConfig(generator_size_fraction=0.5))
    with pytest.raises(ExportError, match="vocab_size"):
        save_hf(model, str(tmp_path / "hf"), data_dir)


def test_generator_config_keeps_the_discriminator_fields_it_does_not_scale():
    disc = disc_config(layer_norm_eps=1e-7, max_position_embeddings=64, type_vocab_size=3)
    gen = generator_config(disc, ElectraConfig())
    same = ("vocab_size", "num_hidden_layers", "layer_norm_eps", "max_position_embeddings", "type_vocab_size")
    assert {f: getattr(gen, f) for f in same} == {f: getattr(disc, f) for f in same}
    assert gen.with_nsp_head is False  # ELECTRA has no sentence head
