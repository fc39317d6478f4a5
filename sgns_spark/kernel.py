"""The SGNS update on one minibatch, in numpy only (this module never imports Spark).

Notation, mapped once to the paper and to word2vec.c:

* ``input_vectors``  = v, the input embeddings  = word2vec.c ``syn0``   (the published vectors)
* ``output_vectors`` = v', the output embeddings = word2vec.c ``syn1neg``

As in word2vec.c's skip-gram, a (center w, context c) pair scores the *input* row of the
context against the *output* rows of the center (label 1) and of k noise words (label 0):

    loss = -[ log s(v'_w . v_c) + sum_k log s(-v'_nk . v_c) ]

Following HogBatch (Ji et al., 2016), the k noise words are drawn once per center and shared
by all its contexts, so each center's scores are one small matrix product
``(contexts, dim) x (dim, 1 + k)``. A minibatch is a run of consecutive centers: their
contexts are windows over one gathered block of rows (a strided view, not a copy), and
gradients of repeated rows are summed.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

SCORE_CLIP = 30.0  # |score| beyond which sigmoid is 0 or 1 in float32 anyway
LOG_FLOOR = 1e-7  # keeps log(sigmoid) finite when a score saturates


def sgns_step(
    input_vectors: np.ndarray,
    output_vectors: np.ndarray,
    window_rows: np.ndarray,
    context_mask: np.ndarray,
    output_rows: np.ndarray,
    learning_rate: float,
    input_scale: np.ndarray,
    output_scale: np.ndarray,
    with_loss: bool = True,
) -> float:
    """Apply one SGD step in place; return the batch's summed loss before the update.

    With ``W`` the window and ``B`` the batch of consecutive centers ``0..B-1`` (positions
    relative to the batch), slot ``j`` of center ``i`` is position ``i + j - W``.

    Parameters
    ----------
    input_vectors : numpy.ndarray
        ``(rows, dim) float32`` v, updated in place.
    output_vectors : numpy.ndarray
        ``(rows, dim) float32`` v', updated in place.
    window_rows : numpy.ndarray
        ``(B + 2W,) int64`` row of each position ``-W .. B+W-1``; any row where no center
        uses the position as a context.
    context_mask : numpy.ndarray
        ``(B, 2W + 1) bool``: slot j of center i is one of its contexts (never the center).
    output_rows : numpy.ndarray
        ``(B, 1 + k) int64``: column 0 the center's row, then its noise rows.
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
    dim = input_vectors.shape[1]
    window_block = input_vectors[window_rows]  # (B + 2W, dim) float32
    contexts = sliding_window_view(window_block, slots, axis=0).transpose(0, 2, 1)  # (B, 2W+1, dim)
    outputs = output_vectors[output_rows]  # (B, 1 + k, dim) float32
    scores = np.matmul(contexts, outputs.transpose(0, 2, 1))  # (B, 2W+1, 1 + k)
    np.clip(scores, -SCORE_CLIP, SCORE_CLIP, out=scores)
    probabilities = 1.0 / (1.0 + np.exp(-scores))  # (B, 2W+1, 1 + k) float32
    labels = np.zeros(outputs.shape[1], dtype=np.float32)
    labels[0] = 1.0  # (1 + k,)
    mask = context_mask[:, :, None].astype(np.float32)  # (B, 2W+1, 1)
    loss = 0.0
    if with_loss:
        likelihood = np.where(labels == 1.0, probabilities, 1.0 - probabilities)
        loss = -float((np.log(np.maximum(likelihood, LOG_FLOOR)) * mask).sum())
    gradient = (labels - probabilities) * mask  # (B, 2W+1, 1 + k), d(-loss)/d(score)
    context_update = np.matmul(gradient, outputs)  # (B, 2W+1, dim)
    output_update = np.matmul(gradient.transpose(0, 2, 1), contexts)  # (B, 1 + k, dim)
    position_update = np.zeros_like(window_block)  # (B + 2W, dim): sum per position first
    for slot in range(slots):
        position_update[slot : slot + batch] += context_update[:, slot]
    position_update *= np.float32(learning_rate) * input_scale[window_rows][:, None]
    output_update *= np.float32(learning_rate) * output_scale[output_rows][:, :, None]
    scatter_add_rows(input_vectors, window_rows, position_update)
    scatter_add_rows(output_vectors, output_rows.reshape(-1), output_update.reshape(-1, dim))
    return loss


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
