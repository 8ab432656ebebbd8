"""Training throughput of this repository's BERT, eager and compiled, against transformers'
`BertForPreTraining`, in one run.

    python bench/train_throughput.py [--model mini|base|...] [--micro-batch 32] [--seq-len 128]
                                     [--warmup 3] [--steps 10] [--rounds 1] [--work DIR] [--data-dir DIR]
                                     [--no-compile] [--unpad] [--profile DIR [--profile-steps 5]]

Every model trains on the same real examples (the shard loader over the Wikipedia sample: built
here with the pipeline, static masks, at --seq-len, unless --data-dir points at existing shards),
from the same initial weights (ours' state_dict loaded into theirs, strict), with the same
optimizer (torch AdamW through training.optim.build_optimizer), the same precision (fp32 on CPU,
bf16 autocast on CUDA) and the same micro batch. A step is a full training step: forward,
backward and optimizer step. Warmup steps (compilation included) are not timed.

  ours:          training.model.BertForPreTraining, eager, on the batches the trainer's collator
                 makes by default: T padded to the longest sequence (a multiple of
                 --pad-to-multiple-of), P = the shards' max_predictions_per_seq masked slots a row;
                 SDPA attention; the MLM head (H x V projection) on those slots only; no attention
                 mask on a batch without padding (training.objectives.mlm.forward_inputs).
  ours compiled: the same model under nn.Module.compile(fullgraph=True, dynamic=False), on the same
                 examples padded to one shape (T = max_seq_length, data.pad_to_max_length: what the
                 GPU presets run); a recompile during the timed steps fails the run.
  transformers:  transformers.BertForPreTraining(attn_implementation="sdpa") as it works: the MLM
                 head on every position, dense (B, T) labels with -100 except at the masked positions.

The models take turns (--interleave), so all see the same machine load. Prints per model:
non-padding tokens/s, samples/s, step time, achieved TFLOP/s, MFU when the GPU's peak is known
(training.throughput), and the ratios eager / transformers and compiled / transformers.
--profile DIR then records a torch.profiler trace of --profile-steps steps of each of our runners
(DIR/trace-<runner>.json, for chrome://tracing or Perfetto, and DIR/ops-<runner>.txt, the top
operators). Goals: >= 2x eager and >= 4x compiled against transformers on CPU for mini at length
128 (issues 3 and 18); >= 1.5x and >= 50% MFU for base at length 128 on an H100.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402
import transformers  # noqa: E402

from pipeline import contract  # noqa: E402
from sample_shards import build_sample_shards  # noqa: E402
from training.config import DataConfig, OptimConfig  # noqa: E402
from training.data import RunExpectations, dense_mlm_labels, open_pretraining_data  # noqa: E402
from training.labels import IGNORE_INDEX  # noqa: E402
from training.model import BertConfig, BertForPreTraining, flops_per_token  # noqa: E402
from training.models import bert_presets, preset_fields  # noqa: E402
from training.objectives.mlm import forward_inputs  # noqa: E402
from training.optim import build_optimizer, param_groups  # noqa: E402
from training.throughput import mfu, resolve_peak_tflops  # noqa: E402


def parse_args() -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        choices=sorted(bert_presets()),
        default="base" if cuda else "mini",
        help="a BERT preset of conf/train/model/ (default: base on GPU, mini on CPU)",
    )
    p.add_argument("--micro-batch", type=int, default=32, help="sequences per step (default 32)")
    p.add_argument(
        "--seq-len",
        type=int,
        default=128,
        help="max_seq_length the shards must have (and that the pipeline builds; default 128)",
    )
    p.add_argument("--data-dir", default=None, help="existing shard directory (default: build one under --work)")
    p.add_argument("--work", default=None, help="where to build the shards (default: a temporary directory)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per model and round (default 3)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per model and round (default 10)")
    p.add_argument(
        "--rounds", type=int, default=1, help="alternate the two models this many times (timed steps add up; default 1)"
    )
    p.add_argument(
        "--interleave",
        choices=["step", "model"],
        default="model" if cuda else "step",
        help="step: alternate the models every step (each step timed on its own, so both see the "
        "same machine load; default on CPU); model: each model runs its warmup and timed steps "
        "in one block per round (no sync between steps; default on GPU)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores)")
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    p.add_argument(
        "--pad-to-multiple-of",
        type=int,
        default=8 if cuda else 1,
        help="collator padding multiple (default 8 on GPU, 1 on CPU)",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: the table's)")
    p.add_argument(
        "--fused-adamw",
        action="store_true",
        help="torch.optim.AdamW(fused=True) for both models (default: the trainer's build_optimizer)",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="on GPU, also time forward / backward / optimizer (a sync per phase; always on CPU)",
    )
    p.add_argument(
        "--unpad",
        action="store_true",
        help="also time ours with the unpadded encoder (trainer.unpad: dense layers on real tokens only)",
    )
    p.add_argument(
        "--no-compile", action="store_true", help="leave out ours compiled (compilation takes a minute or more)"
    )
    p.add_argument(
        "--profile", metavar="DIR", default=None, help="after timing, write a torch.profiler trace of our runners here"
    )
    p.add_argument("--profile-steps", type=int, default=5, help="steps per profiled runner (default 5)")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    for name in ("micro_batch", "steps", "rounds", "profile_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


# --- data -------------------------------------------------------------------------------------


def build_shards(work: str, seq_len: int) -> str:
    """Run the data job on the real Wikipedia sample (static masks) into work/shards-<seq_len>."""
    length = [f"instances.max_seq_length={seq_len}"] if seq_len != 128 else []  # 128: the job's default
    return build_sample_shards(os.path.join(work, f"shards-{seq_len}"), "tokenizer.vocab_size=30522", *length)


def load_batches(
    data_dir: str, model_cfg: BertConfig, args: argparse.Namespace, count: int, fixed_shape: bool = False
) -> list[dict]:
    """`count` collated training batches as the trainer's loader makes them (cycling through the epoch
    if it is shorter); ``fixed_shape``: every batch padded to max_seq_length (data.pad_to_max_length).
    The examples and their order depend on the seed only, not on the padding."""
    cfg = DataConfig(
        micro_batch_size=args.micro_batch,
        max_seq_length=args.seq_len,
        num_workers=0,
        pin_memory=False,
        pad_to_multiple_of=args.pad_to_multiple_of,
        pad_to_max_length=fixed_shape,
    )
    data = open_pretraining_data(data_dir, cfg, args.seed, RunExpectations.of_model(model_cfg), unpad=args.unpad)
    loader = data.train_loader()
    batches: list[dict] = []
    while len(batches) < count:
        before = len(batches)
        for batch in loader:
            batches.append(batch)
            if len(batches) == count:
                break
        if len(batches) == before:
            raise SystemExit(f"{data_dir}: fewer rows than one batch of {args.micro_batch}")
    return batches


def stage(batch: dict, fixed: dict | None, device: torch.device) -> dict:
    """One step's inputs on the device, made before any timing: "ours" as the trainer passes them
    (``forward_inputs``), "ours fixed" the same examples in one shape (``fixed``, for the compiled
    model), "transformers" its keyword arguments; with the host-side counts."""
    theirs = dict(
        input_ids=batch["input_ids"],
        token_type_ids=batch["token_type_ids"],
        attention_mask=batch["attention_mask"],
        labels=dense_mlm_labels(batch),  # (B, T): the MLM head on every position
    )
    if "next_sentence_label" in batch:
        theirs["next_sentence_label"] = batch["next_sentence_label"]
    return {
        "ours": forward_inputs(batch, device, sparse_head=True),
        "ours fixed": None if fixed is None else forward_inputs(fixed, device, sparse_head=True),
        "transformers": {k: v.to(device) for k, v in theirs.items()},
        "num_tokens": int(batch["num_tokens"]),
        "samples": int(batch["input_ids"].shape[0]),
    }


# --- models -----------------------------------------------------------------------------------


def build_models(model_cfg: BertConfig, device: torch.device):
    ours = BertForPreTraining(model_cfg)
    hf_cfg = transformers.BertConfig(**model_cfg.to_hf_config_dict(), attn_implementation="sdpa")
    hf_cls = transformers.BertForPreTraining if model_cfg.with_nsp_head else transformers.BertForMaskedLM
    theirs = hf_cls(hf_cfg)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.to(device).train()
    theirs.to(device).train()
    if theirs.get_output_embeddings().weight is not theirs.get_input_embeddings().weight:
        raise SystemExit("transformers' decoder is not tied to the word embeddings")
    return ours, theirs


def step_fn(model, inputs: str):
    """The loss of ``model`` on a staged batch's ``inputs`` ("ours", "ours fixed" or "transformers")."""

    def forward(staged: dict) -> torch.Tensor:
        return model(**staged[inputs]).loss

    return forward


@torch.no_grad()
def check_same_loss(ours, theirs, staged: dict, autocast) -> tuple[float, float]:
    """Both models' loss on one batch without dropout, before any training step."""
    ours.eval(), theirs.eval()
    with autocast():
        a = float(step_fn(ours, "ours")(staged))
        b = float(step_fn(theirs, "transformers")(staged))
    ours.train(), theirs.train()
    return a, b


def compiled_copy(ours: BertForPreTraining, model_cfg: BertConfig, device: torch.device) -> BertForPreTraining:
    """A second model with ours' weights under ``nn.Module.compile(fullgraph=True, dynamic=False)``:
    one graph of forward and loss for the one shape of the fixed batches (compiled at its first step)."""
    model = BertForPreTraining(model_cfg)
    model.load_state_dict(ours.state_dict(), strict=True)
    model.to(device).train()
    model.compile(fullgraph=True, dynamic=False)
    return model


class Runner:
    """One model, its optimizer and its accumulated timings."""

    def __init__(
        self, name: str, model, forward, device: torch.device, autocast, fused: bool = False, breakdown: bool = False
    ):
        self.name, self.model, self.forward = name, model, forward
        optim = OptimConfig()
        if fused:
            self.optimizer = torch.optim.AdamW(
                param_groups(model, optim.weight_decay),
                lr=optim.lr,
                betas=tuple(optim.betas),
                eps=optim.eps,
                weight_decay=optim.weight_decay,
                fused=True,
            )
        else:
            self.optimizer = build_optimizer(model, optim)  # torch.optim.AdamW, decay/no-decay groups
        self.device, self.autocast = device, autocast
        # Phase times need no sync on CPU; on GPU they cost one per phase, so only on request.
        self.breakdown = breakdown or device.type == "cpu"
        self.phases = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
        self.seconds = 0.0
        self.step_seconds: list[float] = []
        self.steps = self.samples = self.tokens = 0
        self.last_loss = float("nan")

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def step(self, batch: dict, timed: bool = False) -> torch.Tensor:
        clock = timed and self.breakdown
        if clock:
            self.sync()
            t0 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.forward(batch)
        if clock:
            self.sync()
            t1 = time.perf_counter()
        loss.backward()
        if clock:
            self.sync()
            t2 = time.perf_counter()
        self.optimizer.step()
        if clock:
            self.sync()
            t3 = time.perf_counter()
            self.phases["forward"] += t1 - t0
            self.phases["backward"] += t2 - t1
            self.phases["optimizer"] += t3 - t2
        return loss

    def warm(self, batches: list[dict]) -> None:
        """Untimed steps (a compiled model compiles in its first)."""
        for batch in batches:
            self.step(batch)
        self.sync()

    def run(self, timed: list[dict]) -> None:
        """Timed steps back to back, one sync at the end: for model-by-model interleaving."""
        loss = None
        start = last = time.perf_counter()
        for batch in timed:
            loss = self.step(batch, timed=True)
            if self.device.type == "cpu":  # per-step times on CPU only (a GPU sync per step would cost)
                now = time.perf_counter()
                self.step_seconds.append(now - last)
                last = now
        self.sync()
        self.seconds += time.perf_counter() - start
        self.steps += len(timed)
        self.samples += sum(b["samples"] for b in timed)
        self.tokens += sum(b["num_tokens"] for b in timed)
        self.last_loss = float(loss.detach())

    def timed_step(self, batch: dict) -> None:
        """One timed step on its own (synchronised before and after): for step-by-step interleaving."""
        self.sync()
        start = time.perf_counter()
        loss = self.step(batch, timed=True)
        self.sync()
        seconds = time.perf_counter() - start
        self.seconds += seconds
        self.step_seconds.append(seconds)
        self.steps += 1
        self.samples += batch["samples"]
        self.tokens += batch["num_tokens"]
        self.last_loss = float(loss.detach())

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def precision_for(device: torch.device):
    """(autocast context factory, precision label, device name): bf16 autocast on CUDA, fp32 on CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16)),
            "bf16 autocast",
            torch.cuda.get_device_name(device),
        )
    name = f"CPU, {torch.get_num_threads()} threads ({os.cpu_count()} cores)"
    return (lambda: torch.autocast("cpu", enabled=False)), "fp32", name


def build_runners(model_cfg: BertConfig, args, device: torch.device, autocast, staged: list[dict]):
    """The runners, ours first and transformers second, and the two models' loss on the first batch."""
    torch.manual_seed(args.seed)
    ours, theirs = build_models(model_cfg, device)
    same = check_same_loss(ours, theirs, staged[0], autocast)

    def runner(name: str, model, inputs: str) -> Runner:
        return Runner(name, model, step_fn(model, inputs), device, autocast, args.fused_adamw, args.breakdown)

    runners = [runner("ours", ours, "ours"), runner("transformers", theirs, "transformers")]
    if not args.no_compile:
        runners.append(runner("ours compiled", compiled_copy(ours, model_cfg, device), "ours fixed"))
    if args.unpad:
        unpadded = BertForPreTraining(model_cfg, unpad=True)
        unpadded.load_state_dict(ours.state_dict(), strict=True)
        runners.append(runner("ours unpadded", unpadded.to(device).train(), "ours"))
    return runners, same


def run_rounds(runners: list[Runner], staged: list[dict], args) -> None:
    """Warmup then timed steps, round after round; a recompile in a timed step is an error (the
    compiled model must see one shape)."""
    per_round = args.warmup + args.steps
    for r in range(args.rounds):
        chunk = staged[r * per_round : (r + 1) * per_round]
        if args.interleave == "model":
            for runner in runners:
                runner.warm(chunk[: args.warmup])
                with torch._dynamo.config.patch(error_on_recompile=True):
                    runner.run(chunk[args.warmup :])
        else:
            for batch in chunk[: args.warmup]:
                for runner in runners:
                    runner.warm([batch])
            with torch._dynamo.config.patch(error_on_recompile=True):
                for i, batch in enumerate(chunk[args.warmup :]):
                    for runner in runners[i % len(runners) :] + runners[: i % len(runners)]:  # rotate who goes first
                        runner.timed_step(batch)
        for runner in runners:
            print(
                f"  round {r + 1}: {runner.name:<14} {runner.tokens / runner.seconds:10,.0f} tokens/s so far "
                f"(last loss {runner.last_loss:.3f})",
                flush=True,
            )


def profile_runners(runners: list[Runner], staged: list[dict], out_dir: str) -> None:
    """A torch.profiler trace of a few steps of each of our runners: out_dir/trace-<runner>.json and
    the top operators by self time in out_dir/ops-<runner>.txt."""
    from torch.profiler import ProfilerActivity, profile

    os.makedirs(out_dir, exist_ok=True)
    for runner in runners:
        if runner.name == "transformers":
            continue
        cuda = runner.device.type == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            for batch in staged:
                runner.step(batch)
            runner.sync()
        name = runner.name.replace(" ", "-")
        prof.export_chrome_trace(os.path.join(out_dir, f"trace-{name}.json"))
        table = prof.key_averages().table(
            sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=40
        )
        with open(os.path.join(out_dir, f"ops-{name}.txt"), "w") as f:
            f.write(f"{runner.name}: {len(staged)} training steps\n{table}\n")
        print(f"profile       {runner.name}: {len(staged)} steps -> {out_dir}/trace-{name}.json, ops-{name}.txt")


def print_report(runners: list[Runner], model_cfg: BertConfig, args, device: torch.device, timed: list[dict]) -> None:
    """The table, the ratios against transformers and the goals."""
    tokens = sum(int(b["num_tokens"]) for b in timed)
    predicted = sum(int((b["masked_lm_labels"] != IGNORE_INDEX).sum()) for b in timed)
    seq_len = statistics.mean(b["input_ids"].shape[1] for b in timed)  # padded length T of the steps
    sparse_fraction = predicted / tokens
    peak = resolve_peak_tflops(args.peak_tflops) if device.type == "cuda" or args.peak_tflops else None
    ours_flops = flops_per_token(model_cfg, round(seq_len), sparse_fraction)
    flops = {r.name: ours_flops for r in runners}  # model FLOPs per real token: the same for every layout
    flops["transformers"] = flops_per_token(model_cfg, round(seq_len), None)
    print()
    print(
        f"{'':<16}{'tokens/s':>12}{'samples/s':>11}{'step ms':>10}{'step ms med':>13}"
        f"{'GFLOP/tok':>11}{'TFLOP/s':>9}{'MFU':>8}"
    )
    for runner in runners:
        tps = runner.tokens_per_s
        med = f"{1e3 * statistics.median(runner.step_seconds):.1f}" if runner.step_seconds else "-"
        util = f"{mfu(tps, flops[runner.name], peak):.1%}" if peak else "n/a"
        print(
            f"{runner.name:<16}{tps:12,.0f}{runner.samples / runner.seconds:11.1f}"
            f"{1e3 * runner.seconds / runner.steps:10.1f}{med:>13}{flops[runner.name] / 1e9:11.3f}"
            f"{tps * flops[runner.name] / 1e12:9.3f}{util:>8}"
        )
    if runners[0].breakdown:
        print()
        print(f"{'ms per step':<16}{'forward':>10}{'backward':>10}{'optimizer':>11}")
        for runner in runners:
            ms = {k: 1e3 * v / runner.steps for k, v in runner.phases.items()}
            print(f"{runner.name:<16}{ms['forward']:10.1f}{ms['backward']:10.1f}{ms['optimizer']:11.1f}")
    by_name = {r.name: r.tokens_per_s for r in runners}
    theirs = by_name["transformers"]
    print()
    print(f"ratio ours eager / transformers (non-padding tokens/s): {by_name['ours'] / theirs:.2f}x")
    if "ours compiled" in by_name:
        print(f"ratio ours compiled / transformers (non-padding tokens/s): {by_name['ours compiled'] / theirs:.2f}x")
        print(f"ratio ours compiled / ours eager: {by_name['ours compiled'] / by_name['ours']:.2f}x")
    if "ours unpadded" in by_name:
        print(
            f"ratio ours unpadded / ours padded: {by_name['ours unpadded'] / by_name['ours']:.2f}x  "
            f"(ours unpadded / transformers: {by_name['ours unpadded'] / theirs:.2f}x)"
        )
    if peak is None:
        print(
            "MFU: no peak known for this device (CPU, or pass --peak-tflops); GFLOP/tok counts each "
            "model's own MLM head (sparse for ours, every token for transformers)"
        )
    else:
        print(
            f"MFU against a peak of {peak:.0f} TFLOP/s; GFLOP/tok counts each model's own MLM head "
            f"(sparse for ours, every token for transformers)"
        )
    if device.type == "cpu" and args.model == "mini" and args.seq_len == 128:
        eager = by_name["ours"] / theirs
        print(f"goal (CPU, mini, length 128): ours eager >= 2x transformers: {'met' if eager >= 2 else 'NOT met'}")
        if "ours compiled" in by_name:
            compiled = by_name["ours compiled"] / theirs
            print(
                f"goal (CPU, mini, length 128): ours compiled >= 4x transformers: {'met' if compiled >= 4 else 'NOT met'}"
            )
    if device.type == "cuda" and args.model == "base" and args.seq_len == 128 and peak:
        best = max(by_name[n] for n in by_name if n != "transformers")
        u = mfu(best, ours_flops, peak)
        ok = best / theirs >= 1.5 and u >= 0.5
        print(
            f"goal (GPU, base, length 128): best of ours >= 1.5x transformers and >= 50% MFU: {'met' if ok else 'NOT met'}"
        )


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    autocast, precision, device_name = precision_for(device)

    tmp = None
    data_dir = args.data_dir
    if data_dir is None:
        work = args.work
        if work is None:
            tmp = tempfile.TemporaryDirectory(prefix="train_throughput_")
            work = tmp.name
        data_dir = build_shards(work, args.seq_len)
    manifest = contract.read_manifest(data_dir)
    model_cfg = BertConfig(
        vocab_size=manifest.vocab_size,
        max_position_embeddings=max(512, args.seq_len),
        with_nsp_head=manifest.objective != "none",
        **preset_fields(args.model),
    )

    per_round = args.warmup + args.steps
    batches = load_batches(data_dir, model_cfg, args, per_round * args.rounds)
    fixed = [None] * len(batches)
    if not args.no_compile:
        fixed = load_batches(data_dir, model_cfg, args, len(batches), fixed_shape=True)
        assert all(torch.equal(a["example_id"], b["example_id"]) for a, b in zip(batches, fixed)), "same examples"
    staged = [stage(b, f, device) for b, f in zip(batches, fixed)]
    runners, (loss_ours, loss_theirs) = build_runners(model_cfg, args, device, autocast, staged)

    timed = [b for r in range(args.rounds) for b in batches[r * per_round + args.warmup : (r + 1) * per_round]]
    padded = sum(b["input_ids"].numel() for b in timed)
    tokens = sum(int(b["num_tokens"]) for b in timed)
    predicted = sum(int((b["masked_lm_labels"] != IGNORE_INDEX).sum()) for b in timed)
    n_params = sum(p.numel() for p in runners[0].model.parameters())
    print(f"device        {device_name}; torch {torch.__version__}, transformers {transformers.__version__}")
    print(
        f"model         {args.model}: L={model_cfg.num_hidden_layers} H={model_cfg.hidden_size} "
        f"heads={model_cfg.num_attention_heads} V={model_cfg.vocab_size}, {n_params / 1e6:.1f}M parameters, "
        f"NSP head {model_cfg.with_nsp_head}"
    )
    print(
        f"setup         {precision}; micro batch {args.micro_batch}; {args.warmup} warmup + {args.steps} timed "
        f"steps x {args.rounds} round(s) per model, interleaved by {args.interleave}; "
        f"torch.optim.AdamW{'(fused=True)' if args.fused_adamw else ''}; data {data_dir}"
    )
    print(
        f"timed batches padded length {statistics.mean(b['input_ids'].shape[1] for b in timed):.1f} (compiled: "
        f"{args.seq_len}); non-padding {tokens / padded:.1%} of {padded} positions; {predicted / tokens:.1%} of "
        f"tokens predicted ({predicted / len(timed):.1f}/batch, {timed[0]['masked_lm_labels'].shape[1]} slots a row)"
    )
    print(f"same weights  initial loss (no dropout) ours {loss_ours:.4f}, transformers {loss_theirs:.4f}")
    print(flush=True)

    run_rounds(runners, staged, args)
    print_report(runners, model_cfg, args, device, timed)
    if args.profile:
        print()
        profile_runners(runners, staged[: args.profile_steps], args.profile)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
