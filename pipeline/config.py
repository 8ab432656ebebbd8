"""Dataclass schemas of the pipeline's Hydra config (``conf/pipeline/pipeline.yaml``).

Each component receives its own slice (``cfg.source``, ``cfg.instances``...),
never the whole tree. Invariants are checked in ``__post_init__`` so a bad
value fails when the config is composed, not an hour into a job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from omegaconf import MISSING

from pipeline.masking import MaskingParams, check_span_lengths


@dataclass
class SourceConfig:
    """How input files are read."""

    text_format: str = "book"
    """How a .txt file is read: "book" (one book per file) or "bert_lines"
    (one sentence per line, blank line between documents)."""
    keep_lists: bool = False
    """Keep wiki list items as prose (BERT's extraction dropped lists)."""
    max_line_bytes: int = 1_000_000
    """A text or JSON line longer than this is rejected as oversized (read in bounded pieces)."""
    max_page_bytes: int = 16_000_000
    """A wiki <page> longer than this is rejected as oversized."""
    text_field: str = "text"
    """Field (JSON lines) or column (Parquet) holding a record's text, e.g. content; a Parquet file without it uses its one string column named text, content, raw_content or body."""
    id_field: str = "id"
    """Field or column holding a record's id; a record without one is named by its line or row number."""
    title_field: str = "title"
    """Field or column holding a record's title; a record without one has no title."""

    def __post_init__(self):
        if self.text_format not in ("book", "bert_lines"):
            raise ValueError(f"source.text_format must be 'book' or 'bert_lines', got {self.text_format!r}")
        named = {"text_field": self.text_field, "id_field": self.id_field, "title_field": self.title_field}
        blank = [f"source.{k}" for k, v in named.items() if not isinstance(v, str) or not v.strip()]
        if blank:
            raise ValueError(f"{', '.join(blank)} must name a field, e.g. source.text_field=content")
        if self.text_field in (self.id_field, self.title_field):
            raise ValueError(f"source.text_field={self.text_field!r} is also the id or title field")
        if self.max_line_bytes < 1024 or self.max_page_bytes < 1024:
            raise ValueError("source.max_line_bytes and source.max_page_bytes must be at least 1024")


def _gopher_top_ngrams() -> dict:
    return {2: 0.20, 3: 0.18, 4: 0.16}


def _gopher_duplicate_ngrams() -> dict:
    return {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}


@dataclass
class FiltersConfig:
    """Quality and language filters (``pipeline.filters``, ``pipeline.language``); a threshold set to
    null turns its filter off. Presets: ``filters=default|web|none`` (conf/pipeline/filters/)."""

    min_words: Optional[int] = None
    """Reject a document of fewer words (Gopher: 50); null: only cleaning.min_document_chars applies."""
    min_mean_word_length: Optional[float] = 3.0
    """Reject a document whose words average fewer characters (Gopher: 3; CJK, Thai... not measured)."""
    max_mean_word_length: Optional[float] = 10.0
    """Reject a document whose words average more characters (Gopher: 10): URLs, base64, concatenated tokens."""
    max_symbol_word_ratio: Optional[float] = 0.1
    """Reject a document with more hashes and ellipses per word (Gopher: 0.1): tag lists, teasers."""
    min_letter_word_fraction: Optional[float] = 0.8
    """Reject a document where fewer words have a letter (Gopher: 0.8): tables of numbers, symbol soup."""
    max_digit_fraction: Optional[float] = 0.25
    """Reject a document with more of its non-space characters in digits (the sample's largest: 4.9%)."""
    min_terminal_punctuation_fraction: Optional[float] = None
    """Reject a document where fewer lines end a sentence (FineWeb: 0.12): menus, link lists, headlines."""
    max_duplicate_line_fraction: Optional[float] = 0.3
    """Reject a document with more of its lines repeating an earlier one (Gopher: 0.3)."""
    max_top_ngram_fraction: Optional[Dict[int, float]] = field(default_factory=_gopher_top_ngrams)
    """{n: limit}: reject when the most frequent word n-gram covers more of the characters (Gopher's)."""
    max_duplicate_ngram_fraction: Optional[Dict[int, float]] = field(default_factory=_gopher_duplicate_ngrams)
    """{n: limit}: reject when more of the characters are in repeated word n-grams (Gopher's)."""
    remove_boilerplate_lines: bool = False
    """Remove short cookie, policy and "enable JavaScript" notice lines (C4), and drop lorem ipsum pages."""
    max_boilerplate_line_fraction: Optional[float] = 0.5
    """With remove_boilerplate_lines: reject a document when more of its lines were notices."""
    languages: List[str] = field(default_factory=list)
    """Keep documents identified as one of these ISO 639-1 codes, e.g. [en]; []: no language identification."""
    min_language_score: float = 0.5
    """With languages: the identified language's probability must reach this."""

    def __post_init__(self):
        fractions = {
            "max_symbol_word_ratio": self.max_symbol_word_ratio,
            "min_letter_word_fraction": self.min_letter_word_fraction,
            "max_digit_fraction": self.max_digit_fraction,
            "min_terminal_punctuation_fraction": self.min_terminal_punctuation_fraction,
            "max_duplicate_line_fraction": self.max_duplicate_line_fraction,
            "max_boilerplate_line_fraction": self.max_boilerplate_line_fraction,
            "min_language_score": self.min_language_score,
            **{f"max_top_ngram_fraction.{n}": v for n, v in (self.max_top_ngram_fraction or {}).items()},
            **{f"max_duplicate_ngram_fraction.{n}": v for n, v in (self.max_duplicate_ngram_fraction or {}).items()},
        }
        bad = [f"filters.{k}={v}" for k, v in fractions.items() if v is not None and not 0.0 <= v <= 1.0]
        if bad:
            raise ValueError(f"{', '.join(bad)}: must be a fraction in [0, 1] (null turns a filter off)")
        sizes = [*(self.max_top_ngram_fraction or {}), *(self.max_duplicate_ngram_fraction or {})]
        if any(n < 1 for n in sizes):
            raise ValueError(f"filters n-gram sizes must be >= 1, got {sorted(sizes)}")
        low, high = self.min_mean_word_length, self.max_mean_word_length
        if low is not None and high is not None and low > high:
            raise ValueError(f"filters.min_mean_word_length={low} is above max_mean_word_length={high}")
        if self.min_words is not None and self.min_words < 1:
            raise ValueError("filters.min_words must be >= 1 or null")
        if self.languages:
            from pipeline.language import unknown_languages

            unknown = unknown_languages(self.languages)
            if unknown:
                raise ValueError(
                    f"filters.languages: {unknown} not known to the language model "
                    "(ISO 639-1 codes such as en, de, zh; pipeline.language.known_languages() lists them)"
                )


@dataclass
class CleaningConfig:
    """Document-level filters applied after markup removal and normalisation."""

    min_document_chars: int = 200
    """Documents with fewer characters after cleaning are rejected as too short."""
    min_sentences: int = 1
    """Documents with fewer sentences are rejected as too short."""
    drop_duplicates: bool = True
    """Drop exact duplicate documents (same cleaned text), keeping one."""

    def __post_init__(self):
        if self.min_document_chars < 0 or self.min_sentences < 1:
            raise ValueError("cleaning.min_document_chars must be >= 0 and cleaning.min_sentences >= 1")


@dataclass
class DedupConfig:
    """Near-duplicate removal (``pipeline.near_duplicates``): MinHash over word n-grams, LSH bands, pairs
    verified by estimated Jaccard similarity, one document kept per cluster. Presets: ``dedup=none|minhash``."""

    enabled: bool = False
    """Remove near-duplicates (a reject ``near_duplicate`` each, naming the document kept); false: exact duplicates only."""
    shingle_words: int = 2
    """Words per shingle (n-grams of the lowercased words): 2 keeps a copy with 3% of its words edited above 0.8."""
    permutations: int = 128
    """MinHash functions per signature (4 bytes each); the estimate's standard error is sqrt(J (1 - J) / permutations)."""
    bands: int = 16
    """LSH bands of permutations / bands rows: a pair of similarity s is a candidate with chance 1 - (1 - s^rows)^bands."""
    threshold: float = 0.8
    """A candidate pair is a near-duplicate when its estimated Jaccard similarity reaches this."""
    max_bucket_documents: int = 100
    """Documents of one LSH bucket paired with each other; each one beyond is paired with the bucket's first only."""

    def __post_init__(self):
        if self.shingle_words < 1 or self.permutations < 1 or self.bands < 1:
            raise ValueError("dedup.shingle_words, dedup.permutations and dedup.bands must be >= 1")
        if self.permutations % self.bands:
            raise ValueError(
                f"dedup.permutations={self.permutations} is not a multiple of dedup.bands={self.bands}: "
                "each band takes the same number of rows (e.g. 128 and 16: 8 rows a band)"
            )
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"dedup.threshold must be in (0, 1], got {self.threshold}")
        if self.max_bucket_documents < 2:
            raise ValueError("dedup.max_bucket_documents must be at least 2")

    @property
    def rows(self) -> int:
        """Signature rows per band."""
        return self.permutations // self.bands


@dataclass
class TokenizerConfig:
    """WordPiece: an existing vocab.txt (vocab_file set) or one trained on the corpus."""

    vocab_file: Optional[str] = None
    """Path to an existing BERT vocab.txt; when null, the job trains a vocabulary."""
    lowercase: Optional[bool] = None
    """Lowercase the text; null: true when training, decided from an existing vocabulary's pieces."""
    strip_accents: Optional[bool] = None
    """Strip accents; null: false without lowercasing, else decided from the vocabulary (true when training)."""
    max_unk_fraction: float = 0.02
    """The job fails when more than this fraction of all tokens are [UNK] (wrong casing or language)."""
    max_single_char_word_fraction: float = 0.2
    """The job fails when more than this fraction of words with letters are split into single characters (English sample: 0.07% with bert-base-uncased)."""
    max_pieces_per_word: float = 3.0
    """The job fails when words with letters average more pieces than this (English sample: 1.12 with bert-base-uncased)."""
    vocab_size: int = 30522
    """Size of a trained vocabulary (BERT's 30,522 by default)."""
    min_frequency: int = 2
    """A trained piece must occur at least this often."""
    limit_alphabet: int = 1000
    """At most this many distinct characters in a trained vocabulary."""
    train_sample_documents: int = 200_000
    """Train on at most this many documents, chosen by a hash of their id (bounded memory)."""

    def __post_init__(self):
        if self.vocab_size < 128:
            raise ValueError(f"tokenizer.vocab_size must be at least 128, got {self.vocab_size}")
        if self.train_sample_documents < 1:
            raise ValueError("tokenizer.train_sample_documents must be >= 1")
        if not 0.0 <= self.max_unk_fraction <= 1.0:
            raise ValueError(f"tokenizer.max_unk_fraction must be in [0, 1], got {self.max_unk_fraction}")
        if not 0.0 <= self.max_single_char_word_fraction <= 1.0:
            raise ValueError(
                f"tokenizer.max_single_char_word_fraction must be in [0, 1], got {self.max_single_char_word_fraction}"
            )
        if self.max_pieces_per_word < 1.0:
            raise ValueError(f"tokenizer.max_pieces_per_word must be at least 1, got {self.max_pieces_per_word}")


@dataclass
class InstancesConfig:
    """Building examples: the original create_pretraining_data.py parameters."""

    max_seq_length: int = 128
    """Tokens per example including [CLS] and [SEP] (512 for phase 2)."""
    short_seq_prob: float = 0.1
    """Probability of a shorter random target length for a document pass."""
    objective: str = "nsp"
    """Sentence-pair objective: nsp (BERT), sop (ALBERT) or none (RoBERTa-style packing)."""
    pool_size: int = 2000
    """Documents per pool: an NSP negative's B comes from another document of the same pool."""
    eval_fraction: float = 0.01
    """Fraction of documents held out for evaluation, chosen by a hash of the document id."""
    min_eval_documents: int = 10
    """The eval split takes at least this many documents (fewer measure little); a corpus of fewer than twice as many has none (0: the fraction alone)."""
    min_work_units: int = 64
    """Least units of work per split for example creation: with fewer pools than this, a
    pool's dupe_factor passes are split over several units (each receives the pool's documents
    once more through the shuffle); with many pools each pool is one unit, sent once. The
    default gives a few units per core on a 16-core machine."""

    def __post_init__(self):
        if self.min_work_units < 1:
            raise ValueError("instances.min_work_units must be at least 1")
        if self.objective not in ("nsp", "sop", "none"):
            raise ValueError(f"instances.objective must be nsp, sop or none, got {self.objective!r}")
        if not 8 <= self.max_seq_length <= 65535:
            raise ValueError(f"instances.max_seq_length must be in [8, 65535], got {self.max_seq_length}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ValueError("instances.short_seq_prob must be in [0, 1]")
        if self.pool_size < 2:
            raise ValueError("instances.pool_size must be at least 2 (NSP negatives need another document)")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError("instances.eval_fraction must be in [0, 1)")
        if self.min_eval_documents < 0:
            raise ValueError("instances.min_eval_documents must be >= 0")


@dataclass
class MaskingConfig:
    """Masked-LM parameters; mode static stores masks, dynamic leaves it to the trainer."""

    mode: str = "static"
    """static: dupe_factor masked copies written; dynamic: examples stored unmasked."""
    masked_lm_prob: float = 0.15
    """Fraction of tokens to predict."""
    max_predictions_per_seq: Optional[int] = None
    """Cap on predictions per example; null: the recipe's for the length (``predictions_cap``: 20 at 128, 80 at 512)."""
    whole_word: bool = False
    """Mask whole words (## pieces with the word they continue)."""
    spans: bool = False
    """SpanBERT: mask spans of whole words (whatever whole_word says), 80/10/10 decided per span."""
    span_p: float = 0.2
    """With spans: span lengths in words are geometric(span_p) restricted to 1..max_span_words."""
    max_span_words: int = 10
    """With spans: the longest span, in words (SpanBERT's 0.2 and 10 give a mean of 3.8 words)."""
    dupe_factor: int = 5
    """Passes over the corpus, each with other instances and masks (static masking)."""

    def __post_init__(self):
        if self.mode not in ("static", "dynamic"):
            raise ValueError(f"masking.mode must be static or dynamic, got {self.mode!r}")
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ValueError("masking.masked_lm_prob must be in (0, 1)")
        if (self.max_predictions_per_seq is not None and self.max_predictions_per_seq < 1) or self.dupe_factor < 1:
            raise ValueError("masking.max_predictions_per_seq and masking.dupe_factor must be >= 1")
        try:
            check_span_lengths(self.span_p, self.max_span_words)
        except ValueError as e:
            raise ValueError(f"masking.{e}") from None

    def masking_params(self, max_seq_length: int) -> MaskingParams:
        """The rule's parameters for examples of ``max_seq_length`` tokens (the cap: ``predictions_cap``)."""
        return MaskingParams(
            masked_lm_prob=self.masked_lm_prob,
            max_predictions_per_seq=self.predictions_cap(max_seq_length),
            whole_word=self.whole_word,
            spans=self.spans,
            span_p=self.span_p,
            max_span_words=self.max_span_words,
        )

    def predictions_cap(self, max_seq_length: int) -> int:
        """The cap for examples of ``max_seq_length`` tokens: the one given, else what the rate asks
        of a full example, rounded up to a multiple of 4 (BERT's recipe: 20 at 128, 80 at 512)."""
        if self.max_predictions_per_seq is not None:
            return self.max_predictions_per_seq
        return 4 * math.ceil(self.masked_lm_prob * max_seq_length / 4)

    def cap_warning(self, max_seq_length: int) -> str:
        """A given cap below what the rate asks of a full example, said in one line ("" when none)."""
        wanted = math.ceil(self.masked_lm_prob * max_seq_length)
        cap = self.predictions_cap(max_seq_length)
        if cap >= wanted:
            return ""
        return (
            f"masking.max_predictions_per_seq={cap} masks at most {cap / max_seq_length:.1%} of a full "
            f"{max_seq_length}-token example, below masking.masked_lm_prob={self.masked_lm_prob} ({wanted} "
            "positions); leave it unset for the recipe's cap"
        )


@dataclass
class OutputConfig:
    """Sharding of the Arrow output."""

    num_shards: Optional[int] = None
    """Shards per split; null: as many as target_shard_tokens gives."""
    target_shard_tokens: int = 64_000_000
    """With num_shards null: about this many tokens per shard (~128 MB at uint16)."""
    rows_per_batch: int = 1024
    """Rows per Arrow record batch inside a shard."""

    def __post_init__(self):
        if self.num_shards is not None and self.num_shards < 1:
            raise ValueError("output.num_shards must be >= 1 or null")
        if self.target_shard_tokens < 1 or self.rows_per_batch < 1:
            raise ValueError("output.target_shard_tokens and output.rows_per_batch must be >= 1")


@dataclass
class RunnerConfig:
    """Beam pipeline options. Fields left null are not passed; `extra` is appended verbatim."""

    runner: str = "DirectRunner"
    """Beam runner: DirectRunner, DataflowRunner, FlinkRunner, SparkRunner, PortableRunner."""
    direct_num_workers: Optional[int] = 0
    """DirectRunner parallelism; 0 = all cores."""
    direct_running_mode: Optional[str] = "multi_processing"
    """DirectRunner mode: in_memory, multi_threading or multi_processing."""
    project: Optional[str] = None
    """Dataflow: GCP project."""
    region: Optional[str] = None
    """Dataflow: region."""
    temp_location: Optional[str] = None
    """Dataflow: gs:// temp location."""
    staging_location: Optional[str] = None
    """Dataflow: gs:// staging location."""
    job_name: Optional[str] = None
    """Job name shown by the runner."""
    machine_type: Optional[str] = None
    """Dataflow: worker machine type."""
    max_num_workers: Optional[int] = None
    """Dataflow: autoscaling ceiling."""
    setup_file: Optional[str] = None
    """Package the job for remote workers (./setup.py of this repository)."""
    sdk_container_image: Optional[str] = None
    """Dataflow (and DOCKER environments): the worker image, e.g. one built from infra/worker/Dockerfile."""
    flink_master: Optional[str] = None
    """Flink: JobManager address (host:port)."""
    spark_master_url: Optional[str] = None
    """Spark: master URL."""
    environment_type: Optional[str] = None
    """Portable runners: where the SDK workers run: DOCKER, PROCESS, EXTERNAL or LOOPBACK."""
    environment_config: Optional[str] = None
    """Portable runners: DOCKER: SDK image; EXTERNAL: worker pool host:port; PROCESS: boot command or Beam's JSON."""
    job_endpoint: Optional[str] = None
    """PortableRunner: the job service's host:port (a Flink/Spark job server, Beam's Python job service)."""
    artifact_endpoint: Optional[str] = None
    """PortableRunner: artifact staging host:port; null: the one the job service names."""
    extra: list = field(default_factory=list)
    """Any other Beam pipeline options; on the command line quote each: runner.extra=['--opt=value']."""

    REQUIRED = {
        "DataflowRunner": ("project", "region", "temp_location"),
        "FlinkRunner": ("flink_master",),
        "SparkRunner": ("spark_master_url",),
        "PortableRunner": ("job_endpoint",),
    }
    ENVIRONMENT_TYPES = ("DOCKER", "PROCESS", "EXTERNAL", "LOOPBACK")
    # What environment_config means for each type, in the message when it is missing.
    ENVIRONMENT_CONFIG_NEEDED = {"EXTERNAL": "the worker pool's host:port", "PROCESS": "the SDK boot command"}

    def __post_init__(self):
        missing = [f"runner.{name}" for name in self.REQUIRED.get(self.runner, ()) if not getattr(self, name)]
        if missing:
            raise ValueError(f"{self.runner} needs {', '.join(missing)} (e.g. {missing[0]}=...)")
        if self.environment_type is not None:
            self.environment_type = str(self.environment_type).upper()
            if self.environment_type not in self.ENVIRONMENT_TYPES:
                raise ValueError(
                    f"runner.environment_type must be one of {', '.join(self.ENVIRONMENT_TYPES)}, "
                    f"got {self.environment_type!r}"
                )
            needed = self.ENVIRONMENT_CONFIG_NEEDED.get(self.environment_type)
            if needed and not self.environment_config:
                raise ValueError(
                    f"runner.environment_type={self.environment_type} needs runner.environment_config ({needed})"
                )


@dataclass
class StorageConfig:
    """How Beam's FileSystems reach object stores (s3://, gs://), in the launcher and on every
    worker (``pipeline/storage.py``). Credentials are never part of the config: boto3 takes them
    from its usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
    AWS_PROFILE, ~/.aws, an instance role), Google's client from Application Default Credentials."""

    s3_endpoint_url: Optional[str] = None
    """S3-compatible endpoint (MinIO, Ceph, a local moto server), e.g. http://127.0.0.1:9000; null: AWS."""
    s3_region_name: Optional[str] = None
    """S3 region; null: boto3's own (AWS_REGION / AWS_DEFAULT_REGION, ~/.aws/config)."""
    s3_verify: Optional[str] = None
    """CA bundle (PEM file) to check the endpoint's TLS certificate against; null: boto3's bundle."""

    def __post_init__(self):
        url = self.s3_endpoint_url
        if url is not None and not str(url).startswith(("http://", "https://")):
            raise ValueError(f"storage.s3_endpoint_url must start with http:// or https://, got {url!r}")
        if self.s3_verify is not None and str(self.s3_verify).lower() in ("true", "false", "0", "1", ""):
            raise ValueError(
                "storage.s3_verify is the path of a CA bundle (PEM), not a switch: leave it null "
                f"for boto3's own bundle, got {self.s3_verify!r}"
            )


@dataclass
class ShuffleConfig:
    """How data crosses the job's shuffles: as chunk files in its temp dir, only references
    through the runner (``pipeline.spill``), so a local run's memory does not follow the corpus."""

    chunk_bytes: int = 1_000_000
    """Records read from a file and cleaned documents: bytes per chunk file (smaller: more, finer work units)."""
    pool_chunk_bytes: int = 64_000_000
    """Tokenized documents on their way to pools: a worker buffers this many bytes, then writes one
    file with a piece per pool it holds (larger: fewer pieces per pool; a worker's memory holds it)."""

    def __post_init__(self):
        if self.chunk_bytes < 1 or self.pool_chunk_bytes < 1:
            raise ValueError("shuffle.chunk_bytes and shuffle.pool_chunk_bytes must be >= 1")


@dataclass
class PipelineConfig:
    """Root of ``conf/pipeline/pipeline.yaml``."""

    inputs: list = MISSING
    """Input files, globs or directories (a directory: every file under it, recursively, hidden
    names skipped): Wikipedia XML dumps, .txt books, JSON lines; .bz2/.gz accepted."""
    output_dir: str = MISSING
    """Where shards, manifest, vocabulary and rejects are written (local path or gs://...)."""
    seed: int = 12345
    """Seeds every random choice, together with document ids and pass numbers."""
    overwrite: bool = False
    """Replace an existing output in output_dir (its manifest is removed first)."""
    log_level: str = "WARNING"
    """Log level of the launcher and of Beam's workers alike; INFO shows Beam's own progress."""
    progress_every_s: float = 10.0
    """Local runs: print documents read, tokenized and examples made every this many seconds (0: off)."""
    source: SourceConfig = field(default_factory=SourceConfig)
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    instances: InstancesConfig = field(default_factory=InstancesConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    shuffle: ShuffleConfig = field(default_factory=ShuffleConfig)

    LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

    def __post_init__(self):
        self.log_level = str(self.log_level).upper()
        if self.log_level not in self.LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(self.LOG_LEVELS)}, got {self.log_level!r}")
        if self.progress_every_s < 0:
            raise ValueError(f"progress_every_s must be >= 0 (0 turns progress off), got {self.progress_every_s}")


SAMPLE_CORPUS = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def sample_corpus_path() -> str:
    """The real English Wikipedia dump excerpt (206 pages) that gensim's wheel ships."""
    try:
        import gensim
    except ImportError as e:
        raise RuntimeError("the sample corpus comes with gensim: pip install -e '.[sample]'") from e
    import os

    return os.path.join(os.path.dirname(gensim.__file__), SAMPLE_CORPUS)


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore so a misspelt key fails at composition,
    and register ``${sample_corpus:}`` (the embedded default input)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("sample_corpus"):
        OmegaConf.register_new_resolver("sample_corpus", sample_corpus_path)

    cs = ConfigStore.instance()
    cs.store(name="pipeline_schema", node=PipelineConfig)
