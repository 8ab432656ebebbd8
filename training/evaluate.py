"""python -m training.evaluate model_dir=<dir> [task=lee] [output=<file.json>] [key=value ...]

A zero-shot score of an encoder, no fine-tuning: the Lee document-similarity benchmark (Lee,
Pincombe & Welsh 2005; the files ship in gensim's wheel, ``gensim/test/test_data``):

- ``lee.cor``: 50 short news documents, one per line, Latin-1 (one contains a pound sign);
- ``similarities0-1.txt``: 50 x 50, tab separated, the averaged human similarity judgments on a
  0-1 scale, filled above the diagonal (1 on it, 0 below).

Each document is embedded as the attention-masked mean of the encoder's last-layer token
embeddings ([CLS] and [SEP] included, as sentence-transformers' mean pooling does); the score
is the Pearson (and Spearman) correlation between the cosine similarities of the 1225 distinct
pairs (the upper triangle) and the human judgments. A document longer than max_seq_length
(word pieces plus [CLS] and [SEP]) is cut into consecutive windows, each embedded on its own,
and its vector is the mean over the token embeddings of all its windows
(``long_documents=windows``); ``long_documents=truncate`` keeps the first window only.

model_dir is an encoder in Hugging Face layout (training/finetune/encoder.py): this project's BERT
export (``<train output_dir>/hf``), its ModernBERT export, its ELECTRA export's ``discriminator/``, or a
published encoder. transformers' ``AutoModel`` and ``AutoTokenizer`` load it, as fine-tuning does.
Results are printed on stdout and, with ``output=<file.json>``, written as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import hydra
import numpy as np
from omegaconf import MISSING, DictConfig

from pipeline.cli import config_or_exit, configure_logging, exit_on
from training.config import ConfigError

TASKS = ("lee",)
LONG_DOCUMENTS = ("windows", "truncate")
DEVICES = ("auto", "cpu", "cuda")
USAGE = "python -m training.evaluate model_dir=<Hugging Face encoder dir> [task=lee] [output=<file.json>]"
LEE_DOCUMENTS = "lee.cor"
LEE_SIMILARITIES = "similarities0-1.txt"


@dataclass
class LeeConfig:
    """Where the Lee benchmark's two files are."""

    documents_file: Optional[str] = None
    """The 50 documents, one per line (Latin-1); null: gensim's test_data/lee.cor."""
    similarities_file: Optional[str] = None
    """The human judgments, a tab-separated 50 x 50 matrix filled above the diagonal; null: gensim's
    test_data/similarities0-1.txt."""


@dataclass
class EvaluateConfig:
    """Root of ``conf/evaluate/evaluate.yaml``."""

    model_dir: str = MISSING
    """An encoder in Hugging Face layout (config.json, weights, tokenizer) that transformers' AutoModel
    loads: this project's <train output_dir>/hf, its ModernBERT export or ELECTRA's discriminator/, or a
    published encoder."""
    task: str = "lee"
    """Which benchmark: lee (document similarity against human judgments)."""
    output: Optional[str] = None
    """Write the results here as JSON; null: only print them."""
    max_seq_length: int = 128
    """Tokens per window, [CLS] and [SEP] included (at most the model's max_position_embeddings);
    128 is the length phase 1 trains at."""
    long_documents: str = "windows"
    """A document longer than a window: windows (mean over all its windows' tokens) or truncate (first window)."""
    batch_size: int = 16
    """Windows per forward pass."""
    device: str = "auto"
    """auto (cuda if available, else cpu), cpu or cuda."""
    lee: LeeConfig = field(default_factory=LeeConfig)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.long_documents not in LONG_DOCUMENTS:
            raise ConfigError(f"long_documents must be one of {LONG_DOCUMENTS}, got {self.long_documents!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.max_seq_length < 3:
            raise ConfigError(f"max_seq_length must be >= 3 ([CLS], a piece, [SEP]), got {self.max_seq_length}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


# --- the benchmark's data --------------------------------------------------------------------


def gensim_test_data(name: str) -> str:
    try:
        import gensim
    except ImportError as e:
        raise ConfigError(
            "the Lee files ship in gensim's wheel (pip install gensim), or give "
            "lee.documents_file and lee.similarities_file"
        ) from e
    return os.path.join(os.path.dirname(gensim.__file__), "test", "test_data", name)


def read_lee(cfg: LeeConfig) -> tuple[list[str], np.ndarray]:
    """The documents and the (n, n) human similarity matrix; ConfigError when they do not pair up."""
    documents_file = cfg.documents_file or gensim_test_data(LEE_DOCUMENTS)
    similarities_file = cfg.similarities_file or gensim_test_data(LEE_SIMILARITIES)
    for path in (documents_file, similarities_file):
        if not os.path.isfile(path):
            raise ConfigError(f"{path} does not exist")
    with open(documents_file, encoding="latin-1") as f:
        documents = [line.strip() for line in f.read().splitlines()]
    while documents and not documents[-1]:
        documents.pop()
    human = np.loadtxt(similarities_file, delimiter="\t", dtype=np.float64)
    if human.ndim != 2 or human.shape != (len(documents), len(documents)):
        raise ConfigError(
            f"{similarities_file} is a {human.shape} matrix but {documents_file} holds {len(documents)} documents"
        )
    return documents, human


def pair_values(matrix: np.ndarray) -> np.ndarray:
    """The entries above the diagonal of a square (n, n) matrix, row by row: the n(n-1)/2 distinct pairs."""
    return matrix[np.triu_indices(matrix.shape[0], k=1)]


# --- correlations ----------------------------------------------------------------------------


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r of two equally long samples; nan when either is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"two 1-d samples of the same length >= 2 needed, got {x.shape} and {y.shape}")
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denominator) if denominator > 0 else float("nan")


def average_ranks(x: Sequence[float]) -> np.ndarray:
    """1-based ranks, tied values sharing the mean of the ranks they span (the human judgments tie often)."""
    _, inverse, counts = np.unique(np.asarray(x, dtype=np.float64), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # rank of each distinct value's last occurrence
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's r of the average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


# --- embedding -------------------------------------------------------------------------------


def document_windows(pieces: Sequence[int], max_pieces: int, long_documents: str) -> list[list[int]]:
    """Consecutive, non-overlapping windows of at most max_pieces word-piece ids (one, possibly
    empty, for an empty document); ``truncate`` keeps the first only."""
    windows = [list(pieces[i : i + max_pieces]) for i in range(0, max(len(pieces), 1), max_pieces)]
    return windows[:1] if long_documents == "truncate" else windows


def embed_documents(
    encoder,
    tokenizer,
    documents: Sequence[str],
    max_seq_length: int,
    long_documents: str,
    batch_size: int,
    device,
) -> tuple[np.ndarray, int, int]:
    """(D, H) float64 document vectors: the attention-masked mean of the last layer's token
    embeddings over each document's windows. Also returns the number of windows and of
    documents longer than one window.

    encoder: a transformers ``AutoModel`` (no head) in eval mode on ``device``; tokenizer: its
    ``AutoTokenizer``, whose [CLS], [SEP] and [PAD] ids frame and pad the windows. Only input_ids
    and attention_mask go in: segment 0 is every model's default, and ModernBERT takes none."""
    import torch

    pieces = tokenizer(list(documents), add_special_tokens=False)["input_ids"]
    cls, sep, pad = special_ids(tokenizer)
    windows, owners = [], []
    for d, ids in enumerate(pieces):
        for window in document_windows(ids, max_seq_length - 2, long_documents):
            windows.append([cls, *window, sep])
            owners.append(d)
    hidden_size = encoder.config.hidden_size
    sums = np.zeros((len(documents), hidden_size), dtype=np.float64)
    counts = np.zeros(len(documents), dtype=np.float64)
    order = sorted(range(len(windows)), key=lambda i: len(windows[i]))  # similar lengths, less padding
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            T = max(len(windows[i]) for i in batch)
            ids = torch.full((len(batch), T), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), T), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(windows[i])] = torch.tensor(windows[i])
                mask[row, : len(windows[i])] = 1
            ids, mask = ids.to(device), mask.to(device)
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state.float()  # (B, T, H)
            summed = (hidden * mask[..., None]).sum(dim=1).double().cpu().numpy()  # (B, H)
            np.add.at(sums, [owners[i] for i in batch], summed)
            np.add.at(counts, [owners[i] for i in batch], mask.sum(dim=1).double().cpu().numpy())
    longer = sum(len(ids) > max_seq_length - 2 for ids in pieces)
    return sums / counts[:, None], len(windows), longer


def special_ids(tokenizer) -> tuple[int, int, int]:
    """The tokenizer's [CLS], [SEP] and [PAD] ids; ConfigError when it lacks one."""
    ids = (tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id)
    if None in ids:
        raise ConfigError(
            f"model_dir's tokenizer has no {' or '.join(n for n, i in zip(('cls', 'sep', 'pad'), ids) if i is None)} "
            "token (special_tokens_map.json): a window is [CLS] pieces [SEP], padded with [PAD]"
        )
    return ids


def cosine_similarities(vectors: np.ndarray) -> np.ndarray:
    """(D, D) cosine similarity of every pair of rows of (D, H) vectors."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


# --- the run ---------------------------------------------------------------------------------


MODEL_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
"""The encoder's shape as results.json records it (config.json fields every one of the three exports has)."""


def load_encoder(model_dir: str):
    """transformers' ``AutoModel`` (the encoder without heads, in eval mode on the CPU) and ``AutoTokenizer``
    of model_dir; ConfigError for what cannot be loaded (training/finetune/encoder.py)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from training.finetune.encoder import load_pretrained

    transformers_logging.set_verbosity_error()  # its pooler starting fresh, long-document warnings: unused here
    transformers_logging.disable_progress_bar()
    encoder, _ = load_pretrained(AutoModel, model_dir)
    return encoder.eval(), AutoTokenizer.from_pretrained(model_dir)


def evaluate_lee(cfg: EvaluateConfig) -> dict:
    """The Lee correlation of cfg.model_dir's encoder: the results dict written to cfg.output."""
    from training.distributed import resolve_device

    started = time.perf_counter()
    documents, human = read_lee(cfg.lee)
    encoder, tokenizer = load_encoder(cfg.model_dir)
    max_positions = encoder.config.max_position_embeddings
    if cfg.max_seq_length > max_positions:
        raise ConfigError(
            f"max_seq_length {cfg.max_seq_length} exceeds the model's max_position_embeddings {max_positions}"
        )
    device = resolve_device(cfg.device)
    vectors, windows, longer = embed_documents(
        encoder.to(device), tokenizer, documents, cfg.max_seq_length, cfg.long_documents, cfg.batch_size, device
    )
    model_scores, human_scores = pair_values(cosine_similarities(vectors)), pair_values(human)
    return {
        "task": "lee",
        "model_dir": os.path.abspath(cfg.model_dir),
        "pearson": pearson(model_scores, human_scores),
        "spearman": spearman(model_scores, human_scores),
        "pairs": int(len(model_scores)),
        "documents": len(documents),
        "pooling": "mean",
        "max_seq_length": cfg.max_seq_length,
        "long_documents": cfg.long_documents,
        "documents_longer_than_a_window": int(longer),
        "windows": windows,
        "model": {key: getattr(encoder.config, key) for key in MODEL_FIELDS},
        "model_type": encoder.config.model_type,
        "device": str(device),
        "seconds": round(time.perf_counter() - started, 3),
    }


def run(cfg: EvaluateConfig) -> dict:
    """Evaluate, print the result line, write cfg.output if set; returns the results."""
    results = evaluate_lee(cfg)
    print(
        f"lee: pearson {results['pearson']:.4f} spearman {results['spearman']:.4f} over {results['pairs']} "
        f"document pairs ({results['documents']} documents, {results['documents_longer_than_a_window']} longer "
        f"than max_seq_length={cfg.max_seq_length}: {cfg.long_documents}) model_dir={results['model_dir']}",
        flush=True,
    )
    if cfg.output:
        os.makedirs(os.path.dirname(os.path.abspath(cfg.output)), exist_ok=True)
        with open(cfg.output, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, sort_keys=True)
            f.write("\n")
        print(f"wrote {cfg.output}", flush=True)
    return results


register_configs()


@hydra.main(config_path="pkg://training.evaluate_conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config: EvaluateConfig
    config, _ = config_or_exit(cfg, USAGE)
    configure_logging("WARNING")
    with exit_on(ConfigError):  # what to change, without a traceback
        run(config)


if __name__ == "__main__":
    sys.exit(main())
