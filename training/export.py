"""Hugging Face export: a directory that ``transformers`` loads as BertForPreTraining (or
BertForMaskedLM without the NSP head) and as BertTokenizer(Fast), with no pickle in it.

    out_dir/
      config.json               # BertConfig.to_hf_config_dict()
      model.safetensors         # fp32 weights, each tied tensor once (as save_pretrained does)
      vocab.txt                 # the shards' vocabulary, copied from data_dir
      tokenizer_config.json     # BertTokenizer, do_lower_case and strip_accents from the shards' manifest
      special_tokens_map.json
      tokenizer.json            # only for shards that kept letters with marks (manifest keep_letters):
                                # the job's own normaliser, which BertTokenizer's options cannot express

Our parameter names are transformers' (training/model.py), so the weights are written as they are.
Every file gets the mode a plain ``open(path, "w")`` gives (the umask decides), the weights too.
``consolidated_state_dict_from_checkpoint`` gathers them from one of our DeepSpeed checkpoints.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import re
import shutil
from typing import Optional

import torch
from safetensors.torch import save_file

from pipeline import contract
from pipeline.tokenization import build_tokenizer, vocab_sha256
from training.model import BertConfig, BertForPreTraining

TIED_KEYS = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}
"""Copy -> source, as transformers' ``BertForPreTraining._tied_weights_keys``: the loader ties the
copies back, so only the sources are saved (safetensors refuses tensors that share memory)."""

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
TOKENIZER_FILE = "tokenizer.json"


class ExportError(ValueError):
    """The weights, the architecture and the shards' vocabulary do not fit together."""


def hf_weights(state_dict: dict[str, torch.Tensor], bert_cfg: BertConfig) -> dict[str, torch.Tensor]:
    """The tensors to save: every key of our model except the tied copies, each a contiguous fp32
    CPU clone (no storage shared with training, nothing half precision).

    The tied copies may be absent from ``state_dict`` (a state_dict built from
    ``named_parameters()`` lists a shared tensor once); when present they must equal their source.
    Raises ExportError on a missing or unexpected key, a wrong shape, or an untied copy.
    """
    with torch.device("meta"):
        expected = BertForPreTraining(bert_cfg).state_dict()  # names and shapes, no memory
    missing = sorted(set(expected) - set(state_dict) - set(TIED_KEYS))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise ExportError(
            f"state_dict does not match the model config: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}"
        )
    out = {}
    for name, meta in expected.items():
        if name not in state_dict:
            continue  # a tied copy
        tensor = state_dict[name]
        if tuple(tensor.shape) != tuple(meta.shape):
            raise ExportError(f"{name}: shape {tuple(tensor.shape)}, the config wants {tuple(meta.shape)}")
        if name in TIED_KEYS:
            source = state_dict[TIED_KEYS[name]]
            if tensor is not source and not torch.equal(tensor.detach().cpu(), source.detach().cpu()):
                raise ExportError(f"{name} should be tied to {TIED_KEYS[name]} but differs from it")
            continue
        out[name] = tensor.detach().to(device="cpu", dtype=torch.float32).contiguous().clone()
    return out


def tokenizer_files(manifest: contract.ShardManifest, model_max_length: int) -> tuple[dict, dict]:
    """(tokenizer_config.json, special_tokens_map.json) for transformers' BertTokenizer.

    Settings are those the shards were made with (``pipeline.tokenization.build_tokenizer``): BERT
    normaliser with ``lowercase`` and ``strip_accents`` from the manifest (a manifest without
    strip_accents stripped them exactly when lowercasing), Chinese characters split, so ids agree
    with the shards.
    """
    special = {f"{role}_token": token for role, token in contract.SpecialTokens.NAMES.items()}
    if manifest.keep_letters and manifest.strips_accents:
        # BertTokenizer rebuilds BERT's normaliser from its options, which would strip й to и again;
        # the generic fast tokenizer runs tokenizer.json as written (``export_hf`` writes it).
        return {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "do_lower_case": bool(manifest.lowercase),
            "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
            "clean_up_tokenization_spaces": False,
            "model_max_length": model_max_length,
            **special,
        }, special
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": bool(manifest.lowercase),
        "strip_accents": manifest.strips_accents,
        "tokenize_chinese_chars": True,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        **special,
    }
    return config, special


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask sets it, for every thread at once)
        with open("/proc/self/status", encoding="ascii") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def save_weights(tensors: dict[str, torch.Tensor], path: str) -> None:
    """``tensors`` as a safetensors file at ``path``, with the mode a plain ``open(path, "w")`` gives."""
    # safetensors writes a private temporary (mode 0600) and renames it into place.
    save_file(tensors, path, metadata={"format": "pt"})
    os.chmod(path, 0o666 & ~_umask())


def write_json(path: str, obj: dict) -> None:
    """``obj`` as sorted, indented JSON (config.json and the tokenizer files)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def checked_vocabulary(data_dir: str, model_cfg) -> tuple[contract.ShardManifest, str, list[str]]:
    """(manifest, vocab.txt path, its tokens) of the shards in ``data_dir``, once the vocabulary
    file is the one the manifest names (hash and size) and the model's vocabulary size and [PAD] id
    match it; ExportError otherwise."""
    manifest = contract.read_manifest(data_dir)
    vocab_path = os.path.join(data_dir, manifest.vocab_file)
    vocab = contract.read_vocab(vocab_path)
    if vocab_sha256(vocab) != manifest.vocab_sha256 or len(vocab) != manifest.vocab_size:
        raise ExportError(
            f"{vocab_path} is not the vocabulary the manifest names "
            f"({manifest.vocab_size} tokens, sha256 {manifest.vocab_sha256[:12]}...)"
        )
    if model_cfg.vocab_size != manifest.vocab_size:
        raise ExportError(f"model vocab_size {model_cfg.vocab_size} != the shards' {manifest.vocab_size}")
    if model_cfg.pad_token_id != manifest.special_tokens["pad"]:
        raise ExportError(
            f"model pad_token_id {model_cfg.pad_token_id} != the shards' [PAD] id {manifest.special_tokens['pad']}"
        )
    return manifest, vocab_path, vocab


def write_tokenizer(
    out_dir: str, manifest: contract.ShardManifest, vocab_path: str, vocab: list[str], max_length: int
) -> None:
    """The shards' WordPiece tokenizer in ``out_dir``: vocab.txt, tokenizer_config.json,
    special_tokens_map.json, and tokenizer.json where the slow tokenizer cannot say how the text
    was normalised (``tokenizer_files``)."""
    shutil.copyfile(vocab_path, os.path.join(out_dir, contract.VOCAB_FILE))
    tokenizer_config, special_tokens_map = tokenizer_files(manifest, max_length)
    write_json(os.path.join(out_dir, TOKENIZER_CONFIG_FILE), tokenizer_config)
    write_json(os.path.join(out_dir, SPECIAL_TOKENS_MAP_FILE), special_tokens_map)
    if tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast":
        tokenizer = build_tokenizer(vocab, manifest.lowercase, manifest.strips_accents, manifest.keep_letters)
        tokenizer.save(os.path.join(out_dir, TOKENIZER_FILE))


def export_hf(state_dict: dict[str, torch.Tensor], bert_cfg: BertConfig, data_dir: str, out_dir: str) -> str:
    """Write a Hugging Face model directory for ``state_dict`` (our model's, e.g. from
    ``consolidated_state_dict_from_checkpoint``) and the vocabulary of the shards in ``data_dir``.

    Checks first that the vocabulary file is the one the manifest names (hash and size) and that
    the model's vocabulary size and [PAD] id match it (``checked_vocabulary``). Returns out_dir.
    """
    manifest, vocab_path, vocab = checked_vocabulary(data_dir, bert_cfg)
    tensors = hf_weights(state_dict, bert_cfg)

    os.makedirs(out_dir, exist_ok=True)
    save_weights(tensors, os.path.join(out_dir, WEIGHTS_FILE))
    write_json(os.path.join(out_dir, CONFIG_FILE), {**bert_cfg.to_hf_config_dict(), "dtype": "float32"})
    write_tokenizer(out_dir, manifest, vocab_path, vocab, bert_cfg.max_position_embeddings)
    return out_dir


HF_SUBDIR = "hf"
"""Where a training run exports its final weights: output_dir/hf."""


def export_checkpoint(objective, checkpoint_dir: str, tag: str, model_cfg, data_dir: str, out_dir: str) -> str:
    """The Hugging Face export of a training run's checkpoint, as its objective writes it
    (``training.objectives.Objective.export``). ``consolidated_state_dict_from_checkpoint`` reads
    the fp32 masters of every ZeRO stage and world size from the checkpoint's files, so no rank has
    to gather the model in memory, and a bf16 run exports its fp32 masters, not the bf16 working
    copy. Returns out_dir."""
    return objective.export(consolidated_state_dict_from_checkpoint(checkpoint_dir, tag), model_cfg, data_dir, out_dir)


DEEPSPEED_MODEL_STATES_FILE = "mp_rank_00_model_states.pt"
"""The model-states file of stages 0-2 (no model parallelism); ZeRO adds ``*_optim_states.pt`` files."""
OPTIMIZER_STATES_FILES = "*_optim_states.pt"
"""One per data-parallel rank: ``zero_pp_rank_<r>_mp_rank_00_optim_states.pt``, ``bf16_`` in front under bf16."""
_RANK_OF_FILE = re.compile(r"_pp_rank_(\d+)_")


def consolidated_state_dict_from_checkpoint(checkpoint_dir: str, tag: Optional[str] = None) -> dict[str, torch.Tensor]:
    """The full fp32 weights of a DeepSpeed checkpoint written by our trainer, on the CPU: the
    optimizer's fp32 masters wherever DeepSpeed keeps the weights in half precision.

    checkpoint_dir: what ``engine.save_checkpoint`` was given (holds ``latest`` and one folder per tag).
    tag: the checkpoint's folder, e.g. ``step_100``; None: the one named in ``latest``.

    By the optimizer that wrote it (any number of ranks):

    - ZeRO 1-3 optimizers: DeepSpeed's ``get_fp32_state_dict_from_zero_checkpoint`` merges the
      fp32 master partitions.
    - DeepSpeed's BF16_Optimizer (ZeRO-1 under bf16 with fp32 gradient accumulation): its files
      (``bf16_zero_pp_rank_*``) carry no ZeRO stage, which DeepSpeed's reader requires, so
      ``_masters_of_bf16_optimizer`` joins their fp32 partitions by the parameter fragments the
      files name.
    - Stage 0 writes no optimizer files; its weights are the ``module`` entry of the model-states
      file, in fp32 under fp32 and bf16 (torch autocast keeps them fp32). Under fp16 they are the
      fp16 working copy upcast (DeepSpeed's fp16 optimizer keeps its masters in unnamed lists).

    Only for our own checkpoints: DeepSpeed's ZeRO reader calls ``torch.load(weights_only=False)``
    (unpickling) on the files in checkpoint_dir; the other paths load with ``weights_only=True``.
    """
    if tag is None:
        latest = os.path.join(checkpoint_dir, "latest")
        if not os.path.isfile(latest):
            raise FileNotFoundError(f"no 'latest' file in {checkpoint_dir}; pass the checkpoint's tag")
        with open(latest, encoding="utf-8") as f:
            tag = f.read().strip()
    tag_dir = os.path.join(checkpoint_dir, tag)
    if not os.path.isdir(tag_dir):
        raise FileNotFoundError(f"no checkpoint {tag!r} in {checkpoint_dir}")

    optimizer_files = sorted(glob.glob(os.path.join(tag_dir, OPTIMIZER_STATES_FILES)), key=_rank_of_file)
    if optimizer_files:
        bf16_optimizer_states = _bf16_optimizer_states(optimizer_files)
        if bf16_optimizer_states is not None:
            return _masters_of_bf16_optimizer(_load_model_states(tag_dir), bf16_optimizer_states)

        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag=tag)

    states = _load_model_states(tag_dir)
    return {name: tensor.float() for name, tensor in states["module"].items()}  # tied pairs: equal copies


def _rank_of_file(path: str) -> int:
    match = _RANK_OF_FILE.search(os.path.basename(path))
    if match is None:
        raise ExportError(f"{path}: not a DeepSpeed optimizer-states file of one data-parallel rank")
    return int(match.group(1))


def _load_model_states(tag_dir: str) -> dict:
    path = os.path.join(tag_dir, DEEPSPEED_MODEL_STATES_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{tag_dir} holds neither ZeRO optimizer states nor {DEEPSPEED_MODEL_STATES_FILE}")
    return torch.load(path, map_location="cpu", weights_only=True)


def _bf16_optimizer_states(files: list[str]) -> Optional[list[dict]]:
    """The optimizer states of a checkpoint of DeepSpeed's BF16_Optimizer, one per rank in rank
    order; None for one of a ZeRO optimizer.

    Tensors are memory-mapped, not read. The only class BF16_Optimizer's files hold is
    DeepSpeed's ``fragment_address`` (a named tuple), allowed here; ZeRO's hold its
    ``ZeroStageEnum``, which ``weights_only`` refuses: that, or a ``zero_stage`` entry, marks ZeRO.
    """
    from deepspeed.checkpoint.constants import OPTIMIZER_STATE_DICT, ZERO_STAGE
    from deepspeed.utils.tensor_fragment import fragment_address

    states = []
    for path in files:
        try:
            with torch.serialization.safe_globals([fragment_address]):
                state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)[OPTIMIZER_STATE_DICT]
        except pickle.UnpicklingError:
            return None
        if ZERO_STAGE in state:
            return None
        states.append(state)
    return states


def _masters_of_bf16_optimizer(model_states: dict, optimizer_states: list[dict]) -> dict[str, torch.Tensor]:
    """Full fp32 weights from BF16_Optimizer's per-rank states (in rank order).

    Each rank holds one flat fp32 partition per parameter group and names, per group, the
    fragment of each parameter it holds: ``{name: (start, numel)}`` within that partition. A
    parameter is its fragments in rank order, shaped as the model-states file's ``param_shapes``
    says; tied copies (``shared_params``) and buffers come from the model-states file too.
    """
    from deepspeed.checkpoint.constants import (
        BUFFER_NAMES,
        PARAM_SHAPES,
        PARAM_SLICE_MAPPINGS,
        SINGLE_PARTITION_OF_FP32_GROUPS,
    )

    fragments: dict[str, list[torch.Tensor]] = {}
    for state in optimizer_states:
        for partition, slices in zip(state[SINGLE_PARTITION_OF_FP32_GROUPS], state[PARAM_SLICE_MAPPINGS]):
            for name, where in slices.items():
                fragments.setdefault(name, []).append(partition.detach().narrow(0, where.start, where.numel))
    weights = {}
    for shapes in model_states[PARAM_SHAPES]:
        for name, shape in shapes.items():
            if name not in fragments:
                raise ExportError(f"the optimizer states hold no fp32 master of {name}")
            flat = torch.cat(fragments.pop(name)).float()  # a copy: nothing left mapped to the file
            if flat.numel() != shape.numel():
                raise ExportError(f"{name}: the optimizer states hold {flat.numel()} of its {shape.numel()} elements")
            weights[name] = flat.view(shape)
    if fragments:
        raise ExportError(f"the optimizer states hold parameters the model states do not name: {sorted(fragments)[:5]}")
    for copy, source in model_states["shared_params"].items():
        weights[copy] = weights[source]
    for name in model_states[BUFFER_NAMES]:
        buffer = model_states["module"][name]
        weights[name] = buffer.float() if buffer.is_floating_point() else buffer
    return weights


# --- the command: a run's checkpoint, exported after the run -------------------------------------


def export_run(
    output_dir: str, tag: Optional[str] = None, out_dir: Optional[str] = None, data_dir: Optional[str] = None
) -> str:
    """The Hugging Face export of a run's checkpoint ``tag`` (default: its newest complete one), as
    the run itself exports its last (``objective.export``): the objective, architecture and shapes
    come from the checkpoint's ``run_config.json``, the tokenizer from the run's shards (its
    data_dir, or ``data_dir`` when they have moved; checked against the record's vocabulary).
    out_dir defaults to ``<output_dir>/hf-<tag>``. ExportError / ConfigError / DataContractError
    with what to change; returns out_dir."""
    from training import checkpoint as ckpt
    from training import preflight
    from training.config import train_config_from_record
    from training.models import for_config, upgraded_record

    checkpoint_dir = os.path.join(output_dir, ckpt.CHECKPOINTS_SUBDIR)
    complete = ckpt.complete_tags(checkpoint_dir) if os.path.isdir(checkpoint_dir) else []
    if not complete:
        raise ExportError(
            f"{checkpoint_dir} holds no complete checkpoint: not a training output_dir, or none saved yet"
        )
    tag = tag or complete[-1]  # complete_tags is in step order
    if tag not in complete:
        raise ExportError(f"no complete checkpoint {tag!r} in {checkpoint_dir}; complete ones: {', '.join(complete)}")
    record = ckpt.read_run_record(checkpoint_dir, tag)
    if record is None:
        raise ExportError(f"{tag} has no {ckpt.RUN_CONFIG_FILE} (written by trainers since the run record existed)")
    record = upgraded_record(record)
    config = dict(record["config"], data_dir=data_dir or record["config"]["data_dir"])
    cfg = train_config_from_record(config)
    model_cfg, data = preflight.open_data(cfg)
    recorded, now = record["data"].get("vocab_sha256"), data.manifest.vocab_sha256
    if recorded is not None and recorded != now:
        raise ExportError(
            f"the shards in {config['data_dir']} have another vocabulary (sha256 {now[:12]}) than the run "
            f"trained on ({recorded[:12]}): give --data-dir the run's shards"
        )
    shapes = for_config(model_cfg).record(model_cfg)
    differ = sorted(
        k for k in set(shapes) | set(record["architecture"]) if shapes.get(k) != record["architecture"].get(k)
    )
    if differ:
        raise ExportError(
            f"the network these shards make differs from the run's in {', '.join(differ)}: give --data-dir the run's shards"
        )
    objective = preflight.objective_for(cfg, data)
    return export_checkpoint(
        objective,
        checkpoint_dir,
        tag,
        model_cfg,
        cfg.data_dir,
        out_dir or os.path.join(output_dir, f"{HF_SUBDIR}-{tag}"),
    )


def main(argv: Optional[list[str]] = None) -> None:
    import argparse

    from pipeline.cli import exit_with
    from training.config import ConfigError
    from training.data import DataContractError

    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description="Export a training run's checkpoint as the run exports its last: transformers "
        "directories (its objective's: BertForPreTraining, ModernBertForMaskedLM, ELECTRA's two) with "
        "the shards' tokenizer.",
    )
    parser.add_argument("output_dir", help="the run's output_dir (holds checkpoints/)")
    parser.add_argument("--tag", help="the checkpoint, e.g. step00001000 (default: the newest complete one)")
    parser.add_argument("--out", help="where to write (default: <output_dir>/hf-<tag>)")
    parser.add_argument("--data-dir", help="the run's shards, if not where its config says")
    args = parser.parse_args(argv)
    try:
        out = export_run(args.output_dir, args.tag, args.out, args.data_dir)
    except (ExportError, ConfigError, DataContractError, contract.ContractError) as e:
        exit_with(str(e))
    print(out)


if __name__ == "__main__":
    main()
