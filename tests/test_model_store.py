import numpy as np
import pyarrow as pa

from sgns_spark.arrow import lists_to_matrix, matrix_to_lists
from sgns_spark.model_store import (
    AVERAGE_BUCKET_ROWS,
    MODEL_SCHEMA,
    average_bucket,
    average_buckets,
    average_into,
    initial_model,
)
from sgns_spark.shard import STATISTICS_ROW_ID, updates_table

DIM = 3


def model_table(ids, input_vectors, output_vectors):
    return pa.table({"id": pa.array(ids, pa.int32()), "w_in": matrix_to_lists(np.asarray(input_vectors, np.float32)),
                     "w_out": matrix_to_lists(np.asarray(output_vectors, np.float32))}, schema=MODEL_SCHEMA)


def updates(rows):
    """rows: (id, w_in, touch_in, w_out, touch_out)"""
    ids, w_in, t_in, w_out, t_out = zip(*rows, strict=True)
    return pa.table({
        "id": pa.array(ids, pa.int32()), "w_in": matrix_to_lists(np.asarray(w_in, np.float32)),
        "touch_in": pa.array(t_in, pa.int64()), "w_out": matrix_to_lists(np.asarray(w_out, np.float32)),
        "touch_out": pa.array(t_out, pa.int64()),
    })


def test_average_bucket_rules():
    current = model_table([0, 1, 2], np.zeros((3, DIM)), np.ones((3, DIM)))
    touched = updates([
        (1, [3, 3, 3], 2, [5, 5, 5], 0),  # row 1: one shard touched w_in only
        (2, [1, 1, 1], 1, [2, 2, 2], 3),  # row 2: two shards, weighted by touches
        (2, [4, 4, 4], 3, [6, 6, 6], 1),
    ])
    result = average_bucket(current, touched, DIM)
    w_in = lists_to_matrix(result.column("w_in"), DIM)
    w_out = lists_to_matrix(result.column("w_out"), DIM)
    assert result.column("id").to_pylist() == [0, 1, 2]
    np.testing.assert_array_equal(w_in[0], [0, 0, 0])  # untouched keeps its value
    np.testing.assert_array_equal(w_out[0], [1, 1, 1])
    np.testing.assert_array_equal(w_in[1], [3, 3, 3])  # one shard: that shard's value
    np.testing.assert_array_equal(w_out[1], [1, 1, 1])  # touch 0 on this side: unchanged
    np.testing.assert_allclose(w_in[2], [(1 * 1 + 4 * 3) / 4] * 3)  # touch-weighted mean
    np.testing.assert_allclose(w_out[2], [(2 * 3 + 6 * 1) / 4] * 3)


def test_average_into_on_spark_ignores_statistics_and_keeps_untouched(spark):
    model = spark.createDataFrame(
        model_table([0, 1, 2, 3], np.arange(12).reshape(4, 3), np.zeros((4, 3))).to_pandas()
    )
    shard_output = updates_table(  # row 3 touched, rows 0 and 2 not; then the statistics row
        np.array([0, 2, 3]), np.full((3, DIM), 9, np.float32), np.array([0, 0, 1]),
        np.ones((3, DIM), np.float32), np.array([0, 0, 1]), loss=1.5, pairs=3, words=9,
    )
    assert shard_output.column("id").to_pylist() == [3, STATISTICS_ROW_ID]
    averaged = average_into(model, spark.createDataFrame(shard_output.to_pandas()), DIM, vocab_size=4, partitions=3)
    rows = {row["id"]: row for row in averaged.collect()}
    assert sorted(rows) == [0, 1, 2, 3]
    assert rows[1]["w_in"] == [3.0, 4.0, 5.0] and rows[2]["w_in"] == [6.0, 7.0, 8.0]
    assert rows[3]["w_in"] == [9.0, 9.0, 9.0] and rows[3]["w_out"] == [1.0, 1.0, 1.0]


def test_average_buckets_bound_the_rows_a_task_holds():
    assert average_buckets(68_000, 2) == 2
    assert average_buckets(100, 16) == 16
    for vocab_size in (AVERAGE_BUCKET_ROWS + 1, 2_000_000):
        buckets = average_buckets(vocab_size, 2)
        assert -(-vocab_size // buckets) <= AVERAGE_BUCKET_ROWS  # largest bucket of ids modulo buckets


def test_initial_model_is_word2vec_init_and_independent_of_partitioning(spark):
    dim, vocab = 8, 5000
    first = initial_model(spark, vocab, dim, seed=3, partitions=2).toArrow().sort_by("id")
    second = initial_model(spark, vocab, dim, seed=3, partitions=7).toArrow().sort_by("id")
    w_in = lists_to_matrix(first.column("w_in"), dim)
    assert first.column("id").to_pylist() == list(range(vocab))
    np.testing.assert_array_equal(w_in, lists_to_matrix(second.column("w_in"), dim))
    assert np.abs(w_in).max() <= 0.5 / dim and np.abs(w_in).mean() > 0.2 / dim
    assert not lists_to_matrix(first.column("w_out"), dim).any()
