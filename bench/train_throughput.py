"""Training throughput of this repository's BERT against transformers' `BertForPreTraining`, in one run.

    python bench/train_throughput.py [--model mini|base|...] [--micro-batch 32] [--data-dir DIR]
                                     [--warmup 3] [--steps 10] [--rounds 1] [--work DIR]

Both models train on the same real batches (the shard loader over the Wikipedia sample: built
here with the pipeline, length 128, static masks, unless --data-dir points at existing shards),
from the same initial weights (ours' state_dict loaded into theirs, strict), with the same
optimizer (torch AdamW through training.optim.build_optimizer), the same precision (fp32 on CPU,
bf16 autocast on CUDA) and the same micro batch. A step is a full training step: forward,
backward and optimizer step. Warmup steps are not timed.

  ours:         training.model.BertForPreTraining, SDPA attention, the MLM head (H x V projection)
                on the masked positions only (masked_lm_positions / masked_lm_labels).
  transformers: transformers.BertForPreTraining(attn_implementation="sdpa") as it works: the MLM
                head on every position, dense (B, T) labels with -100 except at the masked positions.

Prints per model: non-padding tokens/s, samples/s, step time, achieved TFLOP/s, MFU when the GPU's
peak is known (training.throughput), and the ratio ours / transformers. Goals (issue 3): >= 2x on
CPU for mini at length 128; >= 1.5x and >= 50% MFU for base at length 128 on an H100.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402
import transformers  # noqa: E402

from pipeline import contract  # noqa: E402
from training.config import DataConfig, OptimConfig  # noqa: E402
from training.data import RunExpectations, dense_mlm_labels, model_inputs, open_pretraining_data  # noqa: E402
from training.labels import IGNORE_INDEX  # noqa: E402
from training.model import PRESETS, BertConfig, BertForPreTraining, flops_per_token  # noqa: E402
from training.optim import build_optimizer, param_groups  # noqa: E402
from training.throughput import mfu, resolve_peak_tflops  # noqa: E402


def parse_args() -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model",
        choices=sorted(PRESETS),
        default="base" if cuda else "mini",
        help="preset of training.model.PRESETS (default: base on GPU, mini on CPU)",
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
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args()
    for name in ("micro_batch", "steps", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


# --- data -------------------------------------------------------------------------------------


def build_shards(work: str, seq_len: int) -> str:
    """Run the data job on the real Wikipedia sample (static masks) into work/shards."""
    out = os.path.join(work, "shards")
    if os.path.exists(os.path.join(out, contract.MANIFEST_FILE)):
        print(f"reusing shards in {out}", flush=True)
        return out
    cmd = [
        sys.executable,
        "-m",
        "pipeline",
        f"output_dir={out}",
        "tokenizer.vocab_size=30522",
        "runner.direct_num_workers=1",
        "runner.direct_running_mode=in_memory",
    ]
    if seq_len != 128:  # the job's default
        cmd.append(f"instances.max_seq_length={seq_len}")
    print("building shards:", " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"the pipeline failed (exit {done.returncode})")
    print(f"  built in {time.perf_counter() - start:.1f} s", flush=True)
    return out


def load_batches(data_dir: str, model_cfg: BertConfig, args: argparse.Namespace, count: int) -> list[dict]:
    """`count` collated training batches (cycling through the epoch if it is shorter)."""
    cfg = DataConfig(micro_batch_size=args.micro_batch, max_seq_length=args.seq_len, num_workers=0, pin_memory=False)
    data = open_pretraining_data(
        data_dir, cfg, args.seed, RunExpectations.of_model(model_cfg), pad_to_multiple_of=args.pad_to_multiple_of
    )
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


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


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


def ours_step_fn(model):
    def forward(batch):
        return model(**model_inputs(batch)).loss

    return forward


def theirs_step_fn(model):
    def forward(batch):
        kwargs = dict(
            input_ids=batch["input_ids"],
            token_type_ids=batch["token_type_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["dense_labels"],
        )
        if "next_sentence_label" in batch:
            kwargs["next_sentence_label"] = batch["next_sentence_label"]
        return model(**kwargs).loss

    return forward


@torch.no_grad()
def check_same_loss(ours, theirs, batch: dict, autocast) -> tuple[float, float]:
    """Both models' loss on one batch without dropout, before any training step."""
    ours.eval(), theirs.eval()
    with autocast():
        a = float(ours_step_fn(ours)(batch))
        b = float(theirs_step_fn(theirs)(batch))
    ours.train(), theirs.train()
    return a, b


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

    def run(self, batches: list[dict], warmup: int, steps: int) -> None:
        for batch in batches[:warmup]:
            self.step(batch)
        self.sync()
        timed = batches[warmup : warmup + steps]
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
        self.samples += sum(int(b["input_ids"].shape[0]) for b in timed)
        self.tokens += sum(int(b["num_tokens"]) for b in timed)
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
        self.samples += int(batch["input_ids"].shape[0])
        self.tokens += int(batch["num_tokens"])
        self.last_loss = float(loss.detach())

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)

        precision = "bf16 autocast"
        device_name = torch.cuda.get_device_name(device)
    else:

        def autocast():
            return torch.autocast("cpu", enabled=False)

        precision = "fp32"
        device_name = f"CPU, {torch.get_num_threads()} threads ({os.cpu_count()} cores)"

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
        **PRESETS[args.model],
    )

    per_round = args.warmup + args.steps
    batches = load_batches(data_dir, model_cfg, args, per_round * args.rounds)
    for b in batches:
        b["dense_labels"] = dense_mlm_labels(b)  # transformers' (B, T) labels
    batches = [to_device(b, device) for b in batches]  # staged before timing, for both models alike

    torch.manual_seed(args.seed)
    ours, theirs = build_models(model_cfg, device)
    loss_ours, loss_theirs = check_same_loss(ours, theirs, batches[0], autocast)
    runners = [
        Runner("ours", ours, ours_step_fn(ours), device, autocast, args.fused_adamw, args.breakdown),
        Runner("transformers", theirs, theirs_step_fn(theirs), device, autocast, args.fused_adamw, args.breakdown),
    ]
    if args.unpad:
        unpadded = BertForPreTraining(model_cfg, unpad=True)
        unpadded.load_state_dict(ours.state_dict(), strict=True)
        unpadded.to(device).train()
        runners.append(
            Runner(
                "ours unpadded", unpadded, ours_step_fn(unpadded), device, autocast, args.fused_adamw, args.breakdown
            )
        )

    timed = [b for r in range(args.rounds) for b in batches[r * per_round + args.warmup : (r + 1) * per_round]]
    tokens = sum(int(b["num_tokens"]) for b in timed)
    padded = sum(b["input_ids"].numel() for b in timed)
    predicted = sum(int((b["masked_lm_labels"] != IGNORE_INDEX).sum()) for b in timed)
    seq_len = statistics.mean(b["input_ids"].shape[1] for b in timed)  # padded length T of the steps
    sparse_fraction = predicted / tokens
    n_params = sum(p.numel() for p in ours.parameters())

    print(f"device        {device_name}; torch {torch.__version__}, transformers {transformers.__version__}")
    print(
        f"model         {args.model}: L={model_cfg.num_hidden_layers} H={model_cfg.hidden_size} "
        f"heads={model_cfg.num_attention_heads} V={model_cfg.vocab_size}, {n_params / 1e6:.1f}M parameters, "
        f"NSP head {model_cfg.with_nsp_head}"
    )
    print(
        f"setup         {precision}; micro batch {args.micro_batch}; {args.warmup} warmup + {args.steps} timed "
        f"steps x {args.rounds} round(s) per model, interleaved by {args.interleave}; torch.optim.AdamW{'(fused=True)' if args.fused_adamw else ''}; "
        f"data {data_dir}"
    )
    print(
        f"timed batches padded length {seq_len:.1f}; non-padding {tokens / padded:.1%} of "
        f"{padded} positions; {sparse_fraction:.1%} of tokens predicted ({predicted / len(timed):.1f}/batch)"
    )
    print(f"same weights  initial loss (no dropout) ours {loss_ours:.4f}, transformers {loss_theirs:.4f}")
    print(flush=True)

    for r in range(args.rounds):
        chunk = batches[r * per_round : (r + 1) * per_round]
        if args.interleave == "model":
            for runner in runners:
                runner.run(chunk, args.warmup, args.steps)
        else:
            for batch in chunk[: args.warmup]:
                for runner in runners:
                    runner.step(batch)
            for i, batch in enumerate(chunk[args.warmup :]):
                for runner in runners if i % 2 == 0 else runners[::-1]:  # alternate who goes first
                    runner.timed_step(batch)
        for runner in runners:
            print(
                f"  round {r + 1}: {runner.name:<12} {runner.tokens / runner.seconds:10,.0f} tokens/s so far "
                f"(last loss {runner.last_loss:.3f})",
                flush=True,
            )

    peak = resolve_peak_tflops(args.peak_tflops) if device.type == "cuda" or args.peak_tflops else None
    flops = {
        "ours": flops_per_token(model_cfg, round(seq_len), sparse_fraction),
        "transformers": flops_per_token(model_cfg, round(seq_len), None),
    }
    flops["ours unpadded"] = flops["ours"]  # model FLOPs per real token do not depend on the layout
    print()
    header = (
        f"{'':<14}{'tokens/s':>12}{'samples/s':>11}{'step ms':>10}{'step ms med':>13}"
        f"{'GFLOP/tok':>11}{'TFLOP/s':>9}{'MFU':>8}"
    )
    print(header)
    for runner in runners:
        tps = runner.tokens_per_s
        achieved = tps * flops[runner.name] / 1e12
        med = f"{1e3 * statistics.median(runner.step_seconds):.1f}" if runner.step_seconds else "-"
        util = f"{mfu(tps, flops[runner.name], peak):.1%}" if peak else "n/a"
        print(
            f"{runner.name:<14}{tps:12,.0f}{runner.samples / runner.seconds:11.1f}"
            f"{1e3 * runner.seconds / runner.steps:10.1f}{med:>13}{flops[runner.name] / 1e9:11.3f}"
            f"{achieved:9.3f}{util:>8}"
        )
    if runners[0].breakdown:
        print()
        print(f"{'ms per step':<14}{'forward':>10}{'backward':>10}{'optimizer':>11}")
        for runner in runners:
            ms = {k: 1e3 * v / runner.steps for k, v in runner.phases.items()}
            print(f"{runner.name:<14}{ms['forward']:10.1f}{ms['backward']:10.1f}{ms['optimizer']:11.1f}")
    ratio = runners[0].tokens_per_s / runners[1].tokens_per_s
    print()
    print(f"ratio ours / transformers (non-padding tokens/s): {ratio:.2f}x")
    if args.unpad:
        print(
            f"ratio ours unpadded / ours padded: {runners[2].tokens_per_s / runners[0].tokens_per_s:.2f}x  "
            f"(ours unpadded / transformers: {runners[2].tokens_per_s / runners[1].tokens_per_s:.2f}x)"
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
    if device.type == "cpu" and args.model == "mini":
        print(f"goal (CPU, mini, length 128): ours >= 2x transformers: {'met' if ratio >= 2 else 'NOT met'}")
    if device.type == "cuda" and args.model == "base" and peak:
        u = mfu(runners[0].tokens_per_s, flops["ours"], peak)
        ok = ratio >= 1.5 and u >= 0.5
        print(f"goal (GPU, base, length 128): >= 1.5x and >= 50% MFU: {'met' if ok else 'NOT met'}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
