"""Model versions on disk: numbered rounds, the ``_LATEST`` pointer, init, and the halves
training passes between strata.

Layout below the run root::

    model/round=NNNNNN/   id int, w_in array<float>, w_out array<float>   (one complete version)
    model/_LATEST         JSON {"round": N, "epoch": e, "round_in_epoch": r}, moved last

Round 0 is the initialisation: w_in uniform in (-0.5/dim, 0.5/dim), w_out zeros (word2vec.c).
Within a round, training passes the model as halves (`sgns_spark.shard`), each row owned
by one task of each stratum; a round's last stratum is joined back into the model schema.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sgns_spark.arrow import (
    binary_to_matrix,
    grouped_function,
    lists_to_matrix,
    matrix_to_binary,
    matrix_to_lists,
    spark_schema,
)
from sgns_spark.shard import HALF_SCHEMA, INPUT_SIDE, OUTPUT_SIDE, STATISTICS_ROW_ID
from sgns_spark.storage import Storage
from sgns_spark.strata import word_groups

MODEL_DIRECTORY = "model"
LATEST_FILE = f"{MODEL_DIRECTORY}/_LATEST"
INIT_BLOCK_ROWS = 4096  # ids initialised together from one seeded generator
INIT_STREAM = 0x5EED  # separates init draws from training draws of the same seed
MODEL_SCHEMA = pa.schema([
    ("id", pa.int32()),
    ("w_in", pa.list_(pa.float32())),
    ("w_out", pa.list_(pa.float32())),
])


def round_directory(global_round: int) -> str:
    """Relative path of a model round."""
    return f"{MODEL_DIRECTORY}/round={global_round:06d}"


def read_latest(storage: Storage) -> dict | None:
    """The ``_LATEST`` pointer, or None before round 0 is written."""
    return storage.read_json(LATEST_FILE) if storage.exists(LATEST_FILE) else None


def commit_round(storage: Storage, staged: str, pointer: dict) -> None:
    """Move a complete staged round into place, then point ``_LATEST`` at it."""
    destination = round_directory(pointer["round"])
    storage.delete(destination)
    storage.move(staged, destination)
    storage.write_json(LATEST_FILE, pointer)


def prune_rounds(storage: Storage, keep: int) -> None:
    """Delete all but the newest `keep` rounds."""
    rounds = [name for name in storage.list_names(MODEL_DIRECTORY) if name.startswith("round=")]
    for name in rounds[:-keep]:
        storage.delete(f"{MODEL_DIRECTORY}/{name}")


def read_round(spark: SparkSession, storage: Storage, global_round: int) -> DataFrame:
    """One model round as a DataFrame of the model schema."""
    return spark.read.parquet(storage.path(round_directory(global_round)))


def initial_model(spark: SparkSession, vocab_size: int, dim: int, seed: int, partitions: int) -> DataFrame:
    """Round 0, computed on executors block by block, identical for any partitioning."""
    blocks = spark.range(vocab_size).select(
        F.col("id").cast("int").alias("id"),
        (F.col("id") / INIT_BLOCK_ROWS).cast("int").alias("block"),
    ).repartition(partitions, "block")
    return blocks.groupBy("block").applyInArrow(
        grouped_function(initialise_block, dim=dim, seed=seed), spark_schema(MODEL_SCHEMA)
    )


def initialise_block(table: pa.Table, dim: int, seed: int) -> pa.Table:
    """Executor side: word2vec.c's initial rows for one block of ids."""
    ids = np.sort(table.column("id").to_numpy())
    block = int(table.column("block")[0].as_py())
    rng = np.random.default_rng([seed, INIT_STREAM, block])
    # draw the whole block so a row's values do not depend on which ids are present
    uniform = rng.random((INIT_BLOCK_ROWS, dim), dtype=np.float32)  # (block rows, dim)
    input_vectors = (uniform[ids - block * INIT_BLOCK_ROWS] - np.float32(0.5)) / np.float32(dim)
    return pa.table(
        {"id": pa.array(ids.astype(np.int32)), "w_in": matrix_to_lists(input_vectors),
         "w_out": matrix_to_lists(np.zeros_like(input_vectors))},
        schema=MODEL_SCHEMA,
    )


def model_halves(model: DataFrame, groups: int, dim: int) -> DataFrame:
    """A model round as halves (`sgns_spark.shard.HALF_SCHEMA`): each row split into its input
    and its output row, both labelled with the word's group."""
    return model.mapInArrow(functools.partial(split_rows, groups=groups, dim=dim), spark_schema(HALF_SCHEMA))


def split_rows(batches: Iterator[pa.RecordBatch], groups: int, dim: int) -> Iterator[pa.RecordBatch]:
    """Executor side of `model_halves`."""
    for batch in batches:
        ids = batch.column("id")
        group = pa.array(word_groups(ids.to_numpy(zero_copy_only=False), groups))
        for side, column in ((INPUT_SIDE, "w_in"), (OUTPUT_SIDE, "w_out")):
            sides = pa.array(np.full(batch.num_rows, side, dtype=np.int32))
            vectors = matrix_to_binary(lists_to_matrix(batch.column(column), dim))
            yield pa.RecordBatch.from_arrays([ids, group, sides, vectors], schema=HALF_SCHEMA)


def model_from_halves(halves: DataFrame, dim: int) -> DataFrame:
    """The model schema from halves (statistics rows left out): each id's two rows joined."""
    rows = halves.where(F.col("id") != STATISTICS_ROW_ID)
    inputs = rows.where(F.col("side") == INPUT_SIDE).select("id", F.col("vector").alias("w_in"))
    outputs = rows.where(F.col("side") == OUTPUT_SIDE).select("id", F.col("vector").alias("w_out"))
    joined = inputs.join(outputs, "id")
    return joined.mapInArrow(functools.partial(join_rows, dim=dim), spark_schema(MODEL_SCHEMA))


def join_rows(batches: Iterator[pa.RecordBatch], dim: int) -> Iterator[pa.RecordBatch]:
    """Executor side of `model_from_halves`: binary rows back to array<float>."""
    for batch in batches:
        yield pa.RecordBatch.from_arrays(
            [batch.column("id"), *(matrix_to_lists(binary_to_matrix(batch.column(side), dim))
                                   for side in ("w_in", "w_out"))],
            schema=MODEL_SCHEMA,
        )
