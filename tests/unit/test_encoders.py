"""training.encoders: where a published encoder in a Python package lives, or how to install it."""

import pytest

from training import encoders


def test_an_encoder_whose_package_is_missing_says_what_to_install(monkeypatch, capsys):
    missing = encoders.PackagedEncoder("no_such_encoder_package", "model", "no-such-encoder", "a test entry")
    monkeypatch.setitem(encoders.ENCODERS, "missing", missing)
    assert missing.directory() is None
    with pytest.raises(SystemExit) as exit_info:
        encoders.main(["missing"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: missing is not installed: pip install no-such-encoder\n"
    encoders.main([])
    assert "missing\t(not installed: pip install no-such-encoder)\ta test entry" in capsys.readouterr().out
