"""Random draws of SGNS, vectorized and seeded: subsampling, shrunk windows, noise words,
and the skip-gram pairs they give.

Every draw comes from a generator seeded by (seed, epoch, round, stream, index), never by
time, task attempt or partition order, so a retried task draws the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUBSAMPLE_STREAM, WINDOW_STREAM, NOISE_STREAM = 0, 1, 2  # one independent stream per kind of draw
SENTENCE_ORDER_STREAM, SOURCE_ORDER_STREAM = 3, 4  # the order a block trains its sentences in
GUIDE_BUCKETS_PER_WORD = 4  # guide-table size per vocabulary word; more = fewer steps per draw


def seeded_generator(seed: int, epoch: int, round_index: int, stream: int, index: int) -> np.random.Generator:
    """The generator of one stream of draws; `index` tells apart the tasks of a round.

    The key always has five entries: numpy's SeedSequence pads short keys with zeros, so
    keys of different lengths could collide.
    """
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, round_index, stream, index]))


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


def run_start_flags(*keys: np.ndarray) -> np.ndarray:
    """``(n,) bool``: where a run of equal consecutive entries (of all `keys` at once) begins.

    Empty keys give an empty result, not the single start ``np.r_[True, ...]`` would.
    """
    starts = np.zeros(keys[0].size, dtype=bool)
    starts[:1] = True
    for key in keys:
        starts[1:] |= key[1:] != key[:-1]
    return starts


@dataclass(frozen=True)
class SkipgramPairs:
    """The (context, center) pairs of a token stream, ordered by context position.

    Attributes
    ----------
    context_ids : (pairs,) int32, the input word of each pair (word2vec.c's syn0 row)
    center_ids : (pairs,) int32, the output word of each pair (word2vec.c's syn1neg row)
    context_position : (pairs,) int64, position of the context in the kept stream
    kept_tokens : int, tokens that survived subsampling
    """

    context_ids: np.ndarray
    center_ids: np.ndarray
    context_position: np.ndarray
    kept_tokens: int


def skipgram_pairs(
    word_ids: np.ndarray,
    sentence_index: np.ndarray,
    keep_probability: np.ndarray,
    window: int,
    subsample_generator: np.random.Generator,
    window_generator: np.random.Generator,
) -> SkipgramPairs:
    """Subsample a token stream, shrink each center's window uniformly to 1..`window` (as
    word2vec.c does), and list every (context, center) pair within a sentence.

    The window spans subsampled-away words, as in word2vec.c. Pairs of one context position
    keep the order of their offsets (-1, +1, -2, +2, ...), so the result is a function of
    the stream and the generators only.

    Parameters
    ----------
    word_ids : numpy.ndarray
        ``(tokens,) int32`` the tokens, sentence after sentence.
    sentence_index : numpy.ndarray
        ``(tokens,) int64`` sentence of each token.
    keep_probability : numpy.ndarray
        ``(vocab,) float64`` the vocabulary's ``keep_prob``.
    """
    kept = subsample_generator.random(word_ids.size) < keep_probability[word_ids]
    kept_ids, kept_sentence = word_ids[kept], sentence_index[kept]  # (kept,) each
    reach = window_generator.integers(1, window + 1, size=kept_ids.size)  # (kept,) each center's window
    reach = np.append(reach, 0).astype(np.int8)  # (kept + 1,) the extra entry: no window
    distances = np.repeat(np.arange(1, window + 1), 2).astype(np.int8)  # (2W,) 1, 1, 2, 2, ..
    offsets = distances * np.tile([-1, 1], window).astype(np.int32)  # (2W,) center minus context
    new_sentence = run_start_flags(kept_sentence)  # (kept,)
    starts = np.flatnonzero(new_sentence)  # (sentences,)
    sentence_of = np.cumsum(new_sentence) - 1  # (kept,)
    first = starts[sentence_of].astype(np.int32)[:, None]  # (kept, 1) first position of the sentence
    last = np.r_[starts[1:] - 1, kept_ids.size - 1][sentence_of].astype(np.int32)[:, None]
    center = np.arange(kept_ids.size, dtype=np.int32)[:, None] + offsets  # (kept, 2W)
    center = np.where((center >= first) & (center <= last), center, kept_ids.size)  # outside -> no window
    # (pairs,) row-major: by context, then offset; flat, so that the centers are one 1-D gather
    flat_pair = np.flatnonzero(reach[center] >= distances)
    context_position = flat_pair // distances.size  # (pairs,)
    return SkipgramPairs(
        context_ids=kept_ids[context_position],
        center_ids=kept_ids[center.reshape(-1)[flat_pair]],
        context_position=context_position,
        kept_tokens=int(kept_ids.size),
    )
