import numpy as np
import pyarrow as pa

from sgns_spark.arrow import lists_to_matrix, matrix_to_binary, matrix_to_lists
from sgns_spark.model_store import MODEL_SCHEMA, initial_model, model_from_halves, model_halves
from sgns_spark.shard import INPUT_SIDE, OUTPUT_SIDE, STATISTICS_ROW_ID
from sgns_spark.strata import word_groups

DIM = 3


def model_table(ids, input_vectors, output_vectors):
    return pa.table({"id": pa.array(ids, pa.int32()), "w_in": matrix_to_lists(np.asarray(input_vectors, np.float32)),
                     "w_out": matrix_to_lists(np.asarray(output_vectors, np.float32))}, schema=MODEL_SCHEMA)


def test_halves_carry_each_row_to_its_group_and_join_back_without_statistics(spark):
    ids = np.arange(10)
    model = spark.createDataFrame(
        model_table(ids, np.arange(30).reshape(10, 3), -np.arange(30).reshape(10, 3)).to_pandas()
    )
    halves = model_halves(model, groups=3, dim=DIM).toArrow().sort_by([("side", "ascending"), ("id", "ascending")])
    assert halves.column("side").to_pylist() == [INPUT_SIDE] * 10 + [OUTPUT_SIDE] * 10
    np.testing.assert_array_equal(halves.column("group").to_numpy(), np.tile(word_groups(ids, 3), 2))
    assert halves.column("group").to_pylist()[:10] == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2]  # snake order
    statistics = pa.table({"id": pa.array([STATISTICS_ROW_ID], pa.int32()), "group": pa.array([0], pa.int32()),
                           "side": pa.array([INPUT_SIDE], pa.int32()),
                           "vector": matrix_to_binary(np.full((1, DIM), 7, np.float32))})
    with_statistics = spark.createDataFrame(pa.concat_tables([halves, statistics]).to_pandas())
    joined = model_from_halves(with_statistics, DIM).toArrow().sort_by("id")
    assert joined.column("id").to_pylist() == list(ids)
    np.testing.assert_array_equal(lists_to_matrix(joined.column("w_in"), DIM), np.arange(30).reshape(10, 3))
    np.testing.assert_array_equal(lists_to_matrix(joined.column("w_out"), DIM), -np.arange(30).reshape(10, 3))


def test_initial_model_is_word2vec_init_and_independent_of_partitioning(spark):
    dim, vocab = 8, 5000
    first = initial_model(spark, vocab, dim, seed=3, partitions=2).toArrow().sort_by("id")
    second = initial_model(spark, vocab, dim, seed=3, partitions=7).toArrow().sort_by("id")
    w_in = lists_to_matrix(first.column("w_in"), dim)
    assert first.column("id").to_pylist() == list(range(vocab))
    np.testing.assert_array_equal(w_in, lists_to_matrix(second.column("w_in"), dim))
    assert np.abs(w_in).max() <= 0.5 / dim and np.abs(w_in).mean() > 0.2 / dim
    assert not lists_to_matrix(first.column("w_out"), dim).any()
