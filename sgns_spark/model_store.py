"""Model versions on disk: numbered rounds, the ``_LATEST`` pointer, init and averaging.

Layout below the run root::

    model/round=NNNNNN/   id int, w_in array<float>, w_out array<float>   (one complete version)
    model/_LATEST         JSON {"round": N, "epoch": e, "round_in_epoch": r}, moved last

Round 0 is the initialisation: w_in uniform in (-0.5/dim, 0.5/dim), w_out zeros (word2vec.c).
Averaging keeps untouched rows and replaces each touched row by the touch-count-weighted
mean of the shards that touched it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sgns_spark.arrow import (
    cogrouped_function,
    grouped_function,
    lists_to_matrix,
    matrix_to_lists,
    spark_schema,
)
from sgns_spark.shard import STATISTICS_ROW_ID
from sgns_spark.storage import Storage

MODEL_DIRECTORY = "model"
LATEST_FILE = f"{MODEL_DIRECTORY}/_LATEST"
INIT_BLOCK_ROWS = 4096  # ids initialised together from one seeded generator
INIT_STREAM = 0x5EED  # separates init draws from training draws of the same seed
AVERAGE_BUCKET_ROWS = 1 << 16  # model rows averaged together at most (about 64 MiB at dim 128)
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


def average_into(model: DataFrame, updates: DataFrame, dim: int, vocab_size: int, partitions: int) -> DataFrame:
    """The next model: each touched row the touch-weighted mean of its shards' rows.

    Rows are averaged in at least `partitions` buckets of at most `AVERAGE_BUCKET_ROWS` ids,
    so an executor's memory stays bounded however large the vocabulary grows.

    Parameters
    ----------
    model : DataFrame
        The current round, model schema.
    updates : DataFrame
        Rows emitted by the shards (`sgns_spark.shard.UPDATE_SCHEMA`), statistics row included.
    """
    bucket = F.pmod(F.col("id"), F.lit(average_buckets(vocab_size, partitions))).alias("bucket")
    touched = updates.where(F.col("id") != STATISTICS_ROW_ID).select(
        bucket, "id", "w_in", "touch_in", "w_out", "touch_out"
    )
    return model.select(bucket, "id", "w_in", "w_out").groupBy("bucket").cogroup(
        touched.groupBy("bucket")
    ).applyInArrow(cogrouped_function(average_bucket, dim=dim), spark_schema(MODEL_SCHEMA))


def average_buckets(vocab_size: int, partitions: int) -> int:
    """How many buckets (ids modulo the count) the averaging splits the model into."""
    return max(partitions, -(-vocab_size // AVERAGE_BUCKET_ROWS))  # ceiling division


def average_bucket(current: pa.Table, touched: pa.Table, dim: int) -> pa.Table:
    """Executor side: average one bucket of rows; rows nobody touched keep their values."""
    ids = current.column("id").to_numpy()  # (rows,)
    order = np.argsort(ids)
    ids = ids[order]
    input_vectors = lists_to_matrix(current.column("w_in"), dim)[order]  # (rows, dim)
    output_vectors = lists_to_matrix(current.column("w_out"), dim)[order]  # (rows, dim)
    rows = np.searchsorted(ids, touched.column("id").to_numpy())  # (updates,)
    for vectors, column, touch_column in (
        (input_vectors, "w_in", "touch_in"), (output_vectors, "w_out", "touch_out")
    ):
        touches = touched.column(touch_column).to_numpy().astype(np.float64)  # (updates,)
        weighted_sum = np.zeros(vectors.shape, dtype=np.float64)  # (rows, dim)
        np.add.at(weighted_sum, rows, lists_to_matrix(touched.column(column), dim) * touches[:, None])
        total = np.bincount(rows, weights=touches, minlength=ids.size)  # (rows,)
        averaged = total > 0
        vectors[averaged] = (weighted_sum[averaged] / total[averaged, None]).astype(np.float32)
    return pa.table(
        {"id": pa.array(ids.astype(np.int32)), "w_in": matrix_to_lists(input_vectors),
         "w_out": matrix_to_lists(output_vectors)},
        schema=MODEL_SCHEMA,
    )
