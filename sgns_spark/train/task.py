"""Executor side of training: a round's pairs cut into blocks, and local SGD on one block.

Pure functions of Arrow tables, numpy arrays and small frozen plans; no Spark objects (the
driver unwraps broadcasts before calling them). Records travel between tasks as tuples:

* ``Rows(side, group, ids, vectors)``: some rows of one side of one word group;
* ``Pairs(stratum, source, part, context_rows, context_pairs, center_rows)``: one part of the
  block of (stratum, context group) from one source (`source_bounds`), context positions in the
  source's training order (`sentence_tokens`); words as their rows in their groups (`group_rows`),
  in the smallest unsigned type that holds them.

Every draw comes from a generator keyed by the schedule position (seed, epoch, round, stream,
index), and records are sorted before use, so a retried task produces identical rows.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from sgns_spark.arrow import list_lengths
from sgns_spark.config import TrainSettings
from sgns_spark.memory import peak_rss_mib
from sgns_spark.train.kernel import CarriedRows, PairTiles, RowScratch, sgns_step
from sgns_spark.train.sampling import (
    NOISE_STREAM,
    SENTENCE_ORDER_STREAM,
    SOURCE_ORDER_STREAM,
    SUBSAMPLE_STREAM,
    WINDOW_STREAM,
    NoiseSampler,
    run_start_flags,
    seeded_generator,
    skipgram_pairs,
)
from sgns_spark.train.schedule import (
    INPUT_SIDE,
    OUTPUT_SIDE,
    decay,
    group_rows,
    owner_task,
    pair_strata,
    word_groups,
)

MAX_PART_PAIRS = 1 << 20  # pairs per Pairs record at most, so no record nears 2 GB
# vector bytes per Rows record at most (2,621 rows at dim 100): every record crosses the JVM as one
# byte array, and records of 26 MB (65,536 rows) ran a 2g local driver out of heap as Parquet wrote
# and read a round of a 220k-word model, in pages of up to a whole task's rows (measured)
MAX_CHUNK_BYTES = 1 << 20
LOSS_SAMPLE_INTERVAL = 8  # the loss is computed on every 8th minibatch, an estimate for all
TILED_MINIBATCHES = 64  # minibatches whose tiles are built at once (`PairTiles.of_minibatches`); measured
SOURCE_SHIFT = 24  # source = scan partition << 24 | source number within it
# a source's sentences start within this many tokens of its first: its pairs' arrays stay in the cache
# (pair generation took 30% less time than from sources of 2^24 tokens; measured)
MAX_SOURCE_TOKENS = 1 << 18
# the parts of a task's own time: making pairs from sentences; taking in a phase's records (their
# deserialization included) and sorting its rows; the kernel's minibatches; keying rows for the next phase
TASK_PARTS = ("pairs", "receive", "kernel", "send")


class Rows(NamedTuple):
    side: int
    group: int
    ids: np.ndarray  # (n,) int32, ascending
    vectors: np.ndarray  # (n, dim) float32


class Pairs(NamedTuple):
    stratum: int
    source: int
    part: int
    context_rows: np.ndarray  # (units,) unsigned: the input row of each context position in its group
    context_pairs: np.ndarray  # (units,) unsigned: its number of pairs
    center_rows: np.ndarray  # (pairs,) unsigned: the output row of each pair in its group, unit after unit


@dataclass(frozen=True)
class RoundPlan:
    """What every task of one round needs: the settings and the round's place in the schedule."""

    settings: TrainSettings
    epoch: int
    number: int  # the round's number in the run (1 = first)
    groups: int
    progress_start: float  # words trained before the round, in epochs
    progress_span: float


@dataclass(frozen=True)
class PhasePlan:
    """One phase of a round, and where its rows go next (the next phase may be the next round's)."""

    round: RoundPlan
    phase: int
    next_groups: int
    next_phase: int

    def decay(self, fraction_of_phase: float) -> float:
        """The learning rates' factor (`sgns_spark.train.schedule.decay`) on the global (expected)
        word count."""
        share = (self.phase + fraction_of_phase) / self.round.groups  # of the round
        return decay(self.round.settings, self.round.progress_start + self.round.progress_span * share)


def key_ordered(sentences: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """The sentences in sentence-key order, never arrival order (a hash repartition scrambles it)."""
    return sentences.take(pa.array(np.argsort(sentences.column("sentence_key").to_numpy(), kind="stable")))


def sentence_tokens(sentences: pa.Table, order: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of the sentences in their training order, and each token's sentence.

    The order is a permutation drawn by `order` of the sentences' key order (`key_ordered`), so
    it depends on the draws, never on arrival order. Not key order itself: keys follow the
    corpus, whose neighbouring sentences share a topic, and SGD trained in that order ends
    pulled towards the last topics it saw (the reference trainer on a corpus of books, 1 epoch:
    MEN 0.110 in the corpus's order, 0.162 with its lines shuffled; bench/RESULTS.md).

    Returns ``(tokens,) int32`` word ids and ``(tokens,) int64`` sentence indices.
    """
    key_ordered_ids = key_ordered(sentences).column("ids").combine_chunks()
    ids_column = key_ordered_ids.take(pa.array(order.permutation(len(key_ordered_ids))))
    lengths = list_lengths(ids_column)  # (sentences,)
    word_ids = ids_column.flatten().to_numpy(zero_copy_only=False).astype(np.int32)
    return word_ids, np.repeat(np.arange(lengths.size), lengths)


def source_bounds(sentence_lengths: np.ndarray, max_tokens: int = MAX_SOURCE_TOKENS) -> Iterator[tuple[int, int]]:
    """A batch's sources of pairs (`source_pairs`): ``(start, stop)`` of the runs of consecutive
    sentences that start within the same `max_tokens` tokens of the batch (a longer sentence is a
    source of its own)."""
    tokens_before = np.cumsum(sentence_lengths) - sentence_lengths  # (sentences,)
    starts = np.flatnonzero(run_start_flags(tokens_before // max_tokens))  # (sources,)
    bounds = np.r_[starts, sentence_lengths.size]  # (sources + 1,)
    yield from zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)


@functools.lru_cache(maxsize=4)
def word_lookups(vocab_size: int, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """``(vocab,)`` each word's group (`word_groups`) and its row in it (`group_rows`), read-only.

    A gather beats the arithmetic per pair. The rows are in the smallest unsigned type that holds
    a group's rows (under half the pairs' bytes at 2 groups of 34k words). Built once per worker
    process and round shape, not per source: at 2M words they take 37 ms, about a third of a
    256k-token source's pairs.
    """
    words = np.arange(vocab_size)  # (vocab,)
    group_of_word = word_groups(words, groups)
    row_of_word = group_rows(words, groups).astype(np.min_scalar_type(-(-vocab_size // groups)))
    group_of_word.flags.writeable = row_of_word.flags.writeable = False
    return group_of_word, row_of_word


def source_pairs(sentences: pa.Table, source: int, plan: RoundPlan, keep_probability: np.ndarray
                 ) -> Iterator[tuple[int, Pairs]]:
    """One source's pairs of the round, as ``(task, Pairs)`` of each non-empty block part.

    Parameters
    ----------
    sentences : pyarrow.Table
        ``sentence_key long, ids array<int>``: some of the round's sentences.
    source : int
        The source's number, unique within the round (`SOURCE_SHIFT`).
    """
    settings, groups = plan.settings, plan.groups
    key = (settings.seed, plan.epoch, plan.number)
    word_ids, sentence_index = sentence_tokens(sentences, seeded_generator(*key, SENTENCE_ORDER_STREAM, source))
    pairs = skipgram_pairs(word_ids, sentence_index, keep_probability, settings.window,
                           seeded_generator(*key, SUBSAMPLE_STREAM, source),
                           seeded_generator(*key, WINDOW_STREAM, source))
    if not pairs.center_ids.size:  # every sentence kept at most one word
        return
    group_of_word, row_of_word = word_lookups(keep_probability.size, groups)
    pair_count_type = np.min_scalar_type(2 * settings.window)  # a context position's pairs at most
    context_group = group_of_word[pairs.context_ids]  # (pairs,)
    stratum = pair_strata(context_group, group_of_word[pairs.center_ids], groups)  # (pairs,)
    # each pair's block, in the smallest unsigned type that holds every block: within a block, pairs
    # stay in context-position order, and numpy's stable sort of integers of at most 16 bits is a
    # radix sort, 6x faster here than of int64
    key_type = np.min_scalar_type(groups * groups - 1)
    block_key = stratum.astype(key_type) * key_type.type(groups) + context_group.astype(key_type)  # (pairs,)
    order = np.argsort(block_key, kind="stable")  # (pairs,)
    block_key, position = block_key[order], pairs.context_position[order]  # (pairs,) each
    unit_start = np.flatnonzero(run_start_flags(block_key, position))  # (units,)
    unit_bounds = np.r_[unit_start, order.size]  # (units + 1,) each unit's first pair, then the end
    unit_pairs = np.diff(unit_bounds)  # (units,)
    unit_block = block_key[unit_start]  # (units,)
    # a unit's pairs share its context: its row is looked up once, at the unit's first pair
    context_rows = row_of_word[pairs.context_ids[order[unit_start]]]  # (units,)
    center_rows = row_of_word[pairs.center_ids[order]]  # (pairs,)
    # a block is cut into parts of at most MAX_PART_PAIRS pairs, between units
    block_start = np.flatnonzero(run_start_flags(unit_block))  # (blocks,) first unit of each block
    for first, stop in zip(block_start, np.r_[block_start[1:], unit_block.size], strict=True):
        stratum_of_block, task = divmod(int(unit_block[first]), groups)
        pairs_before = np.cumsum(unit_pairs[first:stop]) - unit_pairs[first:stop]  # (block units,)
        part_of_unit = pairs_before // MAX_PART_PAIRS  # (block units,) ascending
        part_start = np.flatnonzero(run_start_flags(part_of_unit))  # (parts,)
        for part_first, part_stop in zip(part_start, np.r_[part_start[1:], part_of_unit.size], strict=True):
            units = slice(first + part_first, first + part_stop)
            yield task, Pairs(stratum_of_block, source, int(part_of_unit[part_first]), context_rows[units],
                              unit_pairs[units].astype(pair_count_type),
                              center_rows[unit_bounds[units.start] : unit_bounds[units.stop]])


@dataclass(frozen=True)
class LocalRows:
    """One side of a task's rows: every word of one group in id order, so a word's row is
    `group_rows`'s."""

    ids: np.ndarray  # (local,) int64, ascending
    vectors: np.ndarray  # (local, dim) float32


def local_rows(chunks: list[Rows], dim: int) -> LocalRows:
    """A side's rows in id order, whatever order their chunks arrived in."""
    chunks = sorted(chunks, key=lambda chunk: int(chunk.ids[0]) if chunk.ids.size else -1)
    ids = joined([chunk.ids for chunk in chunks])
    vectors = np.concatenate([chunk.vectors for chunk in chunks] + [np.zeros((0, dim), np.float32)])
    order = np.argsort(ids, kind="stable")
    return LocalRows(ids[order], np.ascontiguousarray(vectors[order]))


@dataclass
class PhaseStatistics:
    """What the training's tasks report to the driver (summed by an accumulator).

    ``seconds`` is the tasks' own time by part (`TASK_PARTS`), summed over tasks.
    """

    loss: float = 0.0
    pairs: int = 0
    worker_peak_rss_mib: float = 0.0
    worker_python: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, other: PhaseStatistics) -> PhaseStatistics:
        seconds = {part: self.seconds.get(part, 0.0) + other.seconds.get(part, 0.0)
                   for part in {**self.seconds, **other.seconds}}
        return PhaseStatistics(self.loss + other.loss, self.pairs + other.pairs,
                               max(self.worker_peak_rss_mib, other.worker_peak_rss_mib),
                               max(self.worker_python, other.worker_python), seconds)


def train_phase(task: int, records: Iterable[Rows | Pairs], plan: PhasePlan, noise_weights: np.ndarray,
                noise_scale: np.ndarray, carried: np.ndarray | None = None
                ) -> tuple[list[tuple[int, Rows]], PhaseStatistics]:
    """Local SGD over one task's block of a phase; return its rows keyed by their next owner.

    Parameters
    ----------
    task : int
        The task's number: its input group.
    records : iterable of Rows and Pairs
        The input rows of group `task`, the output rows of group `task` + phase, and the round's
        pairs of this task (those of the phase's stratum are used).
    noise_weights : numpy.ndarray
        ``(vocab,)`` P_n of every word.
    noise_scale : numpy.ndarray
        ``(groups,)`` `sgns_spark.train.schedule.noise_scales` of the round.
    carried : numpy.ndarray, optional
        ``(vocab,) bool`` the words a warm start carried over, which learn from
        ``warm_start_learning_rate``.
    """
    settings = plan.round.settings
    started = time.perf_counter()
    rows = {INPUT_SIDE: [], OUTPUT_SIDE: []}
    parts = []
    for record in records:
        if isinstance(record, Rows):
            rows[record.side].append(record)
        elif record.stratum == plan.phase:
            parts.append(record)
    inputs = local_rows(rows[INPUT_SIDE], settings.dim)
    outputs = local_rows(rows[OUTPUT_SIDE], settings.dim)
    parts = training_order(parts, plan.round)
    received = time.perf_counter()
    loss, pairs = train_block(inputs, outputs, parts, plan, noise_weights, noise_scale, task, carried)
    if not (np.isfinite(inputs.vectors).all() and np.isfinite(outputs.vectors).all()):
        loss = float("nan")
    trained = time.perf_counter()
    keyed = [*next_owners(inputs, INPUT_SIDE, plan), *next_owners(outputs, OUTPUT_SIDE, plan)]
    seconds = {"receive": received - started, "kernel": trained - received, "send": time.perf_counter() - trained}
    return keyed, PhaseStatistics(loss, pairs, peak_rss_mib(), sys.executable, seconds)


def training_order(parts: list[Pairs], plan: RoundPlan) -> list[Pairs]:
    """A block's parts in the order it trains them: its sources in an order drawn from the
    round's seed (not their numbers, which follow the corpus: `sentence_tokens`), each source's
    parts in turn."""
    key = (plan.settings.seed, plan.epoch, plan.number, SOURCE_ORDER_STREAM)
    rank = {source: seeded_generator(*key, source).random() for source in {part.source for part in parts}}
    return sorted(parts, key=lambda part: (rank[part.source], part.source, part.part))


def train_block(inputs: LocalRows, outputs: LocalRows, parts: list[Pairs], plan: PhasePlan,
                noise_weights: np.ndarray, noise_scale: np.ndarray, task: int, carried: np.ndarray | None
                ) -> tuple[float, int]:
    """Minibatches of `batch_pairs` pairs over the block, in order; return the loss and pairs."""
    settings = plan.round.settings
    unit_rows = joined([part.context_rows for part in parts])  # (units,)
    context_pairs = joined([part.context_pairs for part in parts])  # (units,)
    center_rows = joined([part.center_rows for part in parts])  # (pairs,)
    pairs = int(center_rows.size)
    if not pairs:
        return 0.0, 0
    groups = plan.round.groups
    noise_group = (task + plan.phase) % groups
    # the output rows are every word of the output group, in id order: the noise candidates
    noise = NoiseSampler(noise_weights[outputs.ids])
    noise_weight = settings.negative / settings.noise_pool * noise_scale[noise_group]
    unit_end = np.cumsum(context_pairs)  # (units,) pairs up to and including each unit
    batch_of_unit = (unit_end - 1) // settings.batch_pairs  # (units,)
    batch_start = np.flatnonzero(run_start_flags(batch_of_unit))  # (batches,)
    batch_stop = np.r_[batch_start[1:], unit_rows.size]
    batch_pair_bounds = np.r_[0, unit_end[batch_stop - 1]]  # (batches + 1,) each one's first pair, then all pairs
    generator = seeded_generator(settings.seed, plan.round.epoch, plan.round.number, NOISE_STREAM,
                                 plan.phase * groups + task)
    pools = noise.draw(generator, (batch_start.size, settings.noise_pool))  # (batches, pool) local rows
    carried_rows = None if carried is None else (carried[inputs.ids], carried[outputs.ids])  # (local,) each
    scratch = RowScratch.of(inputs.vectors, outputs.vectors,
                            int(np.diff(batch_pair_bounds).max()) + settings.noise_pool)
    loss, sampled_pairs = 0.0, 0
    for number, (first, stop) in enumerate(zip(batch_start, batch_stop, strict=True)):
        pair_first, pair_stop = batch_pair_bounds[number], batch_pair_bounds[number + 1]
        if number % TILED_MINIBATCHES == 0:  # the tiles of this and the next minibatches
            last = min(number + TILED_MINIBATCHES, batch_start.size) - 1
            tiles = iter(PairTiles.of_minibatches(
                context_pairs[first : batch_stop[last]], center_rows[pair_first : batch_pair_bounds[last + 1]],
                outputs.ids.size, batch_start[number : last + 1] - first))
        with_loss = number % LOSS_SAMPLE_INTERVAL == 0
        factor = plan.decay(pair_first / pairs)
        loss += sgns_step(
            inputs.vectors, outputs.vectors, unit_rows[first:stop], context_pairs[first:stop],
            center_rows[pair_first:pair_stop], pools[number], noise_weight, settings.learning_rate * factor,
            with_loss, carried=None if carried_rows is None else CarriedRows(
                *carried_rows, settings.warm_start_learning_rate * factor), tiles=next(tiles), scratch=scratch,
        )
        sampled_pairs += pair_stop - pair_first if with_loss else 0
    return loss * pairs / max(sampled_pairs, 1), pairs  # the sampled batches' loss, scaled to all pairs


def joined(arrays: list[np.ndarray]) -> np.ndarray:
    """The arrays end to end as int64 (row arithmetic on the compact types would overflow)."""
    return np.concatenate([*arrays, np.zeros(0, dtype=np.int64)]).astype(np.int64, copy=False)


def next_owners(rows: LocalRows, side: int, plan: PhasePlan) -> Iterator[tuple[int, Rows]]:
    """The rows keyed by the task that owns them in the next phase (`keyed_chunks`)."""
    return keyed_chunks(rows.ids, side, rows.vectors, plan.next_groups, plan.next_phase)


def keyed_chunks(ids: np.ndarray, side: int, vectors: np.ndarray, groups: int, phase: int
                 ) -> Iterator[tuple[int, Rows]]:
    """``(task, Rows)`` of some rows of one side, in chunks of one group each (of a round of
    `groups`) and of at most `MAX_CHUNK_BYTES` of vectors, keyed by the task that owns them in `phase`."""
    chunk_rows = max(1, MAX_CHUNK_BYTES // (vectors.itemsize * vectors.shape[1]))  # dim >= 1
    group = word_groups(ids, groups)  # (rows,)
    for value in np.unique(group):
        chosen = np.flatnonzero(group == value)
        owner = int(owner_task(int(value), side, phase, groups))
        for start in range(0, chosen.size, chunk_rows):
            piece = chosen[start : start + chunk_rows]
            yield owner, Rows(side, int(value), ids[piece].astype(np.int32), vectors[piece])
