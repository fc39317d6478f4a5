"""How far a published version moved from its parent, computed on Spark (the manifest's ``drift``).

Over the words both versions hold, with every vector scaled to unit length (a, b: the new and
the parent's row of one word):

- ``mean_cosine``: the mean of a . b, the vectors as published;
- ``mean_cosine_aligned``: the same after the orthogonal map R that best carries the new space
  onto the parent's (orthogonal Procrustes). R maximises sum(aR . b) = trace(R^T M) with
  M = sum(a^T b), a dim x dim sum the executors add up; its maximum is the sum of M's singular
  values, so the aligned mean needs no second pass;
- ``neighbour_overlap``: among the `NEIGHBOUR_WORDS` most frequent shared words, the mean share
  of a word's `NEIGHBOURS` nearest neighbours (by cosine, among those words) that both versions
  agree on.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sgns_spark.arrow import lists_to_matrix, spark_schema
from sgns_spark.session import broadcast
from sgns_spark.vectors import NORM_FLOOR

NEIGHBOUR_WORDS = 10_000
NEIGHBOURS = 10
QUERY_BLOCK = 512  # query words scored together against all candidates
PRODUCT_SCHEMA = pa.schema([("words", pa.int64()), ("cosine_sum", pa.float64()), ("product", pa.binary())])


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """``(rows, dim) float64`` rows scaled to unit length."""
    matrix = matrix.astype(np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), NORM_FLOOR)


def drift_report(spark: SparkSession, new: DataFrame, parent: DataFrame, dim: int) -> dict | None:
    """The drift of `new` from `parent`, both ``word, vector, count`` as published; None when
    they share no word."""
    pairs = new.select("word", "count", F.col("vector").alias("new")).join(
        parent.select("word", F.col("vector").alias("parent")), "word")
    partials = pairs.select("new", "parent").mapInArrow(
        functools.partial(cosine_partials, dim=dim), spark_schema(PRODUCT_SCHEMA)).toArrow()
    words = int(pc.sum(partials.column("words")).as_py() or 0)
    if not words:
        return None
    product = sum(np.frombuffer(value, np.float64).reshape(dim, dim)
                  for value in partials.column("product").to_pylist())  # (dim, dim) M = sum a^T b
    singular_values = np.linalg.svd(product, compute_uv=False)
    frequent = pairs.orderBy(F.desc("count"), "word").limit(NEIGHBOUR_WORDS).toArrow()
    new_unit = unit_rows(lists_to_matrix(frequent.column("new"), dim)).astype(np.float32)  # (n, dim)
    parent_unit = unit_rows(lists_to_matrix(frequent.column("parent"), dim)).astype(np.float32)
    candidates = broadcast(spark.sparkContext, (new_unit, parent_unit))
    starts = list(range(0, frequent.num_rows, QUERY_BLOCK))
    overlap = spark.sparkContext.parallelize(starts, max(1, min(len(starts), spark.sparkContext.defaultParallelism)))
    overlap_sum = overlap.map(lambda start: block_overlap(start, candidates.value)).sum()
    candidates.unpersist()
    return {
        "shared_words": words,
        "mean_cosine": float(pc.sum(partials.column("cosine_sum")).as_py()) / words,
        "mean_cosine_aligned": float(singular_values.sum()) / words,
        "neighbour_words": frequent.num_rows,
        "neighbours": NEIGHBOURS,
        "neighbour_overlap": float(overlap_sum) / frequent.num_rows,
    }


def cosine_partials(batches: Iterator[pa.RecordBatch], dim: int) -> Iterator[pa.RecordBatch]:
    """Executor side: per batch, the shared words, the sum of a . b and M = sum a^T b."""
    for batch in batches:
        new = unit_rows(lists_to_matrix(batch.column("new"), dim))  # (rows, dim)
        parent = unit_rows(lists_to_matrix(batch.column("parent"), dim))  # (rows, dim)
        yield pa.RecordBatch.from_pydict({
            "words": [batch.num_rows], "cosine_sum": [float(np.einsum("ij,ij->", new, parent))],
            "product": [(new.T @ parent).tobytes()],
        }, schema=PRODUCT_SCHEMA)


def block_overlap(start: int, candidates: tuple[np.ndarray, np.ndarray]) -> float:
    """Executor side: the summed neighbour overlap of query words start .. start + QUERY_BLOCK."""
    total = 0.0
    neighbour_sets = []
    for unit in candidates:
        scores = unit[start : start + QUERY_BLOCK] @ unit.T  # (block, n)
        scores[np.arange(scores.shape[0]), np.arange(start, start + scores.shape[0])] = -np.inf  # not itself
        count = min(NEIGHBOURS, scores.shape[1] - 1)
        neighbour_sets.append(np.argpartition(-scores, count - 1, axis=1)[:, :count] if count > 0 else None)
    if neighbour_sets[0] is None:
        return 0.0
    for new_neighbours, parent_neighbours in zip(*neighbour_sets, strict=True):
        total += np.intersect1d(new_neighbours, parent_neighbours).size / new_neighbours.size
    return total
