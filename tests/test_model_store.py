"""Model rounds on disk and the rows that travel between tasks."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sgns_spark.errors import UserError
from sgns_spark.layout import SIDE_NAMES
from sgns_spark.train.model_store import ROUND_GROUP_CHUNKS, committed_rows, initial_rows, read_side, write_rows
from sgns_spark.train.schedule import INPUT_SIDE, OUTPUT_SIDE, owner_task, word_groups
from sgns_spark.train.task import MAX_CHUNK_BYTES, Rows, keyed_chunks

DIM = 8


def gathered(records, vocab):
    """Both sides as (vocab, dim) matrices from (task, Rows) records, checking each record's owner."""
    sides = {side: np.full((vocab, DIM), np.nan, np.float32) for side in (INPUT_SIDE, OUTPUT_SIDE)}
    for task, chunk in records:
        assert (word_groups(chunk.ids, 3) == chunk.group).all()
        assert owner_task(chunk.group, chunk.side, 1, 3) == task
        sides[chunk.side][chunk.ids] = chunk.vectors
    return sides


def test_initial_rows_are_word2vec_init_keyed_by_owner_and_independent_of_partitioning(spark):
    vocab = 5000
    records = initial_rows(spark, vocab, DIM, seed=3, groups=3, phase=1)
    assert records.getNumPartitions() == 3
    by_partition = records.glom().collect()
    assert all(task == index for index, part in enumerate(by_partition) for task, _ in part)
    sides = gathered([item for part in by_partition for item in part], vocab)
    assert not np.isnan(sides[INPUT_SIDE]).any() and not sides[OUTPUT_SIDE].any()
    assert np.abs(sides[INPUT_SIDE]).max() <= 0.5 / DIM and np.abs(sides[INPUT_SIDE]).mean() > 0.2 / DIM
    again = np.full((vocab, DIM), np.nan, np.float32)
    for _, chunk in initial_rows(spark, vocab, DIM, seed=3, groups=5, phase=0).collect():
        if chunk.side == INPUT_SIDE:
            again[chunk.ids] = chunk.vectors
    np.testing.assert_array_equal(again, sides[INPUT_SIDE])


def test_a_written_round_reads_back_as_parquet_rows_and_as_keyed_rows(spark, storage, tmp_path):
    vocab = 700
    records = initial_rows(spark, vocab, DIM, seed=5, groups=3, phase=1)
    write_rows(spark, records, storage.path("model/round=000001"))
    inputs = read_side(storage, 1, INPUT_SIDE).toArrow().sort_by("id")
    assert inputs.column("id").to_pylist() == list(range(vocab))
    assert inputs.schema.field("vector").type == pa.list_(pa.float32())
    assert spark.read.parquet(storage.path("model/round=000001")).schema.simpleString() == \
        "struct<side:string,ids:binary,vectors:binary>"
    expected = gathered(records.collect(), vocab)
    np.testing.assert_array_equal(np.asarray(inputs.column("vector").combine_chunks().flatten()).reshape(vocab, DIM),
                                  expected[INPUT_SIDE])
    back = gathered(committed_rows(storage, 1, groups=3, phase=1).collect(), vocab)
    for side in (INPUT_SIDE, OUTPUT_SIDE):
        np.testing.assert_array_equal(back[side], expected[side])
    # the bytes are little-endian int32 ids and float32 rows, readable without Spark
    files = sorted((tmp_path / "root" / "model" / "round=000001").glob("*.parquet"))
    chunks = pa.concat_tables(pq.read_table(file) for file in files)
    raw = {side: np.full((vocab, DIM), np.nan, np.float32) for side in SIDE_NAMES}
    for side, ids, vectors in zip(*(chunks.column(name).to_pylist() for name in ("side", "ids", "vectors")),
                                  strict=True):
        raw[side][np.frombuffer(ids, "<i4")] = np.frombuffer(vectors, "<f4").reshape(-1, DIM)
    np.testing.assert_array_equal(raw["input"], expected[INPUT_SIDE])
    np.testing.assert_array_equal(raw["output"], expected[OUTPUT_SIDE])
    # no column of a round is dictionary-encoded (its values never repeat; the writer's attempt costs time)
    assert files
    for file in files:
        metadata = pq.ParquetFile(file).metadata
        for group in range(metadata.num_row_groups):
            for column in range(metadata.num_columns):
                chunk = metadata.row_group(group).column(column)
                assert chunk.dictionary_page_offset is None and "PLAIN" in chunk.encodings


def test_rows_travel_in_chunks_of_at_most_a_mebibyte_of_vectors_each_of_one_group_and_owner():
    ids = np.arange(20_000, dtype=np.int32)
    vectors = np.arange(ids.size * 100, dtype=np.float32).reshape(ids.size, 100)  # 400 bytes a row
    chunks = list(keyed_chunks(ids, OUTPUT_SIDE, vectors, groups=3, phase=1))
    assert all(chunk.vectors.nbytes <= MAX_CHUNK_BYTES for _, chunk in chunks)
    per_chunk = MAX_CHUNK_BYTES // vectors[0].nbytes  # 2,621 rows
    assert len(chunks) == sum(-(-size // per_chunk) for size in np.bincount(word_groups(ids, 3)))
    for task, chunk in chunks:
        assert (word_groups(chunk.ids, 3) == chunk.group).all() and owner_task(chunk.group, OUTPUT_SIDE, 1, 3) == task
        np.testing.assert_array_equal(chunk.vectors, vectors[chunk.ids])
    assert sorted(np.concatenate([chunk.ids for _, chunk in chunks]).tolist()) == ids.tolist()
    wide = np.ones((3, MAX_CHUNK_BYTES), np.float32)  # a row over the bound travels alone
    assert [chunk.ids.tolist() for _, chunk in keyed_chunks(ids[:3], INPUT_SIDE, wide, 1, 0)] == [[0], [1], [2]]


def test_a_round_is_written_in_row_groups_of_a_few_chunks(spark, storage, tmp_path):
    """A reader takes a row group's chunks in one batch: a round's row groups stay small, whatever
    a task holds."""
    chunks = 2 * ROUND_GROUP_CHUNKS + 3
    records = spark.sparkContext.parallelize(
        [(0, Rows(INPUT_SIDE, 0, np.array([word], np.int32), np.full((1, DIM), word, np.float32)))
         for word in range(chunks)], 1)
    write_rows(spark, records, storage.path("model/round=000001"))
    (file,) = (tmp_path / "root" / "model" / "round=000001").glob("*.parquet")
    metadata = pq.ParquetFile(file).metadata
    assert [metadata.row_group(group).num_rows for group in range(metadata.num_row_groups)] == \
        [ROUND_GROUP_CHUNKS, ROUND_GROUP_CHUNKS, 3]
    back = read_side(storage, 1, INPUT_SIDE).toArrow().sort_by("id")
    assert back.column("id").to_pylist() == list(range(chunks))


def test_a_round_of_the_earlier_format_is_refused_with_the_setting_that_starts_over(spark, storage, tmp_path):
    (tmp_path / "root" / "model" / "round=000001" / "side=input").mkdir(parents=True)
    with pytest.raises(UserError, match=r"^model round 1 in .*run-root format 2, rows per word.*train.restart=true$"):
        committed_rows(storage, 1, groups=2, phase=0)
