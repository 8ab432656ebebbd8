"""The entry points' one error path (pipeline.cli): a configuration mistake or an error a user can
fix is one line on stderr and an exit code, anything else keeps its traceback. The commands
themselves are run in tests/integration (test_cli.py, test_evaluate.py, test_finetune.py)."""

from dataclasses import dataclass

import pytest
from omegaconf import MISSING, OmegaConf

from pipeline.cli import config_or_exit, exit_on
from training.config import ConfigError

USAGE = "python -m tool out=<dir> [key=value ...]"


@dataclass
class Schema:
    out: str = MISSING
    size: int = 1

    def __post_init__(self):
        if self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")


def composed(**values):
    """What Hydra hands an entry point: the schema's structured config with the overrides merged."""
    return OmegaConf.merge(OmegaConf.structured(Schema), values)


def error_lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.strip().splitlines()


def test_config_or_exit_returns_the_object_and_the_resolved_dict():
    config, resolved = config_or_exit(composed(out="x", size=3), USAGE)
    assert config == Schema(out="x", size=3)
    assert resolved == {"out": "x", "size": 3}


def test_a_missing_required_key_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exited:
        config_or_exit(composed(), USAGE)
    assert exited.value.code == 2
    assert error_lines(capsys) == [f"error: out is required (it has no default): {USAGE}"]


def test_a_value_the_schema_rejects_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exited:
        config_or_exit(composed(out="x", size=0), USAGE)
    assert exited.value.code == 2
    assert error_lines(capsys) == ["error: size must be positive, got 0"]


def test_a_check_of_the_commands_own_conversion_is_one_line_and_exit_2(capsys):
    def to_object(cfg):
        raise ConfigError("unknown config keys ['sizee'] (added with '+'?)")

    with pytest.raises(SystemExit) as exited:
        config_or_exit(composed(out="x"), USAGE, to_object)
    assert exited.value.code == 2
    assert error_lines(capsys) == ["error: unknown config keys ['sizee'] (added with '+'?)"]


def test_an_unrelated_exception_is_raised_as_it_is(capsys):
    def to_object(cfg):
        raise RuntimeError("a bug, not a mistake in the config")

    with pytest.raises(RuntimeError, match="a bug"):
        config_or_exit(composed(out="x"), USAGE, to_object)
    assert capsys.readouterr().err == ""


def test_exit_on_turns_the_errors_given_into_one_line_and_their_code(capsys):
    with pytest.raises(SystemExit) as exited:
        with exit_on(ConfigError, KeyError):
            raise ConfigError("data_dir /nowhere does not exist")
    assert exited.value.code == 2
    assert error_lines(capsys) == ["error: data_dir /nowhere does not exist"]

    with pytest.raises(SystemExit) as exited:
        with exit_on(ConfigError, code=1):
            raise ConfigError("the job failed")
    assert exited.value.code == 1
    assert error_lines(capsys) == ["error: the job failed"]


def test_exit_on_lets_other_exceptions_and_results_through(capsys):
    with pytest.raises(ZeroDivisionError):
        with exit_on(ConfigError):
            _ = 1 / 0
    with exit_on(ConfigError):
        result = 42
    assert result == 42
    assert capsys.readouterr().err == ""
