"""Model versions on disk, and the rows training passes between tasks.

A round is stored as Parquet rows ``id int, vector array<float>`` partitioned by ``side``
(input, output): the two sides of a word belong to different tasks, so each is written where
it is and no join is needed. ``model/_LATEST`` (JSON ``{"round": N, ...}``) moves only after
the round is complete. Nothing is written for round 0: the initialisation, w_in uniform in
(-0.5/dim, 0.5/dim) and w_out zeros (word2vec.c), is computed again from the seed, block by
block, identical for any partitioning.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark import RDD, StorageLevel
from pyspark.broadcast import Broadcast
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, IntegerType, StructField, StructType

from sgns_spark.arrow import lists_to_matrix, matrix_to_lists, spark_schema
from sgns_spark.layout import (
    MODEL_DIRECTORY,
    MODEL_LATEST,
    ROUND_PREFIX,
    SIDE_COLUMN,
    SIDE_NAMES,
    numbered,
    round_directory,
)
from sgns_spark.storage import Storage
from sgns_spark.train.schedule import INPUT_SIDE, OUTPUT_SIDE
from sgns_spark.train.task import Rows, keyed_chunks

INIT_BLOCK_ROWS = 4096  # ids initialised together from one seeded generator
INIT_STREAM = 0x5EED  # separates init draws from training draws of the same seed
ROW_SCHEMA = pa.schema([("id", pa.int32()), ("vector", pa.list_(pa.float32())), (SIDE_COLUMN, pa.string())])
CHUNK_SCHEMA = pa.schema([("task", pa.int32()), ("side", pa.int32()), ("group", pa.int32()),
                          ("ids", pa.binary()), ("vectors", pa.binary())])
# float vectors never repeat, so a dictionary only costs the writer time before it falls back to
# plain encoding: a round's write took 1.05-1.13 s without one, 1.34-1.63 s with (68k words, dim 100)
NO_DICTIONARY = {"parquet.enable.dictionary": "false"}
CHUNK_TYPE = StructType([StructField("side", IntegerType()), StructField("ids", BinaryType()),
                         StructField("vectors", BinaryType())])


def task_partition(task: int) -> int:
    """Spark's partition of a task's records: the task number itself (one function object, so
    that every RDD keyed by task shares one partitioner and their unions stay narrow)."""
    return task


def shuffle_rows(records: RDD, groups: int) -> RDD:
    """``(task, Rows)`` records moved to their tasks' partitions (every row shuffle is made here,
    so Spark names its stages after this module; see `sgns_spark.spark_metrics`)."""
    return records.partitionBy(groups, task_partition)


def read_latest(storage: Storage) -> dict | None:
    """The ``_LATEST`` pointer, or None before the first round is committed."""
    return storage.read_json(MODEL_LATEST) if storage.exists(MODEL_LATEST) else None


def read_round(spark: SparkSession, storage: Storage, model_round: int) -> DataFrame:
    """A committed round's rows, ``id, vector, side``. The schema is given, so no Spark job
    runs to infer it."""
    return spark.read.schema(spark_schema(ROW_SCHEMA)).parquet(storage.path(round_directory(model_round)))


def read_side(spark: SparkSession, storage: Storage, model_round: int, side: int) -> DataFrame:
    """``id, vector`` of one side of a committed round."""
    rows = read_round(spark, storage, model_round)
    return rows.where(F.col(SIDE_COLUMN) == SIDE_NAMES[side]).select("id", "vector")


def initial_rows(spark: SparkSession, vocab_size: int, dim: int, seed: int, groups: int, phase: int,
                 carried: Broadcast | None = None) -> RDD:
    """``(task, Rows)`` of the initialisation, keyed by their owners in `phase` of a round of `groups`.

    `carried`, a broadcast ``(vocab,) bool``, leaves out the ids it marks (the words a warm start
    carries over from its parent).
    """
    blocks = -(-vocab_size // INIT_BLOCK_ROWS)
    init = functools.partial(initial_block, vocab_size=vocab_size, dim=dim, seed=seed, groups=groups, phase=phase,
                             carried=carried)
    records = spark.sparkContext.parallelize(range(blocks), max(1, min(blocks, groups))).flatMap(init)
    return shuffle_rows(records, groups)


def initial_block(block: int, vocab_size: int, dim: int, seed: int, groups: int, phase: int,
                  carried: Broadcast | None) -> Iterator:
    """Executor side: word2vec.c's initial rows of one block of ids, keyed by owner."""
    rng = np.random.default_rng([seed, INIT_STREAM, block])
    # draw the whole block so a row's values do not depend on which ids are present
    uniform = rng.random((INIT_BLOCK_ROWS, dim), dtype=np.float32)  # (block rows, dim)
    ids = np.arange(block * INIT_BLOCK_ROWS, min((block + 1) * INIT_BLOCK_ROWS, vocab_size), dtype=np.int32)
    input_vectors = (uniform[: ids.size] - np.float32(0.5)) / np.float32(dim)
    if carried is not None:
        fresh = ~carried.value[ids]
        ids, input_vectors = ids[fresh], input_vectors[fresh]
    yield from keyed_chunks(ids, INPUT_SIDE, input_vectors, groups, phase)
    yield from keyed_chunks(ids, OUTPUT_SIDE, np.zeros_like(input_vectors), groups, phase)


def committed_rows(spark: SparkSession, storage: Storage, model_round: int, dim: int, groups: int,
                   phase: int) -> RDD:
    """``(task, Rows)`` of a committed round, keyed by their owners in `phase` of a round of `groups`."""
    return keyed_rows(read_round(spark, storage, model_round), dim, groups, phase)


def keyed_rows(rows: DataFrame, dim: int, groups: int, phase: int) -> RDD:
    """``(task, Rows)`` of rows ``id, vector, side`` (`ROW_SCHEMA`), keyed by their owners in `phase`."""
    chunks = rows.mapInArrow(functools.partial(chunk_batches, dim=dim, groups=groups, phase=phase),
                             spark_schema(CHUNK_SCHEMA))
    records = chunks.rdd.map(lambda row: (row["task"], Rows(
        row["side"], row["group"], np.frombuffer(row["ids"], np.int32).copy(),
        np.frombuffer(row["vectors"], np.float32).reshape(-1, dim).copy())))
    return shuffle_rows(records, groups)


def chunk_batches(batches: Iterator[pa.RecordBatch], dim: int, groups: int, phase: int) -> Iterator[pa.RecordBatch]:
    """Executor side of `committed_rows`: Parquet rows to keyed chunks."""
    for batch in batches:
        sides = np.array([SIDE_NAMES.index(name) for name in batch.column(SIDE_COLUMN).to_pylist()])
        ids = batch.column("id").to_numpy(zero_copy_only=False).astype(np.int32)
        vectors = lists_to_matrix(batch.column("vector"), dim)
        for side in (INPUT_SIDE, OUTPUT_SIDE):
            chosen = sides == side
            keyed = list(keyed_chunks(ids[chosen], side, vectors[chosen], groups, phase))
            if keyed:
                yield pa.RecordBatch.from_pydict({
                    "task": pa.array([owner for owner, _ in keyed], pa.int32()),
                    "side": pa.array([side] * len(keyed), pa.int32()),
                    "group": pa.array([chunk.group for _, chunk in keyed], pa.int32()),
                    "ids": pa.array([chunk.ids.tobytes() for _, chunk in keyed], pa.binary()),
                    "vectors": matrix_chunks([chunk.vectors for _, chunk in keyed]),
                }, schema=CHUNK_SCHEMA)


def matrix_chunks(matrices: list[np.ndarray]) -> pa.BinaryArray:
    """Each matrix's raw float32 bytes as one binary value."""
    return pa.array([np.ascontiguousarray(matrix, np.float32).tobytes() for matrix in matrices], pa.binary())


def write_rows(spark: SparkSession, records: RDD, path: str, dim: int) -> None:
    """Write ``(task, Rows)`` records as a round (Parquet partitioned by side) at `path`."""
    chunks = records.map(lambda item: (item[1].side, item[1].ids.tobytes(),
                                       np.ascontiguousarray(item[1].vectors).tobytes()))
    frame = spark.createDataFrame(chunks, CHUNK_TYPE, verifySchema=False)
    rows = frame.mapInArrow(functools.partial(expand_chunks, dim=dim), spark_schema(ROW_SCHEMA))
    rows.write.options(**NO_DICTIONARY).partitionBy(SIDE_COLUMN).parquet(path)


def expand_chunks(batches: Iterator[pa.RecordBatch], dim: int) -> Iterator[pa.RecordBatch]:
    """Executor side of `write_rows`: one Parquet row per word."""
    for batch in batches:
        for side, ids, vectors in zip(batch.column("side").to_pylist(), batch.column("ids").to_pylist(),
                                      batch.column("vectors").to_pylist(), strict=True):
            row_ids = np.frombuffer(ids, np.int32)
            matrix = np.frombuffer(vectors, np.float32).reshape(-1, dim)
            yield pa.RecordBatch.from_pydict({"id": pa.array(row_ids), "vector": matrix_to_lists(matrix),
                                              SIDE_COLUMN: pa.array([SIDE_NAMES[side]] * row_ids.size)},
                                             schema=ROW_SCHEMA)


def commit_round(storage: Storage, staged: str, pointer: dict, keep: int) -> None:
    """Move a complete staged round into place, point ``_LATEST`` at it, prune to `keep` rounds."""
    destination = round_directory(pointer["round"])
    storage.delete(destination)
    storage.move(staged, destination)
    storage.write_json(MODEL_LATEST, pointer)
    for model_round in numbered(storage.list_names(MODEL_DIRECTORY), ROUND_PREFIX)[:-keep]:
        storage.delete(round_directory(model_round))


def persisted(records: RDD) -> RDD:
    """Records kept for the rest of a job; lost blocks are recomputed from their lineage."""
    return records.persist(StorageLevel.MEMORY_AND_DISK)

