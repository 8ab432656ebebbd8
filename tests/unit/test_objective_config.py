"""The ``objective`` config group: each option composes against the schema, ELECTRA's settings are
overridden and checked at composition, an unknown name or key is refused before anything is built,
and a resume compares the objective as the run trains it (a record from before the group trained
mlm; the settings of an objective not chosen do not count)."""

import dataclasses
from types import SimpleNamespace

import pytest
from hydra.errors import ConfigCompositionException

from test_training_config import BAD_VALUE, REQUIRED, compose_train, options
from training import checkpoint as ckpt
from training import preflight
from training.config import ConfigError, ElectraConfig
from training.data import DataContractError
from training.objectives import registered

ARCHITECTURE = {"vocab_size": 2000, "hidden_size": 128}
DATA = {"fingerprint": "f" * 64, "vocab_sha256": "v" * 64, "shards": 2, "rows": 100}


def record(*overrides: str, without_objective: bool = False) -> dict:
    """A ``checkpoint.run_record`` (what check_resumable reads of one) of the config `python -m
    training <overrides>` composes; without_objective: as a trainer from before the group wrote it."""
    config = dataclasses.asdict(compose_train(REQUIRED + list(overrides)))
    if without_objective:
        del config["objective"]
    return {"version": ckpt.RUN_RECORD_VERSION, "config": config, "architecture": ARCHITECTURE, "data": DATA}


def shards_of(task: str) -> SimpleNamespace:
    """What ``objective_for`` reads of ``PretrainingData``: the manifest's sentence-pair task and where."""
    return SimpleNamespace(manifest=SimpleNamespace(objective=task), data_dir="/shards")


# --- composition ------------------------------------------------------------------------------


def test_every_objective_option_composes_and_names_a_registered_objective():
    assert options("objective") == sorted(registered())
    for name in options("objective"):
        cfg = compose_train(REQUIRED + [f"objective={name}"])
        assert cfg.objective.name == name
        preflight.check_objective(cfg)
    assert compose_train(REQUIRED).objective.name == "mlm"  # train.yaml's default


def test_electra_settings_are_overridden_and_checked_at_composition():
    cfg = compose_train(REQUIRED + ["objective=electra", "objective.electra.discriminator_weight=20"])
    assert cfg.objective.settings() == ElectraConfig(discriminator_weight=20.0)
    assert compose_train(REQUIRED + ["objective=mlm"]).objective.settings() is None
    with pytest.raises(BAD_VALUE, match="objective.electra.temperature=0.0 must be positive"):
        compose_train(REQUIRED + ["objective=electra", "objective.electra.temperature=0"])
    with pytest.raises(BAD_VALUE, match="objective.electra.generator_size_fraction=1.5 must be in"):
        compose_train(REQUIRED + ["objective.electra.generator_size_fraction=1.5"])


def test_unknown_keys_of_the_group_are_refused():
    with pytest.raises(ConfigCompositionException, match="objective.electra.weight"):
        compose_train(REQUIRED + ["objective=electra", "objective.electra.weight=20"])
    with pytest.raises(ConfigError, match=r"unknown config keys \['objective.electra.weight'\]"):
        compose_train(REQUIRED + ["objective=electra", "+objective.electra.weight=20"])
    with pytest.raises(ConfigCompositionException):
        compose_train(REQUIRED + ["objective=bert2"])  # no such option in conf/train/objective


def test_an_unknown_objective_name_is_refused_before_the_shards_are_read():
    cfg = compose_train(REQUIRED + ["objective.name=bert2"])  # a string: the schema cannot know the registry
    with pytest.raises(ConfigError, match=r"unknown objective 'bert2' \(objective.name\): choose one of \['electra'"):
        preflight.check_objective(cfg)
    # data_dir=/tmp/shards does not exist: the objective is what prepare_run names
    with pytest.raises(ConfigError, match="unknown objective 'bert2'"):
        preflight.prepare_run(cfg, dataclasses.asdict(cfg))


def test_electra_refuses_init_from_and_says_what_to_do_instead():
    cfg = compose_train(REQUIRED + ["objective=electra", "trainer.init_from=/phase1/hf"])
    with pytest.raises(ConfigError, match="init_from loads a BERT or ModernBERT masked-LM export") as refused:
        preflight.check_objective(cfg)
    assert "trainer.init_from=null" in str(refused.value)
    preflight.check_objective(compose_train(REQUIRED + ["objective=mlm", "trainer.init_from=/phase1/hf"]))


def test_objective_for_makes_the_configured_objective_with_its_settings():
    overrides = ["objective=electra", "objective.electra.discriminator_weight=20", "trainer.sparse_mlm_head=false"]
    objective = preflight.objective_for(compose_train(REQUIRED + overrides), shards_of("none"))
    assert objective.name == "electra" and objective.settings == ElectraConfig(discriminator_weight=20.0)
    assert objective.sparse_head  # its generator predicts the masked slots only, whatever the MLM setting
    mlm = preflight.objective_for(compose_train(REQUIRED + ["trainer.sparse_mlm_head=false"]), shards_of("nsp"))
    assert mlm.name == "mlm" and mlm.settings is None and not mlm.sparse_head
    with pytest.raises(DataContractError, match=r"data_dir=/shards: .*instances=none"):
        preflight.objective_for(compose_train(REQUIRED + ["objective=electra"]), shards_of("nsp"))


# --- the resume guard -------------------------------------------------------------------------


def test_a_record_from_before_the_objective_group_resumes_as_mlm_and_is_refused_as_electra():
    old = record(without_objective=True)
    assert "objective" not in old["config"]
    assert ckpt.check_resumable(old, record("objective=mlm"), "ckpt", force=False) == []
    for force in (False, True):  # another network: not even trainer.force_resume resumes it
        with pytest.raises(ConfigError, match=r'objective.name: "mlm" -> "electra"'):
            ckpt.check_resumable(old, record("objective=electra"), "ckpt", force=force)


def test_only_the_chosen_objectives_settings_are_compared():
    weight = "objective.electra.discriminator_weight"
    saved = record("objective=mlm")
    assert ckpt.check_resumable(saved, record("objective=mlm", f"{weight}=20"), "ckpt", force=False) == []
    saved = record("objective=electra")
    with pytest.raises(ConfigError, match=rf"{weight}: 50.0 -> 20.0\n.*trainer.force_resume=true"):
        ckpt.check_resumable(saved, record("objective=electra", f"{weight}=20"), "ckpt", force=False)
    assert ckpt.check_resumable(saved, record("objective=electra", f"{weight}=20"), "ckpt", force=True) == [
        f"{weight}: 50.0 -> 20.0"
    ]
    wider = record("objective=electra", "objective.electra.generator_size_fraction=0.5")
    with pytest.raises(ConfigError, match="objective.electra.generator_size_fraction 0.25 -> 0.5"):
        ckpt.check_resumable(saved, wider, "ckpt", force=True)  # the generator's shapes differ
    with pytest.raises(ConfigError, match=r'objective.name: "electra" -> "mlm"'):
        ckpt.check_resumable(saved, record("objective=mlm"), "ckpt", force=False)


def test_electra_refuses_an_architecture_it_does_not_train():
    cfg = compose_train(REQUIRED + ["objective=electra", "model=modern_small"])
    with pytest.raises(ConfigError, match="objective=electra trains bert networks, not model.architecture=modern"):
        preflight.check_objective(cfg)
    preflight.check_objective(compose_train(REQUIRED + ["objective=mlm", "model=modern_small"]))


def test_a_record_from_before_any_added_key_resumes_at_that_keys_default():
    """Keys added to the schema since a checkpoint was written (here data.masking.* and
    model.architecture as well as the objective group) read as their defaults, which are what runs did
    before them; a run that sets one to something else is told what differs."""
    old = record(without_objective=True)
    del old["config"]["data"]["masking"]
    del old["config"]["model"]["architecture"]
    assert ckpt.check_resumable(old, record(), "ckpt", force=False) == []
    with pytest.raises(ConfigError, match=r"data.masking.masked_lm_prob: null -> 0.3"):
        ckpt.check_resumable(old, record("data.masking.masked_lm_prob=0.3"), "ckpt", force=False)
