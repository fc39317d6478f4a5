"""The pipeline's stages as the driver runs them: skip what is done, stage, publish, report.

Every stage writes its outputs below ``<root>/_staging`` and renames them into place only
when they are complete; its run report ``<root>/reports/<stage>.json`` is written last and
marks the stage done. A re-run with the same settings skips a done stage; a re-run with
different settings, or on input files that changed since, is refused rather than silently
mixing two runs.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sgns_spark.arrow import collect_by_id
from sgns_spark.config import Config
from sgns_spark.errors import UserError
from sgns_spark.layout import CORPUS_DIRECTORY, VOCAB_DIRECTORY, report_path
from sgns_spark.lineage import corpus_fingerprint, fingerprint_text, input_files
from sgns_spark.memory import peak_rss_mib
from sgns_spark.preflight import CorpusInput, empty_corpus, listed_spelling, unreadable_file
from sgns_spark.storage import FileEntry, Storage, file_key, same_file
from sgns_spark.tokenize import (
    LINE_SEPARATOR,
    MAX_RECORD_BYTES,
    SPACE_SEPARATOR,
    count_words,
    read_records,
    read_sentences,
    record_bytes_per_file,
)
from sgns_spark.vocab import build_vocab, encode_corpus


@dataclass
class StageReport:
    """What one stage did: its counts, step timings and the settings it ran with."""

    stage: str
    settings: dict[str, Any]
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    step_started: float = field(default_factory=time.perf_counter)

    def step(self, name: str) -> None:
        """Record the seconds since the previous step under `name`."""
        now = time.perf_counter()
        self.seconds[name] = round(now - self.step_started, 3)
        self.step_started = now

    def document(self) -> dict[str, Any]:
        """Return the JSON document written to ``reports/<stage>.json``."""
        return {
            "stage": self.stage,
            "settings": self.settings,
            "counts": self.counts,
            "seconds": {**self.seconds, "total": round(time.perf_counter() - self.started, 3)},
            "driver_peak_rss_mib": round(peak_rss_mib(), 1),
        }


def previous_report(storage: Storage, stage: str) -> dict | None:
    """The run report of the stage's last completed run, None if it never completed."""
    return storage.read_json(report_path(stage)) if storage.exists(report_path(stage)) else None


def completed_report(storage: Storage, stage: str, settings: dict[str, Any],
                     check: Callable[[dict[str, Any]], None] | None = None) -> dict | None:
    """Return the report of a done stage with these settings (and say it is skipped), None if not done.

    Raises
    ------
    UserError
        When the stage is done under other settings, or `check` refuses its report.
    """
    report = previous_report(storage, stage)
    if report is None:
        return None
    if report["settings"] != settings:
        changed = sorted(key for key in settings if report["settings"].get(key) != settings[key])
        raise UserError(
            f"run root {storage.root} holds a {stage} stage built with other settings "
            f"({', '.join(changed)}); use a new output root (OUT=, --root) or delete it"
        )
    if check is not None:
        check(report)
    print(f"[{stage}] already done in {storage.root}; skipping", flush=True)
    return report


def publish(storage: Storage, staged: str, destination: str) -> None:
    """Replace `destination` by the complete directory `staged`."""
    storage.delete(destination)
    storage.move(staged, destination)


def run_vocab_stage(spark: SparkSession, config: Config, corpus: CorpusInput, storage: Storage) -> dict:
    """Tokenize and count the corpus; write the vocabulary and the encoded corpus.

    Returns
    -------
    dict
        The stage's run report.
    """
    settings = {"input": corpus.path, **config.prefixed("corpus"), **config.prefixed("vocab")}
    done = completed_report(storage, "vocab", settings, functools.partial(check_same_files, corpus, storage=storage))
    if done is not None:
        return done
    storage.clear_staging()
    report = StageReport("vocab", settings)
    sentences, totals, files, by_line, skipped = read_corpus(spark, corpus, config)
    try:
        report.step("tokenize")
        check_corpus_text(corpus.path, totals, config)
        vocab = build_vocab(count_words(sentences), config.vocab).persist()
        vocab_totals = vocab.agg(F.count("*").alias("words"), F.sum("count").alias("tokens")).first()
        if not vocab_totals["words"]:
            raise UserError(
                f"every word of {corpus.path} occurs fewer than vocab.min_count = "
                f"{config.vocab.min_count} times; lower vocab.min_count"
            )
        report.step("count")
        staged_vocab = storage.staging_path(VOCAB_DIRECTORY)
        staged_corpus = storage.staging_path(CORPUS_DIRECTORY)
        vocab.orderBy("id").coalesce(1).write.parquet(storage.path(staged_vocab))
        words = collect_by_id(vocab, "word").column("word").to_pylist()
        encoded = encode_corpus(sentences, words, config.spark.shuffle_partitions)
        encoded.write.parquet(storage.path(staged_corpus))
        check_pairs(storage, staged_corpus, corpus.path, config)
        report.step("encode")
        publish(storage, staged_vocab, VOCAB_DIRECTORY)
        publish(storage, staged_corpus, CORPUS_DIRECTORY)
    finally:
        sentences.unpersist()
    report.counts = {
        "input": corpus.path,
        "input_files": len(files),
        "input_files_read_by_line": len(by_line),
        "files": input_files(files),
        "fingerprint": fingerprint_text(totals["fingerprint"]),
        "input_bytes": totals["input_bytes"],
        "invalid_utf8_bytes": totals["invalid_bytes"],
        "corpus_tokens": totals["tokens"],
        "vocab_size": vocab_totals["words"],
        "retained_tokens": vocab_totals["tokens"],
        "skipped_corrupt_files": len(skipped),
        "corrupt_files": skipped,
    }
    document = report.document()
    storage.write_json(report_path("vocab"), document)
    return document


def check_same_files(corpus: CorpusInput, report: dict[str, Any], storage: Storage) -> None:
    """Refuse a done vocab stage whose input's files changed since it read them: a file added,
    removed, or of another size or modification time (to the second) than it recorded. Skipped,
    the rerun would train and publish the old files' vectors as new ones.

    Raises
    ------
    UserError
        When the files differ, naming how many of each kind and the first of each.
    """
    counts = report["counts"]
    skipped = {file_key(path) for path in counts["corrupt_files"]}
    recorded = file_states(counts["files"])
    listed = file_states(input_files([file for file in corpus.files if file_key(file.path) not in skipped]))
    differences = {
        "added": sorted(listed.keys() - recorded.keys()),
        "removed": sorted(recorded.keys() - listed.keys()),
        "changed": sorted(path for path in listed.keys() & recorded.keys() if listed[path] != recorded[path]),
    }
    found = [f"{len(paths)} {'file' if len(paths) == 1 else 'files'} {kind} ({paths[0]}{', ...' * (len(paths) > 1)})"
             for kind, paths in differences.items() if paths]
    if found:
        raise UserError(f"input corpus {corpus.path} changed since run root {storage.root} read it: "
                        f"{'; '.join(found)}; the root's vocabulary, model and exports are of the files it read "
                        "then: use a new output root (OUT=, --root) for new input, as a scheduled run does with its "
                        "date, or delete it")


def file_states(files: list[dict[str, Any]]) -> dict[str, tuple[int, str]]:
    """``{file: (bytes, modification time)}`` of files as `sgns_spark.lineage.input_files` lists them."""
    return {file_key(entry["path"]): (entry["bytes"], entry["modified_utc"]) for entry in files}


def read_corpus(spark: SparkSession, corpus: CorpusInput, config: Config):
    """Tokenize the corpus (persisted) and sum its statistics.

    The files are first read through in the JVM alone (`line_files`), which also finds the
    files to read a line per record: a file Spark cannot read (a truncated gzip, say) then
    fails a job with no Python worker to interrupt. It stops the stage with its name, or, with
    ``corpus.skip_corrupt_files``, is left out and the rest read again.

    Returns
    -------
    sentences : DataFrame
        `sgns_spark.tokenize.read_sentences`, persisted; the caller unpersists it.
    totals : Row
        ``input_bytes``, ``invalid_bytes``, ``tokens`` and the tokens' ``fingerprint``
        (`sgns_spark.lineage.corpus_fingerprint`).
    files : list of FileEntry
        The files read.
    by_line : list of str
        The paths of those read a line per record.
    skipped : list of str
        The files left out.
    """
    files, skipped = list(corpus.files), []
    while True:
        if not files:
            raise UserError(f"no file of input corpus {corpus.path} can be read ({len(skipped)} skipped as "
                            "corrupt); point CORPUS= (--input) at readable text")
        try:
            by_line = line_files(spark, files)
            break
        except Py4JJavaError as error:
            unreadable = unreadable_file(error)
            if unreadable is None or not config.corpus.skip_corrupt_files:
                raise
            readable = [entry for entry in files if not same_file(entry.path, unreadable.path)]
            if len(readable) == len(files):  # a file the listing does not name: skipping would not end
                raise
            print(f"[vocab] skipping {unreadable.path}: it cannot be read ({unreadable.reason})", flush=True)
            skipped.append(unreadable.path)
            files = readable
    read_by_line = set(by_line)
    by_space = [entry.path for entry in files if entry.path not in read_by_line]
    # kept on Spark's local disk, not in the JVM's heap: held there, Spark's cache of the tokens outgrew the
    # heap that the stage's own work needs (in local mode the driver's: the 100 MB benchmark corpus ran a
    # 512m driver out of heap, a 1 GB corpus a 2g one, and at 4g Spark refused the count's aggregation its
    # memory); on disk both run, in the same time within the machine's noise (measured)
    sentences = read_sentences(spark, by_space, config.corpus, by_line).persist(StorageLevel.DISK_ONLY)
    totals = sentences.agg(
        F.sum("input_bytes").alias("input_bytes"),
        F.sum("invalid_bytes").alias("invalid_bytes"),
        F.sum(F.size("tokens")).alias("tokens"),
        corpus_fingerprint("sentence_key", "tokens").alias("fingerprint"),
    ).first()
    return sentences, totals, files, by_line, skipped


def line_files(spark: SparkSession, files: list[FileEntry]) -> list[str]:
    """Read every file through in the JVM; return the paths of those whose lines all fit in a
    record (`sgns_spark.tokenize.MAX_LINE_BYTES`), and refuse a plain file that holds a run of
    text without a space longer than `MAX_RECORD_BYTES`.

    The reader skips a line that does not fit, so a plain file's lines fit when their bytes add
    up to its size. A compressed file's size says nothing of its text, so the files left are read
    again a space-separated record at a time: a compressed file's lines fit when they add up to
    as many bytes as its records (within the one separator that may end either). The second pass
    finds a plain file's overlong runs as the first found its long lines.
    """
    line_bytes = bytes_per_file(spark, files, LINE_SEPARATOR)
    fitting = {entry.path for entry in files if entry.codec is None
               and line_bytes.get(file_key(entry.path), 0) >= entry.size}
    rest = [entry for entry in files if entry.path not in fitting]
    space_bytes = bytes_per_file(spark, rest, SPACE_SEPARATOR) if rest else {}
    for entry in rest:
        key = file_key(entry.path)
        if entry.codec is not None:
            if key in line_bytes and line_bytes[key] + 1 >= space_bytes.get(key, 0):
                fitting.add(entry.path)
        elif entry.size - space_bytes.get(key, 0) >= MAX_RECORD_BYTES:
            raise UserError(
                f"input file {entry.path} holds a run of text of more than {MAX_RECORD_BYTES >> 20} MiB "
                "without a space, longer than Spark can hold as one record; separate its words by spaces"
            )
    return [entry.path for entry in files if entry.path in fitting]


def bytes_per_file(spark: SparkSession, files: list[FileEntry], separator: str) -> dict[str, int]:
    """`record_bytes_per_file` of the files read with `separator`, by the `file_key` of their
    listed paths (`listed_spelling`; a file without records is missing)."""
    found = record_bytes_per_file(read_records(spark, [entry.path for entry in files], separator))
    return {file_key(listed_spelling(path)): size for path, size in found.items()}


def check_pairs(storage: Storage, encoded: str, input_path: str, config: Config) -> None:
    """Refuse a corpus none of whose sentences holds two words of the vocabulary: it has no (center,
    context) pair, and training would publish its random initial rows. The scan of the staged
    `encoded` corpus stops at the first sentence with two; a refusal clears the staging first."""
    if storage.read_parquet(encoded).where(F.size("ids") >= 2).limit(1).count():
        return
    storage.clear_staging()
    raise UserError(
        f"no sentence of input corpus {input_path} holds two words of the vocabulary, so there is no (center, "
        "context) pair to train on (one word per line?); put a sentence's words on one line, or lower "
        f"vocab.min_count (now {config.vocab.min_count})"
    )


def check_corpus_text(input_path: str, totals, config: Config) -> None:
    """Refuse an empty corpus, one that is not text, or one with no tokens."""
    input_bytes = totals["input_bytes"] or 0
    if input_bytes == 0:
        raise empty_corpus(input_path)
    invalid_fraction = (totals["invalid_bytes"] or 0) / input_bytes
    if invalid_fraction > config.corpus.max_invalid_utf8_fraction:
        raise UserError(
            f"input corpus {input_path} is not UTF-8 text: {invalid_fraction:.1%} of its bytes are undecodable "
            "or NUL (UTF-16 text is about half NUL bytes); convert it to UTF-8, or raise "
            "corpus.max_invalid_utf8_fraction"
        )
    if not totals["tokens"]:
        raise UserError(
            f"input corpus {input_path} has no tokens under corpus.split_pattern = "
            f"{config.corpus.split_pattern!r}; change the pattern"
        )
