"""The training schedule: which rows and pairs meet in which task, and when. Pure numpy.

Word groups and strata (DSGD, Gemulla et al. 2011). A round with G groups deals the word ids
into G groups in snake order (0, 1, .., G-1, G-1, .., 0, 0, 1, ..), which balances the groups
on kept tokens. A (context, center) pair belongs to stratum k = group(center) - group(context)
mod G. A round has G phases; in phase k, task g owns the input rows of group g and the output
rows of group g + k (`owner_task`), so the G blocks of stratum k touch disjoint rows and train
in parallel, and merging them is a union: no row ever has two owners.

Noise words of a block are drawn from its output group only, each weighted P_n(t) / C(t) (the
group's noise mass over its share of centers, `noise_scales`), so that over the phases a row
meets the same expected noise as in plain SGNS.

The rounds. The first ``warmup_fraction`` of the first epoch's sentences trains in a round of
one group (one task): independent blocks trained from random rows settle into unrelated
coordinate systems, and a short serial start gives them a shared one (simulated, 1 epoch of
the benchmark corpus with 2 rounds: 8 groups 6.5% analogy without it, 16 groups 6.3% without
and 12.4% with 5%). Every other round has ``num_shards``
groups, and each epoch has ``rounds_per_epoch`` of them. A sentence's round is a hash of its
key, the same in every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sgns_spark.config import TrainSettings

INPUT_SIDE, OUTPUT_SIDE = 0, 1  # a row is the input vector v (syn0) or the output vector v' (syn1neg)


def word_groups(ids: np.ndarray, groups: int) -> np.ndarray:
    """``(n,) int32``: the group of each word id, dealt out in snake order."""
    turn = np.asarray(ids, dtype=np.int64) % (2 * groups)  # (n,)
    return np.where(turn < groups, turn, 2 * groups - 1 - turn).astype(np.int32)


def group_rows(ids: np.ndarray, groups: int) -> np.ndarray:
    """``(n,) int64``: each word id's row in its group (`word_groups`), whose words are its rows in
    id order: the snake deals one word to every group from each run of `groups` consecutive ids."""
    return np.asarray(ids, dtype=np.int64) // groups


def pair_strata(context_group: np.ndarray, center_group: np.ndarray, groups: int) -> np.ndarray:
    """``(pairs,) int32``: the stratum of each (context, center) pair (a wrap, not a modulo: the
    groups' difference lies in (-groups, groups), and an integer division costs more)."""
    difference = center_group.astype(np.int32) - context_group.astype(np.int32, copy=False)  # (pairs,)
    return np.where(difference < 0, difference + np.int32(groups), difference)


def owner_task(group: np.ndarray | int, side: np.ndarray | int, phase: int, groups: int) -> np.ndarray | int:
    """The task that owns the rows of `group` on `side` in `phase`: input rows stay with the
    task of their group, output rows move one task down per phase."""
    return (group - side * phase) % groups


def noise_scales(kept_counts: np.ndarray, noise_weights: np.ndarray, groups: int) -> np.ndarray:
    """``(groups,) float64``: P_n(t) / C(t) for each group t, the factor on its noise weight.

    Parameters
    ----------
    kept_counts : numpy.ndarray
        ``(vocab,)`` expected kept tokens of each word (count x keep probability).
    noise_weights : numpy.ndarray
        ``(vocab,)`` P_n of each word, summing to 1.
    """
    group = word_groups(np.arange(kept_counts.size), groups)
    center_share = np.bincount(group, weights=kept_counts, minlength=groups) / kept_counts.sum()
    noise_mass = np.bincount(group, weights=noise_weights, minlength=groups)
    return np.divide(noise_mass, center_share, out=np.zeros(groups), where=center_share > 0)


@dataclass(frozen=True)
class Round:
    """One round of the schedule.

    ``number`` counts rounds from 1 over the whole run (0 is the initialisation). The round
    trains the sentences whose hash position (uniform in [0, 1)) lies in ``[low, high)``, with
    ``groups`` word groups (1 for the serial start). Positions are shares of an epoch's words
    in expectation, so ``epoch + low`` places the round on the learning-rate schedule.
    """

    number: int
    epoch: int
    index: int  # within the epoch
    groups: int
    low: float
    high: float

    @property
    def progress_start(self) -> float:
        """Words trained before this round, in epochs (expected)."""
        return self.epoch + self.low

    @property
    def progress_span(self) -> float:
        return self.high - self.low


def rounds(settings: TrainSettings) -> list[Round]:
    """Every round of the run, in order."""
    schedule: list[Round] = []
    for epoch in range(settings.epochs):
        start = settings.serial_start_share if epoch == 0 else 0.0
        slices = [(1, 0.0, start)] if start > 0 else []
        edges = start + (1.0 - start) * np.arange(settings.rounds_per_epoch + 1) / settings.rounds_per_epoch
        slices += [(settings.num_shards, float(low), float(high))
                   for low, high in zip(edges[:-1], edges[1:], strict=True)]
        for index, (groups, low, high) in enumerate(slices):
            schedule.append(Round(len(schedule) + 1, epoch, index, groups, low, high))
    return schedule


def decay(settings: TrainSettings, progress: float) -> float:
    """The learning rates' factor: linear over all epochs' words, from 1 at the start to
    ``min_learning_rate_ratio`` at the end of the last epoch. Every rate starts at
    ``learning_rate``, but a warm start's carried-over rows at ``warm_start_learning_rate``.

    `progress` is the words trained so far, in epochs.
    """
    return 1.0 - (1.0 - settings.min_learning_rate_ratio) * progress / settings.epochs
