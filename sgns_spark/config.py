"""The one validated, frozen configuration of every job, each setting declared once.

A setting is one dataclass field declared with `setting`: its default, its one line of
documentation, its unit and its allowed range or choices. Validation, the error messages,
``conf/default.toml`` and the README's settings table all derive from that declaration
(``python -m sgns_spark.config toml|markdown`` prints the last two, and a test fails when
the files drift from it). A TOML file and ``--set section.key=value`` overrides are applied
on top of the defaults; values that depend on other settings are resolved once, at load.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgns_spark.errors import UserError

UNICODE_FORMS = ("NFC", "NFKC", "NFD", "NFKD", "none")
WORD_SEPARATORS = r"[^\p{L}\p{N}_]+"  # the default split pattern: a token is a run of letters, digits and _
LOG_LEVELS = ("ERROR", "WARN", "INFO", "DEBUG")
MEMORY_PATTERN = re.compile(r"^(\d+)([kmgt])$", re.IGNORECASE)
MEMORY_UNITS = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}  # MiB per unit letter
# the master URLs Spark accepts (any other ends its JVM with a trace before a job can say why)
MASTER_PATTERN = re.compile(r"local(\[([1-9]\d*|\*)(\s*,\s*[1-9]\d*)?\])?"
                            r"|local-cluster\[\s*[1-9]\d*\s*,\s*[1-9]\d*\s*,\s*[1-9]\d*\s*\]|yarn|(spark|k8s)://\S+")
MASTER_FORMS = "local[N], local[N,F], local-cluster[N,C,MiB], spark://host:port, yarn, k8s://host:port"
MAX_PAIRS_PER_NOISE_WORD = 12  # batch_pairs / noise_pool above this wrecked quality (measured at 24)
AUTOMATIC = 0  # the value of a setting that is derived from others at load
STAGES_PER_SHARD, SPARE_STAGES = 2, 10  # the stage budget per epoch: 2 x num_shards + 10
LARGEST_SEED = 2**63 - 1
# the automatic end of the learning rate's decay is this / epochs: a 1-epoch run ending at half its
# start beat one ending near 0 on every measure, while 5 epochs need the end lower (README, "Learning rate")
FINAL_RATE_EPOCHS = 0.5


@dataclass(frozen=True)
class Setting:
    """What a field declares besides its default: documentation, unit, and allowed values.

    ``low`` and ``high`` bound numbers (inclusive) and memory sizes (``"512m"``); ``choices``
    lists the allowed strings; ``automatic`` explains what the value `AUTOMATIC` resolves to.
    """

    doc: str
    unit: str = ""
    low: float | str | None = None
    high: float | str | None = None
    choices: tuple[str, ...] = ()
    automatic: str = ""
    memory: bool = False

    def allowed(self) -> str:
        """The allowed values as the documentation states them."""
        if self.choices:
            return ", ".join(self.choices)
        if self.low is None:
            return ""
        text = f"{_number_text(self.low)} to {_number_text(self.high)}"
        return f"{text}; {AUTOMATIC} = {self.automatic}" if self.automatic else text

    def described(self) -> str:
        """One line: the documentation, then the allowed values and the unit."""
        allowed = " ".join(part for part in (self.allowed(), self.unit) if part)
        return f"{self.doc}; {allowed}" if allowed else self.doc


def setting(default: Any, doc: str, **declaration: Any) -> Any:
    """A dataclass field with its `Setting` declaration (keyword arguments of `Setting`)."""
    return field(default=default, metadata={"setting": Setting(doc, **declaration)})


@dataclass(frozen=True)
class SparkSettings:
    """How the jobs obtain their SparkSession."""

    master: str = setting("", 'Spark master; "" = what spark-submit set, else local[*] (e.g. "local[2]", "yarn"); '
                          'a local master without a failure count retries failed tasks as a cluster does')
    app_name: str = setting("sgns-spark", "prefix of every job's Spark application name")
    driver_memory: str = setting("", 'JVM heap when a job starts Spark itself (plain python); "" = a quarter of '
                                 "this machine's memory (or its container's limit), at least 2g and below 32g",
                                 memory=True, low="512m", high="64g")
    shuffle_partitions: int = setting(8, "spark.sql.shuffle.partitions outside training", low=1, high=100_000)
    arrow_batch_rows: int = setting(100_000, "rows per Arrow batch handed to Python", unit="rows",
                                    low=1000, high=10_000_000)
    log_level: str = setting("WARN", "Spark's log level; DEBUG also prints traces of user errors",
                             choices=LOG_LEVELS)
    progress_seconds: int = setting(60, "while a Spark job runs, a line of its tasks done this often; 0 = none",
                                    unit="s", low=0, high=86_400)


@dataclass(frozen=True)
class CorpusSettings:
    """How raw text becomes sentences of tokens."""

    unicode_normalization: str = setting("NFKC", "Unicode normalisation before splitting", choices=UNICODE_FORMS)
    lowercase: bool = setting(True, "lowercase every token")
    split_pattern: str = setting(WORD_SEPARATORS, "RE2 regex matching the text *between* tokens")
    max_sentence_length: int = setting(1000, "longer lines are cut into sentences of at most this many",
                                       unit="tokens", low=10, high=100_000)
    max_invalid_utf8_fraction: float = setting(
        0.01, "share of bytes tolerated that are not UTF-8 text: undecodable (replaced) or NUL", low=0.0, high=1.0)
    skip_corrupt_files: bool = setting(False, "skip unreadable input files (counted and listed in the vocab "
                                              "report) instead of stopping")


@dataclass(frozen=True)
class VocabSettings:
    """Which words are kept and how they are sampled."""

    min_count: int = setting(5, "occurrences a word needs to be kept", low=1, high=1_000_000_000)
    max_vocab_size: int = setting(0, "keep at most this many most frequent words; 0 = no cap",
                                  unit="words", low=0, high=1_000_000_000)
    noise_exponent: float = setting(0.75, "alpha of the noise distribution count^alpha", low=0.0, high=1.0)
    sample: float = setting(1e-3, "subsampling threshold of frequent words; 0 = off (1e-5 to 1e-3 usual)",
                            low=0.0, high=0.1)


@dataclass(frozen=True)
class TrainSettings:
    """Sharded SGNS training: rounds of stratified blocks (see `sgns_spark.train.schedule`)."""

    dim: int = setting(100, "vector dimensions (50 to 300 usual)", low=2, high=4096)
    window: int = setting(5, "max context distance each side, shrunk uniformly per word", unit="tokens",
                          low=1, high=100)
    negative: int = setting(5, "noise samples per (center, context) pair (5 to 20 usual)", low=1, high=100)
    noise_pool: int = setting(128, "noise words drawn per minibatch; each pair meets all of them at weight "
                                   "negative/noise_pool", unit="words", low=1, high=100_000)
    epochs: int = setting(
        1, "passes over the corpus; 1 as Spark MLlib, where gensim and word2vec.c run 5 (the benchmark scored 19.0% "
        "analogy after 1 and 39.8% after 5, means of 3 seeds)", low=1, high=1000)
    num_shards: int = setting(2, "Spark tasks that train in parallel (word groups); about the executor cores",
                              low=1, high=100_000)
    rounds_per_epoch: int = setting(AUTOMATIC, "rounds per epoch; each syncs every row num_shards times",
                                    low=0, high=10_000,
                                    automatic="the most with at most 2 x num_shards + 10 Spark stages per epoch")
    warmup_fraction: float = setting(0.05, "share of the first epoch trained first in one task, so that the word "
                                           "groups start from one coordinate system; 0 = none", low=0.0, high=0.5)
    commit_words: int = setting(20_000_000, "a model version (the resume point) is written after the round that "
                                            "passes this many words since the last one, and at the end",
                                unit="words", low=1, high=10**12)
    warm_start_from: str = setting("", "a published version, an export root whose _LATEST is followed, or its "
                                       "run root (any Hadoop URI): words it shares with this vocabulary start from "
                                       'its rows; "" = a cold start')
    warm_start_learning_rate: float = setting(0.01, "start of the linear decay of the rows a warm start carries "
                                                    "over (new words start at learning_rate): lower keeps them "
                                                    "nearer their parent rows; 0 = frozen", low=0.0, high=10.0)
    learning_rate: float = setting(0.025, "start of the linear decay", low=1e-6, high=10.0)
    min_learning_rate_ratio: float = setting(float(AUTOMATIC), "end of the linear decay, at the last epoch's end, as "
                                                        "a fraction of the start (word2vec.c: 1e-4)",
                                             low=0.0, high=1.0, automatic=f"{FINAL_RATE_EPOCHS} / epochs")
    batch_pairs: int = setting(768, "(center, context) pairs per vectorized minibatch; at most "
                                    f"{MAX_PAIRS_PER_NOISE_WORD} x noise_pool", unit="pairs", low=1, high=1_000_000)
    seed: int = setting(1, "every random draw derives from it", low=0, high=LARGEST_SEED)
    keep_rounds: int = setting(2, "model rounds kept on disk, newest first", low=1, high=1000)
    restart: bool = setting(False, "discard saved rounds and train from round 0")

    @property
    def serial_start_share(self) -> float:
        """The share of the first epoch trained by the serial start (none when training is serial anyway)."""
        return self.warmup_fraction if self.num_shards > 1 else 0.0


@dataclass(frozen=True)
class ExportSettings:
    """What the published vector set contains."""

    normalize: bool = setting(False, "publish unit-length vectors (recorded in the manifest)")
    keep_versions: int = setting(3, "published versions kept, newest first", low=1, high=1000)


@dataclass(frozen=True)
class EvaluateSettings:
    """Benchmarks scored after training (empty path = skipped)."""

    analogy_path: str = setting("", 'questions-words.txt style file (local); "" = skip')
    similarity_path: str = setting("", 'two words, then a score: tabs, commas or spaces between (local); "" = skip')
    analogy_top_words: int = setting(30_000, "analogies use only the most frequent words", unit="words",
                                     low=1, high=1_000_000_000)
    neighbour_words: tuple[str, ...] = setting((), 'words whose nearest neighbours are printed, e.g. ["paris"]')
    neighbours: int = setting(8, "neighbours printed per word", low=1, high=1000)


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


def declared_settings() -> list[tuple[str, dataclasses.Field, Setting]]:
    """Every setting as ``(section, field, declaration)``, in declaration order."""
    return [(section.name, item, item.metadata["setting"])
            for section in dataclasses.fields(Config)
            for item in dataclasses.fields(section.default_factory)]


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a validated, resolved Config from an optional TOML file and ``section.key=value`` overrides.

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
        except OSError as error:  # a directory, no permission
            raise UserError(f"config file {path} cannot be read ({error.strerror or error}); pass a "
                            "readable --config") from None
        except UnicodeDecodeError:
            raise UserError(f"config file {path} is not UTF-8 text; save it as UTF-8 TOML") from None
        except tomllib.TOMLDecodeError as error:
            raise UserError(f"config file {path} is not valid TOML: {error}") from None
    for override in overrides:
        name, value = _parse_override(override)
        section, key = name.split(".", 1)
        tree.setdefault(section, {})[key] = value
    config = _build(tree)
    validate(config)
    return resolve(config)


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
        known = {item.name: item for item in dataclasses.fields(section_type)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UserError(
                f"unknown config key {section_field.name}.{unknown[0]}; "
                f"known keys of [{section_field.name}]: {', '.join(known)}"
            )
        coerced = {key: _coerce(f"{section_field.name}.{key}", value, known[key].default)
                   for key, value in values.items()}
        sections[section_field.name] = section_type(**coerced)
    unknown_sections = sorted(set(tree) - set(sections))
    if unknown_sections:
        raise UserError(f"unknown config section [{unknown_sections[0]}]; known: {', '.join(sections)}")
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


def memory_mib(text: str) -> float | None:
    """MiB of a JVM memory size such as ``"2g"`` or ``"512m"``; None if it is not one."""
    match = MEMORY_PATTERN.match(text)
    return int(match.group(1)) * MEMORY_UNITS[match.group(2).lower()] if match else None


def validate(config: Config) -> None:
    """Check every field against its declaration, then the rules that tie fields together.

    Raises
    ------
    UserError
        Naming the first bad field and what it allows.
    """
    for section, item, declaration in declared_settings():
        name = f"{section}.{item.name}"
        value = getattr(getattr(config, section), item.name)
        if declaration.choices and value not in declaration.choices:
            raise UserError(f"{name} = {value!r} is not allowed; choose one of {declaration.allowed()}")
        if declaration.memory:
            size = memory_mib(value)
            if value and (size is None or not memory_mib(declaration.low) <= size <= memory_mib(declaration.high)):
                raise UserError(f"{name} = {value!r} must be a JVM memory size from {declaration.allowed()}, "
                                "e.g. 2g or 512m")
        elif declaration.low is not None and not declaration.low <= value <= declaration.high:
            raise UserError(f"{name} = {value} is out of range; allowed {declaration.allowed()}")
    if not config.spark.app_name:
        raise UserError("spark.app_name must not be empty")
    if config.spark.master and not MASTER_PATTERN.fullmatch(config.spark.master):
        raise UserError(f"spark.master = {config.spark.master!r} is not a Spark master URL; use one of "
                        f"{MASTER_FORMS}, or \"\" for spark-submit's (else local[*])")
    train = config.train
    if train.batch_pairs > MAX_PAIRS_PER_NOISE_WORD * train.noise_pool:
        raise UserError(
            f"train.batch_pairs = {train.batch_pairs} is more than {MAX_PAIRS_PER_NOISE_WORD}x "
            f"train.noise_pool = {train.noise_pool}; each noise word's step grows with the ratio and "
            "training degrades; raise train.noise_pool or lower train.batch_pairs"
        )
    _validate_split_pattern(config.corpus.split_pattern)


def resolve(config: Config) -> Config:
    """Replace every `AUTOMATIC` value by the value it stands for (documented in its declaration)."""
    train = config.train
    return dataclasses.replace(config, train=dataclasses.replace(
        train, rounds_per_epoch=train.rounds_per_epoch or automatic_rounds(train),
        min_learning_rate_ratio=train.min_learning_rate_ratio or FINAL_RATE_EPOCHS / train.epochs))


def automatic_rounds(train: TrainSettings) -> int:
    """The most rounds per epoch within the stage budget. A round costs one Spark stage for its
    pairs and one per group; each model load costs one, and the serial start two."""
    warmup_stages = 2 if train.serial_start_share > 0 else 0
    budget = STAGES_PER_SHARD * train.num_shards + SPARE_STAGES - 1 - warmup_stages
    return max(1, budget // (train.num_shards + 1))


def _validate_split_pattern(pattern: str) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pattern:
        raise UserError(f"corpus.split_pattern must not be empty; the default is {WORD_SEPARATORS}")
    try:
        pc.split_pattern_regex(pa.array(["probe text"]), pattern=pattern)
    except pa.ArrowInvalid as error:
        raise UserError(f"corpus.split_pattern {pattern!r} is not a valid RE2 regex: {error}") from None


def _number_text(value: float | str) -> str:
    """A bound as the documentation writes it: 1e5 for 100000, 2^63-1 for the largest seed."""
    if isinstance(value, str):
        return value
    if value == LARGEST_SEED:
        return "2^63-1"
    if isinstance(value, int) and value >= 10_000 and value == 10 ** (len(str(value)) - 1):
        return f"1e{len(str(value)) - 1}"
    return f"{value:g}".replace("e-0", "e-")


def toml_value(value: Any) -> str:
    """A default as a TOML literal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'" if "\\" in value or '"' in value else f'"{value}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return repr(value)


TOML_HEADER = """\
# sgns-spark settings and their built-in defaults. Every key is optional.
# Generated from sgns_spark/config.py by `python -m sgns_spark.config toml`; edit the declarations there.
# Override any key with another file (--config) or on the command line:
#   --set train.epochs=5 --set spark.master=local[2]
# An unknown key or a value out of range stops the job with one line naming it.
"""


def default_toml() -> str:
    """``conf/default.toml``: every setting with its default, unit and allowed values."""
    entries = [(section, f"{item.name} = {toml_value(item.default)}", declaration.described())
               for section, item, declaration in declared_settings()]
    width = max(len(assignment) for _, assignment, _ in entries) + 2
    lines = [TOML_HEADER]
    current = None
    for section, assignment, notes in entries:
        if section != current:
            lines.append(f"\n[{section}]\n")
            current = section
        lines.append(f"{assignment:<{width}}# {notes}\n")
    return "".join(lines)


def settings_markdown() -> str:
    """The README's settings table."""
    rows = ["| setting | default | allowed | meaning |", "|---|---|---|---|"]
    for section, item, declaration in declared_settings():
        allowed = " ".join(part for part in (declaration.allowed(), declaration.unit) if part)
        cells = (f"`{section}.{item.name}`", f"`{toml_value(item.default)}`", allowed, declaration.doc)
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    outputs = {"toml": default_toml, "markdown": settings_markdown}
    if len(sys.argv) != 2 or sys.argv[1] not in outputs:
        sys.exit("usage: python -m sgns_spark.config toml|markdown")
    print(outputs[sys.argv[1]](), end="")
