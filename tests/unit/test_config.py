"""Every preset composes against the dataclass schemas; typos and bad values fail at composition."""

import os

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from paths import CONF as CONF_ROOT
from pipeline.config import PipelineConfig, register_configs
from pipeline.runner import beam_options, make_runner

CONF = os.path.join(CONF_ROOT, "pipeline")
REQUIRED = ["inputs=[a.xml]", "output_dir=/tmp/x"]
PRESET_OVERRIDES = {
    "tokenizer": {"vocab_file": ["tokenizer.vocab_file=/tmp/vocab.txt"]},
    "runner": {
        "dataflow": ["runner.project=p", "runner.region=r", "runner.temp_location=gs://b/t"],
        "flink": ["runner.flink_master=localhost:8081"],
        "spark": ["runner.spark_master_url=spark://localhost:7077"],
        "portable": ["runner.job_endpoint=localhost:8099", "runner.environment_config=localhost:50000"],
    },
}


def presets():
    for group in ("tokenizer", "instances", "masking", "runner", "filters"):
        for f in sorted(os.listdir(os.path.join(CONF, group))):
            yield group, f.removesuffix(".yaml")


def compose_pipeline(overrides):
    register_configs()
    with initialize_config_dir(config_dir=os.path.abspath(CONF), version_base="1.3"):
        cfg = compose(config_name="pipeline", overrides=overrides)
    return OmegaConf.to_object(cfg)


@pytest.mark.parametrize("group,name", list(presets()))
def test_every_preset_composes(group, name):
    extra = PRESET_OVERRIDES.get(group, {}).get(name, [])
    cfg = compose_pipeline(REQUIRED + [f"{group}={name}"] + extra)
    assert isinstance(cfg, PipelineConfig)
    beam_options(cfg.runner)  # the runner options build


def test_misspelt_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException):
        compose_pipeline(REQUIRED + ["instances.max_seq_lenght=256"])


def test_bad_value_fails_at_composition():
    with pytest.raises((ValueError, ValidationError)):
        compose_pipeline(REQUIRED + ["instances.objective=mlm"])
    with pytest.raises((ValueError, ValidationError)):
        compose_pipeline(REQUIRED + ["masking.masked_lm_prob=1.5"])


def test_required_values_are_reported():
    with pytest.raises(Exception, match="output_dir|Missing"):
        compose_pipeline(["inputs=[a.xml]"])


def test_default_input_is_the_embedded_sample():
    cfg = compose_pipeline(["output_dir=/tmp/x"])
    assert len(cfg.inputs) == 1 and os.path.exists(cfg.inputs[0]) and cfg.inputs[0].endswith(".bz2")


@pytest.mark.parametrize(
    "runner,needs",
    [("dataflow", "runner.project"), ("flink", "runner.flink_master"), ("spark", "runner.spark_master_url")],
)
def test_cluster_runner_settings_are_required(runner, needs):
    with pytest.raises((ValueError, ValidationError), match=needs):
        compose_pipeline(REQUIRED + [f"runner={runner}"])


PORTABLE = REQUIRED + ["runner=portable", "runner.job_endpoint=localhost:8099"]


def test_portable_runner_needs_where_its_workers_run():
    with pytest.raises((ValueError, ValidationError), match="runner.environment_config .the worker pool"):
        compose_pipeline(PORTABLE)  # the preset's EXTERNAL environment: a worker pool's address
    with pytest.raises((ValueError, ValidationError), match="runner.environment_config .the SDK boot command"):
        compose_pipeline(PORTABLE + ["runner.environment_type=process"])
    with pytest.raises((ValueError, ValidationError), match="environment_type must be one of"):
        compose_pipeline(PORTABLE + ["runner.environment_type=KUBERNETES"])


@pytest.mark.parametrize(
    "overrides,urn,payload",
    [
        (["runner.environment_config=pool-host:50000"], "beam:env:external:v1", "pool-host:50000"),
        (
            ["runner.environment_type=PROCESS", "runner.environment_config=/opt/apache/beam/boot"],
            "beam:env:process:v1",
            "/opt/apache/beam/boot",
        ),
        (
            ["runner.environment_type=PROCESS", """runner.environment_config='{"command": "/usr/local/bin/boot"}'"""],
            "beam:env:process:v1",
            "/usr/local/bin/boot",
        ),
    ],
)
def test_portable_runner_options_give_beam_the_workers_environment(overrides, urn, payload):
    from apache_beam.transforms.environments import Environment

    cfg = compose_pipeline(PORTABLE + overrides)
    options = beam_options(cfg.runner).get_all_options()
    assert (options["runner"], options["job_endpoint"]) == ("PortableRunner", "localhost:8099")
    assert make_runner(cfg.runner, beam_options(cfg.runner)) is None  # Beam resolves --runner
    environment = Environment.from_options(beam_options(cfg.runner)).to_runner_api(None)
    assert environment.urn == urn and payload.encode() in environment.payload
