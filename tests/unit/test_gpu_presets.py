"""The GPU presets' arithmetic, composed as `python -m training experiment=<name>` composes them:
static shapes and compile, tokens per micro step, gradient accumulation at 1 to 64 ranks (and the
rank counts each preset supports), and the memory one rank needs on paper
(``training_step_memory`` in bench/sizing.py) against an 80 GB H100 and a 141 GB H200."""

import functools
import importlib.util
import os
import sys

import pytest

from paths import REPO
from training.config import ConfigError
from training.deepspeed_config import build_deepspeed_config
from training.model import BertConfig
from training.models import preset_fields


def _load_sizing():
    """bench/sizing.py as a module (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("sizing", os.path.join(REPO, "bench", "sizing.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up while being defined
    spec.loader.exec_module(module)
    return module


sizing = _load_sizing()

RANKS = (1, 8, 16, 32, 64)
TOKENS_PER_MICRO_STEP = 32_768
"""What every GPU preset feeds a forward: 256 x 128 or 64 x 512 (32 x 128 = 4,096 left an H100 launch-bound)."""
ONE_GPU = "bert_base_phase1"
LAMB = {
    # experiment: (global batch, micro batch, length, most ranks = global / micro, lr, warmup ratio, steps):
    # NVIDIA's BERT-Large LAMB recipe, micro batches sized for 80 GB
    "bert_large_lamb_phase1": (65_536, 256, 128, 256, 6e-3, 0.2843, 7_038),
    "bert_large_lamb_phase2": (32_768, 64, 512, 512, 4e-3, 0.128, 1_563),
}
GPU_PRESETS = [ONE_GPU, *LAMB]


@functools.lru_cache(maxsize=None)
def compose(*overrides: str):
    """The config as the trainer composes it (no test changes it: cached, Hydra takes ~0.1 s)."""
    return sizing.compose_train_config(list(overrides))


def accumulation(cfg, ranks: int) -> int:
    d = build_deepspeed_config(cfg.deepspeed, cfg.trainer, cfg.data, cfg.optim, ranks)
    assert d["train_batch_size"] == d["train_micro_batch_size_per_gpu"] * d["gradient_accumulation_steps"] * ranks
    return d["gradient_accumulation_steps"]


# --- shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_gpu_presets_have_one_shape_compile_and_train_in_bf16(name):
    cfg = compose(f"experiment={name}")
    assert cfg.data.pad_to_max_length and cfg.trainer.compile and cfg.trainer.sparse_mlm_head
    assert cfg.deepspeed.precision == "bf16" and not cfg.trainer.unpad


@pytest.mark.parametrize("name", GPU_PRESETS)
def test_tokens_per_micro_step(name):
    cfg = compose(f"experiment={name}")
    assert cfg.data.micro_batch_size * cfg.data.max_seq_length == TOKENS_PER_MICRO_STEP


# --- one GPU: bert_base_phase1 ---------------------------------------------------------------------


def test_bert_base_phase1_is_one_gpu_without_accumulation():
    cfg = compose(f"experiment={ONE_GPU}")
    assert (cfg.model.hidden_size, cfg.data.micro_batch_size, cfg.data.max_seq_length) == (768, 256, 128)
    assert (cfg.optim.name, cfg.optim.lr, cfg.trainer.global_batch_size) == ("adamw", 1e-4, 256)
    assert cfg.deepspeed.zero_stage == 1  # bf16 weights and activations, fp32 masters (the YAML says why)
    assert accumulation(cfg, 1) == 1


@pytest.mark.parametrize("ranks", RANKS)
def test_bert_base_phase1_scales_by_a_global_batch_of_256_per_rank(ranks):
    """The YAML's instruction for N GPUs: trainer.global_batch_size=256*N, still no accumulation."""
    cfg = compose(f"experiment={ONE_GPU}", f"trainer.global_batch_size={256 * ranks}")
    assert accumulation(cfg, ranks) == 1


def test_bert_base_phase1_as_it_stands_starts_on_one_rank_only():
    cfg = compose(f"experiment={ONE_GPU}")
    with pytest.raises(ConfigError, match="world size 8"):
        accumulation(cfg, 8)


# --- several nodes: the LAMB presets ------------------------------------------------------------


@pytest.mark.parametrize("name", LAMB)
def test_lamb_presets_follow_nvidia_recipe(name):
    global_batch, micro, length, _, lr, warmup, steps = LAMB[name]
    cfg = compose(f"experiment={name}")
    assert (cfg.optim.name, cfg.deepspeed.zero_stage, cfg.model.hidden_size) == ("lamb", 0, 1024)
    assert (cfg.trainer.global_batch_size, cfg.data.micro_batch_size, cfg.data.max_seq_length) == (
        global_batch,
        micro,
        length,
    )
    assert (cfg.optim.lr, cfg.optim.warmup_ratio, cfg.trainer.max_steps) == (lr, warmup, steps)
    assert (cfg.optim.schedule, cfg.optim.power) == ("polynomial", 0.5)


@pytest.mark.parametrize("ranks", RANKS)
@pytest.mark.parametrize("name", LAMB)
def test_lamb_presets_accumulate_to_their_global_batch(name, ranks):
    global_batch, micro, *_ = LAMB[name]
    assert accumulation(compose(f"experiment={name}"), ranks) == global_batch // (micro * ranks)


@pytest.mark.parametrize("name", LAMB)
def test_lamb_presets_run_on_the_rank_counts_their_comment_names(name):
    """Powers of two up to global / micro (256 in phase 1, 512 in phase 2); anything else stops at start."""
    *_, most, _, _, _ = LAMB[name]
    cfg = compose(f"experiment={name}")
    runs = []
    for ranks in range(1, 2 * most + 1):
        try:
            accumulation(cfg, ranks)
            runs.append(ranks)
        except ConfigError:
            pass
    assert runs == [2**k for k in range(most.bit_length())]


# --- memory on paper ----------------------------------------------------------------------------


@pytest.mark.parametrize("gpu", sizing.GPU_MEMORY_BYTES)
@pytest.mark.parametrize("name", GPU_PRESETS)
def test_one_step_fits_the_gpu_with_margin(name, gpu):
    """Weights, gradients, fp32 masters and moments, activations and the MLM head at the preset's
    micro batch and length, in bf16, with a flash or memory-efficient SDPA kernel (what
    bench/gpu_check.sh checks is in use), under 80% of the device."""
    memory = sizing.preset_memory(compose(f"experiment={name}"))
    assert memory.total <= sizing.MEMORY_MARGIN * sizing.GPU_MEMORY_BYTES[gpu], memory.describe()


def test_the_estimate_has_teeth():
    """Four times the phase-1 micro batch of BERT-Large does not fit an H100, nor does phase 2 with
    SDPA's math kernel (512 x 512 scores kept), as the phase-2 preset's comment says."""
    h100 = sizing.MEMORY_MARGIN * sizing.GPU_MEMORY_BYTES["H100 80GB"]
    quadrupled = compose("experiment=bert_large_lamb_phase1", "data.micro_batch_size=1024")
    assert sizing.preset_memory(quadrupled).total > h100
    phase2 = compose("experiment=bert_large_lamb_phase2")
    assert sizing.preset_memory(phase2, math_attention=True).total > h100 >= sizing.preset_memory(phase2).total


@pytest.mark.parametrize("name", ["base", "large"])
def test_activations_per_layer_agree_with_the_published_count(name):
    """Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models") count
    34·s·b·h bytes a layer with 16-bit activations, plus 5·a·s²·b for the attention scores: ours
    counts the tensors this model keeps and lands within 10% of both terms."""
    shape = preset_fields(name)
    h, heads, T = shape["hidden_size"], shape["num_attention_heads"], 128
    flash = sizing.encoder_layer_bytes_per_token(h, shape["intermediate_size"], heads, T, math_attention=False)
    math = sizing.encoder_layer_bytes_per_token(h, shape["intermediate_size"], heads, T, math_attention=True)
    assert flash == pytest.approx(34 * h, rel=0.1)
    assert math - flash == 5 * heads * T


def test_parameter_count_on_the_meta_device_is_the_model_s():
    from training.model import BertForPreTraining

    cfg = BertConfig(vocab_size=97, **preset_fields("tiny"))
    assert sizing.parameter_count(cfg) == sum(p.numel() for p in BertForPreTraining(cfg).parameters())
