"""Model versions on disk, and the rows training passes between tasks.

A round is stored as Parquet rows ``side string, ids binary, vectors binary``, one row per chunk
of a side's rows as training holds them (`keyed_chunks`): ``ids`` the chunk's word
ids as little-endian int32, ``vectors`` their rows as little-endian float32, row after row
(``len(ids) x dim``). A round is a resume point, written several times an epoch, so it is written
as training holds it: rows per word (``array<float>``) cost the commit a conversion and the
Parquet writer a sort by side, a 68k-word round 3.7 to 5.9 s in a fresh application and 1.6 to
2.3 s warm, against 1.0 to 1.6 s and 0.6 to 1.0 s as chunks (measured). `read_side` reads a side
as rows per word, for the export. ``model/_LATEST`` (JSON ``{"round": N, ...}``) moves only after
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
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from sgns_spark.arrow import lists_to_matrix, matrix_to_lists, spark_schema
from sgns_spark.config import Config
from sgns_spark.errors import UserError
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
WORD_SCHEMA = pa.schema(ROW_SCHEMA.field(name) for name in ("id", "vector"))  # `read_side`
ROUND_SCHEMA = pa.schema([(SIDE_COLUMN, pa.string()), ("ids", pa.binary()), ("vectors", pa.binary())])
ROUND_ID_TYPE = np.dtype("<i4")  # a round's ``ids`` bytes
ROUND_VECTOR_TYPE = np.dtype("<f4")  # a round's ``vectors`` bytes
FORMAT_2_MARKER = f"{SIDE_COLUMN}={SIDE_NAMES[0]}"  # run-root format 2 kept a round's rows per word in this directory
CHUNK_SCHEMA = pa.schema([("task", pa.int32()), ("side", pa.int32()), ("group", pa.int32()),
                          ("ids", pa.binary()), ("vectors", pa.binary())])
ROUND_GROUP_CHUNKS = 16  # chunks per Parquet row group of a round at most (16 MiB of vectors)
ROUND_WRITE_OPTIONS = {
    # float vectors never repeat, so a dictionary only costs the writer time before it falls back to
    # plain encoding: a round's write took 1.05-1.13 s without one, 1.34-1.63 s with (68k words, dim 100)
    "parquet.enable.dictionary": "false",
    # a page per chunk, and row groups of a few chunks: Parquet checks a page's size only every 100
    # rows, so a task's chunks of a 220k-word round filled one page that the writer buffered and
    # compressed in growing byte arrays, and the reader took a row group's chunks in one batch; at
    # a 2g local driver both ran the heap out (measured)
    "parquet.page.row.count.limit": "1",
    "parquet.block.row.count.limit": str(ROUND_GROUP_CHUNKS),
}


def task_partition(task: int) -> int:
    """Spark's partition of a task's records: the task number itself (one function object, so
    that every RDD keyed by task shares one partitioner and their unions stay narrow)."""
    return task


def shuffle_rows(records: RDD, groups: int) -> RDD:
    """``(task, Rows)`` records moved to their tasks' partitions (every row shuffle is made here,
    so Spark names its stages after this module; see `sgns_spark.spark_metrics`)."""
    return records.partitionBy(groups, task_partition)


def round_settings(config: Config) -> dict:
    """The train settings a committed round records in ``_LATEST``, which a run must share to
    resume it (``train.restart`` says what to do with the rounds, not how they were trained)."""
    return config.prefixed("train", leave_out=("restart",))


def read_latest(storage: Storage) -> dict | None:
    """The ``_LATEST`` pointer, or None before the first round is committed."""
    return storage.read_pointer(MODEL_LATEST, "round") if storage.exists(MODEL_LATEST) else None


def read_round(storage: Storage, model_round: int) -> DataFrame:
    """A committed round's chunks that hold rows, ``side, ids, vectors`` (`ROUND_SCHEMA`). The
    schema is given, so no Spark job runs to infer it."""
    directory = round_directory(model_round)
    if storage.exists(f"{directory}/{FORMAT_2_MARKER}"):
        raise UserError(f"model round {model_round} in {storage.root} was written by an earlier sgns-spark (run-root "
                        "format 2, rows per word), which this version does not read; train again from round 0 "
                        "with train.restart=true")
    return storage.read_parquet(directory, spark_schema(ROUND_SCHEMA)).where(F.length("ids") > 0)


def read_side(storage: Storage, model_round: int, side: int) -> DataFrame:
    """``id, vector`` (`WORD_SCHEMA`) of one side of a committed round, one row per word."""
    chunks = read_round(storage, model_round).where(F.col(SIDE_COLUMN) == SIDE_NAMES[side])
    return chunks.mapInArrow(word_batches, spark_schema(WORD_SCHEMA))


def round_chunks(batch: pa.RecordBatch) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """`round_chunk` of each row of a batch of `read_round`."""
    for side, ids, vectors in zip(batch.column(SIDE_COLUMN).to_pylist(), batch.column("ids").to_pylist(),
                                  batch.column("vectors").to_pylist(), strict=True):
        yield round_chunk(side, ids, vectors)


def round_chunk(side: str, ids: bytes, vectors: bytes) -> tuple[int, np.ndarray, np.ndarray]:
    """``(side, ids (n,) int32, vectors (n, dim) float32)`` of one row of a round (n > 0); dim is
    the chunk's vector bytes per id."""
    row_ids = np.frombuffer(ids, ROUND_ID_TYPE).astype(np.int32, copy=False)
    matrix = np.frombuffer(vectors, ROUND_VECTOR_TYPE).astype(np.float32, copy=False).reshape(row_ids.size, -1)
    return SIDE_NAMES.index(side), row_ids, matrix


def word_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side of `read_side`: a round's chunks as rows per word."""
    for batch in batches:
        for _, ids, vectors in round_chunks(batch):
            yield pa.RecordBatch.from_pydict({"id": pa.array(ids), "vector": matrix_to_lists(vectors)},
                                             schema=WORD_SCHEMA)


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


def committed_rows(storage: Storage, model_round: int, groups: int, phase: int) -> RDD:
    """``(task, Rows)`` of a committed round, keyed by their owners in `phase` of a round of `groups`."""
    chunks = read_round(storage, model_round).rdd
    return shuffle_rows(chunks.flatMap(functools.partial(keyed_round_chunk, groups=groups, phase=phase)), groups)


def keyed_rows(rows: DataFrame, dim: int, groups: int, phase: int) -> RDD:
    """``(task, Rows)`` of rows ``id, vector, side`` (`ROW_SCHEMA`), keyed by their owners in `phase`."""
    chunks = rows.mapInArrow(functools.partial(keyed_word_batches, dim=dim, groups=groups, phase=phase),
                             spark_schema(CHUNK_SCHEMA))
    records = chunks.rdd.map(lambda row: (row["task"], Rows(
        row["side"], row["group"], np.frombuffer(row["ids"], np.int32).copy(),
        np.frombuffer(row["vectors"], np.float32).reshape(-1, dim).copy())))
    return shuffle_rows(records, groups)


def keyed_round_chunk(row: Row, groups: int, phase: int) -> Iterator[tuple[int, Rows]]:
    """Executor side of `committed_rows`: one row of a round, keyed by owner."""
    side, ids, vectors = round_chunk(*row)
    return keyed_chunks(ids, side, vectors, groups, phase)


def keyed_word_batches(batches: Iterator[pa.RecordBatch], dim: int, groups: int, phase: int
                       ) -> Iterator[pa.RecordBatch]:
    """Executor side of `keyed_rows`: rows per word, keyed by owner in chunks."""
    for batch in batches:
        sides = np.array([SIDE_NAMES.index(name) for name in batch.column(SIDE_COLUMN).to_pylist()])
        ids = batch.column("id").to_numpy(zero_copy_only=False).astype(np.int32)
        vectors = lists_to_matrix(batch.column("vector"), dim)
        for side in (INPUT_SIDE, OUTPUT_SIDE):
            chosen = sides == side
            yield from keyed_batch(list(keyed_chunks(ids[chosen], side, vectors[chosen], groups, phase)))


def keyed_batch(keyed: list[tuple[int, Rows]]) -> Iterator[pa.RecordBatch]:
    """``(task, Rows)`` chunks as one batch of `CHUNK_SCHEMA`; nothing when there are none."""
    if keyed:
        yield pa.RecordBatch.from_pydict({
            "task": pa.array([owner for owner, _ in keyed], pa.int32()),
            "side": pa.array([chunk.side for _, chunk in keyed], pa.int32()),
            "group": pa.array([chunk.group for _, chunk in keyed], pa.int32()),
            "ids": pa.array([chunk.ids.tobytes() for _, chunk in keyed], pa.binary()),
            "vectors": pa.array([np.ascontiguousarray(chunk.vectors, np.float32).tobytes() for _, chunk in keyed],
                                pa.binary()),
        }, schema=CHUNK_SCHEMA)


def write_rows(spark: SparkSession, records: RDD, path: str) -> None:
    """Write ``(task, Rows)`` records as a round at `path` (`ROUND_SCHEMA`: their chunks as they are)."""
    chunks = records.map(lambda item: (SIDE_NAMES[item[1].side],
                                       np.ascontiguousarray(item[1].ids, ROUND_ID_TYPE).tobytes(),
                                       np.ascontiguousarray(item[1].vectors, ROUND_VECTOR_TYPE).tobytes()))
    spark.createDataFrame(chunks, spark_schema(ROUND_SCHEMA), verifySchema=False).write.options(
        **ROUND_WRITE_OPTIONS).parquet(path)


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

