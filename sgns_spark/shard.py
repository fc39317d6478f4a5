"""Executor side of a training round: one shard's sentences, its parameter rows, local SGD.

Pure functions of Arrow tables and a `RoundPlan`. A shard first names the rows it needs
(`needed_rows`), receives exactly those through a Spark join, trains on them
(`train_shard`), and emits every row it touched with its touch counts, plus one statistics
row with id `STATISTICS_ROW_ID`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sgns_spark.arrow import list_lengths, lists_to_matrix, matrix_to_lists
from sgns_spark.config import TrainSettings
from sgns_spark.kernel import pairs_per_position, sgns_step
from sgns_spark.memory import peak_rss_mib
from sgns_spark.sampling import (
    NoiseSampler,
    ShardSamples,
    context_window,
    draw_shard_samples,
    shard_generators,
)

STATISTICS_ROW_ID = -1
MAX_STEP_SCALE = 4.0  # bound of the averaging compensation; see averaging_step_scales
LOSS_SAMPLE_INTERVAL = 8  # the loss is computed on every 8th minibatch, an estimate for all
NEEDED_SCHEMA = pa.schema([("shard_key", pa.int32()), ("shard", pa.int32()), ("id", pa.int32())])
UPDATE_SCHEMA = pa.schema([
    ("id", pa.int32()),
    ("w_in", pa.list_(pa.float32())),
    ("touch_in", pa.int64()),
    ("w_out", pa.list_(pa.float32())),
    ("touch_out", pa.int64()),
    ("loss", pa.float64()),  # statistics row only: summed pair loss (sampled), NaN if parameters blew up
    ("pairs", pa.int64()),  # statistics row only
    ("words", pa.int64()),  # statistics row only: raw tokens of the shard's slice
    ("worker_peak_rss_mib", pa.float64()),  # statistics row only: this Python worker's peak
    ("worker_python", pa.string()),  # statistics row only: the executor's Python interpreter
])


@dataclass(frozen=True)
class RoundPlan:
    """What every shard of one round needs to know, shipped to executors by value.

    ``counts``, ``keep_probability`` and ``noise_weights`` are Spark broadcasts of the
    vocabulary's ``(vocab,)`` columns; ``words_before`` and ``words_total`` place this round on
    the global learning-rate schedule (raw tokens, over all epochs).
    """

    settings: TrainSettings
    epoch: int
    round_index: int
    counts: object
    keep_probability: object
    noise_weights: object
    words_before: float
    words_in_round: float
    words_total: float

    def learning_rate(self, fraction_done: float) -> float:
        """Linear decay on the global word count, floored at start x min ratio (word2vec.c)."""
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


def shard_samples(sentences: pa.Table, plan: RoundPlan) -> tuple[ShardSamples, int, int]:
    """The shard's draws for this round, its shard number and its raw token count."""
    shard = int(sentences.column("shard")[0].as_py())
    word_ids, sentence_index = shard_tokens(sentences)
    settings = plan.settings
    samples = draw_shard_samples(
        word_ids, sentence_index, plan.keep_probability.value,
        NoiseSampler(plan.noise_weights.value), settings.window, settings.batch_centers,
        settings.noise_pool, shard_generators(settings.seed, plan.epoch, plan.round_index, shard),
    )
    return samples, shard, word_ids.size


def needed_rows(sentences: pa.Table, plan: RoundPlan) -> pa.Table:
    """Executor side: the ids whose rows the shard will read or write this round."""
    samples, shard, _ = shard_samples(sentences, plan)
    ids = np.unique(np.concatenate([samples.word_ids, samples.noise_ids.reshape(-1)]))
    shard_key = sentences.column("shard_key")[0].as_py()
    return pa.table(
        {"shard_key": pa.array(np.full(ids.size, shard_key, dtype=np.int32)),
         "shard": pa.array(np.full(ids.size, shard, dtype=np.int32)),
         "id": pa.array(ids.astype(np.int32))},
        schema=NEEDED_SCHEMA,
    )


def train_shard(sentences: pa.Table, rows: pa.Table, plan: RoundPlan) -> pa.Table:
    """Executor side: local SGD over the shard's slice; emit touched rows and statistics.

    Parameters
    ----------
    sentences : pyarrow.Table
        ``shard int, sentence_key long, ids array<int>``, the shard's slice of this round.
    rows : pyarrow.Table
        ``shard int, id int, w_in array<float>, w_out array<float>``: exactly the rows of
        `needed_rows`.
    plan : RoundPlan
    """
    samples, _, raw_tokens = shard_samples(sentences, plan)
    settings = plan.settings
    dim, window = settings.dim, settings.window
    local_ids = rows.column("id").to_numpy().astype(np.int64)  # (local,)
    order = np.argsort(local_ids)
    local_ids = local_ids[order]
    input_vectors = lists_to_matrix(rows.column("w_in"), dim)[order]  # (local, dim) float32
    output_vectors = lists_to_matrix(rows.column("w_out"), dim)[order]  # (local, dim) float32
    input_scale, output_scale = averaging_step_scales(local_ids, plan)  # (local,) float32 each
    local_row_of_id = np.zeros(plan.counts.value.size, dtype=np.int64)  # (vocab,)
    local_row_of_id[local_ids] = np.arange(local_ids.size)
    center_rows = local_row_of_id[samples.word_ids]  # (kept,) local row per token
    noise_rows = local_row_of_id[samples.noise_ids]  # (minibatches, pool)
    local_rows = local_ids.size
    touch_in = np.zeros(local_rows, dtype=np.int64)
    touch_out = np.zeros(local_rows, dtype=np.int64)
    loss, pairs, sampled_pairs = 0.0, 0, 0
    for batch_number, start in enumerate(range(0, center_rows.size, settings.batch_centers)):
        stop = min(start + settings.batch_centers, center_rows.size)
        positions, mask = context_window(
            samples.sentence_index, samples.reduced_window, window, start, stop
        )  # (B + 2W,), (B, 2W + 1)
        window_rows = center_rows[positions]  # (B + 2W,)
        centers, pool = center_rows[start:stop], noise_rows[batch_number]  # (B,), (pool,)
        fraction_done = samples.token_position[start] / max(raw_tokens, 1)
        with_loss = batch_number % LOSS_SAMPLE_INTERVAL == 0
        loss += sgns_step(
            input_vectors, output_vectors, window_rows, mask, centers, pool,
            settings.negative, plan.learning_rate(fraction_done), input_scale, output_scale, with_loss,
        )
        contexts_per_center = mask.sum(axis=1)  # (B,)
        batch_pairs = int(contexts_per_center.sum())
        pairs += batch_pairs
        sampled_pairs += batch_pairs if with_loss else 0
        touch_in += np.bincount(window_rows, weights=pairs_per_position(mask), minlength=local_rows).astype(np.int64)
        touch_out += np.bincount(centers, weights=contexts_per_center, minlength=local_rows).astype(np.int64)
        touch_out += np.bincount(pool, minlength=local_rows) * batch_pairs  # every pair meets the pool
    loss *= pairs / max(sampled_pairs, 1)  # the sampled batches' loss, scaled to all pairs
    if not (np.isfinite(input_vectors).all() and np.isfinite(output_vectors).all()):
        loss = float("nan")
    return updates_table(local_ids, input_vectors, touch_in, output_vectors, touch_out,
                         loss, pairs, raw_tokens)


def averaging_step_scales(local_ids: np.ndarray, plan: RoundPlan) -> tuple[np.ndarray, np.ndarray]:
    """Per-row step factors that offset the dilution of averaging shards.

    Averaging k shards that each saw 1/k of a row's updates moves the row about 1/k as far
    as serial SGD would. So a shard scales a row's steps by the expected number of *other*
    shards touching the row this round, ``(S - 1)(1 - exp(-lambda))`` with ``lambda`` the
    row's expected touches per shard, on top of its own step. A rare row, touched by one
    shard only, keeps the plain step (factor 1).

    The extra part is divided by ``1 + mu``, with ``mu`` the row's expected touches per
    minibatch: a row repeated within a minibatch already takes the sum of many gradients
    computed from the same stale values, and scaling those up diverged (measured: frequent
    rows at factor 2 to 8). Mid-frequency rows, which matter most for quality, are seldom
    repeated in a minibatch and get nearly the full factor. The factor is capped at
    `MAX_STEP_SCALE`. With the kernel's curvature limit, simulated 1-epoch runs on the
    benchmark corpus gave, at 4 shards, 9.2% analogy with cap 2 and 12.3% with cap 4; at 16
    shards, 2.1% (cap 2), 4.7% (cap 4), 5.4% (cap 8), and cap 16 diverged. Cap 4 keeps a margin
    from divergence. With 2 shards the factor is at most 2, so the cap does not bind there.

    Returns
    -------
    tuple of numpy.ndarray
        ``(local,) float32`` factors for the input rows and for the output rows.
    """
    settings = plan.settings
    slices = settings.num_shards * settings.rounds_per_epoch
    kept_counts = plan.counts.value * plan.keep_probability.value  # (vocab,) expected kept
    kept_share = kept_counts[local_ids] / kept_counts.sum()  # (local,) share of kept tokens
    batches_per_shard = kept_counts.sum() / slices / settings.batch_centers
    pool_share = plan.noise_weights.value[local_ids] * settings.noise_pool  # (local,) per minibatch
    per_shard_as_word = kept_counts[local_ids] / slices  # (local,) expected occurrences
    per_shard_as_noise = pool_share * batches_per_shard
    per_batch_as_context = kept_share * settings.batch_centers * 2 * settings.window
    per_batch_as_output = kept_share * settings.batch_centers + pool_share
    other_shards = settings.num_shards - 1
    input_scale = 1.0 + other_shards * -np.expm1(-per_shard_as_word) / (1.0 + per_batch_as_context)
    output_scale = 1.0 + other_shards * -np.expm1(-(per_shard_as_word + per_shard_as_noise)) / (
        1.0 + per_batch_as_output
    )
    return (np.minimum(input_scale, MAX_STEP_SCALE).astype(np.float32),
            np.minimum(output_scale, MAX_STEP_SCALE).astype(np.float32))


def updates_table(
    ids, input_vectors, touch_in, output_vectors, touch_out, loss: float, pairs: int, words: int
) -> pa.Table:
    """The touched rows, then one statistics row."""
    touched = (touch_in > 0) | (touch_out > 0)
    count = int(touched.sum())
    dim = input_vectors.shape[1]
    empty_vector = np.zeros((1, dim), dtype=np.float32)
    return pa.table(
        {
            "id": pa.array(np.append(ids[touched], STATISTICS_ROW_ID).astype(np.int32)),
            "w_in": matrix_to_lists(np.concatenate([input_vectors[touched], empty_vector])),
            "touch_in": pa.array(np.append(touch_in[touched], 0)),
            "w_out": matrix_to_lists(np.concatenate([output_vectors[touched], empty_vector])),
            "touch_out": pa.array(np.append(touch_out[touched], 0)),
            "loss": pa.array(np.append(np.zeros(count), loss)),
            "pairs": pa.array(np.append(np.zeros(count, dtype=np.int64), pairs)),
            "words": pa.array(np.append(np.zeros(count, dtype=np.int64), words)),
            "worker_peak_rss_mib": pa.array(np.append(np.zeros(count), peak_rss_mib())),
            "worker_python": pa.array([""] * count + [sys.executable], pa.string()),
        },
        schema=UPDATE_SCHEMA,
    )
