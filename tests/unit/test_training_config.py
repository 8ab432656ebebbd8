"""The trainer's Hydra config: every preset and experiment composes against the dataclass schemas,
typos and bad values fail at composition, sweeps parse, and the DeepSpeed dict built from each
preset is consistent and accepted by DeepSpeed's own config parser (no engine, no distributed init)."""

import copy
import dataclasses
import functools
import os

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from paths import CONF as CONF_ROOT
from training.config import ConfigError, TrainConfig, register_configs, to_train_config
from training.deepspeed_config import build_deepspeed_config, gradient_accumulation_steps
from training.models import preset_fields

CONF = os.path.join(CONF_ROOT, "train")
GROUPS = ("model", "objective", "data", "optim", "deepspeed", "trainer", "logger")
REQUIRED = ["data_dir=/tmp/shards", "output_dir=/tmp/run"]
PHASE1_WEIGHTS = "trainer.init_from=/tmp/phase1/hf"
PRESET_OVERRIDES = {
    # Presets that only make sense with values from another group.
    ("trainer", "phase2"): [PHASE1_WEIGHTS],
    ("trainer", "cpu_smoke"): ["data=cpu_smoke", "optim.warmup_steps=2"],
    ("optim", "lamb"): ["deepspeed=zero0"],
}
EXPERIMENT_OVERRIDES = {"bert_base_phase2": [PHASE1_WEIGHTS], "bert_large_lamb_phase2": [PHASE1_WEIGHTS]}
BAD_VALUE = (ValueError, ValidationError)  # ConfigError is a ValueError; OmegaConf may wrap it


def options(group):
    return sorted(f.removesuffix(".yaml") for f in os.listdir(os.path.join(CONF, group)) if f.endswith(".yaml"))


def compose_train(overrides) -> TrainConfig:
    """The config exactly as `python -m training <overrides>` composes it, as dataclasses."""
    return copy.deepcopy(_compose_cached(tuple(overrides)))


@functools.lru_cache(maxsize=None)
def _compose_cached(overrides: tuple) -> TrainConfig:
    # Hydra's composition takes ~0.13 s; several tests look at the same configs.
    register_configs()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return to_train_config(cfg)


def ds_dict(cfg: TrainConfig, world_size: int = 1) -> dict:
    return build_deepspeed_config(cfg.deepspeed, cfg.trainer, cfg.data, cfg.optim, world_size)


# --- composition ------------------------------------------------------------------------------


@pytest.mark.parametrize("group,name", [(g, n) for g in GROUPS for n in options(g)])
def test_every_preset_composes(group, name):
    cfg = compose_train(REQUIRED + [f"{group}={name}"] + PRESET_OVERRIDES.get((group, name), []))
    assert isinstance(cfg, TrainConfig)
    assert OmegaConf.to_container(OmegaConf.structured(cfg))  # round-trips, e.g. for the W&B run config


@pytest.mark.parametrize("name", options("experiment"))
def test_every_experiment_composes(name):
    cfg = compose_train(REQUIRED + [f"experiment={name}"] + EXPERIMENT_OVERRIDES.get(name, []))
    assert isinstance(cfg, TrainConfig)
    ds_dict(cfg, world_size=1)  # its batch arithmetic works on one GPU


def test_the_default_config_composes():
    cfg = compose_train(REQUIRED)
    assert (cfg.model.hidden_size, cfg.optim.name, cfg.deepspeed.zero_stage) == (768, "adamw", 2)
    assert cfg.data.max_seq_length == 128 and cfg.trainer.init_from is None


PUBLISHED = {
    # name: (layers, hidden, heads): Google's small-BERT grid (Turc et al. 2019), BERT-Base and -Large
    # (Devlin et al. 2018), all-MiniLM-L6-v2's config.json
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "medium": (8, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
    "minilm_l6": (6, 384, 12),
}


def test_every_bert_preset_has_a_published_shape():
    bert = sorted(n for n in options("model") if not n.startswith("modern"))
    assert bert == sorted(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_bert_presets_follow_the_published_shapes(name):
    model = compose_train(REQUIRED + [f"model={name}"]).model
    assert (model.num_hidden_layers, model.hidden_size, model.num_attention_heads) == PUBLISHED[name]
    assert {k: getattr(model, k) for k in preset_fields(name)} == preset_fields(name)  # as presets() reads them
    assert model.intermediate_size == 4 * model.hidden_size
    if name != "minilm_l6":  # Google's grid: 64-wide heads (MiniLM's are 32 wide)
        assert model.num_attention_heads == model.hidden_size // 64


def test_model_fields_from_the_manifest():
    from training.model import BertConfig
    from training.models import architecture

    bert = architecture("bert")
    model = compose_train(REQUIRED + ["model=tiny"]).model
    built = bert.model_config(model, vocab_size=1000, sentence_pair="none", pad_token_id=0)
    assert isinstance(built, BertConfig) and built.vocab_size == 1000 and built.with_nsp_head is False
    assert (built.hidden_size, built.hidden_dropout_prob) == (128, model.hidden_dropout_prob)
    pinned = compose_train(REQUIRED + ["model=tiny", "model.vocab_size=30522", "model.with_nsp_head=true"]).model
    with pytest.raises(ConfigError, match="vocab_size"):
        bert.model_config(pinned, vocab_size=1000, sentence_pair="nsp", pad_token_id=0)
    with pytest.raises(ConfigError, match="with_nsp_head"):
        bert.model_config(pinned, vocab_size=30522, sentence_pair="none", pad_token_id=0)


def test_experiments_set_what_they_promise():
    smoke = compose_train(REQUIRED + ["experiment=cpu_smoke"])
    assert (smoke.model.hidden_size, smoke.deepspeed.zero_stage, smoke.deepspeed.precision) == (256, 2, "fp32")
    assert smoke.logger.backend == "none" and smoke.trainer.max_steps <= 50
    phase2 = compose_train(REQUIRED + ["experiment=bert_base_phase2", PHASE1_WEIGHTS])
    assert phase2.data.max_seq_length == 512 and phase2.trainer.init_from == "/tmp/phase1/hf"
    lamb = compose_train(REQUIRED + ["experiment=bert_large_lamb_phase1"])
    assert (lamb.optim.name, lamb.deepspeed.zero_stage, lamb.trainer.global_batch_size) == ("lamb", 0, 65536)
    assert lamb.optim.resolved_warmup_steps(lamb.trainer.max_steps) == round(0.2843 * 7038)


def test_command_line_overrides_apply():
    cfg = compose_train(
        REQUIRED
        + [
            "model=tiny",
            "optim.lr=3e-4",
            "deepspeed=zero3",
            "trainer.max_steps=50",
            "optim.warmup_steps=null",
            "optim.warmup_ratio=0.1",
            "logger=wandb_offline",
            "logger.tags=[a,b]",
        ]
    )
    assert cfg.optim.lr == pytest.approx(3e-4) and cfg.deepspeed.zero_stage == 3
    assert cfg.trainer.max_steps == 50 and cfg.optim.resolved_warmup_steps(50) == 5
    assert cfg.logger.mode == "offline" and cfg.logger.tags == ["a", "b"]


# --- failures at composition ------------------------------------------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "optim.learning_rate=1e-4",
        "deepspeed.zero=2",
        "trainer.max_step=10",
        "model.hidden=128",
        "logger.api_key=secret",
    ],
)
def test_misspelt_or_unknown_key_fails_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_train(REQUIRED + [override])


@pytest.mark.parametrize("override", ["+logger.api_key=secret", "+optim.lr_peak=1e-3", "+unknown=1"])
def test_keys_appended_with_plus_are_rejected(override):
    """Hydra lets `+key=value` past the schema; to_train_config refuses what to_object would drop."""
    with pytest.raises(ConfigError, match="unknown config keys"):
        compose_train(REQUIRED + [override])


def test_unknown_preset_fails_at_composition():
    with pytest.raises(ConfigCompositionException):
        compose_train(REQUIRED + ["deepspeed=zero4"])


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["deepspeed.zero_stage=4"], "zero_stage"),
        (["optim=lamb", "deepspeed=zero2"], "zero_stage=0"),
        (["data.micro_batch_size=48"], "multiple"),
        (["trainer.max_steps=100"], "warmup"),
        (["logger.mode=sometimes"], "logger.mode"),
    ],
)
def test_bad_value_fails_at_composition(overrides, match):
    with pytest.raises(BAD_VALUE, match=match):
        compose_train(REQUIRED + overrides)


def _with(cfg: TrainConfig, **groups) -> TrainConfig:
    """A copy of cfg with some fields of some groups replaced, every check run again."""
    parts = {g: dataclasses.replace(getattr(cfg, g), **fields) for g, fields in groups.items()}
    return dataclasses.replace(cfg, **parts)


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"deepspeed": {"precision": "fp8"}}, "precision"),
        ({"deepspeed": {"zero_stage": 0, "offload_optimizer": True}}, "offload_optimizer"),
        ({"deepspeed": {"offload_param": True}}, "offload_param"),
        ({"deepspeed": {"loss_scale_window": 0}}, "loss_scale_window"),
        ({"optim": {"name": "sgd"}}, "optim.name"),
        ({"optim": {"betas": [0.9]}}, "betas"),
        ({"optim": {"warmup_ratio": 0.1}}, "exactly one"),
        ({"optim": {"schedule": "cosine"}}, "schedule"),
        ({"optim": {"end_lr": 1.0}}, "end_lr"),
        ({"optim": {"name": "lamb"}, "deepspeed": {"zero_stage": 2, "offload_optimizer": True}}, "DeepSpeedCPUAdam"),
        ({"model": {"num_attention_heads": 5}}, "divisible"),
        ({"model": {"hidden_dropout_prob": 1.5}}, "dropout"),
        ({"data": {"micro_batch_size": 0}}, "micro_batch_size"),
        ({"data": {"train_split": "eval"}}, "both"),
        ({"data": {"max_seq_length": 1024}}, "max_position_embeddings"),
        ({"trainer": {"eval_steps": 0}}, "eval_steps"),
        ({"trainer": {"dist_backend": "mpi"}}, "dist_backend"),
        ({"logger": {"backend": "tensorboard"}}, "logger.backend"),
    ],
)
def test_schema_checks_reject_bad_values(changes, match):
    """The same __post_init__ checks composition runs, without Hydra's cost per case."""
    base = compose_train(REQUIRED)
    with pytest.raises(ConfigError, match=match):
        _with(base, **changes)


def test_wrong_type_fails_at_composition():
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_train(REQUIRED + ["trainer.max_steps=many"])


def test_required_values_are_reported():
    with pytest.raises(Exception, match="data_dir|Missing"):
        compose_train(["output_dir=/tmp/run"])
    with pytest.raises(Exception, match="init_from|Missing"):
        compose_train(REQUIRED + ["trainer=phase2"])


# --- sweeps -----------------------------------------------------------------------------------


def test_multirun_sweep_syntax_parses_and_each_point_composes():
    """What `python -m training -m optim.lr=1e-4,2e-4 deepspeed=zero1,zero2` expands to."""
    parsed = OverridesParser.create().parse_overrides(["optim.lr=1e-4,2e-4", "deepspeed=zero1,zero2"])
    assert all(o.is_sweep_override() for o in parsed)
    lrs, stages = ([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in parsed)
    assert [float(x.split("=")[1]) for x in lrs] == [1e-4, 2e-4]
    assert stages == ["deepspeed=zero1", "deepspeed=zero2"]
    points = [(lr, stage) for lr in lrs for stage in stages]
    seen = {(c.optim.lr, c.deepspeed.zero_stage) for c in (compose_train(REQUIRED + list(p)) for p in points)}
    assert seen == {(1e-4, 1), (1e-4, 2), (2e-4, 1), (2e-4, 2)}


# --- the DeepSpeed dict -----------------------------------------------------------------------


def test_batch_arithmetic():
    assert gradient_accumulation_steps(256, 32, 1) == 8
    assert gradient_accumulation_steps(256, 32, 8) == 1
    assert gradient_accumulation_steps(65536, 32, 8) == 256
    with pytest.raises(ConfigError, match="divisor of 128"):
        gradient_accumulation_steps(256, 48, 2)
    with pytest.raises(ConfigError, match="world size 3"):
        gradient_accumulation_steps(256, 32, 3)


@pytest.mark.parametrize("world_size", [1, 2, 4, 8])
@pytest.mark.parametrize("name", options("deepspeed"))
def test_deepspeed_dict_matches_the_preset(name, world_size):
    cfg = compose_train(REQUIRED + [f"deepspeed={name}"])
    d = ds_dict(cfg, world_size)
    assert d == ds_dict(copy.deepcopy(cfg), world_size)  # a pure function of the config
    assert "optimizer" not in d and "scheduler" not in d  # ours are passed to deepspeed.initialize
    assert (
        d["train_batch_size"]
        == cfg.trainer.global_batch_size
        == (d["train_micro_batch_size_per_gpu"] * d["gradient_accumulation_steps"] * world_size)
    )
    assert d["train_micro_batch_size_per_gpu"] == cfg.data.micro_batch_size
    assert d["gradient_clipping"] == cfg.optim.grad_clip
    zero = d["zero_optimization"]
    assert zero["stage"] == cfg.deepspeed.zero_stage
    assert ("offload_optimizer" in zero) == cfg.deepspeed.offload_optimizer == name.endswith("_offload")
    if cfg.deepspeed.offload_optimizer:
        assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    assert ("offload_param" in zero) == (name == "zero3_offload")
    assert d["bf16"] == {"enabled": cfg.deepspeed.zero_stage > 0} and d["fp16"] == {"enabled": False}
    assert ("torch_autocast" in d) == (cfg.deepspeed.zero_stage == 0)  # stage 0: fp32 weights, bf16 compute


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_precision_sections(precision):
    cfg = compose_train(REQUIRED + [f"deepspeed.precision={precision}", "deepspeed.loss_scale_window=500"])
    d = ds_dict(cfg)
    assert d["bf16"]["enabled"] == (precision == "bf16") and d["fp16"]["enabled"] == (precision == "fp16")
    if precision == "fp16":
        assert d["fp16"]["loss_scale"] == 0.0  # dynamic
        assert (d["fp16"]["initial_scale_power"], d["fp16"]["loss_scale_window"]) == (16, 500)


@pytest.fixture(scope="module")
def deepspeed_config_class():
    """DeepSpeed's own parser of the config dict (pydantic models; unknown sub-keys rejected)."""
    from deepspeed.runtime.config import DeepSpeedConfig

    return DeepSpeedConfig


class _DataParallelOnly:
    """The one method DeepSpeedConfig asks of an mpu: the data-parallel world size."""

    def __init__(self, world_size):
        self.world_size = world_size

    def get_data_parallel_world_size(self):
        return self.world_size


def deepspeed_parses(config_class, d, world_size, monkeypatch):
    """DeepSpeedConfig(d) as every rank of a `world_size` job would parse it. Without a process
    group it assumes world size 1; telling it the rank (0) and the data-parallel size through an
    mpu is the lightest way to check the batch arithmetic of larger worlds without one."""
    if world_size > 1:
        import deepspeed.comm

        monkeypatch.setattr(deepspeed.comm, "get_rank", lambda group=None: 0)
        return config_class(copy.deepcopy(d), mpu=_DataParallelOnly(world_size))
    return config_class(copy.deepcopy(d))


@pytest.mark.parametrize("world_size", [1, 4])
@pytest.mark.parametrize(
    "overrides",
    [["deepspeed=" + n] for n in options("deepspeed")]
    + [
        ["deepspeed=zero1", "deepspeed.precision=fp16"],
        ["deepspeed=zero0", "deepspeed.precision=fp32", "optim=lamb"],
        ["deepspeed=zero3", "deepspeed.overlap_comm=false"],
    ],
)
def test_deepspeed_accepts_the_dict(deepspeed_config_class, overrides, world_size, monkeypatch):
    from deepspeed.runtime import constants

    cfg = compose_train(REQUIRED + overrides)
    d = ds_dict(cfg, world_size)
    # DeepSpeed ignores unknown top-level keys silently; its constants module names the real ones
    # (and deepspeed.utils.config the timers' section).
    from deepspeed.utils.config import TIMERS

    known = {v for v in vars(constants).values() if isinstance(v, str)} | {"zero_optimization", "bf16", TIMERS}
    assert set(d) <= known, set(d) - known
    parsed = deepspeed_parses(deepspeed_config_class, d, world_size, monkeypatch)
    assert parsed.timers_config.enabled is False
    bf16, stage = cfg.deepspeed.precision == "bf16", cfg.deepspeed.zero_stage
    assert parsed.grad_accum_dtype == ("fp32" if bf16 and stage > 0 else None)
    assert parsed.torch_autocast_enabled == (bf16 and stage == 0)
    assert parsed.communication_data_type == (torch.float32 if bf16 else None)
    assert parsed.world_size == world_size
    assert (parsed.train_batch_size, parsed.train_micro_batch_size_per_gpu, parsed.gradient_accumulation_steps) == (
        d["train_batch_size"],
        d["train_micro_batch_size_per_gpu"],
        d["gradient_accumulation_steps"],
    )
    assert parsed.zero_optimization_stage == cfg.deepspeed.zero_stage
    assert parsed.bfloat16_config.enabled == (bf16 and stage > 0)
    assert parsed.float16_config.enabled == (cfg.deepspeed.precision == "fp16")
    assert parsed.gradient_clipping == cfg.optim.grad_clip
    offload = parsed.zero_config.offload_optimizer
    assert (offload is not None and offload.device == "cpu") == cfg.deepspeed.offload_optimizer
    if cfg.deepspeed.precision == "fp16":
        assert parsed.float16_config.loss_scale == 0 and parsed.float16_config.loss_scale_window == 1000


def test_deepspeed_rejects_a_wrong_batch(deepspeed_config_class, monkeypatch):
    """The check above has teeth: a dict built for 4 ranks fails for 2."""
    d = ds_dict(compose_train(REQUIRED), world_size=4)
    with pytest.raises(AssertionError, match="train_batch_size"):
        deepspeed_parses(deepspeed_config_class, d, 2, monkeypatch)


@pytest.mark.parametrize("preset", ["zero0", "zero1", "zero2", "zero3"])
def test_deepspeed_config_has_no_timer_and_fp32_accumulation_under_bf16(preset):
    cfg = compose_train(REQUIRED + [f"deepspeed={preset}"])
    bert_base = 110_000_000
    ds = build_deepspeed_config(cfg.deepspeed, cfg.trainer, cfg.data, cfg.optim, 1, bert_base)
    assert ds["timers"] == {"throughput": {"enabled": False, "synchronized": False}}
    stage = cfg.deepspeed.zero_stage
    assert ds.get("data_types") == ({"grad_accum_dtype": "fp32"} if stage else None)
    assert ds.get("torch_autocast") == ({"enabled": True, "dtype": "bfloat16"} if stage == 0 else None)
    assert ds["communication_data_type"] == "fp32"
    fp32 = build_deepspeed_config(
        dataclasses.replace(cfg.deepspeed, precision="fp32"), cfg.trainer, cfg.data, cfg.optim, 1, bert_base
    )
    assert not {"data_types", "torch_autocast", "communication_data_type"} & set(fp32)
    if stage:
        zero = ds["zero_optimization"]
        # Four buckets of BERT-Base's gradients, reduced while backward runs (DeepSpeed's 5e8 is one bucket).
        assert zero["reduce_bucket_size"] == 27_500_544 and zero["overlap_comm"] is True  # 110M / 4, aligned
        assert zero.get("allgather_bucket_size", 4096) % 4096 == 0  # ZeRO 1-2 assert its alignment
        given = dataclasses.replace(cfg.deepspeed, reduce_bucket_size=12345)
        assert _zero_of(given, cfg)["reduce_bucket_size"] == 12345


def _zero_of(engine, cfg):
    return build_deepspeed_config(engine, cfg.trainer, cfg.data, cfg.optim, 1, 10**8)["zero_optimization"]


# --- a run's config read back from its record (python -m training.export) ----------------------


@pytest.mark.parametrize(
    "experiment", ["cpu_smoke", "modernbert_small", "electra_small", "bert_base_mlm30", "bert_large_lamb_phase1"]
)
def test_a_recorded_config_reads_back_as_the_config_the_run_composed(experiment):
    from training.config import train_config_from_record

    composed = compose_train([f"experiment={experiment}", "data_dir=/d", "output_dir=/o"])
    recorded = OmegaConf.to_container(OmegaConf.structured(composed), resolve=True)  # as run_config.json keeps it
    assert train_config_from_record(recorded) == composed


def test_a_record_from_before_a_key_existed_reads_it_at_its_default_and_an_unknown_key_is_refused():
    from training.config import train_config_from_record

    composed = compose_train(["experiment=cpu_smoke", "data_dir=/d", "output_dir=/o"])
    recorded = OmegaConf.to_container(OmegaConf.structured(composed), resolve=True)
    old = {k: v for k, v in recorded.items() if k != "objective"}
    old["data"] = {k: v for k, v in recorded["data"].items() if k != "masking"}
    old["model"] = {k: v for k, v in recorded["model"].items() if k != "architecture"}
    assert train_config_from_record(old) == composed
    with pytest.raises(ConfigError, match="recorded config does not fit.*rope"):
        train_config_from_record({**recorded, "model": {**recorded["model"], "rope_theta": 1.0}})
