"""Random draws of SGNS, vectorized and seeded: subsampling, shrunk windows, noise words.

Every draw of a shard in a round comes from generators seeded by (seed, epoch, round, shard),
never by time, task attempt or partition order, so a retried task draws the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

STREAMS = ("subsample", "window", "noise")  # one independent generator per kind of draw
OUTSIDE_SENTENCE = -1  # sentence index of positions beyond either end of the stream
GUIDE_BUCKETS_PER_WORD = 4  # guide-table size per vocabulary word; more = fewer steps per draw


def shard_generators(seed: int, epoch: int, round_index: int, shard: int) -> dict[str, np.random.Generator]:
    """Independent generators, one per name in `STREAMS`, for one shard in one round."""
    sequence = np.random.SeedSequence([seed, epoch, round_index, shard])
    return {
        name: np.random.default_rng(child)
        for name, child in zip(STREAMS, sequence.spawn(len(STREAMS)), strict=True)
    }


class NoiseSampler:
    """Draws word ids from the noise distribution P_n(w) ~ count(w)^alpha.

    Inverse-CDF sampling sped up by a guide table (Chen and Asau, 1974): bucket j of a uniform
    grid stores the first id whose cumulative probability exceeds j / buckets, so a draw starts
    there and rarely steps on. Draws equal ``searchsorted(cumulative, u, side="right")``.

    Parameters
    ----------
    noise_weights : numpy.ndarray
        ``(vocab,) float64`` probabilities (the vocabulary's ``noise_weight``), summing to 1.
    """

    def __init__(self, noise_weights: np.ndarray):
        self.cumulative = np.cumsum(noise_weights)  # (vocab,) float64
        self.cumulative /= self.cumulative[-1]
        buckets = GUIDE_BUCKETS_PER_WORD * self.cumulative.size
        self.buckets = buckets
        self.guide = np.searchsorted(self.cumulative, np.arange(buckets) / buckets, side="right")  # (buckets,)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Return ids of the given shape, int64."""
        uniform = rng.random(shape).reshape(-1)  # (draws,)
        ids = self.guide[(uniform * self.buckets).astype(np.int64)]  # (draws,) lower bounds
        last = self.cumulative.size - 1
        pending = np.flatnonzero(self.cumulative[np.minimum(ids, last)] <= uniform)
        while pending.size:
            ids[pending] += 1
            still = self.cumulative[np.minimum(ids[pending], last)] <= uniform[pending]
            pending = pending[still & (ids[pending] < last)]
        return np.minimum(ids, last).reshape(shape)


@dataclass(frozen=True)
class ShardSamples:
    """One shard's draws for one round, over its kept tokens.

    Attributes
    ----------
    word_ids : (kept,) int32, the tokens that survived subsampling, in corpus order
    sentence_index : (kept,) int64, which sentence each kept token belongs to
    token_position : (kept,) int64, each kept token's position in the shard's raw token stream
    reduced_window : (kept,) int64, each center's window, uniform in 1..window
    noise_ids : (minibatches, pool) int64, each minibatch's noise pool (see `sgns_spark.kernel`)
    """

    word_ids: np.ndarray
    sentence_index: np.ndarray
    token_position: np.ndarray
    reduced_window: np.ndarray
    noise_ids: np.ndarray


def draw_shard_samples(
    word_ids: np.ndarray,
    sentence_index: np.ndarray,
    keep_probability: np.ndarray,
    noise: NoiseSampler,
    window: int,
    batch_centers: int,
    noise_pool: int,
    generators: dict[str, np.random.Generator],
) -> ShardSamples:
    """Subsample a shard's tokens, then draw each kept center's window and each minibatch
    of `batch_centers` kept centers its pool of `noise_pool` noise words.

    Parameters
    ----------
    word_ids : numpy.ndarray
        ``(tokens,) int32`` the shard's tokens, sentence after sentence.
    sentence_index : numpy.ndarray
        ``(tokens,) int64`` sentence of each token.
    keep_probability : numpy.ndarray
        ``(vocab,) float64`` the vocabulary's ``keep_prob``.
    """
    kept = generators["subsample"].random(word_ids.size) < keep_probability[word_ids]
    kept_positions = np.flatnonzero(kept)  # (kept,)
    minibatches = -(-kept_positions.size // batch_centers)  # ceiling division
    return ShardSamples(
        word_ids=word_ids[kept],
        sentence_index=sentence_index[kept],
        token_position=kept_positions,
        reduced_window=generators["window"].integers(1, window + 1, size=kept_positions.size),
        noise_ids=noise.draw(generators["noise"], (minibatches, noise_pool)),
    )


def context_window(
    sentence_index: np.ndarray, reduced_window: np.ndarray, window: int, start: int, stop: int
) -> tuple[np.ndarray, np.ndarray]:
    """The context slots of centers ``start..stop-1`` (positions in the kept stream).

    Slot j of center i is position ``i + j - window``. It is a context when it lies within
    the center's reduced window, in the same sentence, and is not the center; the window
    spans subsampled-away words, as in word2vec.c.

    Returns
    -------
    positions : numpy.ndarray
        ``(stop - start + 2 window,) int64`` positions ``start - window .. stop + window - 1``,
        clipped into the stream (a clipped position is never a context).
    mask : numpy.ndarray
        ``(stop - start, 2 window + 1) bool``.
    """
    positions = np.arange(start - window, stop + window)  # (B + 2W,)
    inside = (positions >= 0) & (positions < sentence_index.size)
    clipped = np.clip(positions, 0, sentence_index.size - 1)
    position_sentence = np.where(inside, sentence_index[clipped], OUTSIDE_SENTENCE)  # (B + 2W,)
    slot_sentence = sliding_window_view(position_sentence, 2 * window + 1)  # (B, 2W + 1)
    offsets = np.arange(-window, window + 1)  # (2W + 1,)
    mask = (
        (slot_sentence == sentence_index[start:stop, None])
        & (np.abs(offsets) <= reduced_window[start:stop, None])
        & (offsets != 0)
    )
    return clipped, mask
