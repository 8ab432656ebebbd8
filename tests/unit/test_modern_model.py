"""The ModernBERT-style encoder (training/models/modern.py) against the installed transformers'
ModernBertForMaskedLM (names, logits, losses, the saved directory and fill-mask), its unpadded
path against its padded one, the sparse head against the dense one, the sliding window, static
shapes under torch.compile, and the FLOPs count. CPU, tiny configs.

Tolerances (fp32, CPU), with what was measured on torch 2.13 / transformers 5.24:
- logits against transformers, both directions: 1e-5 absolute (measured 7.2e-7 against eager
  attention, 0 against SDPA, at real positions);
- unpadded against padded, values and gradients: 1e-5 absolute (measured 0 and 9e-9 on CPU, where both
  run SDPA on padded q, k, v; on CUDA the unpadded path takes other kernels);
- compiled (aot_eager) against eager: 1e-5 on losses and logits, 1e-4 relative on gradients.
A wrong window, rotary base or norm moves logits by 1e-2 or more."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import transformers
from torch._dynamo.backends.registry import lookup_backend
from torch.fx.experimental.symbolic_shapes import free_unbacked_symbols

from training.models.modern import (
    TIED_KEYS,
    ModernBertForMaskedLM,
    ModernBertModel,
    ModernConfig,
    WordPieceCasing,
    flops_per_token,
    save_hf,
    to_hf_state_dict,
)

VOCAB_WORDS = ["the", "cat", "dog", "sat", "on", "a", "mat", "rug", "and", "ran", "##s", "##ed", ".", ","]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *VOCAB_WORDS, *[f"w{i}" for i in range(78)]]
V = len(VOCAB)  # 97
LENGTHS = (24, 17, 6)  # real tokens per row; T = 24, three times the window of 8
T = max(LENGTHS)
WINDOW = 8  # local_attention: 4 tokens on either side
P = 4
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_config(**overrides) -> ModernConfig:
    fields = dict(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=48,
        max_position_embeddings=32,
        global_attn_every_n_layers=2,  # layers 0 and 2 global, 1 and 3 local
        local_attention=WINDOW,
        global_rope_theta=1_000.0,  # small bases: rotations that differ visibly over 24 positions
        local_rope_theta=50.0,
    )
    return ModernConfig(**{**fields, **overrides})


def hf_config(cfg: ModernConfig, attn_implementation: str = "eager") -> transformers.ModernBertConfig:
    return transformers.ModernBertConfig(**cfg.to_hf_config_dict(), attn_implementation=attn_implementation)


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (the init leaves norms at 1 and the decoder bias at 0, which
    would hide a swapped norm or a missing bias)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=gen) * 0.1
        p.copy_(1.0 + noise if "norm" in name else noise)


def make_batch(seed: int = 0, lengths=LENGTHS) -> dict:
    """A right-padded (B, T) batch with P masked slots per row (position 0 / label -100 padding)."""
    gen = torch.Generator().manual_seed(seed)
    B = len(lengths)
    input_ids = torch.randint(5, V, (B, T), generator=gen)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    positions = torch.zeros(B, P, dtype=torch.long)
    labels = torch.full((B, P), -100)
    for b, n in enumerate(lengths):
        attention_mask[b, :n] = 1
        k = min(P, n - 2)
        positions[b, :k] = torch.randperm(n - 2, generator=gen)[:k].sort().values + 1
        labels[b, :k] = torch.randint(5, V, (k,), generator=gen)
    input_ids[attention_mask == 0] = 0
    return dict(
        input_ids=input_ids,
        token_type_ids=torch.zeros_like(input_ids),
        attention_mask=attention_mask,
        masked_lm_positions=positions,
        masked_lm_labels=labels,
    )


def dense_labels(batch: dict) -> torch.Tensor:
    """The same targets in transformers' (B, T) layout."""
    out = torch.full_like(batch["input_ids"], -100)
    for b in range(out.shape[0]):
        real = batch["masked_lm_labels"][b] != -100
        out[b, batch["masked_lm_positions"][b][real]] = batch["masked_lm_labels"][b][real]
    return out


def collator_layout(attention_mask: torch.Tensor) -> dict:
    """unpad_index (N,) and cu_seqlens (B+1,) int32 as the collator computes them on the host."""
    lengths = attention_mask.sum(dim=1).tolist()
    seq_len = attention_mask.shape[1]
    index = [b * seq_len + t for b, n in enumerate(lengths) for t in range(n)]
    cumulative = [0]
    for n in lengths:
        cumulative.append(cumulative[-1] + n)
    return dict(unpad_index=torch.tensor(index), cu_seqlens=torch.tensor(cumulative, dtype=torch.int32))


def real(batch: dict) -> torch.Tensor:
    return batch["attention_mask"].bool()


# ----------------------------------------------------------------------------- transformers parity


def test_state_dict_keys_and_shapes_equal_transformers():
    cfg = tiny_config()
    ours = ModernBertForMaskedLM(cfg).state_dict()
    theirs = transformers.ModernBertForMaskedLM(hf_config(cfg)).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}
    assert "model.layers.0.attn_norm.weight" not in ours  # the first layer reads the normed embeddings
    assert not any(key.endswith(".bias") for key in ours if key != "decoder.bias")  # no biases but the decoder's


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_matches_transformers_with_its_weights(attn_implementation):
    """Transformers' model, randomised, loaded into ours strictly: the same logits at every real
    position (padding in the batch, T three windows long) and the same loss on dense labels."""
    cfg = tiny_config()
    theirs = transformers.ModernBertForMaskedLM(hf_config(cfg, attn_implementation)).eval()
    randomize(theirs)
    ours = ModernBertForMaskedLM(cfg).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    batch = make_batch()
    labels = dense_labels(batch)
    with torch.no_grad():
        out = ours(batch["input_ids"], attention_mask=batch["attention_mask"], dense_mlm_labels=labels)
        ref = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels)
    diff = (out.mlm_logits - ref.logits)[real(batch)].abs().max().item()
    assert diff < 1e-5, diff
    assert ref.logits.abs().max() > 0.1  # not comparing near-zero outputs
    torch.testing.assert_close(out.mlm_loss, ref.loss, atol=1e-5, rtol=1e-5)


def test_transformers_matches_ours_with_our_weights():
    cfg = tiny_config()
    ours = ModernBertForMaskedLM(cfg).eval()
    randomize(ours, seed=1)
    theirs = transformers.ModernBertForMaskedLM(hf_config(cfg)).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    batch = make_batch(seed=1)
    with torch.no_grad():
        out = ours(batch["input_ids"], attention_mask=batch["attention_mask"])
        ref = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    diff = (out.mlm_logits - ref.logits)[real(batch)].abs().max().item()
    assert diff < 1e-5, diff


def test_the_window_and_the_rotary_bases_matter_to_the_comparison():
    """The parity above can fail: a model with another window or another local base gives other
    logits on the same weights, by far more than the tolerance."""
    cfg = tiny_config()
    ours = ModernBertForMaskedLM(cfg).eval()
    randomize(ours)
    batch = make_batch()
    for change in (dict(local_attention=2 * WINDOW), dict(local_rope_theta=10_000.0)):
        other = ModernBertForMaskedLM(tiny_config(**change)).eval()
        other.load_state_dict(ours.state_dict())
        with torch.no_grad():
            a = ours(batch["input_ids"], attention_mask=batch["attention_mask"]).mlm_logits
            b = other(batch["input_ids"], attention_mask=batch["attention_mask"]).mlm_logits
        assert (a - b)[real(batch)].abs().max() > 1e-2, change


def test_state_dict_round_trips_strictly_and_the_saved_layout_loads():
    """Ours -> transformers -> ours with strict=True, equal tensors; and the layout a file holds
    (to_hf_state_dict: the tied decoder stored once) loads strictly, tied again."""
    cfg = tiny_config()
    ours = ModernBertForMaskedLM(cfg)
    randomize(ours, seed=2)
    theirs = transformers.ModernBertForMaskedLM(hf_config(cfg))
    theirs.load_state_dict(ours.state_dict(), strict=True)
    back = ModernBertForMaskedLM(cfg)
    back.load_state_dict(theirs.state_dict(), strict=True)
    for name, tensor in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name

    saved = to_hf_state_dict(ours)
    assert set(saved) == set(ours.state_dict()) - set(TIED_KEYS)
    from_file = ModernBertForMaskedLM(cfg)
    from_file.load_state_dict(saved, strict=True)
    assert from_file.decoder.weight is from_file.model.embeddings.tok_embeddings.weight
    assert torch.equal(from_file.decoder.weight, ours.decoder.weight)


def test_hf_config_round_trips_through_transformers(tmp_path):
    """Our config -> ModernBertConfig -> save_pretrained's config.json (layer_types,
    rope_parameters) -> our config again, equal; transformers derives the same layer kinds."""
    cfg = tiny_config(num_hidden_layers=7, global_attn_every_n_layers=3, embedding_dropout=0.1)
    hf = hf_config(cfg)
    assert hf.layer_types == [
        "sliding_attention" if cfg.is_local_layer(i) else "full_attention" for i in range(cfg.num_hidden_layers)
    ]
    assert hf.sliding_window == cfg.window_half
    hf.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert ModernConfig.from_hf_config_dict(written) == cfg
    assert ModernConfig.from_hf_config_dict(cfg.to_hf_config_dict()) == cfg
    with pytest.raises(ValueError, match="decoder_bias"):
        ModernConfig.from_hf_config_dict({**written, "decoder_bias": False})


# ----------------------------------------------------------------------------- our own paths


def test_unpadded_equals_padded_values_and_gradients():
    """Same weights, built with and without unpad, with the collator's indices and without: equal
    logits at real positions and equal gradients, local layers included (T > window)."""
    cfg = tiny_config()
    torch.manual_seed(0)
    padded = ModernBertForMaskedLM(cfg)
    randomize(padded)
    batch = make_batch()
    reference = padded(**batch)
    reference.loss.backward()
    grads = {name: p.grad for name, p in padded.named_parameters()}
    for layout in (collator_layout(batch["attention_mask"]), {}):
        unpadded = ModernBertForMaskedLM(cfg, unpad=True)
        unpadded.load_state_dict(padded.state_dict())
        out = unpadded(**batch, **layout)
        out.loss.backward()
        torch.testing.assert_close(out.mlm_logits, reference.mlm_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.loss, reference.loss, atol=1e-6, rtol=1e-6)
        for name, p in unpadded.named_parameters():
            torch.testing.assert_close(p.grad, grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_sparse_head_rows_equal_the_dense_heads_at_those_positions():
    cfg = tiny_config()
    model = ModernBertForMaskedLM(cfg).eval()
    randomize(model)
    batch = make_batch()
    with torch.no_grad():
        sparse = model(**batch)
        dense = model(batch["input_ids"], attention_mask=batch["attention_mask"], dense_mlm_labels=dense_labels(batch))
    B = batch["input_ids"].shape[0]
    assert sparse.mlm_logits.shape == (B * P, V)
    rows = dense.mlm_logits[torch.arange(B)[:, None], batch["masked_lm_positions"]].reshape(B * P, V)
    torch.testing.assert_close(sparse.mlm_logits, rows, atol=1e-6, rtol=0)
    torch.testing.assert_close(sparse.loss, dense.loss, atol=1e-6, rtol=1e-6)
    assert (
        torch.equal(sparse.mlm_count, dense.mlm_count) and sparse.mlm_count == (batch["masked_lm_labels"] != -100).sum()
    )
    assert torch.equal(sparse.mlm_correct, dense.mlm_correct)
    assert sparse.nsp_loss is None and sparse.nsp_logits is None and sparse.nsp_count is None


def local_only_encoder(num_layers: int, unpad: bool) -> ModernBertModel:
    """Every layer local (the config always makes layer 0 global, so the flag is set by hand)."""
    encoder = ModernBertModel(tiny_config(num_hidden_layers=num_layers), unpad=unpad).eval()
    for layer in encoder.layers:
        layer.is_local = True
    encoder.has_local = True
    randomize(encoder)
    return encoder


@pytest.mark.parametrize("unpad", [False, True])
def test_a_token_outside_the_window_does_not_change_the_output(unpad):
    """One local layer: token 10 sees 6..14 (|i - j| <= 4, transformers' inclusive window), so
    changing token 15 leaves it unchanged and changing token 14 does not. Two layers see twice as far."""
    batch = make_batch()
    ids, mask = batch["input_ids"][:1], batch["attention_mask"][:1]  # a full row of 24

    def output_at(encoder, i: int, changed: int) -> tuple[torch.Tensor, torch.Tensor]:
        other = ids.clone()
        other[0, changed] = 5 if ids[0, changed] != 5 else 6
        with torch.no_grad():
            return encoder(ids, mask)[0, i], encoder(other, mask)[0, i]

    half = WINDOW // 2
    one = local_only_encoder(1, unpad)
    assert torch.equal(*output_at(one, 10, 10 + half + 1))
    assert torch.equal(*output_at(one, 10, 10 - half - 1))
    assert not torch.allclose(*output_at(one, 10, 10 + half))
    two = local_only_encoder(2, unpad)
    assert torch.equal(*output_at(two, 10, 10 + 2 * half + 1))
    assert not torch.allclose(*output_at(two, 10, 10 + 2 * half))


def test_padding_does_not_leak_into_real_positions():
    model = ModernBertForMaskedLM(tiny_config()).eval()
    randomize(model)
    batch = make_batch()
    other = batch["input_ids"].clone()
    other[batch["attention_mask"] == 0] = 7  # different ids under the padding
    with torch.no_grad():
        a = model(batch["input_ids"], attention_mask=batch["attention_mask"]).mlm_logits
        b = model(other, attention_mask=batch["attention_mask"]).mlm_logits
    torch.testing.assert_close(a[real(batch)], b[real(batch)], atol=1e-6, rtol=0)


def test_decoder_is_tied_and_every_parameter_gets_a_gradient():
    model = ModernBertForMaskedLM(tiny_config())
    assert model.decoder.weight is model.model.embeddings.tok_embeddings.weight
    model(**make_batch()).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_initialisation_follows_modernbert():
    cfg = tiny_config(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_hidden_layers=8)
    model = ModernBertForMaskedLM(cfg)
    r = cfg.initializer_range
    embeddings = model.model.embeddings.tok_embeddings.weight
    assert torch.equal(embeddings[cfg.pad_token_id], torch.zeros(cfg.hidden_size))
    wqkv, wo = model.model.layers[1].attn.Wqkv.weight, model.model.layers[1].attn.Wo.weight
    assert wqkv.abs().max() <= 2 * r and wo.abs().max() <= 2 * r / 4  # truncated at 2 std; out std r/sqrt(2L)
    assert abs(wqkv.std().item() - 0.88 * r) < 0.1 * r  # a normal cut at 2 std keeps 0.88 of its std
    assert torch.equal(model.decoder.bias, torch.zeros(V))


def test_interface_errors_are_clear():
    model = ModernBertForMaskedLM(tiny_config())
    batch = make_batch()
    with pytest.raises(ValueError, match="no sentence head"):
        model(**batch, next_sentence_label=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="not both"):
        model(**batch, dense_mlm_labels=dense_labels(batch))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.ones(1, 33, dtype=torch.long))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(num_attention_heads=5), "divisible"),
        (dict(hidden_size=24, num_attention_heads=8), "odd"),
        (dict(local_attention=7), "even"),
        (dict(global_attn_every_n_layers=0), "global_attn_every_n_layers"),
        (dict(local_rope_theta=0.0), "local_rope_theta"),
        (dict(mlp_dropout=1.0), "mlp_dropout"),
        (dict(pad_token_id=V), "pad_token_id"),
    ],
)
def test_config_rejects_what_it_cannot_build(change, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**change)


def test_importing_the_model_loads_torch_alone():
    """Like training.model: no transformers, DeepSpeed, Beam or safetensors until save_hf runs."""
    probe = (
        "import json, sys; import training.models.modern\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'transformers', 'deepspeed', 'apache_beam', 'safetensors'})))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["torch"]


# ----------------------------------------------------------------------------- export


def write_vocab(tmp_path) -> str:
    path = tmp_path / "vocab.txt"
    path.write_text("".join(token + "\n" for token in VOCAB), encoding="utf-8")
    return str(path)


def test_save_hf_loads_as_transformers_masked_lm_and_fill_mask_works(tmp_path):
    cfg = tiny_config()
    ours = ModernBertForMaskedLM(cfg).eval()
    randomize(ours, seed=3)
    out_dir = save_hf(ours, str(tmp_path / "hf"), write_vocab(tmp_path))

    theirs = transformers.AutoModelForMaskedLM.from_pretrained(out_dir).eval()
    assert type(theirs) is transformers.ModernBertForMaskedLM
    assert theirs.decoder.weight.data_ptr() == theirs.model.embeddings.tok_embeddings.weight.data_ptr()
    assert (theirs.config.cls_token_id, theirs.config.sep_token_id, theirs.config.pad_token_id) == (2, 3, 0)
    batch = make_batch(seed=3)
    with torch.no_grad():
        ref = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out = ours(batch["input_ids"], attention_mask=batch["attention_mask"]).mlm_logits
    assert (out - ref)[real(batch)].abs().max() < 1e-5

    tokenizer = transformers.AutoTokenizer.from_pretrained(out_dir)
    encoded = tokenizer("The cat sat on a [MASK].")
    assert encoded["input_ids"][0] == 2 and encoded["input_ids"][-1] == 3 and 4 in encoded["input_ids"]
    assert "token_type_ids" not in encoded
    fill = transformers.pipeline("fill-mask", model=out_dir, top_k=3)
    guesses = fill("the cat sat on a [MASK].")
    assert len(guesses) == 3 and all(g["token_str"].replace(" ", "") in [t.lstrip("#") for t in VOCAB] for g in guesses)
    assert [g["token"] for g in guesses] == ref_top_tokens(ours, tokenizer, "the cat sat on a [MASK].", 3)


def ref_top_tokens(model: ModernBertForMaskedLM, tokenizer, text: str, k: int) -> list[int]:
    """Our model's own top-k ids at the [MASK] of ``text``."""
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).mlm_logits[0]
    where = (ids[0] == tokenizer.mask_token_id).nonzero().item()
    return logits[where].topk(k).indices.tolist()


def test_save_hf_refuses_a_vocabulary_that_does_not_fit(tmp_path):
    from training.export import ExportError

    vocab_file = write_vocab(tmp_path)
    with pytest.raises(ExportError, match="vocab_size"):
        save_hf(ModernBertForMaskedLM(tiny_config(vocab_size=V + 1)), str(tmp_path / "a"), vocab_file)
    with pytest.raises(ExportError, match="pad_token_id"):
        save_hf(ModernBertForMaskedLM(tiny_config(pad_token_id=1)), str(tmp_path / "b"), vocab_file)
    cased = save_hf(
        ModernBertForMaskedLM(tiny_config()), str(tmp_path / "c"), vocab_file, WordPieceCasing(False, False)
    )
    assert transformers.AutoTokenizer.from_pretrained(cased).tokenize("The") == ["[UNK]"]  # cased: no "The"


# ----------------------------------------------------------------------------- static shapes


class GraphRecorder:
    """A torch.compile backend that keeps each graph dynamo captures and runs it through
    aot_eager (dynamo's capture and guards, AOTAutograd, no C++ compile on a 2-core machine)."""

    def __init__(self):
        self.graphs: list[torch.fx.GraphModule] = []

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.graphs.append(gm)
        return lookup_backend("aot_eager")(gm, example_inputs)

    def data_dependent_sizes(self) -> list[str]:
        return [
            str(node.target)
            for gm in self.graphs
            for node in gm.graph.nodes
            if isinstance(node.meta.get("example_value"), torch.Tensor)
            and free_unbacked_symbols(node.meta["example_value"])
        ]


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        yield
    torch._dynamo.reset()


@pytest.mark.parametrize("unpad", [False, True])
def test_training_step_compiles_once_with_fullgraph_and_equals_eager(fresh_dynamo, unpad):
    """(B, T) batches with P slots and different contents (lengths, real slots): one graph, no
    graph break (fullgraph), no data-dependent size; eager's losses and gradients. The unpadded
    path takes the collator's indices with N marked dynamic, as the BERT model's test does."""
    torch.manual_seed(0)
    eager = ModernBertForMaskedLM(tiny_config(), unpad=unpad)
    compiled = ModernBertForMaskedLM(tiny_config(), unpad=unpad)
    compiled.load_state_dict(eager.state_dict())
    recorder = GraphRecorder()
    compiled.compile(fullgraph=True, backend=recorder)
    for seed, lengths in enumerate([(24, 17, 6), (9, 24, 20), (13, 5, 24)]):
        batch = make_batch(seed, lengths)
        if unpad:
            layout = collator_layout(batch["attention_mask"])
            torch._dynamo.mark_dynamic(layout["unpad_index"], 0)
            batch |= layout
        ours, ref = compiled(**batch), eager(**batch)
        ours.loss.backward()
        ref.loss.backward()
        torch.testing.assert_close(ours.loss, ref.loss, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.mlm_logits, ref.mlm_logits, atol=1e-5, rtol=1e-5)
        grads = dict(eager.named_parameters())
        for name, p in compiled.named_parameters():
            torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)
        compiled.zero_grad(), eager.zero_grad()
    assert len(recorder.graphs) == 1
    assert recorder.data_dependent_sizes() == []


# ----------------------------------------------------------------------------- FLOPs


def test_flops_per_token_counts_the_models_weights_and_windows():
    cfg = tiny_config()
    model = ModernBertForMaskedLM(cfg)
    layer_weights = sum(p.numel() for name, p in model.model.layers.named_parameters() if "norm" not in name)
    h, s = cfg.hidden_size, 16
    attention = 12 * h * (2 * s + 2 * WINDOW)  # 2 global layers over s keys, 2 local over the window
    head = 6 * h * h + 6 * h * V
    assert flops_per_token(cfg, s) == 6 * layer_weights + attention + head
    assert flops_per_token(cfg, s, sparse_fraction=0.3) == 6 * layer_weights + attention + 0.3 * head


def test_flops_grow_with_layers_and_local_layers_cost_less_at_long_sequences():
    base = dict(vocab_size=30_522, hidden_size=768, num_attention_heads=12, intermediate_size=1152)
    base |= dict(max_position_embeddings=8192, local_attention=128)
    deeper = [flops_per_token(ModernConfig(num_hidden_layers=n, **base), 512) for n in (6, 12, 22)]
    assert deeper == sorted(deeper) and len(set(deeper)) == 3
    alternating = ModernConfig(num_hidden_layers=22, global_attn_every_n_layers=3, **base)
    all_global = ModernConfig(num_hidden_layers=22, global_attn_every_n_layers=1, **base)
    assert flops_per_token(alternating, 8192) < flops_per_token(all_global, 8192)
    assert flops_per_token(alternating, 128) == flops_per_token(all_global, 128)  # the window spans it all
    with pytest.raises(ValueError, match="sparse_fraction"):
        flops_per_token(alternating, 128, sparse_fraction=1.5)


# ----------------------------------------------------------------------------- CUDA routes


def _cuda_pair(dropout: float = 0.0):
    cfg = tiny_config(attention_dropout=dropout)
    torch.manual_seed(0)
    padded = ModernBertForMaskedLM(cfg).cuda()
    randomize(padded)
    unpadded = ModernBertForMaskedLM(cfg, unpad=True).cuda()
    unpadded.load_state_dict(padded.state_dict())
    batch = {k: v.cuda() for k, v in make_batch().items()}
    return padded, unpadded, batch | {k: v.cuda() for k, v in collator_layout(batch["attention_mask"]).items()}


@requires_cuda
def test_cuda_varlen_route_keeps_the_window_and_equals_padded_in_bf16():
    """bf16 autocast on CUDA: the unpadded model takes varlen_attn with window_size; logits within
    5e-2 of the padded path's (which masks the window with SDPA) and gradients within 5% in norm."""
    padded, unpadded, batch = _cuda_pair()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref, out = padded(**batch), unpadded(**batch)
    ref.loss.backward(), out.loss.backward()
    torch.testing.assert_close(out.mlm_logits.float(), ref.mlm_logits.float(), atol=5e-2, rtol=0)
    grads = dict(padded.named_parameters())
    for name, p in unpadded.named_parameters():
        assert (p.grad - grads[name].grad).norm() <= 0.05 * grads[name].grad.norm() + 1e-6, name


@requires_cuda
def test_cuda_training_with_attention_dropout_runs_on_jagged_and_repadded_routes():
    _, unpadded, batch = _cuda_pair(dropout=0.1)
    unpadded.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = unpadded(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(p.grad).all() for p in unpadded.parameters())
