"""Sizing on paper for a BERT-sized corpus, from per-core figures measured here in one run.

    python bench/sizing.py [--work DIR] [--words 3.3e9] [--wiki-fraction 0.76] [--memory-json FILE]

Measures on the real Wikipedia sample, one core, no Beam: each stage's rate (reading + wikitext +
cleaning for XML dumps, reading + cleaning for books, sentence splitting, WordPiece, instances and
masks at dupe_factor 5, Arrow encoding), the WordPiece trainer's cost per distinct word, tokens per
word, and the shards' bytes per input token. Then one local job at the defaults (2,000 documents a
pool, 64M tokens x passes a shard) on 64 copies of the sample, 2 workers, with every process's peak
memory and the spill directory's peak size sampled from outside. The end-to-end rate of the memory
benchmark (``bench/results/pipeline_memory.json``, 64x, this checkout) against the sum of its stages
gives the runner's overhead, applied to the other stages.

Prints a table for English Wikipedia plus a BookCorpus-size collection (default 3.3B words, 76% of
them Wikipedia, as BERT's 2,500M + 800M words): worker-hours per stage, shard count and size, peak
memory per worker, spill space, the single-worker vocabulary step, and the wall time on 16, 64 and
256 workers. Every figure is marked measured (on this machine) or extrapolated (from measured rates).

    python bench/sizing.py --train-memory [OVERRIDE ...]     e.g. experiment=bert_large_lamb_phase2

instead prints, on paper, the GPU memory one rank needs for a bf16 training step of the trainer config
those overrides compose (weights and optimizer states, activations, the MLM head), against 80 and
141 GB; ``training_step_memory`` is what tests/unit/test_gpu_presets.py sizes the GPU presets with.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

os.environ["TOKENIZERS_PARALLELISM"] = "false"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pipeline.config import CleaningConfig, SourceConfig, sample_corpus_path  # noqa: E402
from pipeline.contract import ExampleColumns, example_schema, to_record_batch  # noqa: E402
from pipeline.documents import prepare_document  # noqa: E402
from pipeline.formats import ExampleFormat  # noqa: E402
from pipeline.instances import InstanceParams, TokenizedDocument, examples_for_document  # noqa: E402
from pipeline.masking import MaskingParams  # noqa: E402
from pipeline.records import RawDocument  # noqa: E402
from pipeline.sources import read_source  # noqa: E402
from pipeline.tokenization import SPECIAL_TOKENS, build_tokenizer, encode_sentences, masking_vocabulary  # noqa: E402
from pipeline.vocab_training import WordCounter, train_wordpiece  # noqa: E402
from pipeline_memory import copy_text, make_inputs, minilm_vocab, sample_documents  # noqa: E402
from pipeline_throughput import run_job, timed  # noqa: E402

DUPE_FACTOR = 5
SHARD_TOKENS = 64_000_000  # output.target_shard_tokens: tokens x passes per shard
POOL_SIZE = 2000
SAMPLE_DOCS = 200_000  # tokenizer.train_sample_documents
WIKI_ARTICLES = 6.2e6  # English Wikipedia main-namespace articles (2019-2024 dumps)
BOOKS = 11_000  # BookCorpus-size collection
WIKI_MB_PER_GB_BZ2 = 4.5  # uncompressed per compressed byte of a pages-articles dump (assumed, not measured)


def read_rate(path: str, cfg: SourceConfig) -> tuple[list, float]:
    """Documents read and cleaned from ``path`` and the seconds that took, one core."""

    def go():
        raws = [r for r in read_source(path, lambda: open(path, "rb"), cfg) if isinstance(r, RawDocument)]
        return [d for d in (prepare_document(r, CleaningConfig())[0] for r in raws) if d]

    return timed(go)


def stage_rates(work: str) -> dict:
    """Tokens per second per core of each stage, and what the vocabulary step costs."""
    wiki = sample_corpus_path()
    docs, t_wiki = read_rate(wiki, SourceConfig())
    # The sequential part of reading a dump: decompressing and finding the pages (one worker per
    # file); the wikitext conversion runs after the reshuffle, on every worker.
    _, t_scan = timed(
        lambda: sum(1 for _ in read_source(wiki, lambda: open(wiki, "rb"), SourceConfig(), defer_wikitext=True))
    )
    book = os.path.join(work, "sample-as-book.txt")
    with open(book, "w", encoding="utf-8") as f:
        f.write("\n\n".join(" ".join(s for s in d.sentences) for d in docs))
    _, t_book = read_rate(book, SourceConfig())
    lines = os.path.join(work, "sample-as-lines.txt")
    with open(lines, "w", encoding="utf-8") as f:
        f.write(copy_text([list(d.sentences) for d in docs], 0))
    _, t_lines = read_rate(lines, SourceConfig(text_format="bert_lines"))
    vocab = [line.rstrip("\n") for line in open(minilm_vocab(), encoding="utf-8")]
    tok = build_tokenizer(vocab, True)
    tdocs, t_tok = timed(
        lambda: [TokenizedDocument.from_sentences(d.doc_id, encode_sentences(tok, d.sentences)) for d in docs]
    )
    tokens = sum(len(d.ids) for d in tdocs)
    words = sum(len(s.split()) for d in docs for s in d.sentences)
    mv, params, masking = masking_vocabulary(vocab), InstanceParams(), MaskingParams()
    cols, t_ex = timed(
        lambda: ExampleColumns.concat(
            [
                examples_for_document(tdocs, i, p, 1, params, masking, mv)
                for p in range(DUPE_FACTOR)
                for i in range(len(tdocs))
            ]
        )
    )
    fmt = ExampleFormat(example_schema(len(vocab), "nsp", "static"), 1024, 1)
    (data, _, _), t_write = timed(lambda: fmt.encode([to_record_batch(cols, fmt.schema)]))
    counter = WordCounter(True)
    counts, t_count = timed(lambda: counter.count(s for d in docs for s in d.sentences))
    _, t_train = timed(lambda: train_wordpiece(counts, 30522, SPECIAL_TOKENS, 2, 1000))
    # The trainer at more distinct words: the sample's counts 8 times over, each copy's words
    # with their own suffix (8x the distinct words, the same frequency profile).
    wide = {f"{w}{chr(0x3B1 + k)}": c for k in range(8) for w, c in counts.items()}
    _, t_wide = timed(lambda: train_wordpiece(wide, 30522, SPECIAL_TOKENS, 2, 1000))
    # Heaps' law V = K n^beta on the sample's growing prefix: distinct words of a larger sample.
    half = WordCounter(True).count(s for d in docs[: len(docs) // 4] for s in d.sentences)
    n_half, n_all = sum(half.values()), sum(counts.values())
    beta = math.log(len(counts) / len(half)) / math.log(n_all / n_half)
    return dict(
        tokens=tokens,
        words=words,
        tokens_per_word=tokens / words,
        docs=len(docs),
        rate={
            "read + wikitext + clean (XML dumps)": tokens / t_wiki,
            "read + clean (books)": tokens / t_book,
            "read (pre-split lines)": tokens / t_lines,
            "WordPiece": tokens / t_tok,
            f"instances + masks (x{DUPE_FACTOR})": tokens / t_ex,
            "Arrow encode": tokens / t_write,
        },
        shard_bytes_per_token=len(data) / tokens,
        vocab_s_per_distinct_word=max(t_train / len(counts), t_wide / len(wide)),
        vocab_sample=(len(counts), t_train),
        vocab_wide=(len(wide), t_wide),
        count_words_per_s=n_all / t_count,
        scan_compressed_bytes_per_s=os.path.getsize(wiki) / t_scan,
        distinct_words=len(counts),
        counted_words=n_all,
        heaps_beta=beta,
    )


def defaults_job(work: str, scale: int = 64) -> dict:
    """The job at its defaults on ``scale`` copies of the sample (one file), 2 workers: peak memory
    per process and the spill directory's peak size."""
    docs = sample_documents()
    [big] = make_inputs(work, docs, scale)["one file"]
    out = os.path.join(work, "defaults-out")
    peak = {"spill": 0}
    done = threading.Event()

    def watch():
        while not done.is_set():
            total = 0
            for root, _, files in os.walk(out):
                if "/.temp-" in root + "/":
                    for name in files:
                        try:
                            total += os.path.getsize(os.path.join(root, name))
                        except OSError:
                            pass
            peak["spill"] = max(peak["spill"], total)
            time.sleep(0.5)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    r = run_job([big], out, 2, minilm_vocab(), ["source.text_format=bert_lines"])
    done.set()
    t.join()
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    r.update(
        input_bytes=os.path.getsize(big),
        spill_peak=peak["spill"],
        shard_bytes=sum(s["bytes"] for s in manifest["shards"] if s["split"] in ("train", "eval")),
        shards=sum(1 for s in manifest["shards"] if s["split"] == "train"),
    )
    return r


# --- GPU memory of a training step --------------------------------------------------------------
# On paper, what one rank holds at the peak of a bf16 training step. The GPU presets are sized with it
# (tests/unit/test_gpu_presets.py checks them against 80 and 141 GB); `--train-memory` prints it for
# any composed trainer config. The tensors counted are those the model's modules keep for backward in
# eager mode (torch.compile may recompute some pointwise results instead: less, not more).

GPU_MEMORY_BYTES = {"H100 80GB": 80e9, "H200 141GB": 141e9}
"""Device memory as sold, in decimal bytes (the devices report slightly more)."""
MEMORY_MARGIN = 0.8
"""A preset's estimate must stay under this fraction of the device: the estimate is not a measurement."""
WORKSPACE_BYTES = 4e9
"""A fixed allowance, not derived: CUDA context, cuBLAS and compiled kernels' workspaces, NCCL
buffers, the caching allocator's fragmentation, transient gradients of one layer's activations."""
STATE_BYTES_PER_PARAMETER = {
    # ZeRO 1-3 under bf16: DeepSpeed's bf16 mode (training.deepspeed_config.bf16_weights)
    "bf16 weights": {
        "bf16 weights": 2,
        "bf16 gradients": 2,
        "fp32 master weights": 4,
        "fp32 gradient accumulator": 4,
        "optimizer moments (AdamW, LAMB: two fp32)": 8,
    },
    # ZeRO-0 under bf16: fp32 weights, the compute under torch autocast
    "autocast": {
        "fp32 weights": 4,
        "fp32 gradients": 4,
        "optimizer moments (AdamW, LAMB: two fp32)": 8,
        "autocast's bf16 copies of the weights, kept for one forward and backward": 2,
    },
}
"""What a parameter costs in each of the two ways the engine runs bf16, nothing sharded (one rank: the
most any rank holds; ZeRO 1-2 divide the fp32 parts by the ranks)."""


@dataclass(frozen=True)
class StepMemory:
    """Peak device memory of one rank's bf16 training step, by part, in bytes."""

    parameters: int
    """The model's parameters (tied decoder counted once)."""
    states: float
    """Weights, gradients, fp32 masters and moments (STATE_BYTES_PER_PARAMETER)."""
    buckets: float
    """ZeRO-2's communication buffers: two reduce buckets (overlap_comm) and one all-gather bucket."""
    activations: float
    """What the embeddings and the encoder layers keep for backward."""
    mlm_head: float
    """The MLM head on its rows (B x P masked slots, or B x T with the dense head), logits included."""
    workspace: float = WORKSPACE_BYTES

    @property
    def total(self) -> float:
        return self.states + self.buckets + self.activations + self.mlm_head + self.workspace

    def describe(self) -> str:
        parts = ("states", "buckets", "activations", "mlm_head", "workspace")
        return ", ".join(f"{p} {getattr(self, p) / 1e9:.1f}" for p in parts) + f" = {self.total / 1e9:.1f} GB"


def encoder_layer_bytes_per_token(
    hidden: int, intermediate: int, heads: int, seq_len: int, math_attention: bool, autocast: bool = False
) -> int:
    """Bytes one post-norm BERT layer keeps for backward per token: bf16 activations (2 bytes),
    dropout masks (1 byte), LayerNorm statistics and SDPA's log-sum-exp (fp32).

    attention block: its input (read by the Q, K and V projections), q, k, v and the output (SDPA's
    backward), the output as (B, T, H) (the output projection), the LayerNorm input; a dropout mask.
    feed-forward block: its input, the pre-GELU (I) and post-GELU (I) activations, the LayerNorm input;
    a dropout mask. A flash or memory-efficient SDPA kernel keeps no (T x T) scores and recomputes the
    attention dropout from its seed; the math kernel keeps probabilities, their dropout mask and the
    dropped probabilities: 5 x heads x T bytes a token.
    Under autocast (fp32 weights) the residual stream is fp32: each LayerNorm keeps an fp32 input,
    and each of the Q, K and V projections its own bf16 copy of the block's input."""
    h, i = hidden, intermediate
    norm_input = 4 * h if autocast else 2 * h
    qkv_inputs = 3 * 2 * h if autocast else 2 * h
    attention = qkv_inputs + 2 * 3 * h + 2 * h + 2 * h + norm_input + h + 4 * heads + 8
    feed_forward = 2 * h + 2 * 2 * i + norm_input + h + 8
    scores = 5 * heads * seq_len if math_attention else 0
    return attention + feed_forward + scores


def parameter_count(bert) -> int:
    """Parameters of ``training.model.BertForPreTraining(bert)``, built on the meta device (no memory)."""
    import torch

    from training.model import BertForPreTraining

    with torch.device("meta"):
        return sum(p.numel() for p in BertForPreTraining(bert).parameters())


def training_step_memory(
    bert,
    micro_batch: int,
    seq_len: int,
    predictions_per_seq: int | None,
    zero_stage: int,
    autocast: bool,
    math_attention: bool = False,
) -> StepMemory:
    """The estimate for ``training.model.BertConfig`` ``bert`` at a micro batch of ``micro_batch``
    sequences padded to ``seq_len``; the sparse MLM head on ``predictions_per_seq`` slots a row, or
    the dense head on every position when None; ZeRO ``zero_stage``; bf16 as fp32 weights under
    autocast (``autocast``) or as DeepSpeed's bf16 weights with fp32 masters."""
    from training.deepspeed_config import bucket_elements

    n = parameter_count(bert)
    h, v = bert.hidden_size, bert.vocab_size
    per_layer = encoder_layer_bytes_per_token(
        h, bert.intermediate_size, bert.num_attention_heads, seq_len, math_attention, autocast
    )
    embeddings = (4 if autocast else 2) * h + h + 8  # the LayerNorm input, a dropout mask, statistics
    rows = micro_batch * (seq_len if predictions_per_seq is None else predictions_per_seq)
    # Per row: the transform's (H,) tensors (input, pre-GELU, LayerNorm input and output; the norm's
    # input in fp32 under autocast), the fp32 log-softmax the loss keeps (4V) and, in backward, its
    # fp32 and bf16 gradients (6V).
    head = rows * ((10 if autocast else 8) * h + 10 * v)
    states = STATE_BYTES_PER_PARAMETER["autocast" if autocast else "bf16 weights"]
    return StepMemory(
        parameters=n,
        states=n * sum(states.values()),
        buckets=3 * bucket_elements(None, n) * 4 if zero_stage == 2 else 0,  # fp32 (communication_data_type)
        activations=micro_batch * seq_len * (bert.num_hidden_layers * per_layer + embeddings),
        mlm_head=head,
    )


def compose_train_config(overrides: list[str]):
    """The trainer's config as `python -m training <overrides>` composes it (data_dir, output_dir and
    trainer.init_from filled in: sizing reads no data)."""
    from hydra import compose, initialize_config_dir

    from training.config import register_configs, to_train_config

    register_configs()
    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "train")
    fill = ["data_dir=-", "output_dir=-", "trainer.init_from=null"]
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        return to_train_config(compose(config_name="train", overrides=fill + list(overrides)))


def preset_memory(cfg, vocab_size: int = 30522, math_attention: bool = False) -> StepMemory:
    """The estimate for a composed ``TrainConfig`` at BERT's vocabulary, its micro batch padded to
    data.max_seq_length, the data job's default masking cap for that length."""
    from pipeline.config import MaskingConfig
    from training import models
    from training.deepspeed_config import bf16_weights

    if cfg.data.max_seq_length is None:
        raise SystemExit("data.max_seq_length is null: give one (e.g. data=seq128) to size a step")
    if cfg.deepspeed.precision != "bf16":
        raise SystemExit(f"the estimate is for deepspeed.precision=bf16, not {cfg.deepspeed.precision}")
    if cfg.model.architecture != "bert":
        raise SystemExit(f"the estimate counts BERT's layers, not model.architecture={cfg.model.architecture}")
    bert = models.of_schema(cfg.model).model_config(cfg.model, vocab_size, "nsp", 0)
    slots = MaskingConfig().predictions_cap(cfg.data.max_seq_length) if cfg.trainer.sparse_mlm_head else None
    return training_step_memory(
        bert,
        cfg.data.micro_batch_size,
        cfg.data.max_seq_length,
        slots,
        cfg.deepspeed.zero_stage,
        autocast=not bf16_weights(cfg.deepspeed),
        math_attention=math_attention,
    )


def print_train_memory(overrides: list[str]) -> None:
    from training.deepspeed_config import bf16_weights

    cfg = compose_train_config(overrides)
    print(
        f"# one rank's bf16 training step on paper: {' '.join(overrides) or '(defaults)'}: micro batch "
        f"{cfg.data.micro_batch_size} x {cfg.data.max_seq_length}, ZeRO-{cfg.deepspeed.zero_stage} "
        f"({'bf16 weights' if bf16_weights(cfg.deepspeed) else 'fp32 weights under bf16 autocast'}), "
        f"{'sparse' if cfg.trainer.sparse_mlm_head else 'dense'} MLM head, vocabulary 30,522 [estimated]"
    )
    for math_attention in (False, True):
        m = preset_memory(cfg, math_attention=math_attention)
        kernel = "math SDPA kernel (T x T scores kept)" if math_attention else "flash/memory-efficient SDPA"
        print(f"  {kernel}: {m.parameters / 1e6:.0f}M parameters; {m.describe()}")
        for gpu, size in GPU_MEMORY_BYTES.items():
            fits = "fits" if m.total <= MEMORY_MARGIN * size else "does NOT fit"
            print(f"    {gpu}: {m.total / size:.0%} of the device ({fits} under {MEMORY_MARGIN:.0%})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=None)
    ap.add_argument("--words", type=float, default=3.3e9)
    ap.add_argument("--wiki-fraction", type=float, default=2500 / 3300)
    ap.add_argument("--compressed-gb", type=float, default=20.0, help="compressed size of the inputs")
    ap.add_argument(
        "--files", type=int, default=60, help="input files (enwiki's pages-articles dump comes in ~60 parts)"
    )
    ap.add_argument(
        "--memory-json",
        default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "pipeline_memory.json"),
    )
    ap.add_argument(
        "--train-memory",
        nargs="*",
        metavar="OVERRIDE",
        default=None,
        help="instead: the GPU memory of one training step for the trainer config these overrides compose "
        "(e.g. experiment=bert_large_lamb_phase2), on paper",
    )
    args = ap.parse_args()
    if args.train_memory is not None:
        print_train_memory(args.train_memory)
        return
    work = args.work or tempfile.mkdtemp(prefix="bench-sizing-")
    os.makedirs(work, exist_ok=True)

    s = stage_rates(work)
    d = defaults_job(work)
    runs = json.load(open(args.memory_json))
    e2e = max((r for r in runs if r["code"] == "this checkout" and r["shape"] == "one file"), key=lambda r: r["scale"])
    # The memory benchmark's job does pre-split lines, WordPiece, instances and encoding: its
    # end-to-end rate against those stages summed is the runner's share, applied to every stage.
    r = s["rate"]
    lines_work = (
        1 / r["read (pre-split lines)"]
        + 1 / r["WordPiece"]
        + 1 / r[f"instances + masks (x{DUPE_FACTOR})"]
        + 1 / r["Arrow encode"]
    )
    overhead = (1 / e2e["tokens_per_s_per_core"]) / lines_work

    print(
        f"# measured here, one core, on the sample ({s['docs']} documents, {s['tokens']:,} tokens, "
        f"{s['tokens_per_word']:.2f} tokens per word with bert-base-uncased's vocabulary):"
    )
    for name, rate in r.items():
        print(f"  {name:38s} {rate:12,.0f} tokens/s")
    print(
        f"  end to end, 64x, 2 workers (bench/pipeline_memory.py): {e2e['tokens_per_s_per_core']:,.0f} tokens/s/core"
        f" = the stages' own time x {overhead:.2f} (runner, shuffles, spill)"
    )
    (n1, t1), (n2, t2) = s["vocab_sample"], s["vocab_wide"]
    print(
        f"  vocabulary: counting {s['count_words_per_s']:,.0f} words/s; WordPiece trainer {t1 / n1 * 1e3:.3f} ms per "
        f"distinct word at {n1:,} distinct words, {t2 / n2 * 1e3:.3f} ms at {n2:,}; Heaps exponent {s['heaps_beta']:.2f}"
    )
    print(
        f"  dump scan (decompress + find pages, one worker per file): {s['scan_compressed_bytes_per_s'] / 1e6:.1f} "
        "MB/s of .bz2"
    )
    print(f"  shards: {s['shard_bytes_per_token']:.1f} bytes per input token (seq 128, static masks x{DUPE_FACTOR})")
    print(
        f"  defaults job (64x, one file, 2 workers): {d['job_seconds']:.1f} s, {d['shards']} train shards, "
        f"peak RSS runner {d['runner_peak'] / 2**20:,.0f} MiB, largest worker {d['worker_peak'] / 2**20:,.0f} MiB, "
        f"spill peak {d['spill_peak'] / 1e6:,.0f} MB = {d['spill_peak'] / d['input_bytes']:.1f}x the input, "
        f"shards {d['shard_bytes'] / 1e6:,.0f} MB"
    )

    tokens = args.words * s["tokens_per_word"]
    wiki, books = tokens * args.wiki_fraction, tokens * (1 - args.wiki_fraction)
    hours = {
        "read + wikitext + clean (Wikipedia)": wiki / r["read + wikitext + clean (XML dumps)"],
        "read + clean (books)": books / r["read + clean (books)"],
        "WordPiece": tokens / r["WordPiece"],
        f"instances + masks (x{DUPE_FACTOR})": tokens / r[f"instances + masks (x{DUPE_FACTOR})"],
        "Arrow encode": tokens / r["Arrow encode"],
    }
    hours = {k: v * overhead / 3600 for k, v in hours.items()}
    total = sum(hours.values())
    # The vocabulary: train_sample_documents of ~6.2M articles + books, by document; the words in
    # that sample, and its distinct words by Heaps' law fitted on the sample.
    docs_total = WIKI_ARTICLES + BOOKS
    sample_words = args.words * min(1.0, SAMPLE_DOCS / docs_total)
    distinct = s["distinct_words"] * (sample_words / s["words"]) ** s["heaps_beta"]
    vocab_s = distinct * s["vocab_s_per_distinct_word"]  # the counting itself runs on every worker
    shards = math.ceil(tokens * 0.99 * DUPE_FACTOR / SHARD_TOKENS)
    shard_mb = SHARD_TOKENS / DUPE_FACTOR * s["shard_bytes_per_token"] / 1e6
    uncompressed_gb = args.compressed_gb * WIKI_MB_PER_GB_BZ2
    # Spill at its peak: the records as read (~ the input), the documents and tokenized documents
    # (measured: beyond the input and the examples twice), and the examples twice (the batches,
    # then the temporary shards).
    text_gb = args.words * 6 / 1e9  # ~6 bytes per English word with its space, assumed
    docs_factor = (d["spill_peak"] - d["input_bytes"] - 2 * d["shard_bytes"]) / d["input_bytes"]
    spill_gb = uncompressed_gb + docs_factor * text_gb + 2 * shards * shard_mb / 1e3
    scan_s = args.compressed_gb * 1e9 / args.files / s["scan_compressed_bytes_per_s"]

    print(
        f"\n# sizing: {args.words / 1e9:.1f}B words ({args.wiki_fraction:.0%} Wikipedia), {tokens / 1e9:.2f}B tokens "
        f"[extrapolated from the measured tokens per word], {args.compressed_gb:.0f} GB compressed\n"
    )
    print("| stage | worker-hours (1 core each) | |")
    print("|---|---:|---|")
    for k, v in hours.items():
        print(f"| {k} | {v:.1f} | extrapolated from the measured rate x {overhead:.2f} |")
    print(f"| **all stages** | **{total:.1f}** | extrapolated |")
    print(
        f"| vocabulary (one worker, serial) | {vocab_s / 3600:.2f} | {distinct / 1e6:.1f}M distinct words in "
        f"{SAMPLE_DOCS:,} sampled documents (Heaps' law from the sample) x measured "
        f"{s['vocab_s_per_distinct_word'] * 1e3:.2f} ms |"
    )
    print()
    print("| output and resources | value | |")
    print("|---|---:|---|")
    print(
        f"| train shards | {shards:,} of ~{shard_mb:,.0f} MB ({shards * shard_mb / 1e3:,.0f} GB) | extrapolated from "
        f"{s['shard_bytes_per_token']:.1f} measured bytes per token |"
    )
    print(
        f"| peak memory per worker | {d['worker_peak'] / 2**20:,.0f} MiB | measured at the defaults (full pools "
        f"and 64M-token shards) |"
    )
    print(
        f"| peak memory, local runner | {d['runner_peak'] / 2**20:,.0f} MiB + ~250 B per document "
        f"({docs_total * 250 / 1e9:.1f} GB) | measured / estimated |"
    )
    print(
        f"| spill space (temp dir, until the job ends) | {spill_gb:,.0f} GB | the input as read (~{uncompressed_gb:.0f} GB "
        f"uncompressed, assumed) + {docs_factor:.1f}x the text (~{text_gb:.0f} GB; documents and tokens, measured) + "
        f"2x the shards (measured: {d['spill_peak'] / 1e6:,.0f} MB for {d['input_bytes'] / 1e6:,.0f} MB of text and "
        f"{d['shard_bytes'] / 1e6:,.0f} MB of shards) |"
    )
    print()
    print("| workers | wall time | |")
    print("|---:|---:|---|")
    for n in (16, 64, 256):
        wall = max(total / n, scan_s / 3600) + vocab_s / 3600
        print(
            f"| {n} | {wall:.2f} h ({wall * 60:.0f} min) | extrapolated: worker-hours / workers (at least one "
            f"file's scan, {scan_s / 60:.1f} min for {args.compressed_gb / args.files * 1e3:,.0f} MB) + the serial "
            f"vocabulary step; cluster start-up, autoscaling and the runner's own overhead beyond the local one's "
            f"not included |"
        )


if __name__ == "__main__":
    main()
