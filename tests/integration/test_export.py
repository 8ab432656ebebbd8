"""Hugging Face export: transformers loads the model and the tokenizer, and they agree with ours."""

import json
import os

import pytest
import torch
import transformers  # noqa: E402  (test-only dependency)
from safetensors.torch import load_file

from pipeline import contract
from pipeline.tokenization import build_tokenizer, train_vocabulary, vocab_sha256
from training.export import TIED_KEYS, ExportError, export_hf
from training.model import BertConfig, BertForPreTraining

TEXT = [
    "The cat is here. The dog is there, and the bird is on the tree.",
    "A model reads the text and predicts the masked words from the words around them.",
    "Here is the house where the old man lived with his dog and two cats.",
    "The river runs past the town; the bridge over it is old and made of stone.",
    "She said the train was late again, so they walked to the station in the rain.",
    "Über café naïve: accents, Ümlauts and CAPITALS are folded when the vocabulary is uncased.",
] * 3


def write_shard_dir(path, vocab, lowercase):
    """A data directory as far as export reads it: manifest.json and vocab.txt (no shards)."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, contract.VOCAB_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    manifest = contract.ShardManifest(
        schema_version=contract.SCHEMA_VERSION,
        vocab_file=contract.VOCAB_FILE,
        vocab_sha256=vocab_sha256(vocab),
        vocab_size=len(vocab),
        lowercase=lowercase,
        special_tokens=vars(contract.SpecialTokens.from_vocab(vocab)),
        max_seq_length=64,
        objective="nsp",
        masking=contract.MaskingSpec("static", 0.15, 10, False, 1),
        seed=1,
        shards=[],
    )
    with open(os.path.join(path, contract.MANIFEST_FILE), "w", encoding="utf-8") as f:
        f.write(manifest.to_json())
    return str(path)


@pytest.fixture(scope="module")
def vocab():
    vocab = train_vocabulary(TEXT, vocab_size=300, lowercase=True, min_frequency=1, limit_alphabet=1000)
    assert "the" in vocab and len(vocab) <= 300
    return vocab


def tiny_model(vocab, with_nsp_head=True):
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        with_nsp_head=with_nsp_head,
    )
    return BertForPreTraining(cfg).eval(), cfg


@pytest.fixture(scope="module")
def exported(vocab, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data_dir = write_shard_dir(root / "shards", vocab, lowercase=True)
    model, cfg = tiny_model(vocab)
    out = export_hf(model.state_dict(), cfg, data_dir, str(root / "hf"))
    return model, cfg, out


def test_directory_holds_config_weights_and_tokenizer_files_and_no_pickle(exported):
    _, cfg, out = exported
    assert sorted(os.listdir(out)) == [
        "config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["vocab_size"] == cfg.vocab_size and config["architectures"] == ["BertForPreTraining"]
    weights = load_file(os.path.join(out, "model.safetensors"))
    assert "cls.predictions.decoder.weight" not in weights  # tied: saved once, as the embedding
    assert all(t.dtype == torch.float32 for t in weights.values())


def test_transformers_loads_every_weight_and_gives_our_logits(exported):
    model, _, out = exported
    hf, info = transformers.BertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    hf.eval()
    assert hf.cls.predictions.decoder.weight.data_ptr() == hf.bert.embeddings.word_embeddings.weight.data_ptr()

    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, model.config.vocab_size, (3, 12), generator=g)
    token_type_ids = (torch.arange(12) >= 6).long().expand(3, 12)
    attention_mask = torch.ones(3, 12, dtype=torch.long)
    attention_mask[1, 9:] = 0
    with torch.no_grad():
        ours = model(input_ids, token_type_ids, attention_mask)
        theirs = hf(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
    keep = attention_mask.bool()
    torch.testing.assert_close(ours.mlm_logits[keep], theirs.prediction_logits[keep], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.nsp_logits, theirs.seq_relationship_logits, atol=1e-5, rtol=1e-5)


def test_our_model_loads_the_export_strictly(exported):
    model, cfg, out = exported
    again = BertForPreTraining(cfg)
    again.load_state_dict(load_file(os.path.join(out, "model.safetensors")), strict=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


def test_tokenizer_encodes_like_the_pipeline(exported, vocab):
    _, _, out = exported
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert type(tokenizer).__name__ in ("BertTokenizer", "BertTokenizerFast")
    ours = build_tokenizer(vocab, lowercase=True)
    texts = TEXT[:6] + ["Unseen WORDS like xylophone, 123 and 東京 still tokenise.", "  spaces\tand\nlines  "]
    for text in texts:
        assert tokenizer(text)["input_ids"] == ours.encode(text).ids, text
    pair = tokenizer("the cat", "is here")
    expected = ours.encode("the cat", "is here")
    assert pair["input_ids"] == expected.ids and pair["token_type_ids"] == expected.type_ids
    assert tokenizer.mask_token_id == vocab.index("[MASK]") and tokenizer.pad_token_id == vocab.index("[PAD]")


def test_fill_mask_pipeline_returns_predictions(exported):
    _, _, out = exported
    fill = transformers.pipeline("fill-mask", model=out, tokenizer=out, device="cpu")
    predictions = fill("the [MASK] is here.", top_k=3)
    assert len(predictions) == 3
    assert all(isinstance(p["token_str"], str) and p["token_str"] and 0.0 <= p["score"] <= 1.0 for p in predictions)
    assert all("[MASK]" not in p["sequence"] for p in predictions)


def test_cased_vocabulary_keeps_case(vocab, tmp_path):
    cased = train_vocabulary(TEXT, vocab_size=300, lowercase=False, min_frequency=1, limit_alphabet=1000)
    model, cfg = tiny_model(cased, with_nsp_head=False)
    out = export_hf(
        model.state_dict(), cfg, write_shard_dir(tmp_path / "shards", cased, lowercase=False), str(tmp_path / "hf")
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = "The CAT über Café"
    assert tokenizer(text)["input_ids"] == build_tokenizer(cased, lowercase=False).encode(text).ids
    mlm, info = transformers.BertForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_mismatches_fail_before_writing(vocab, tmp_path):
    data_dir = write_shard_dir(tmp_path / "shards", vocab, lowercase=True)
    model, cfg = tiny_model(vocab)
    state = model.state_dict()
    with pytest.raises(ExportError, match="missing"):
        export_hf({k: v for k, v in state.items() if "pooler" not in k}, cfg, data_dir, str(tmp_path / "a"))
    with pytest.raises(ExportError, match="missing"):  # a tied copy may be left out, its source not
        export_hf(
            {k: v for k, v in state.items() if k != "bert.embeddings.word_embeddings.weight"},
            cfg,
            data_dir,
            str(tmp_path / "a"),
        )
    untied = dict(state, **{"cls.predictions.decoder.weight": state["cls.predictions.decoder.weight"] + 1})
    with pytest.raises(ExportError, match="tied"):
        export_hf(untied, cfg, data_dir, str(tmp_path / "b"))
    other = BertConfig(
        vocab_size=len(vocab) + 1, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    with pytest.raises(ExportError, match="vocab_size"):
        export_hf(BertForPreTraining(other).state_dict(), other, data_dir, str(tmp_path / "c"))
    assert not any(os.path.exists(tmp_path / d) for d in "abc")


def test_tied_copies_may_be_left_out(vocab, tmp_path):
    model, cfg = tiny_model(vocab)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("cls.predictions.decoder.")}
    out = export_hf(state, cfg, write_shard_dir(tmp_path / "shards", vocab, lowercase=True), str(tmp_path / "hf"))
    again = BertForPreTraining(cfg)
    again.load_state_dict(load_file(os.path.join(out, "model.safetensors")), strict=True)
    assert torch.equal(again.cls.predictions.decoder.weight, model.bert.embeddings.word_embeddings.weight)


# --- from real DeepSpeed checkpoints (gloo, CPU) ---------------------------------------------

_WRITE_CHECKPOINTS = r"""
import os, sys
import torch, deepspeed
from deepspeed.utils import safe_get_full_fp32_param
from safetensors.torch import save_file
from training.config import DataConfig, EngineConfig, OptimConfig, TrainerConfig
from training.deepspeed_config import build_deepspeed_config
from training.model import BertConfig, BertForPreTraining
from training.optim import build_optimizer

out, keys = sys.argv[1], sys.argv[2:]  # keys: "<stage>-<precision>"
deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)
rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
cfg = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=32, max_position_embeddings=16)
for key in keys:
    stage, precision = key.split("-")
    torch.manual_seed(int(stage))
    model = BertForPreTraining(cfg)
    config = build_deepspeed_config(EngineConfig(zero_stage=int(stage), precision=precision),
                                    TrainerConfig(global_batch_size=4 * world), DataConfig(micro_batch_size=2),
                                    OptimConfig(), world, sum(p.numel() for p in model.parameters()))
    config["zero_allow_untested_optimizer"] = True
    optimizer = build_optimizer(model, OptimConfig(lr=1e-2))  # the trainer's: two groups (weight decay or not)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    torch.manual_seed(rank)
    for _ in range(engine.gradient_accumulation_steps()):
        batch = dict(input_ids=torch.randint(5, 40, (2, 8)), masked_lm_positions=torch.tensor([[1, 2], [3, 4]]),
                     masked_lm_labels=torch.randint(5, 40, (2, 2)), next_sentence_label=torch.tensor([0, 1]))
        engine.backward(engine(**batch).loss)
        engine.step()  # the weights in the checkpoint are no longer the initial ones
    engine.save_checkpoint(os.path.join(out, key), tag="step00000001", client_state={"step": 1})
    masters, working = {}, {}
    for name, p in engine.module.named_parameters():  # each tied tensor once
        master = safe_get_full_fp32_param(p)  # collective; None at stage 0, whose weights are the optimizer's
        masters[name] = (p if master is None else master).detach().clone()
        with deepspeed.zero.GatheredParameters([p]):  # the working copy (ZeRO-3: gathered)
            working[name] = p.detach().clone()
    if rank == 0:
        save_file(masters, os.path.join(out, f"{key}.masters.safetensors"))
        save_file(working, os.path.join(out, f"{key}.working.safetensors"))
"""

ONE_RANK_CHECKPOINTS = [f"{stage}-{precision}" for stage in (0, 1, 2, 3) for precision in ("bf16", "fp32")]
TWO_RANK_CHECKPOINTS = ["1-bf16", "3-bf16"]
"""Partitions split parameters between ranks: BF16_Optimizer's (our reader) and ZeRO-3's (DeepSpeed's)."""


@pytest.fixture(scope="module")
def deepspeed_checkpoints(tmp_path_factory):
    """One training step and a checkpoint at every ZeRO stage in bf16 and fp32 (one rank), and at
    ZeRO-1 and 3 in bf16 on two ranks, with the engines' fp32 masters and working weights beside
    them (in subprocesses: the process groups and DeepSpeed's globals stay out of the test process)."""
    import subprocess
    import sys

    from launch_helpers import free_port, one_rank_env, trainer_env
    from paths import REPO as root

    out = tmp_path_factory.mktemp("deepspeed")
    script = out / "write_checkpoints.py"
    script.write_text(_WRITE_CHECKPOINTS)
    one = subprocess.run(
        [sys.executable, str(script), str(out / "one_rank"), *ONE_RANK_CHECKPOINTS],
        cwd=root,
        env=one_rank_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
        + [str(script), str(out / "two_ranks"), *TWO_RANK_CHECKPOINTS],
        cwd=root,
        env={**trainer_env(), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    return out


TINY_DEEPSPEED_BERT = BertConfig(
    vocab_size=40,
    hidden_size=16,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
)


@pytest.mark.parametrize(
    "ranks, key", [("one_rank", key) for key in ONE_RANK_CHECKPOINTS] + [("two_ranks", k) for k in TWO_RANK_CHECKPOINTS]
)
def test_consolidated_checkpoint_weights_are_the_engines_fp32_masters(deepspeed_checkpoints, ranks, key):
    from training.export import consolidated_state_dict_from_checkpoint

    where = deepspeed_checkpoints / ranks
    masters = load_file(str(where / f"{key}.masters.safetensors"))
    working = load_file(str(where / f"{key}.working.safetensors"))
    state = consolidated_state_dict_from_checkpoint(str(where / key), tag="step00000001")
    assert set(state) == set(masters) | set(TIED_KEYS)  # named_parameters lists each tied tensor once
    for name, master in masters.items():
        assert master.dtype == state[name].dtype == torch.float32 and torch.equal(state[name], master), name
        assert torch.equal(master.to(working[name].dtype), working[name]), name  # the master of that weight
    stage, precision = key.split("-")
    if precision == "bf16" and stage != "0":  # bf16 working weights: the masters are not their upcast
        assert all(w.dtype == torch.bfloat16 for w in working.values())
        assert any(not torch.equal(masters[n], w.float()) for n, w in working.items())
    else:  # fp32 weights (stage 0 under bf16: torch autocast) are the masters themselves
        assert all(torch.equal(masters[n], w) for n, w in working.items())
    assert all(torch.equal(state[copy], state[source]) for copy, source in TIED_KEYS.items())


@pytest.mark.parametrize("key", ["0-fp32", "1-bf16"])
def test_a_deepspeed_checkpoint_exports(deepspeed_checkpoints, key, vocab, tmp_path):
    from training.export import consolidated_state_dict_from_checkpoint

    where = deepspeed_checkpoints / "one_rank" / key
    state = consolidated_state_dict_from_checkpoint(str(where), tag="step00000001")
    latest = consolidated_state_dict_from_checkpoint(str(where))  # the tag in 'latest'
    assert set(latest) == set(state) and all(torch.equal(latest[k], state[k]) for k in state)
    with pytest.raises(FileNotFoundError, match="latest"):
        consolidated_state_dict_from_checkpoint(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="step9"):
        consolidated_state_dict_from_checkpoint(str(where), tag="step9")

    # ... and it exports (vocabulary of 40 ids: the first 40 of the tiny vocabulary).
    shards = write_shard_dir(tmp_path / "shards", vocab[:40], lowercase=True)
    out = export_hf(state, TINY_DEEPSPEED_BERT, shards, str(tmp_path / "hf"))
    hf, info = transformers.BertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    masters = load_file(str(deepspeed_checkpoints / "one_rank" / f"{key}.masters.safetensors"))
    torch.testing.assert_close(
        hf.bert.embeddings.word_embeddings.weight.detach(),
        masters["bert.embeddings.word_embeddings.weight"],
        rtol=0,
        atol=0,
    )


# --- the exported tokenizer gives the ids in the shards ------------------------------------------


def _id_string(ids) -> str:
    return "," + ",".join(map(str, ids)) + ","


@pytest.mark.parametrize("tokenizer", ["bert-base-uncased", "trained-cased-accents-stripped"])
def test_exported_tokenizer_gives_the_ids_in_the_shards(tokenizer, sample_documents, tmp_path):
    """Job (packed whole sentences, unmasked) -> export -> AutoTokenizer: every example's tokens
    are the tokenizer's ids of consecutive sentences of its document."""
    from conftest import IN_MEMORY, SMALL_VOCAB, run_job
    from paths import minilm_dir
    from shards import read_split

    if tokenizer == "bert-base-uncased":
        settings = [
            "tokenizer=vocab_file",
            "tokenizer.vocab_file=" + os.path.join(minilm_dir(), "vocab.txt"),
        ]
    else:  # cased, accents stripped: before the manifest carried strip_accents the export lost it
        settings = ["tokenizer.lowercase=false", "tokenizer.strip_accents=true", *SMALL_VOCAB]
    data_dir = tmp_path / "shards"
    manifest = run_job(
        data_dir,
        *settings,
        "instances=none",
        "masking=dynamic",
        "masking.dupe_factor=1",
        "instances.eval_fraction=0",
        *IN_MEMORY,
    )
    assert manifest.lowercase == (tokenizer == "bert-base-uncased") and manifest.strip_accents is True
    vocab = contract.read_vocab(os.path.join(data_dir, contract.VOCAB_FILE))
    model, cfg = tiny_model(vocab, with_nsp_head=False)
    out = export_hf(model.state_dict(), cfg, str(data_dir), str(tmp_path / "hf"))
    hf = transformers.AutoTokenizer.from_pretrained(out)

    streams = {
        d.doc_id: _id_string(i for ids in hf(list(d.sentences), add_special_tokens=False)["input_ids"] for i in ids)
        for d in sample_documents
    }
    table = read_split(data_dir, "train")
    rows = table.select(["input_ids", "doc_id_a"]).to_pylist()
    assert len(rows) > 1000 and {r["doc_id_a"] for r in rows} <= set(streams)
    mismatched = [r for r in rows if _id_string(r["input_ids"][1:-1]) not in streams[r["doc_id_a"]]]
    assert not mismatched, f"{len(mismatched)} of {len(rows)} examples differ from the exported tokenizer"


def test_an_export_of_russian_shards_keeps_the_letters_the_job_kept(tmp_path):
    """Shards of Russian text keep й and ё (pipeline/accents.py); BertTokenizer's options cannot say
    so, so the export's tokenizer.json carries the job's normaliser, and transformers' AutoTokenizer
    and our own reader of exports (HFCheckpoint.tokenizer) give the shards' ids."""
    from conftest import IN_MEMORY, run_job
    from cyrillic_prose import RUSSIAN, write_books
    from training.hf_checkpoint import HFCheckpoint

    books = write_books(tmp_path / "books", RUSSIAN)
    data_dir = tmp_path / "shards"
    manifest = run_job(data_dir, f"inputs=[{books}]", "tokenizer.vocab_size=400", "masking.dupe_factor=1", *IN_MEMORY)
    assert manifest.keep_letters and manifest.strips_accents
    vocab = contract.read_vocab(os.path.join(data_dir, contract.VOCAB_FILE))
    model, cfg = tiny_model(vocab, with_nsp_head=False)
    out = export_hf(model.state_dict(), cfg, str(data_dir), str(tmp_path / "hf"))
    ours = build_tokenizer(vocab, True, True, keep_letters=True)
    text = "Молодой рыбак ещё пьёт тёплый чай"
    hf = transformers.AutoTokenizer.from_pretrained(out)
    assert hf(text)["input_ids"] == ours.encode(text).ids
    assert any("й" in t for t in hf.tokenize(text)) and any("ё" in t for t in hf.tokenize(text))
    assert HFCheckpoint.open(out, "model_dir").tokenizer().encode(text).ids == ours.encode(text).ids
    pair = hf("молодой рыбак", "тёплый чай")
    assert pair["token_type_ids"] == ours.encode("молодой рыбак", "тёплый чай").type_ids
