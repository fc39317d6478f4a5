"""Executor side of training: a round's pairs in blocks, and local SGD on one block.

Pure functions of Arrow tables and a `RoundPlan`. Each source shard of a round's sentences
turns into skip-gram pairs, split by (stratum, input group) into blocks
(`stratified_pairs`; see `sgns_spark.strata`). For each stratum, the task of group g receives
its block from every source and exactly the rows the block owns (input rows of group g,
output rows of group g + k), trains on them (`train_block`), and emits those rows again plus
one statistics row with id `STATISTICS_ROW_ID`.

Rows travel as *halves*: ``(id, group, side, vector)``, one record for a word's input row
(side `INPUT_SIDE`) and one for its output row (`OUTPUT_SIDE`), because the two belong to
different tasks within a stratum.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sgns_spark.arrow import binary_to_matrix, list_lengths, lists_from_lengths, matrix_to_binary
from sgns_spark.config import TrainSettings
from sgns_spark.kernel import sgns_step
from sgns_spark.memory import peak_rss_mib
from sgns_spark.sampling import (
    NOISE_STREAM,
    SUBSAMPLE_STREAM,
    WINDOW_STREAM,
    NoiseSampler,
    run_start_flags,
    seeded_generator,
    skipgram_pairs,
)
from sgns_spark.strata import pair_strata, word_groups

STATISTICS_ROW_ID = -1
INPUT_SIDE, OUTPUT_SIDE = 0, 1  # the `side` of a half: input row v or output row v'
MAX_ROW_PAIRS = 1 << 20  # pairs per row of the pairs table at most, so no Spark row nears 2 GB
LOSS_SAMPLE_INTERVAL = 8  # the loss is computed on every 8th minibatch, an estimate for all
PAIRS_SCHEMA = pa.schema([
    ("task_key", pa.int32()),  # partition key of the block's task (its input group)
    ("cycle", pa.int32()),  # which pass over the strata within the round
    ("stratum", pa.int32()),
    ("source", pa.int32()),  # the source shard of the sentences
    ("part", pa.int32()),  # a block is cut into parts of at most MAX_ROW_PAIRS pairs
    ("context_ids", pa.list_(pa.int32())),  # (units,) input word of each context position
    ("context_pairs", pa.list_(pa.int32())),  # (units,) pairs of each context position
    ("center_ids", pa.list_(pa.int32())),  # (pairs,) output word of each pair, unit after unit
])
HALF_FIELDS = [
    ("id", pa.int32()),
    ("group", pa.int32()),
    ("side", pa.int32()),
    ("vector", pa.binary()),  # the row's dim float32 values (`sgns_spark.arrow.matrix_to_binary`)
]
HALF_SCHEMA = pa.schema(HALF_FIELDS)
BLOCK_SCHEMA = pa.schema([
    *HALF_FIELDS,
    ("loss", pa.float64()),  # statistics row only: summed pair loss (sampled), NaN if parameters blew up
    ("pairs", pa.int64()),  # statistics row only
    ("worker_peak_rss_mib", pa.float64()),  # statistics row only: this Python worker's peak
    ("worker_python", pa.string()),  # statistics row only: the executor's Python interpreter
])


@dataclass(frozen=True)
class RoundPlan:
    """What every task of one round (and phase: cycle and stratum) needs to know, shipped to
    executors by value.

    ``keep_probability`` and ``noise_weights`` are Spark broadcasts of the vocabulary's
    ``(vocab,)`` columns; ``noise_scale`` is `sgns_spark.strata.noise_scales`, ``(shards,)``;
    ``task_keys`` holds, for each group, the key Spark sends to that group's partition.
    ``words_before`` and ``words_total`` place this round on the global learning-rate
    schedule (raw tokens, over all epochs).
    """

    settings: TrainSettings
    epoch: int
    round_index: int
    cycle: int
    stratum: int
    keep_probability: object
    noise_weights: object
    noise_scale: np.ndarray
    task_keys: tuple[int, ...]
    words_before: float
    words_in_round: float
    words_total: float

    def learning_rate(self, fraction_done: float) -> float:
        """Linear decay on the global word count, floored at start x min ratio (word2vec.c).

        `fraction_done` is the share of the round already trained.
        """
        progress = (self.words_before + fraction_done * self.words_in_round) / self.words_total
        ratio = max(self.settings.min_learning_rate_ratio, 1.0 - progress)
        return self.settings.learning_rate * ratio


def shard_tokens(sentences: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """A shard's tokens in sentence-key order (never arrival order), and each token's sentence.

    Returns ``(tokens,) int32`` word ids and ``(tokens,) int64`` sentence indices.
    """
    order = np.argsort(sentences.column("sentence_key").to_numpy(), kind="stable")
    ids_column = sentences.column("ids").combine_chunks().take(pa.array(order))
    lengths = list_lengths(ids_column)  # (sentences,)
    word_ids = ids_column.flatten().to_numpy(zero_copy_only=False).astype(np.int32)
    return word_ids, np.repeat(np.arange(lengths.size), lengths)


def stratified_pairs(sentences: pa.Table, plan: RoundPlan) -> pa.Table:
    """Executor side: one source shard's pairs of this round, one row per part of a non-empty block.

    Parameters
    ----------
    sentences : pyarrow.Table
        ``shard int, sentence_key long, ids array<int>``, the source shard's slice.
    """
    settings = plan.settings
    groups = settings.num_shards
    source = int(sentences.column("shard")[0].as_py())
    word_ids, sentence_index = shard_tokens(sentences)
    key = (settings.seed, plan.epoch, plan.round_index)
    pairs = skipgram_pairs(
        word_ids, sentence_index, plan.keep_probability.value, settings.window,
        seeded_generator(*key, SUBSAMPLE_STREAM, source), seeded_generator(*key, WINDOW_STREAM, source),
    )
    cycles = settings.cycles_per_round
    cycle = pairs.context_position * cycles // max(pairs.kept_tokens, 1)  # (pairs,) a slice of the stream
    group_of_id = word_groups(np.arange(plan.noise_weights.value.size), groups)  # (vocab,)
    context_group = group_of_id[pairs.context_ids]  # (pairs,)
    stratum = pair_strata(context_group, group_of_id[pairs.center_ids], groups)  # (pairs,)
    blocks = cycles * groups * groups
    block = (cycle * groups + stratum) * groups + context_group  # (pairs,)
    # within a block, pairs stay in context-position order; small keys sort by radix
    order = np.argsort(block.astype(np.min_scalar_type(blocks - 1)), kind="stable")
    block, position = block[order], pairs.context_position[order]  # (pairs,) each
    unit_start = np.flatnonzero(run_start_flags(block, position))  # (units,)
    unit_pairs = np.diff(np.r_[unit_start, block.size])  # (units,)
    unit_block = block[unit_start]  # (units,)
    # a block is cut into rows of at most MAX_ROW_PAIRS pairs, between units
    new_block = run_start_flags(unit_block)  # (units,)
    pairs_before = np.cumsum(unit_pairs) - unit_pairs  # (units,) pairs before each unit
    pairs_into_block = pairs_before - pairs_before[new_block][np.cumsum(new_block) - 1]  # (units,)
    unit_row = unit_block.astype(np.int64) * (MAX_ROW_PAIRS + 1) + pairs_into_block // MAX_ROW_PAIRS  # (units,)
    present, units_per_row = np.unique(unit_row, return_counts=True)  # (rows,) each; units ordered by row
    pairs_per_row = np.add.reduceat(unit_pairs, np.cumsum(units_per_row) - units_per_row)  # (rows,)
    row_block = present // (MAX_ROW_PAIRS + 1)  # (rows,)
    return pa.table(
        {
            "task_key": pa.array(np.asarray(plan.task_keys, dtype=np.int32)[row_block % groups]),
            "cycle": pa.array((row_block // (groups * groups)).astype(np.int32)),
            "stratum": pa.array((row_block // groups % groups).astype(np.int32)),
            "source": pa.array(np.full(present.size, source, dtype=np.int32)),
            "part": pa.array((present % (MAX_ROW_PAIRS + 1)).astype(np.int32)),
            "context_ids": lists_from_lengths(units_per_row, pa.array(pairs.context_ids[order][unit_start])),
            "context_pairs": lists_from_lengths(units_per_row, pa.array(unit_pairs.astype(np.int32))),
            "center_ids": lists_from_lengths(pairs_per_row, pa.array(pairs.center_ids[order])),
        },
        schema=PAIRS_SCHEMA,
    )


@dataclass(frozen=True)
class LocalRows:
    """One side of a task's rows: sorted ids, their groups and vectors, and a lookup."""

    ids: np.ndarray  # (local,) int64, ascending
    groups: np.ndarray  # (local,) int32
    vectors: np.ndarray  # (local, dim) float32
    row_of_id: np.ndarray  # (vocab,) int64 local row of each id (0 where absent)


def local_rows(rows: pa.Table, side: int, dim: int, vocab_size: int) -> LocalRows:
    """The task's rows of one side, in id order whatever order they arrived in."""
    chosen = rows.filter(pc.equal(rows.column("side"), side))
    ids = chosen.column("id").to_numpy().astype(np.int64)
    order = np.argsort(ids)
    row_of_id = np.zeros(vocab_size, dtype=np.int64)
    row_of_id[ids[order]] = np.arange(ids.size)
    return LocalRows(ids[order], chosen.column("group").to_numpy()[order],
                     binary_to_matrix(chosen.column("vector"), dim)[order], row_of_id)


def train_block(blocks: pa.Table, rows: pa.Table, plan: RoundPlan) -> pa.Table:
    """Executor side: local SGD over one block of the plan's phase; emit its rows and statistics.

    Parameters
    ----------
    blocks : pyarrow.Table
        `PAIRS_SCHEMA` rows of one (cycle, stratum, input group), the parts of every source shard
        (maybe none).
    rows : pyarrow.Table
        `HALF_SCHEMA` plus ``task_key``: the input rows of the block's input group and the
        output rows of its output group.
    plan : RoundPlan
    """
    settings = plan.settings
    groups, vocab_size = settings.num_shards, plan.noise_weights.value.size
    inputs = local_rows(rows, INPUT_SIDE, settings.dim, vocab_size)
    outputs = local_rows(rows, OUTPUT_SIDE, settings.dim, vocab_size)
    blocks = blocks.sort_by([("source", "ascending"), ("part", "ascending")])
    context_ids = column_values(blocks, "context_ids")  # (units,)
    context_pairs = column_values(blocks, "context_pairs").astype(np.int64)  # (units,)
    center_ids = column_values(blocks, "center_ids")  # (pairs,)
    loss, pairs, sampled_pairs = 0.0, int(center_ids.size), 0
    if pairs:
        # the output rows are every word of the output group, in id order: the noise candidates
        noise_group = int(outputs.groups[0])
        noise = NoiseSampler(plan.noise_weights.value[outputs.ids])
        noise_weight = settings.negative / settings.noise_pool * plan.noise_scale[noise_group]
        unit_end = np.cumsum(context_pairs)  # (units,) pairs up to and including each unit
        batch_of_unit = (unit_end - 1) // settings.batch_pairs  # (units,)
        batch_start = np.flatnonzero(run_start_flags(batch_of_unit))  # (batches,)
        batch_stop = np.r_[batch_start[1:], context_ids.size]
        generator = seeded_generator(settings.seed, plan.epoch, plan.round_index, NOISE_STREAM,
                                     (plan.cycle * groups + plan.stratum) * groups + noise_group)
        pools = noise.draw(generator, (batch_start.size, settings.noise_pool))  # (batches, pool) local rows
        unit_rows = inputs.row_of_id[context_ids]  # (units,)
        center_rows = outputs.row_of_id[center_ids]  # (pairs,)
        phase, phases = plan.cycle * groups + plan.stratum, groups * settings.cycles_per_round
        for batch_number, (first, stop) in enumerate(zip(batch_start, batch_stop, strict=True)):
            pair_first, pair_stop = unit_end[first] - context_pairs[first], unit_end[stop - 1]
            with_loss = batch_number % LOSS_SAMPLE_INTERVAL == 0
            fraction_done = (phase + pair_first / pairs) / phases
            loss += sgns_step(
                inputs.vectors, outputs.vectors, unit_rows[first:stop], context_pairs[first:stop],
                center_rows[pair_first:pair_stop], pools[batch_number], noise_weight,
                plan.learning_rate(fraction_done), with_loss,
            )
            sampled_pairs += pair_stop - pair_first if with_loss else 0
        loss *= pairs / max(sampled_pairs, 1)  # the sampled batches' loss, scaled to all pairs
    if not (np.isfinite(inputs.vectors).all() and np.isfinite(outputs.vectors).all()):
        loss = float("nan")
    return block_table(inputs, outputs, loss, pairs)


def column_values(table: pa.Table, column: str) -> np.ndarray:
    """The items of a list column, all rows' lists one after another."""
    values = table.column(column).combine_chunks() if table.num_rows else pa.array([], pa.list_(pa.int32()))
    return values.flatten().to_numpy(zero_copy_only=False)


def block_table(inputs: LocalRows, outputs: LocalRows, loss: float, pairs: int) -> pa.Table:
    """A task's rows as halves (input rows, then output rows), then one statistics row."""
    count = inputs.ids.size + outputs.ids.size
    dim = inputs.vectors.shape[1]
    return pa.table(
        {
            "id": pa.array(np.concatenate([inputs.ids, outputs.ids, [STATISTICS_ROW_ID]]).astype(np.int32)),
            "group": pa.array(np.concatenate([inputs.groups, outputs.groups, [0]]).astype(np.int32)),
            "side": pa.array(np.repeat(np.array([INPUT_SIDE, OUTPUT_SIDE, INPUT_SIDE], np.int32),
                                       [inputs.ids.size, outputs.ids.size, 1])),
            "vector": matrix_to_binary(np.concatenate(
                [inputs.vectors, outputs.vectors, np.zeros((1, dim), dtype=np.float32)]
            )),
            "loss": pa.array(np.append(np.zeros(count), loss)),
            "pairs": pa.array(np.append(np.zeros(count, dtype=np.int64), pairs)),
            "worker_peak_rss_mib": pa.array(np.append(np.zeros(count), peak_rss_mib())),
            "worker_python": pa.array([""] * count + [sys.executable], pa.string()),
        },
        schema=BLOCK_SCHEMA,
    )
