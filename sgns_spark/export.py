"""Publish the newest model round to the data lake as an immutable, numbered version.

Layout below the run root (format version 1)::

    export/version=NNNNNN/vectors.parquet/   word string, vector array<float>, count bigint
                                             (most frequent first, part files in order)
    export/version=NNNNNN/vectors.txt        word2vec text:   "<count> <dim>", then word v1 .. vd
    export/version=NNNNNN/vectors.bin        word2vec binary: same header, word, dim float32 LE
    export/version=NNNNNN/model.parquet/     word string, input_vector, output_vector array<float>:
                                             the rows as trained (never normalised), in id order,
                                             which a later run warm-starts from
    export/version=NNNNNN/manifest.json      written last inside the version
    export/_LATEST                           {"version": N, "path": ...}, moved after the version

A version is built under ``_staging`` and renamed into place only when complete, so readers
never see half a version, and the previous version stays until the new one is in place.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterator

import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sgns_spark import __version__
from sgns_spark.arrow import lists_to_matrix, spark_schema
from sgns_spark.config import Config
from sgns_spark.drift import drift_report
from sgns_spark.errors import UserError
from sgns_spark.layout import (
    BINARY_NAME,
    EXPORT_DIRECTORY,
    EXPORT_LATEST,
    MANIFEST_NAME,
    MODEL_ROWS_NAME,
    PARQUET_NAME,
    PUBLISHED_FORMAT,
    TEXT_NAME,
    VERSION_PREFIX,
    VOCAB_DIRECTORY,
    numbered,
    report_path,
    version_directory,
)
from sgns_spark.lineage import lineage_record
from sgns_spark.preflight import damaged_file
from sgns_spark.scoring import evaluation_vectors, score
from sgns_spark.stages import StageReport, previous_report
from sgns_spark.storage import Storage
from sgns_spark.train.model_store import read_latest, read_side
from sgns_spark.train.schedule import INPUT_SIDE, OUTPUT_SIDE
from sgns_spark.train.warm_start import SETTING as WARM_START_SETTING
from sgns_spark.vectors import word2vec_record_bodies

WHITESPACE_PATTERN = r"\s"
RECORD_SCHEMA = pa.schema([("record", pa.binary())])
EXPORT_PARTITION_ROWS = 1 << 13  # words per sorted partition, so per part file of each output


def published_vectors(storage: Storage, model_round: int, normalize: bool) -> DataFrame:
    """``id, word, vector, count`` of a model round: the input vectors, optionally unit length."""
    vocab = storage.read_parquet(VOCAB_DIRECTORY).select("id", "word", "count")
    model = read_side(storage, model_round, INPUT_SIDE)
    if normalize:
        norm = F.sqrt(F.aggregate("vector", F.lit(0.0), lambda total, x: total + x * x))
        model = model.select("id", F.transform("vector", lambda x: (x / norm).cast("float")).alias("vector"))
    return vocab.join(model, "id")


def model_rows(storage: Storage, model_round: int) -> DataFrame:
    """``word, input_vector, output_vector`` of a model round as trained, in id order."""
    vocab = storage.read_parquet(VOCAB_DIRECTORY).select("id", "word")
    sides = [read_side(storage, model_round, side).withColumnRenamed("vector", name)
             for side, name in ((INPUT_SIDE, "input_vector"), (OUTPUT_SIDE, "output_vector"))]
    return vocab.join(sides[0], "id").join(sides[1], "id").orderBy("id").select(
        "word", "input_vector", "output_vector")


def run_export_stage(spark: SparkSession, config: Config, storage: Storage) -> dict:
    """Score the newest model round and publish it with its scores; return the run report.

    The scores (``evaluate`` settings) are in the report's ``counts["evaluation"]`` and in
    the manifest. A re-run that finds the round already published returns the earlier
    report without scoring again.
    """
    latest = read_latest(storage)
    if latest is None or not storage.exists(report_path("train")):
        raise UserError(f"run root {storage.root} has no trained model; run the train stage first")
    train_report = storage.read_json(report_path("train"))
    settings = {"model_round": latest["round"], **config.prefixed("export"), **config.prefixed("evaluate")}
    previous = previous_report(storage, "export")
    if previous is not None and previous["settings"] == settings:
        print(f"[export] already published in {storage.root}; skipping", flush=True)
        return previous
    storage.clear_staging()
    report = StageReport("export", settings)
    # every step below reads the vectors, which a round holds as chunks: expand them to rows per word once
    vectors = published_vectors(storage, latest["round"], config.export.normalize).persist(
        StorageLevel.MEMORY_AND_DISK)
    refuse_whitespace_words(vectors)
    evaluated = evaluation_vectors(vectors, config.evaluate)  # always holds id 0, the most frequent word
    scores = score(evaluated, config.evaluate)
    dim = evaluated.vectors.shape[1]
    report.step("evaluate")
    vocab_size = vectors.count()
    partitions = -(-vocab_size // EXPORT_PARTITION_ROWS)  # ceiling division
    ordered = vectors.repartitionByRange(partitions, "id").sortWithinPartitions("id")
    staged = storage.staging_path("export")
    ordered.select("word", "vector", "count").write.parquet(storage.path(staged, PARQUET_NAME))
    report.step("parquet")
    write_word2vec_files(ordered, vocab_size, dim, storage, staged)
    report.step("word2vec")
    model_rows(storage, latest["round"]).write.parquet(storage.path(staged, MODEL_ROWS_NAME))
    report.step("model")
    drift = parent_drift(spark, vectors, train_report, dim)
    report.step("drift")
    vectors.unpersist()
    version = next_version(storage)
    vocab_report = storage.read_json(report_path("vocab"))
    manifest = {
        "format_version": PUBLISHED_FORMAT,
        "sgns_spark_version": __version__,
        "created_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "version": version,
        "model_round": latest["round"],
        "vocab_size": vocab_size,
        "dim": dim,
        "normalized": config.export.normalize,
        "files": {"parquet": PARQUET_NAME, "word2vec_text": TEXT_NAME, "word2vec_binary": BINARY_NAME,
                  "model": MODEL_ROWS_NAME},
        "schema": {"word": "string", "vector": "array<float>", "count": "bigint"},
        "hyperparameters": train_report["settings"],
        "corpus": {key: value for key, value in vocab_report["counts"].items() if key != "files"},
        "training": train_report["counts"],
        "evaluation": scores,
        "lineage": lineage_record(config, vocab_report, train_report),
        "drift": drift,
    }
    storage.write_json(f"{staged}/{MANIFEST_NAME}", manifest)
    storage.move(staged, version_directory(version))
    storage.write_json(EXPORT_LATEST, {"version": version, "path": storage.path(version_directory(version))})
    prune_versions(storage, config.export.keep_versions)
    report.counts = {"version": version, "path": storage.path(version_directory(version)),
                     "vocab_size": vocab_size, "dim": dim, "evaluation": scores, "drift": drift}
    document = report.document()
    storage.write_json(report_path("export"), document)
    return document


def parent_drift(spark: SparkSession, vectors: DataFrame, train_report: dict, dim: int) -> dict | None:
    """`sgns_spark.drift.drift_report` against the published vectors of a warm start's parent, else None.

    The model is trained by now, and the parent is only compared with: a parent deleted (by a
    retention job) or damaged since training gives ``{"unavailable": <why>}`` (a warning in the
    summary, `sgns_spark.summary.print_export_summary`), and the version is still published.
    """
    warm_start = train_report["counts"].get("warm_start")
    if warm_start is None:
        return None
    parent = Storage(spark, warm_start["parent"]["path"], WARM_START_SETTING)
    try:
        return drift_report(spark, vectors, parent.read_parquet(PARQUET_NAME), dim)
    except Exception as error:  # noqa: BLE001 - anything but a damaged parent file is raised again
        damage = damaged_file(error, [parent])
        if damage is None:
            raise
    return {"unavailable": f"the parent version's {damage.path} cannot be read ({damage.reason})"}


def refuse_whitespace_words(vectors: DataFrame) -> None:
    """Stop before writing anything if a word would corrupt the word2vec formats."""
    offending = vectors.where(F.col("word").rlike(WHITESPACE_PATTERN)).select("word").limit(1).collect()
    if offending:
        raise UserError(
            f"word {offending[0]['word']!r} contains whitespace, which the word2vec formats "
            "cannot hold; change corpus.split_pattern so that whitespace separates tokens"
        )


def write_word2vec_files(ordered: DataFrame, vocab_size: int, dim: int, storage: Storage, staged: str) -> None:
    """Write the word2vec text and binary files; the vectors never pass through the driver.

    For each format, executors turn every word into its record and Spark's text writer stores
    the records as part files in id order, ending each with the newline the format puts
    there. Spark's cast from binary to string keeps the bytes as they are, so binary records
    arrive intact. The driver's JVM then copies the header and the part files into the one
    file through a fixed buffer (`Storage.concatenate`).
    """
    header = f"{vocab_size} {dim}\n".encode()
    for name, binary in ((TEXT_NAME, False), (BINARY_NAME, True)):
        parts = f"{staged}/{name}.parts"
        records = ordered.select("word", "vector").mapInArrow(
            functools.partial(format_records, binary=binary, dim=dim), spark_schema(RECORD_SCHEMA)
        )
        records.select(F.col("record").cast("string")).write.text(storage.path(parts))
        storage.concatenate(parts, f"{staged}/{name}", header)
        storage.delete(parts)


def format_records(batches: Iterator[pa.RecordBatch], binary: bool, dim: int) -> Iterator[pa.RecordBatch]:
    """Executor side: each word's word2vec record, without its final newline, in order."""
    for batch in batches:
        words = batch.column(0).to_pylist()
        vectors = lists_to_matrix(batch.column(1), dim)  # (rows, dim)
        bodies = word2vec_record_bodies(words, vectors, binary)
        yield pa.RecordBatch.from_arrays([pa.array(bodies, pa.binary())], schema=RECORD_SCHEMA)


def next_version(storage: Storage) -> int:
    """One more than the newest published version (1 for the first)."""
    return max(numbered(storage.list_names(EXPORT_DIRECTORY), VERSION_PREFIX), default=0) + 1


def prune_versions(storage: Storage, keep: int) -> None:
    """Delete all but the newest `keep` published versions."""
    for version in numbered(storage.list_names(EXPORT_DIRECTORY), VERSION_PREFIX)[:-keep]:
        storage.delete(version_directory(version))

