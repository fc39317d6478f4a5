"""The one validated, frozen configuration of every job.

Defaults live in the dataclasses below; ``conf/default.toml`` documents the same values
(a test keeps the two equal). A TOML file and ``--set section.key=value`` overrides are
applied on top, then every field is checked in ``validate``.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgns_spark.errors import UserError

UNICODE_FORMS = ("NFC", "NFKC", "NFD", "NFKD", "none")
MIN_ROUNDS_PER_EPOCH = 4  # the automatic rounds_per_epoch: at least this many ...
ROUNDS_PER_SHARD = 2  # ... and this many per shard (see TrainSettings.rounds)


@dataclass(frozen=True)
class SparkSettings:
    """How the jobs obtain their SparkSession."""

    master: str = ""  # "" = what spark-submit set, else local[*]; e.g. "local[2]", "yarn"
    app_name: str = "sgns-spark"  # prefix of every job's Spark application name
    driver_memory: str = "2g"  # JVM heap when this process starts Spark itself; "1g".."64g"
    shuffle_partitions: int = 8  # spark.sql.shuffle.partitions; 1..100000
    arrow_batch_rows: int = 100_000  # rows per Arrow batch handed to Python; 1000..10_000_000
    log_level: str = "WARN"  # Spark's log level: ERROR, WARN, INFO


@dataclass(frozen=True)
class CorpusSettings:
    """How raw text becomes sentences of tokens."""

    unicode_normalization: str = "NFKC"  # one of NFC, NFKC, NFD, NFKD, none
    lowercase: bool = True
    split_pattern: str = r"[^\p{L}\p{N}_]+"  # RE2 regex matching the text *between* tokens
    max_sentence_length: int = 1000  # tokens; longer lines are cut; 10..100000
    max_invalid_utf8_fraction: float = 0.01  # share of undecodable bytes tolerated; 0..1


@dataclass(frozen=True)
class VocabSettings:
    """Which words are kept and how they are sampled."""

    min_count: int = 5  # occurrences a word needs to be kept; 1..1e9
    max_vocab_size: int = 0  # keep at most this many most frequent words; 0 = no cap
    noise_exponent: float = 0.75  # alpha in P_n(w) ~ count(w)^alpha; 0..1
    sample: float = 1e-3  # subsampling threshold s of frequent words; 0 = off; 0..0.1


@dataclass(frozen=True)
class TrainSettings:
    """Sharded SGNS training: rounds of stratified blocks (see `sgns_spark.strata`)."""

    dim: int = 100  # vector dimensions; 2..4096
    window: int = 5  # max context distance each side; shrunk uniformly per word; 1..100
    negative: int = 5  # noise samples per (center, context) pair; 1..100
    noise_pool: int = 128  # noise words drawn per minibatch, met by all its pairs at weight negative/pool; 1..100000
    epochs: int = 1  # passes over the corpus; 1..1000
    num_shards: int = 2  # Spark tasks that train in parallel; 1..100000
    rounds_per_epoch: int = 0  # model versions written per epoch; 0 = max(4, 2 x num_shards); 0..10000
    cycles_per_round: int = 1  # passes over the strata per round (shorter phases); 1..1000
    learning_rate: float = 0.025  # start of the linear decay; 1e-6..10
    min_learning_rate_ratio: float = 1e-4  # floor of the decay, times learning_rate; 0..1
    batch_pairs: int = 768  # (center, context) pairs per vectorized minibatch; 1..1_000_000, at most 12x noise_pool
    seed: int = 1  # every random draw derives from it; 0..2**63-1
    keep_rounds: int = 2  # model rounds kept on disk, newest first; 1..1000
    restart: bool = False  # true: discard saved rounds and train from round 0

    def rounds(self) -> int:
        """Rounds per epoch: the setting, or max(`MIN_ROUNDS_PER_EPOCH`, 2 x shards) when it is 0.

        Each round visits every stratum once, and an input row meets only one group of
        centers per stratum, so the rounds must grow with the shards. Measured at 16 shards
        after 1 epoch on the benchmark corpus: 15.7% analogy with 16 rounds, 16.5% with 32,
        against 17.5% at 2 shards with 4 rounds.
        """
        return self.rounds_per_epoch or max(MIN_ROUNDS_PER_EPOCH, ROUNDS_PER_SHARD * self.num_shards)


@dataclass(frozen=True)
class ExportSettings:
    """What the published vector set contains."""

    normalize: bool = False  # store unit-length vectors (recorded in the manifest)
    keep_versions: int = 3  # published versions kept, newest first; 1..1000


@dataclass(frozen=True)
class EvaluateSettings:
    """Benchmarks scored after training (empty path = skipped)."""

    analogy_path: str = ""  # questions-words.txt style file
    similarity_path: str = ""  # word1 <tab> word2 <tab> score; '#' lines are comments
    analogy_top_words: int = 30_000  # restrict analogies to the most frequent words; 1..1e9
    neighbour_words: tuple[str, ...] = ()  # words whose nearest neighbours are printed
    neighbours: int = 8  # neighbours printed per word; 1..1000


@dataclass(frozen=True)
class Config:
    """Every setting of every job."""

    spark: SparkSettings = field(default_factory=SparkSettings)
    corpus: CorpusSettings = field(default_factory=CorpusSettings)
    vocab: VocabSettings = field(default_factory=VocabSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)

    def section_dict(self, section: str) -> dict[str, Any]:
        """Return one section as a plain dict, for reports and manifests."""
        return dataclasses.asdict(getattr(self, section))

    def prefixed(self, section: str, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
        """One section as ``{"section.key": value}``, for the settings a stage records.

        Tuples become lists, as they read back from the JSON report, so that settings compare
        equal across runs.
        """
        return {f"{section}.{key}": list(value) if isinstance(value, tuple) else value
                for key, value in self.section_dict(section).items() if key not in leave_out}

    def as_dict(self) -> dict[str, Any]:
        """Return the whole configuration as a plain dict."""
        return dataclasses.asdict(self)


# (low, high) inclusive bounds of every numeric field, checked in `validate`.
RANGES: dict[str, tuple[float, float]] = {
    "spark.shuffle_partitions": (1, 100_000),
    "spark.arrow_batch_rows": (1_000, 10_000_000),
    "corpus.max_sentence_length": (10, 100_000),
    "corpus.max_invalid_utf8_fraction": (0.0, 1.0),
    "vocab.min_count": (1, 1_000_000_000),
    "vocab.max_vocab_size": (0, 1_000_000_000),
    "vocab.noise_exponent": (0.0, 1.0),
    "vocab.sample": (0.0, 0.1),
    "train.dim": (2, 4096),
    "train.window": (1, 100),
    "train.negative": (1, 100),
    "train.noise_pool": (1, 100_000),
    "train.epochs": (1, 1000),
    "train.num_shards": (1, 100_000),
    "train.rounds_per_epoch": (0, 10_000),
    "train.cycles_per_round": (1, 1000),
    "train.learning_rate": (1e-6, 10.0),
    "train.min_learning_rate_ratio": (0.0, 1.0),
    "train.batch_pairs": (1, 1_000_000),
    "train.seed": (0, 2**63 - 1),
    "train.keep_rounds": (1, 1000),
    "export.keep_versions": (1, 1000),
    "evaluate.analogy_top_words": (1, 1_000_000_000),
    "evaluate.neighbours": (1, 1000),
}
CHOICES: dict[str, tuple[str, ...]] = {
    "corpus.unicode_normalization": UNICODE_FORMS,
    "spark.log_level": ("ERROR", "WARN", "INFO", "DEBUG"),
}
MEMORY_PATTERN = re.compile(r"^\d+[kmgt]$", re.IGNORECASE)
MAX_PAIRS_PER_NOISE_WORD = 12  # batch_pairs / noise_pool above this wrecked quality (measured at 24)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a validated Config from an optional TOML file and ``section.key=value`` overrides.

    Parameters
    ----------
    path : str or Path, optional
        A TOML file with any subset of the sections and keys of `Config`.
    overrides : list of str
        Each ``section.key=value``; the value is read as a TOML value, or as a bare string.

    Returns
    -------
    Config

    Raises
    ------
    UserError
        On an unreadable file, an unknown section or key, a wrong type, or a value out of range.
    """
    tree: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            tree = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"config file {path} does not exist; pass an existing --config") from None
        except tomllib.TOMLDecodeError as error:
            raise UserError(f"config file {path} is not valid TOML: {error}") from None
    for override in overrides:
        name, value = _parse_override(override)
        section, key = name.split(".", 1)
        tree.setdefault(section, {})[key] = value
    config = _build(tree)
    validate(config)
    return config


def _parse_override(override: str) -> tuple[str, Any]:
    name, separator, text = override.partition("=")
    name = name.strip()
    if not separator or name.count(".") != 1:
        raise UserError(f"--set {override!r} must look like section.key=value, e.g. train.epochs=5")
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        value = text
    return name, value


def _build(tree: dict[str, Any]) -> Config:
    sections = {}
    for section_field in dataclasses.fields(Config):
        values = tree.get(section_field.name, {})
        if not isinstance(values, dict):
            raise UserError(f"config section [{section_field.name}] must be a table")
        section_type = section_field.default_factory
        known = {f.name: f for f in dataclasses.fields(section_type)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UserError(
                f"unknown config key {section_field.name}.{unknown[0]}; "
                f"known keys of [{section_field.name}]: {', '.join(known)}"
            )
        default = section_type()
        coerced = {
            key: _coerce(f"{section_field.name}.{key}", value, getattr(default, key))
            for key, value in values.items()
        }
        sections[section_field.name] = section_type(**coerced)
    unknown_sections = sorted(set(tree) - set(sections))
    if unknown_sections:
        raise UserError(
            f"unknown config section [{unknown_sections[0]}]; known: {', '.join(sections)}"
        )
    return Config(**sections)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Return `value` as the type of `default`, or raise naming the field."""
    expected = type(default)
    if expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif expected is str:
        if isinstance(value, str):
            return value
    elif expected is tuple:
        if isinstance(value, str):
            return tuple(word for word in value.split(",") if word)
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return tuple(value)
    raise UserError(f"{name} must be of type {expected.__name__}, got {value!r}")


def validate(config: Config) -> None:
    """Check every field of `config`; raise UserError naming the first bad field and its range."""
    for name, (low, high) in RANGES.items():
        section, key = name.split(".")
        value = getattr(getattr(config, section), key)
        if not low <= value <= high:
            raise UserError(f"{name} = {value} is out of range; allowed {low:g} to {high:g}")
    for name, allowed in CHOICES.items():
        section, key = name.split(".")
        value = getattr(getattr(config, section), key)
        if value not in allowed:
            raise UserError(f"{name} = {value!r} is not allowed; choose one of {', '.join(allowed)}")
    if not MEMORY_PATTERN.match(config.spark.driver_memory):
        raise UserError(
            f"spark.driver_memory = {config.spark.driver_memory!r} must look like 2g or 512m"
        )
    if not config.spark.app_name:
        raise UserError("spark.app_name must not be empty")
    train = config.train
    if train.batch_pairs > MAX_PAIRS_PER_NOISE_WORD * train.noise_pool:
        raise UserError(
            f"train.batch_pairs = {train.batch_pairs} is more than {MAX_PAIRS_PER_NOISE_WORD}x "
            f"train.noise_pool = {train.noise_pool}; each noise word's step grows with the ratio and "
            "training degrades; raise train.noise_pool or lower train.batch_pairs"
        )
    _validate_split_pattern(config.corpus.split_pattern)


def _validate_split_pattern(pattern: str) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pattern:
        raise UserError("corpus.split_pattern must not be empty; the default is [^\\p{L}\\p{N}_]+")
    try:
        pc.split_pattern_regex(pa.array(["probe text"]), pattern=pattern)
    except pa.ArrowInvalid as error:
        raise UserError(f"corpus.split_pattern {pattern!r} is not a valid RE2 regex: {error}") from None
