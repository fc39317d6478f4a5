"""The SGNS update on one minibatch, in numpy only (this module never imports Spark).

Notation, mapped once to the paper and to word2vec.c:

* ``input_vectors``  = v, the input embeddings  = word2vec.c ``syn0``   (the published vectors)
* ``output_vectors`` = v', the output embeddings = word2vec.c ``syn1neg``

As in word2vec.c's skip-gram, a (center w, context c) pair scores the *input* row of the
context against the *output* rows of the center (label 1) and of k noise words (label 0):

    loss = -[ log s(v'_w . v_c) + sum_k log s(-v'_nk . v_c) ]

Following HogBatch (Ji et al., 2016), the k noise words are drawn once per center and shared
by all its contexts, so each center's scores are one small matrix product
``(contexts, dim) x (dim, 1 + k)``. Gradients of rows repeated in a batch are summed.
"""

from __future__ import annotations

import numpy as np

SCORE_CLIP = 30.0  # |score| beyond which sigmoid is 0 or 1 in float32 anyway
LOG_FLOOR = 1e-7  # keeps log(sigmoid) finite when a score saturates


def sgns_step(
    input_vectors: np.ndarray,
    output_vectors: np.ndarray,
    context_rows: np.ndarray,
    output_rows: np.ndarray,
    learning_rate: float,
) -> tuple[float, int]:
    """Apply one SGD step in place and return the batch's summed loss and its pair count.

    Parameters
    ----------
    input_vectors : numpy.ndarray
        ``(rows, dim) float32``, updated in place.
    output_vectors : numpy.ndarray
        ``(rows, dim) float32``, updated in place.
    context_rows : numpy.ndarray
        ``(centers, slots) int64`` rows of the context words of each center; -1 pads a slot.
    output_rows : numpy.ndarray
        ``(centers, 1 + negative) int64``: column 0 the center's row, then its noise rows.
    learning_rate : float

    Returns
    -------
    loss : float
        Sum over the batch's (center, context) pairs of the loss above, before the update.
    pairs : int
        Number of (center, context) pairs in the batch.
    """
    dim = input_vectors.shape[1]
    present = context_rows >= 0  # (centers, slots) bool
    safe_context_rows = np.where(present, context_rows, 0)  # (centers, slots)
    contexts = input_vectors[safe_context_rows]  # (centers, slots, dim) float32
    outputs = output_vectors[output_rows]  # (centers, 1 + k, dim) float32
    scores = np.matmul(contexts, outputs.transpose(0, 2, 1))  # (centers, slots, 1 + k)
    np.clip(scores, -SCORE_CLIP, SCORE_CLIP, out=scores)
    probabilities = 1.0 / (1.0 + np.exp(-scores))  # (centers, slots, 1 + k) float32
    labels = np.zeros(outputs.shape[1], dtype=np.float32)
    labels[0] = 1.0  # (1 + k,)
    mask = present[:, :, None].astype(np.float32)  # (centers, slots, 1)
    likelihood = np.where(labels == 1.0, probabilities, 1.0 - probabilities)
    loss = -float((np.log(np.maximum(likelihood, LOG_FLOOR)) * mask).sum())
    gradient = (labels - probabilities) * mask * np.float32(learning_rate)  # (centers, slots, 1 + k)
    context_update = np.matmul(gradient, outputs)  # (centers, slots, dim)
    output_update = np.matmul(gradient.transpose(0, 2, 1), contexts)  # (centers, 1 + k, dim)
    scatter_add_rows(input_vectors, safe_context_rows[present], context_update[present])
    scatter_add_rows(output_vectors, output_rows.reshape(-1), output_update.reshape(-1, dim))
    return loss, int(present.sum())


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
