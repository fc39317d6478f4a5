"""The vocabulary: ids, counts, noise weights and subsampling, and the corpus encoded as ids.

Schema of ``<root>/vocab`` (sorted by id)::

    word string, id int, count long, keep_prob double, noise_weight double

Ids follow descending count, ties broken by word, so they are deterministic. ``noise_weight``
is the negative-sampling probability count^alpha / sum(count^alpha); ``keep_prob`` is the
word2vec.c subsampling probability (sqrt(f / (s T)) + 1) (s T) / f, capped at 1.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from sgns_spark.arrow import list_lengths, lists_from_lengths, spark_schema
from sgns_spark.config import VocabSettings
from sgns_spark.session import broadcast

ENCODED_SCHEMA = pa.schema([("sentence_key", pa.int64()), ("ids", pa.list_(pa.int32()))])


def build_vocab(word_counts: DataFrame, settings: VocabSettings) -> DataFrame:
    """Rank, filter and annotate word counts.

    Parameters
    ----------
    word_counts : DataFrame
        ``word string, count long``, one row per distinct word.
    settings : VocabSettings

    Returns
    -------
    DataFrame
        The vocabulary schema of this module, unordered; `id` gives the order.
    """
    kept = word_counts.where(F.col("count") >= settings.min_count)
    by_frequency = Window.orderBy(F.col("count").desc(), F.col("word").asc())
    ranked = kept.withColumn("id", (F.row_number().over(by_frequency) - 1).cast("int"))
    if settings.max_vocab_size:
        ranked = ranked.where(F.col("id") < settings.max_vocab_size)
    everything = Window.partitionBy()
    total = F.sum("count").over(everything)
    noise_mass = F.pow(F.col("count"), settings.noise_exponent)
    return ranked.select(
        "word",
        "id",
        F.col("count").cast("long").alias("count"),
        keep_probability(F.col("count"), total, settings.sample).alias("keep_prob"),
        (noise_mass / F.sum(noise_mass).over(everything)).alias("noise_weight"),
    )


def keep_probability(count, total_count, sample: float):
    """word2vec.c's subsampling keep probability as a Spark column (1 where `sample` is 0)."""
    if sample == 0:
        return F.lit(1.0)
    threshold = F.lit(sample) * total_count
    return F.least(F.lit(1.0), (F.sqrt(count / threshold) + 1) * threshold / count)


def encode_corpus(sentences: DataFrame, vocabulary_words: list[str], partitions: int) -> DataFrame:
    """Replace tokens by vocabulary ids, dropping unknown words and then empty sentences.

    Parameters
    ----------
    sentences : DataFrame
        ``sentence_key long, tokens array<string>``.
    vocabulary_words : list of str
        The words in id order.
    partitions : int
        Partitions of the result, hashed by sentence key.

    Returns
    -------
    DataFrame
        ``sentence_key long, ids array<int>``.
    """
    broadcast_words = broadcast(sentences.sparkSession.sparkContext, vocabulary_words)
    encoded = sentences.select("sentence_key", "tokens").mapInArrow(
        functools.partial(encode_batches, words=broadcast_words), spark_schema(ENCODED_SCHEMA)
    )
    return encoded.where(F.size("ids") > 0).repartition(partitions, "sentence_key")


def encode_batches(batches: Iterator[pa.RecordBatch], words) -> Iterator[pa.RecordBatch]:
    """Executor side: map each batch's tokens to ids with one C++ hash lookup."""
    vocabulary = pa.array(words.value, type=pa.string())
    for batch in batches:
        tokens = batch.column(1)
        ids = pc.index_in(tokens.flatten(), value_set=vocabulary)  # (tokens,) int32, null = OOV
        known = np.asarray(ids.is_valid(), dtype=bool)
        sentence_of_token = np.repeat(np.arange(len(tokens)), list_lengths(tokens))
        lengths = np.bincount(sentence_of_token[known], minlength=len(tokens))
        yield pa.RecordBatch.from_arrays(
            [batch.column(0), lists_from_lengths(lengths, ids.filter(known))],
            schema=ENCODED_SCHEMA,
        )
