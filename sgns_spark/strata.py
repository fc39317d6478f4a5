"""Word groups and strata: how one round's pairs split into blocks that train in parallel.

With S shards the vocabulary falls into S groups. A pair's block is (input group g, stratum
k), where k = group(center) - group(context) mod S. The S blocks of one stratum touch
disjoint rows: block (g, k) reads and writes the input rows of group g and the output rows of
group g + k, its noise words included. So the S tasks of a stratum run in parallel and their
results are exact: every row has one owner, and the merge is a union, not an average. A
round visits the S strata in turn (DSGD, Gemulla et al. 2011).

Ids follow descending count, so dealing them out in snake order (0, 1, .., S-1, S-1, .., 0,
0, 1, ..) balances the groups on kept tokens, which is also their share of pairs.

Noise words of block (g, k) are drawn from group g + k only. Each is weighted so that a
row's expected noise over the strata equals that of plain SGNS: a pair meets group t's noise
at weight k P_n(t) / C(t) per noise sample, where P_n(t) is the group's noise mass and C(t)
its share of centers, i.e. of pairs.
"""

from __future__ import annotations

import numpy as np


def word_groups(ids: np.ndarray, groups: int) -> np.ndarray:
    """``(n,) int32``: the group of each word id, dealt out in snake order."""
    turn = np.asarray(ids, dtype=np.int64) % (2 * groups)  # (n,)
    return np.where(turn < groups, turn, 2 * groups - 1 - turn).astype(np.int32)


def pair_strata(context_group: np.ndarray, center_group: np.ndarray, groups: int) -> np.ndarray:
    """``(pairs,) int32``: the stratum of each (context, center) pair."""
    return ((center_group - context_group) % groups).astype(np.int32)


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
