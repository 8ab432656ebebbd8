"""Logit parity of every export with transformers: for each architecture and objective, the network
the trainer builds, its weights written by the objective's own export (the files a run leaves in
output_dir/hf), loaded back by transformers' class from disk, and both run on the same held-out batch
of the sample's shards.

    python bench/export_parity.py [--work DIR] [--out bench/results] [--batches 4]

Cases (each composed as the trainer composes a run, ``experiment=cpu_smoke`` plus the overrides):

  bert+nsp        mini BERT, MLM + NSP, on the data job's default shards -> BertForPreTraining
                  (MLM logits and the NSP logits)
  bert            mini BERT, MLM alone, on instances=none shards -> BertForPreTraining without its
                  sentence head (transformers loads it as BertForMaskedLM)
  modern          model=modern_small -> ModernBertForMaskedLM; ours padded
  modern unpadded the same weights in our unpadded network (trainer.unpad=true)
  electra         objective=electra: discriminator -> ElectraForPreTraining, generator ->
                  ElectraForMaskedLM

Each against transformers' eager and SDPA attention. The weights are the fresh initialisation plus
noise (N(0, 0.02) on every parameter), so biases and norm weights are not the 0 and 1 that would hide
a swapped or missing one. Figures per case: the largest absolute difference of logits over the real
(non-padding) positions, the largest |logit| for scale, and the fraction of real positions whose
argmax (the predicted token or class) agrees. The tests assert 1e-5 (tests/unit/test_modern_model.py,
test_electra.py, tests/integration/test_export.py and the trainer tests); this prints what it is.

Writes <out>/export_parity.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from sample_shards import build_sample_shards  # noqa: E402

BASE = ("experiment=cpu_smoke", "logger=disabled")
CASES = {
    "bert+nsp": ("pairs", ()),
    "bert": ("single", ()),
    "modern": ("single", ("model=modern_small", "trainer.unpad=false")),
    "modern unpadded": ("single", ("model=modern_small", "trainer.unpad=true")),
    "electra": ("single", ("objective=electra",)),
}
"""name -> (which shards, overrides)."""
ATTENTION = ("eager", "sdpa")
NOISE = 0.02


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", help="where the shards and exports go (default: a temporary directory)")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("--batches", type=int, default=4, help="held-out micro batches per case")
    return parser.parse_args(argv)


def compose(overrides: list[str]):
    """The trainer's config, model config, objective and data for these overrides, as a run makes them."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from training import preflight
    from training.config import register_configs, to_train_config

    register_configs()
    with initialize_config_dir(config_dir=os.path.join(REPO, "conf", "train"), version_base="1.3"):
        cfg = to_train_config(hydra_compose(config_name="train", overrides=overrides))
    model_cfg, data = preflight.open_data(cfg)
    return cfg, model_cfg, preflight.objective_for(cfg, data), data


@torch.no_grad()
def add_noise(net: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for p in net.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * NOISE)


def inputs(batch: dict) -> dict:
    """What both sides read: token ids, token types and the padding mask, (B, T) each."""
    return {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}


def ours_and_directories(name: str, net, batch: dict, hf_root: str) -> list[tuple[str, str, torch.Tensor]]:
    """(label, exported directory, our logits) per output compared: (B, T, V) token logits or (B, T)
    detection logits, or (B, 2) sentence logits."""
    x = inputs(batch)
    if name == "electra":
        from training.objectives.electra import DISCRIMINATOR_DIR, GENERATOR_DIR

        return [
            ("discriminator", os.path.join(hf_root, DISCRIMINATOR_DIR), net.discriminator(**x)),
            ("generator", os.path.join(hf_root, GENERATOR_DIR), net.generator(**x)),
        ]
    out = net(**x)
    compared = [("MLM", hf_root, out.mlm_logits)]
    if out.nsp_logits is not None:
        compared.append(("NSP", hf_root, out.nsp_logits))
    return compared


def theirs(model, label: str, batch: dict) -> torch.Tensor:
    x = inputs(batch)
    if model.config.model_type == "modernbert":
        x.pop("token_type_ids")
    out = model(**x)
    if label == "NSP":
        return out.seq_relationship_logits
    return out.prediction_logits if hasattr(out, "prediction_logits") else out.logits


def load_theirs(directory: str, label: str, attention: str):
    """transformers' class of the export (config.json's architectures; MLM of a BERT export without
    a sentence head: BertForMaskedLM), from disk."""
    import transformers

    with open(os.path.join(directory, "config.json")) as f:
        (architecture,) = json.load(f)["architectures"]
    cls = getattr(transformers, architecture)
    model, info = cls.from_pretrained(directory, attn_implementation=attention, output_loading_info=True)
    unread = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if unread:
        raise SystemExit(f"{directory}: transformers did not load every weight: {unread}")
    return model.eval(), architecture


def compare(ours: torch.Tensor, ref: torch.Tensor, real: torch.Tensor) -> dict:
    """Over the real positions (or every sequence, for sentence logits)."""
    if ours.dim() >= 2 and ours.shape[:2] == real.shape:
        ours, ref = ours[real], ref[real]  # (N, V) or (N,)
    diff = (ours - ref).abs().max().item()
    if ours.dim() == 1:  # detection: one logit per token, the call is its sign
        agree = ((ours > 0) == (ref > 0)).float().mean().item()
    else:
        agree = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
    return {"max_abs_diff": diff, "max_abs_logit": ours.abs().max().item(), "argmax_agreement": agree}


def run_case(name: str, data_dir: str, work: str, batches: int) -> list[dict]:
    which, overrides = CASES[name]
    hf_root = os.path.join(work, "exports", name.replace(" ", "_"))
    cfg, model_cfg, objective, data = compose([*BASE, *overrides, f"data_dir={data_dir}", f"output_dir={hf_root}"])
    torch.manual_seed(cfg.seed)
    net = objective.build(model_cfg, cfg.trainer.unpad).eval()
    add_noise(net, cfg.seed)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        objective.export({k: v.detach().clone() for k, v in net.state_dict().items()}, model_cfg, data_dir, hf_root)
    held_out = []
    for i, batch in enumerate(data.eval_loader()):
        if i == batches:
            break
        held_out.append(batch)
    rows = []
    with torch.no_grad():
        ours = [ours_and_directories(name, net, b, hf_root) for b in held_out]
        for attention in ATTENTION:
            models = {label: load_theirs(directory, label, attention) for label, directory, _ in ours[0]}
            for k, (label, _, _) in enumerate(ours[0]):
                model, architecture = models[label]
                parts = [
                    compare(per_batch[k][2], theirs(model, label, b), b["attention_mask"].bool())
                    for b, per_batch in zip(held_out, ours)
                ]
                rows.append(
                    {
                        "case": name,
                        "output": label,
                        "transformers_class": architecture,
                        "attention": attention,
                        "max_abs_diff": max(p["max_abs_diff"] for p in parts),
                        "max_abs_logit": max(p["max_abs_logit"] for p in parts),
                        "argmax_agreement": min(p["argmax_agreement"] for p in parts),
                        "sequences": sum(int((b["example_id"] >= 0).sum()) for b in held_out),
                    }
                )
    return rows


def main() -> None:
    args = parse_args()
    import transformers

    transformers.utils.logging.disable_progress_bar()

    work = args.work or tempfile.mkdtemp(prefix="export_parity_")
    shards = {
        "pairs": build_sample_shards(os.path.join(work, "shards_pairs")),
        "single": build_sample_shards(os.path.join(work, "shards_single"), "instances=none", "masking=dynamic"),
    }
    start = time.perf_counter()
    rows = []
    for name, (which, _) in CASES.items():
        rows += run_case(name, shards[which], work, args.batches)
    print(
        f"\nexport parity, fp32 on {platform.machine()} CPU, torch {torch.__version__}, transformers "
        f"{transformers.__version__}: {rows[0]['sequences']} held-out sequences per case "
        f"({time.perf_counter() - start:.0f} s)"
    )
    header = f"{'case':<16} {'output':<14} {'transformers class':<24} {'attention':<9} {'max |diff|':>11} {'max |logit|':>11} {'argmax agree':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['case']:<16} {r['output']:<14} {r['transformers_class']:<24} {r['attention']:<9} "
            f"{r['max_abs_diff']:>11.2e} {r['max_abs_logit']:>11.2f} {r['argmax_agreement']:>12.4f}"
        )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "export_parity.json")
    with open(path, "w") as f:
        json.dump(
            {"torch": torch.__version__, "transformers": transformers.__version__, "noise": NOISE, "rows": rows},
            f,
            indent=1,
        )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
