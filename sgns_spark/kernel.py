"""The SGNS update on one minibatch, in numpy only (this module never imports Spark).

Notation, mapped once to the paper and to word2vec.c:

* ``input_vectors``  = v, the input embeddings  = word2vec.c ``syn0``   (the published vectors)
* ``output_vectors`` = v', the output embeddings = word2vec.c ``syn1neg``

As in word2vec.c's skip-gram, a (center w, context c) pair scores the *input* row of the
context against the *output* row of the center (label 1) and of noise words (label 0).
Its k noise words are the minibatch's *noise pool*: M words drawn from P_n once per
minibatch, each weighted k / M, so the k-sample sum is replaced by k times its mean over
the pool (the same expectation, k E_n[log s(-v'_n . v_c)]):

    loss(w, c) = -[ log s(v'_w . v_c) + (k / M) sum_m log s(-v'_m . v_c) ]

Why a pool: every pair meets independent noise (sharing k noise words among one center's
contexts, as HogBatch does, pushes co-occurring words together by chance and cost 2.7
analogy points on the benchmark corpus), and the noise scores of the whole minibatch are
one dense matrix product. The noise term does not depend on the center, so it is computed
once per context position and weighted by the number of pairs that position is in.

A minibatch is a run of B consecutive centers: their contexts are windows over one
gathered block of P = B + 2W rows (a strided view, not a copy), and gradients of repeated
rows are summed. A row's summed step is limited by its summed curvature
(`curvature_step_limit`), so that frequent words, repeated many times in one minibatch, do
not overshoot.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SCORE_CLIP = 30.0  # |score| beyond which sigmoid is 0 or 1 in float32 anyway
LOG_FLOOR = 1e-7  # keeps log(sigmoid) finite when a score saturates
MAX_CURVATURE_STEP = np.float32(1.0)  # bound on rate x a row's summed curvature; see curvature_step_limit


def sigmoid(scores: np.ndarray) -> np.ndarray:
    """The logistic function in place on a float32 array (clipped first); returns it."""
    np.clip(scores, -SCORE_CLIP, SCORE_CLIP, out=scores)
    np.negative(scores, out=scores)
    np.exp(scores, out=scores)
    scores += 1.0
    return np.reciprocal(scores, out=scores)


def sgns_step(
    input_vectors: np.ndarray,
    output_vectors: np.ndarray,
    window_rows: np.ndarray,
    context_mask: np.ndarray,
    center_rows: np.ndarray,
    noise_rows: np.ndarray,
    negative: int,
    learning_rate: float,
    input_scale: np.ndarray,
    output_scale: np.ndarray,
    with_loss: bool = True,
) -> float:
    """Apply one SGD step in place (curvature-limited per row); return the batch's loss before it.

    With ``W`` the window and ``B`` the batch of consecutive centers ``0..B-1`` (positions
    relative to the batch), slot ``j`` of center ``i`` is position ``i + j - W``.

    Parameters
    ----------
    input_vectors : numpy.ndarray
        ``(rows, dim) float32`` v, updated in place.
    output_vectors : numpy.ndarray
        ``(rows, dim) float32`` v', updated in place.
    window_rows : numpy.ndarray
        ``(P,) int64``, ``P = B + 2W``: row of each position ``-W .. B+W-1``; any row where
        no center uses the position as a context.
    context_mask : numpy.ndarray
        ``(B, 2W + 1) bool``: slot j of center i is one of its contexts (never the center).
    center_rows : numpy.ndarray
        ``(B,) int64`` row of each center.
    noise_rows : numpy.ndarray
        ``(M,) int64`` rows of the minibatch's noise pool.
    negative : int
        k, the number of noise samples whose weight the pool carries per pair.
    learning_rate : float
    input_scale, output_scale : numpy.ndarray
        ``(rows,) float32`` factor on the step of each row of v and v' (1 = plain SGD).
    with_loss : bool
        Compute the loss (it costs about 5% of the step); 0.0 is returned otherwise.

    Returns
    -------
    float
        Sum over the batch's (center, context) pairs of the loss above.
    """
    batch, slots = context_mask.shape
    mask = context_mask.astype(np.float32)  # (B, 2W+1)
    position_pairs = pairs_per_position(mask)  # (P,)
    window_block = input_vectors[window_rows]  # (P, dim) float32
    contexts = sliding_window_view(window_block, slots, axis=0).transpose(0, 2, 1)  # (B, 2W+1, dim)
    centers = output_vectors[center_rows]  # (B, dim)
    noise = output_vectors[noise_rows]  # (M, dim)
    positive = sigmoid(np.matmul(contexts, centers[:, :, None])[:, :, 0])  # (B, 2W+1) s(v'_w . v_c)
    negative_probability = sigmoid(window_block @ noise.T)  # (P, M) s(v'_m . v_c)
    noise_weight = np.float32(negative / noise_rows.size)  # k / M
    loss = 0.0
    if with_loss:
        loss = -float((np.log(np.maximum(positive, LOG_FLOOR)) * mask).sum()) - float(
            noise_weight
            * (np.log(np.maximum(1.0 - negative_probability, LOG_FLOOR)).sum(axis=1) * position_pairs).sum()
        )
    positive_gradient = (1.0 - positive) * mask  # (B, 2W+1), d(-loss)/d(score)
    positive_curvature = positive_gradient * positive  # (B, 2W+1), d2(loss)/d(score)2 = s (1 - s)
    pair_noise_weight = noise_weight * position_pairs[:, None]  # (P, 1)
    noise_curvature = (1.0 - negative_probability) * negative_probability * pair_noise_weight  # (P, M)
    negative_gradient = negative_probability  # (P, M), reused in place: -d(-loss)/d(score)
    negative_gradient *= pair_noise_weight
    block_norms = np.einsum("pd,pd->p", window_block, window_block)  # (P,) |v_c|^2
    center_norms = np.einsum("bd,bd->b", centers, centers)  # (B,) |v'_w|^2
    position_update = negative_gradient @ noise  # (P, dim), to be subtracted
    np.negative(position_update, out=position_update)
    position_curvature = noise_curvature @ np.einsum("md,md->m", noise, noise)  # (P,)
    for slot in range(slots):
        position_update[slot : slot + batch] += positive_gradient[:, slot, None] * centers
        position_curvature[slot : slot + batch] += positive_curvature[:, slot] * center_norms
    center_update = np.matmul(positive_gradient[:, None, :], contexts)[:, 0]  # (B, dim)
    noise_update = negative_gradient.T @ window_block  # (M, dim), to be subtracted
    output_rows = np.concatenate([center_rows, noise_rows])  # (B + M,)
    output_curvature = np.concatenate([
        (positive_curvature * sliding_window_view(block_norms, slots)).sum(axis=1),  # (B,)
        noise_curvature.T @ block_norms,  # (M,)
    ])
    rate = np.float32(learning_rate)
    input_rates = rate * input_scale[window_rows]  # (P,)
    input_rates *= curvature_step_limit(window_rows, position_curvature, input_rates)
    output_rates = rate * output_scale[output_rows]  # (B + M,)
    output_rates *= curvature_step_limit(output_rows, output_curvature, output_rates)
    position_update *= input_rates[:, None]
    center_update *= output_rates[:batch, None]
    noise_update *= -output_rates[batch:, None]
    scatter_add_rows(input_vectors, window_rows, position_update)
    scatter_add_rows(output_vectors, output_rows, np.concatenate([center_update, noise_update]))
    return loss


def curvature_step_limit(rows: np.ndarray, curvature: np.ndarray, rates: np.ndarray) -> np.ndarray:
    """``(slots,) float32`` factors <= 1 that keep each row's summed step from overshooting.

    A minibatch sums all gradients of a row, every one taken at the pre-step values, where
    sequential SGD would see each step's effect before the next. Along a direction where the
    loss has curvature h, a step of rate x gradient overshoots when rate x h > 2. The row's
    curvature is bounded by the sum over its slots of ``s(1 - s) |x|^2`` (the trace of its
    Hessian block, x the vector it is scored against); where rate x that sum exceeds
    `MAX_CURVATURE_STEP`, the row's step is scaled down to it. Rows of frequent words, summed
    over many slots, are the ones limited; without this, training diverged once the learning
    rate stayed near 0.025 for longer than about half an epoch (5-epoch runs).

    Parameters
    ----------
    rows : numpy.ndarray
        ``(slots,)`` row of each slot, repeats allowed.
    curvature : numpy.ndarray
        ``(slots,)`` each slot's summed ``s(1 - s) |x|^2``.
    rates : numpy.ndarray
        ``(slots,)`` each slot's step size (the same for all slots of a row).
    """
    unique_rows, slot_row = np.unique(rows, return_inverse=True)
    row_curvature = np.bincount(slot_row, weights=curvature, minlength=unique_rows.size)[slot_row]
    step_curvature = (rates * row_curvature).astype(np.float32)  # (slots,)
    return MAX_CURVATURE_STEP / np.maximum(step_curvature, MAX_CURVATURE_STEP)


def pairs_per_position(context_mask: np.ndarray) -> np.ndarray:
    """``(B + 2W,) float32``: in how many pairs each position of the window block is the context.

    Parameters
    ----------
    context_mask : numpy.ndarray
        ``(B, 2W + 1)`` bool or float32, as `sgns_step` takes it.
    """
    batch, slots = context_mask.shape
    pairs = np.zeros(batch + slots - 1, dtype=np.float32)  # (B + 2W,)
    for slot in range(slots):
        pairs[slot : slot + batch] += context_mask[:, slot]
    return pairs


def scatter_add_rows(matrix: np.ndarray, rows: np.ndarray, updates: np.ndarray) -> None:
    """``matrix[rows] += updates`` with repeated rows summed, on a flat view (much faster
    than 2-D ``np.add.at``).

    Parameters
    ----------
    matrix : numpy.ndarray
        ``(n, dim)`` C-contiguous, updated in place.
    rows : numpy.ndarray
        ``(m,)`` int row indices, repeats allowed.
    updates : numpy.ndarray
        ``(m, dim)``.
    """
    dim = matrix.shape[1]
    flat_index = (rows[:, None] * dim + np.arange(dim)).reshape(-1)  # (m * dim,)
    np.add.at(matrix.reshape(-1), flat_index, updates.reshape(-1))
