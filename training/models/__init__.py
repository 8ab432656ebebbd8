"""The architectures the trainer builds, and what the rest of the code asks of one.

    arch = architecture("modern")                        # or for_config(model_cfg) / of_schema(cfg.model)
    model_cfg = arch.model_config(cfg.model, vocab_size, sentence_pair, pad_token_id)   # + the manifest
    net = arch.build_mlm(model_cfg, unpad)               # objectives/mlm.py's network
    arch.flops_per_token(model_cfg, seq_len, sparse)     # MFU
    arch.record(model_cfg)                               # run_config.json's "architecture"
    arch.export_mlm(state_dict, model_cfg, data_dir, out_dir)   # output_dir/hf, its transformers class
    arch.check_init_from(path, model_cfg, manifest) / arch.load_init_from(net, path)

An architecture is two modules: its entry here (``bert.py``, ``modernbert.py``: the ``model`` group's
schema, a dataclass Hydra validates, and an ``Architecture`` subclass; no torch at import, so composing a
config stays fast) and its network, which imports torch alone and takes one config dataclass
(``training/model.py``, ``training/models/modern.py``). Presets are YAML only (conf/train/model/*.yaml),
each naming its schema in its defaults list (``- /bert_model_schema@_here_``). The run record's architecture is the
network config's fields marked ``ARCHITECTURE``: a checkpoint differing in one of them never resumes.

Adding an architecture: its network module, its entry module with the schema and the ``Architecture``
subclass, its line in ``registered``, its presets, its tests (tests/unit/test_model_registry.py
parametrises over every preset).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from typing import Any, ClassVar

DEFAULT_ARCHITECTURE = "bert"
"""What a config or run record without an ``architecture`` key means: every one written before there
was a choice."""

ARCHITECTURE = {"architecture": True}
"""dataclasses.field metadata: a field of a network config that makes the architecture (the weights'
shapes or what they mean); the run record keeps these (``Architecture.record``)."""

NAME_KEY = "architecture"
"""The key naming the architecture, in the ``model`` config node and in a run record's architecture."""

SCHEMA_SUFFIX = "_model_schema"
"""An architecture's schema is stored as ``<name>_model_schema`` (``training.config.register_configs``)."""


class Architecture(abc.ABC):
    """One architecture: its schema, its network config, and what the trainer does with them."""

    name: ClassVar[str]
    """The registry name, ``model.architecture``."""
    schema: ClassVar[type]
    """The ``model`` group's dataclass (Hydra schema), stored as ``<name>_model_schema``."""
    hf_model_type: ClassVar[str]
    """``model_type`` in the config.json of its export (how an init_from directory is recognised)."""
    hf_class: ClassVar[str]
    """The transformers class its MLM export loads as."""

    @property
    @abc.abstractmethod
    def config_class(self) -> type:
        """The network's config dataclass (imported on use: it lives beside torch code)."""

    @abc.abstractmethod
    def manifest_fields(self, schema_cfg: Any, vocab_size: int, sentence_pair: str, pad_token_id: int) -> dict:
        """The network config's fields that come from the shards' manifest (vocabulary, [PAD], heads);
        ConfigError / DataContractError when the config or the shards do not fit this architecture."""

    @abc.abstractmethod
    def build_mlm(self, model_cfg: Any, unpad: bool):
        """The MLM network, freshly initialised (``BertForPreTraining``'s forward and output)."""

    @abc.abstractmethod
    def flops_per_token(self, model_cfg: Any, seq_len: int, sparse_fraction: float | None) -> float:
        """Training FLOPs (forward + backward) per token of ``build_mlm``'s network."""

    @abc.abstractmethod
    def export_mlm(self, state_dict: dict, model_cfg: Any, data_dir: str, out_dir: str) -> str:
        """The MLM network's fp32 weights (our names) as a directory of ``hf_class`` with the shards'
        tokenizer; returns out_dir."""

    @abc.abstractmethod
    def check_init_from(self, directory: str, model_cfg: Any, manifest: Any) -> None:
        """Before anything is built: a transformers directory of this architecture with the shards'
        vocabulary and this model's shape; ConfigError saying what to change otherwise."""

    @abc.abstractmethod
    def load_init_from(self, model: Any, directory: str) -> dict:
        """Copy the directory's weights into ``model``; the report ``init_from`` records."""

    def model_config(self, schema_cfg: Any, vocab_size: int, sentence_pair: str, pad_token_id: int) -> Any:
        """The network config: every field the schema shares with it by name, the rest from the
        manifest (``manifest_fields``)."""
        from training.config import ConfigError

        if schema_cfg.vocab_size is not None and schema_cfg.vocab_size != vocab_size:
            raise ConfigError(
                f"model.vocab_size is {schema_cfg.vocab_size} but the shards' vocabulary has "
                f"{vocab_size} entries; leave model.vocab_size null to take the manifest's"
            )
        from_manifest = self.manifest_fields(schema_cfg, vocab_size, sentence_pair, pad_token_id)
        names = {f.name for f in dataclasses.fields(schema_cfg)} - set(from_manifest)
        shared = {f.name: getattr(schema_cfg, f.name) for f in dataclasses.fields(self.config_class) if f.name in names}
        return self.config_class(**shared, **from_manifest)

    def record(self, model_cfg: Any) -> dict:
        """What a run record keeps of the architecture: its name and the ``ARCHITECTURE`` fields."""
        marked = {f.name: getattr(model_cfg, f.name) for f in dataclasses.fields(model_cfg) if f.metadata.get(NAME_KEY)}
        return {NAME_KEY: self.name, **marked}


def registered() -> dict[str, Architecture]:
    """name -> the architecture, for every one there is."""
    from training.models.bert import Bert
    from training.models.modernbert import ModernBert

    return {cls.name: cls() for cls in (Bert, ModernBert)}


PRESET_GROUP = "model"
"""The config group of the presets: conf/train/model/<name>.yaml, in the package ``training.conf``."""


@functools.lru_cache(maxsize=None)
def presets() -> dict[str, dict]:
    """name -> what the ``model=<name>`` preset sets: its ``architecture`` (the key, or the schema its
    defaults list names) and every field it gives. Read from the YAML, the one place presets are
    written, for code that builds a network without composing a run (hf_checkpoint's advice,
    benchmarks, tests)."""
    import importlib.resources

    import yaml

    found = {}
    for path in sorted(importlib.resources.files("training.conf").joinpath(PRESET_GROUP).iterdir()):
        if not path.name.endswith(".yaml"):
            continue
        node = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        schemas = [d.split("@")[0].strip("/") for d in node.pop("defaults", []) if isinstance(d, str)]
        named = [s.removesuffix(SCHEMA_SUFFIX) for s in schemas if s.endswith(SCHEMA_SUFFIX)]
        found[path.name.removesuffix(".yaml")] = {
            NAME_KEY: node.pop(NAME_KEY, None) or (named or [DEFAULT_ARCHITECTURE])[0],
            **node,
        }
    return found


def preset_fields(name: str) -> dict:
    """The network config fields the preset sets, without ``architecture``:
    ``BertConfig(vocab_size=V, **preset_fields("base"))``. KeyError naming the presets otherwise."""
    known = presets()
    if name not in known:
        raise KeyError(f"no model preset {name!r}: {sorted(known)}")
    return {k: v for k, v in known[name].items() if k != NAME_KEY}


def bert_presets() -> dict[str, dict]:
    """name -> ``preset_fields`` of every BERT preset (the shapes of Google's grid, base, large, MiniLM)."""
    return {name: preset_fields(name) for name, p in presets().items() if p[NAME_KEY] == "bert"}


def architecture(name: str) -> Architecture:
    """The architecture called ``name``; ConfigError naming the registered ones otherwise."""
    from training.config import ConfigError

    known = registered()
    if name not in known:
        raise ConfigError(f"unknown model.architecture {name!r}: choose one of {sorted(known)}")
    return known[name]


def of_schema(schema_cfg: Any) -> Architecture:
    """The architecture a composed ``model`` node selects."""
    return architecture(schema_cfg.architecture)


def for_config(model_cfg: Any) -> Architecture:
    """The architecture whose network config ``model_cfg`` is."""
    for arch in registered().values():
        if isinstance(model_cfg, arch.config_class):
            return arch
    raise TypeError(f"{type(model_cfg).__name__} is the config of no registered architecture")


def architecture_name(record: dict) -> str:
    """The architecture a run record's ``architecture`` entry (or a resolved ``model`` node) names."""
    return record.get(NAME_KEY, DEFAULT_ARCHITECTURE)


def upgraded_record(saved: dict) -> dict:
    """A run record as this trainer writes it, from one written before architectures were a choice:
    those were all BERT's, so ``config.model.architecture`` and ``architecture.architecture`` read
    as ``DEFAULT_ARCHITECTURE`` where absent. Returns a new dict; a current record comes back equal."""
    config = dict(saved.get("config", {}))
    if isinstance(config.get("model"), dict):
        config["model"] = {NAME_KEY: DEFAULT_ARCHITECTURE, **config["model"]}
    upgraded = {**saved, "config": config}
    if isinstance(saved.get("architecture"), dict):
        upgraded["architecture"] = {NAME_KEY: DEFAULT_ARCHITECTURE, **saved["architecture"]}
    return upgraded
