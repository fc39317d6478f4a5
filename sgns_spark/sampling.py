"""Random draws of SGNS, vectorized and seeded: subsampling, shrunk windows, noise words.

Every draw of a shard in a round comes from generators seeded by (seed, epoch, round, shard),
never by time, task attempt or partition order, so a retried task draws the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STREAMS = ("subsample", "window", "noise")  # one independent generator per kind of draw


def shard_generators(seed: int, epoch: int, round_index: int, shard: int) -> dict[str, np.random.Generator]:
    """Independent generators, one per name in `STREAMS`, for one shard in one round."""
    sequence = np.random.SeedSequence([seed, epoch, round_index, shard])
    return {
        name: np.random.default_rng(child)
        for name, child in zip(STREAMS, sequence.spawn(len(STREAMS)), strict=True)
    }


class NoiseSampler:
    """Draws word ids from the noise distribution P_n(w) ~ count(w)^alpha.

    Parameters
    ----------
    noise_weights : numpy.ndarray
        ``(vocab,) float64`` probabilities (the vocabulary's ``noise_weight``), summing to 1.
    """

    def __init__(self, noise_weights: np.ndarray):
        self.cumulative = np.cumsum(noise_weights)  # (vocab,) float64
        self.cumulative /= self.cumulative[-1]

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        """Return ids of the given shape, int64, by inverse-CDF search."""
        uniform = rng.random(shape)
        ids = np.searchsorted(self.cumulative, uniform, side="right")
        return np.minimum(ids, self.cumulative.size - 1)


@dataclass(frozen=True)
class ShardSamples:
    """One shard's draws for one round, over its kept tokens.

    Attributes
    ----------
    word_ids : (kept,) int32, the tokens that survived subsampling, in corpus order
    sentence_index : (kept,) int64, which sentence each kept token belongs to
    token_position : (kept,) int64, each kept token's position in the shard's raw token stream
    reduced_window : (kept,) int64, each center's window, uniform in 1..window
    noise_ids : (kept, negative) int64, the noise words shared by each center's contexts
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
    negative: int,
    generators: dict[str, np.random.Generator],
) -> ShardSamples:
    """Subsample a shard's tokens, then draw each kept center's window and noise words.

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
    return ShardSamples(
        word_ids=word_ids[kept],
        sentence_index=sentence_index[kept],
        token_position=kept_positions,
        reduced_window=generators["window"].integers(1, window + 1, size=kept_positions.size),
        noise_ids=noise.draw(generators["noise"], (kept_positions.size, negative)),
    )


def context_positions(
    sentence_index: np.ndarray, reduced_window: np.ndarray, window: int, start: int, stop: int
) -> np.ndarray:
    """Positions (in the kept stream) of the contexts of centers ``start..stop-1``.

    A context lies within the center's reduced window and in the same sentence; the
    window spans subsampled-away words, as in word2vec.c.

    Returns
    -------
    numpy.ndarray
        ``(stop - start, 2 * window) int64``; -1 marks an empty slot.
    """
    offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])  # (2 window,)
    centers = np.arange(start, stop)  # (batch,)
    positions = centers[:, None] + offsets  # (batch, 2 window)
    inside = (positions >= 0) & (positions < sentence_index.size)
    clipped = np.clip(positions, 0, sentence_index.size - 1)
    valid = (
        inside
        & (np.abs(offsets) <= reduced_window[start:stop, None])
        & (sentence_index[clipped] == sentence_index[start:stop, None])
    )
    return np.where(valid, positions, -1)
