"""The SGNS update on one minibatch, in numpy only (this module never imports Spark).

Notation, mapped once to the paper and to word2vec.c:

* ``input_vectors``  = v, the input embeddings  = word2vec.c ``syn0``   (the published vectors)
* ``output_vectors`` = v', the output embeddings = word2vec.c ``syn1neg``

As in word2vec.c's skip-gram, a (center w, context c) pair scores the *input* row of the
context against the *output* row of the center (label 1) and of noise words (label 0).
Its noise words are the minibatch's *noise pool*: M words drawn once per minibatch, each
at weight ``noise_weight`` (k / M when drawn from all of P_n), so the k-sample sum is
replaced by k times its mean over the pool (the same expectation, k E_n[log s(-v'_n . v_c)]):

    loss(w, c) = -[ log s(v'_w . v_c) + noise_weight sum_m log s(-v'_m . v_c) ]

Why a pool: every pair meets independent noise (sharing k noise words among one center's
contexts, as HogBatch does, pushes co-occurring words together by chance and cost 2.7
analogy points on the benchmark corpus), and the noise scores of the whole minibatch are
one dense matrix product.

A minibatch is a run of *units*: one context position of the corpus with the pairs it is
the context of, laid out unit after unit. The noise term depends on neither the center nor
the position, only on the context row, so it is computed once per distinct context row of
the minibatch and weighted by the pairs of that row's units (frequent words fill many units
of a minibatch: at 2 word groups its distinct rows are 58% of its units on the benchmark
corpus, and the noise pool's three matrix products shrink by as much). The positive terms are
scored by tiles of consecutive units against the distinct centers of their pairs
(`PairTiles`), as batched matrix products: neighbouring context positions share most of their
centers, so each center row is gathered and scattered once per tile rather than once per pair
(the same step; on one core 1.5x faster than pair by pair at 1 word group, 1.1 to 1.3x at 2).
Gradients of repeated rows are summed, and a row's summed step is limited by its summed
curvature (`curvature_step_limit`), so that frequent words, repeated many times in one
minibatch, do not overshoot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sgns_spark.train.schedule import INPUT_SIDE, OUTPUT_SIDE

LOG_FLOOR = 1e-7  # keeps log(sigmoid) finite when a score saturates

MAX_CURVATURE_STEP = np.float32(1.0)  # bound on rate x a row's summed curvature; see curvature_step_limit
GRADIENT_SHARE = np.float32(0.5)  # share of each slot's |gradient| counted at least; see curvature_step_limit
# consecutive units scored as one dense tile (PairTiles): one core, against 32, 0.95x at 2 word
# groups and 0.96x at 1 on long lines, 0.94x on 12-word lines (16 and 8 within 1% of 12; measured)
UNITS_PER_TILE = 12
NO_UNIT = np.iinfo(np.int64).max  # a row that no unit of the minibatch holds (`distinct_rows`)


class CarriedRows(NamedTuple):
    """A warm start's rows carried over from its parent, which learn at a rate of their own."""

    input_rows: np.ndarray  # (input rows,) bool: the row is carried over; field INPUT_SIDE
    output_rows: np.ndarray  # (output rows,) bool; field OUTPUT_SIDE
    learning_rate: float  # the step size of the carried rows; every other row takes the step's


class RowScratch(NamedTuple):
    """Arrays that a block's minibatches share, each left by a step as it found it: per-row
    accumulators, so that a step costs its slots, not the matrices' rows (a fresh zeroed array of
    500k rows took 28 us a minibatch on one core, 2M rows 90 us; measured), and the summing
    scatters' lane offsets."""

    output_sums: np.ndarray  # (output rows,) float32 zeros: `row_totals`
    first_units: np.ndarray  # (input rows,) int64 NO_UNIT: `distinct_rows`
    lanes: np.ndarray  # (slots x lanes of a row,) int64: `scatter_lanes`

    @classmethod
    def of(cls, input_vectors: np.ndarray, output_vectors: np.ndarray, slots: int) -> RowScratch:
        """The scratch of a block's two matrices, whose minibatches scatter at most `slots` rows
        into either (a minibatch's pairs and its noise pool bound them)."""
        return cls(np.zeros(output_vectors.shape[0], dtype=np.float32),
                   np.full(input_vectors.shape[0], NO_UNIT, dtype=np.int64),
                   scatter_lanes(output_vectors.shape[1], slots))


def sigmoid_complement(scores: np.ndarray) -> np.ndarray:
    """``1 - s(x) = 1 / (1 + e^x)`` in place on a float32 array; returns it.

    Three passes, one of them a transcendental: e^x overflows to inf where x > 88, and the result
    is then 0, its limit, so no clip is needed. Both of a score's terms take it: the positive
    term's gradient is 1 - s, and the noise term's log and step limit need 1 - s. On a (150, 128)
    block on one core: 34 against 61 us for 1 - s by (1 + tanh(x / 2)) / 2 (on an AVX2 host,
    where numpy's float32 tanh takes 2.6 ns an element and its exp 1.3; measured).
    """
    with np.errstate(over="ignore"):
        np.exp(scores, out=scores)
    scores += np.float32(1.0)
    np.divide(np.float32(1.0), scores, out=scores)  # numpy's reciprocal has no SIMD loop, its divide does
    return scores


@dataclass(frozen=True)
class PairTiles:
    """A minibatch's pairs as dense tiles: `UNITS_PER_TILE` consecutive units against the
    distinct center rows of their pairs.

    The pairs of neighbouring context positions share most of their centers (their windows
    overlap), so a tile's (units x centers) grid is dense enough for batched matrix products,
    and each center row is gathered, and its step scattered, once per tile instead of once
    per pair. Cells of a repeated (context row, center row) pair count it once per pair.
    """

    units_per_tile: int
    width: int  # distinct centers of the widest tile; narrower tiles are padded
    center_rows: np.ndarray  # (C,) int64 output row of each tile's distinct centers, tile after tile
    center_cells: np.ndarray  # (C,) int64 each one's place in the (tiles x width) center grid
    pair_counts: np.ndarray  # (tiles, units_per_tile, width) float32 pairs of each (unit, center) cell

    @classmethod
    def of(cls, unit_pairs: np.ndarray, output_rows: np.ndarray, row_count: int) -> PairTiles:
        """The tiles of one minibatch (`sgns_step`'s arguments; `row_count` output rows)."""
        return cls.of_minibatches(unit_pairs, output_rows, row_count, np.zeros(1, dtype=np.int64))[0]

    @classmethod
    def of_minibatches(cls, unit_pairs: np.ndarray, output_rows: np.ndarray, row_count: int,
                       first_units: np.ndarray) -> list[PairTiles]:
        """The tiles of consecutive minibatches, built at once: each of numpy's calls here costs
        microseconds whatever its size, so a minibatch pays for the few slices of its own.

        Parameters
        ----------
        unit_pairs, output_rows : numpy.ndarray
            ``(U,)`` and ``(B,)``: the minibatches' units and pairs, minibatch after minibatch.
        first_units : numpy.ndarray
            ``(K,)`` the first unit of each of the K minibatches, ascending, the first 0.
        """
        units, batches = unit_pairs.size, first_units.size
        batch_units = np.diff(np.r_[first_units, units])  # (K,)
        units_per_tile = np.minimum(UNITS_PER_TILE, batch_units)  # (K,)
        batch_tiles = -(-batch_units // units_per_tile)  # (K,)
        first_tiles = np.cumsum(batch_tiles) - batch_tiles  # (K,)
        unit_batch = np.repeat(np.arange(batches), batch_units)  # (U,)
        batch_unit = np.arange(units) - first_units[unit_batch]  # (U,) within its minibatch
        unit_tile = first_tiles[unit_batch] + batch_unit // units_per_tile[unit_batch]  # (U,)
        pair_unit = np.repeat(np.arange(units), unit_pairs)  # (B,)
        tile_key = unit_tile[pair_unit] * row_count + output_rows  # (B,) tile, then row
        # the keys ascend from tile to tile: a stable sort (timsort) uses that, np.unique's quicksort does not
        order = np.argsort(tile_key, kind="stable")  # (B,)
        sorted_keys = tile_key[order]  # (B,)
        new_key = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]  # (B,)
        distinct = sorted_keys[new_key]  # (C,)
        pair_center = np.empty_like(order)  # (B,) the index of each pair's key in distinct
        pair_center[order] = np.cumsum(new_key) - 1
        center_tile = distinct // row_count  # (C,)
        tile_centers = np.bincount(center_tile, minlength=batch_tiles.sum())  # (tiles,)
        first_centers = np.cumsum(tile_centers) - tile_centers  # (tiles,)
        center_index = np.arange(distinct.size) - first_centers[center_tile]  # (C,) within its tile
        width = np.maximum.reduceat(tile_centers, first_tiles)  # (K,) a grid is as wide as its widest tile
        batch_cells = batch_tiles * units_per_tile * width  # (K,)
        first_cells = np.cumsum(batch_cells) - batch_cells  # (K,)
        pair_batch = unit_batch[pair_unit]  # (B,)
        # (B,) flat (tile, unit in tile, center) of the pair's minibatch, after those of the minibatches before
        cells = first_cells[pair_batch] + batch_unit[pair_unit] * width[pair_batch] + center_index[pair_center]
        pair_counts = np.bincount(cells, minlength=int(batch_cells.sum())).astype(np.float32)
        center_batch = np.repeat(np.arange(batches), batch_tiles)[center_tile]  # (C,)
        center_cells = (center_tile - first_tiles[center_batch]) * width[center_batch] + center_index  # (C,)
        center_rows = distinct - center_tile * row_count  # (C,)
        center_bounds = np.searchsorted(center_batch, np.arange(batches + 1)).tolist()
        cell_bounds = np.r_[first_cells, batch_cells.sum()].tolist()
        return [cls(int(units_per_tile[batch]), int(width[batch]),
                    center_rows[center_bounds[batch] : center_bounds[batch + 1]],
                    center_cells[center_bounds[batch] : center_bounds[batch + 1]],
                    pair_counts[cell_bounds[batch] : cell_bounds[batch + 1]].reshape(
                        int(batch_tiles[batch]), int(units_per_tile[batch]), int(width[batch])))
                for batch in range(batches)]

    def padded_units(self, unit_rows: np.ndarray) -> np.ndarray:
        """``(tiles x units_per_tile,)`` the unit rows, padded with row 0 (padding cells count no pair)."""
        padded = np.zeros(self.pair_counts.shape[0] * self.units_per_tile, dtype=np.int64)
        padded[: unit_rows.size] = unit_rows
        return padded

    def padded_centers(self) -> np.ndarray:
        """``(tiles x width,)`` the center rows in their cells, padded with row 0 (padding cells
        count no pair), so that one gather fills the grid."""
        padded = np.zeros(self.pair_counts.shape[0] * self.width, dtype=np.int64)
        padded[self.center_cells] = self.center_rows
        return padded


def sgns_step(
    input_vectors: np.ndarray,
    output_vectors: np.ndarray,
    unit_rows: np.ndarray,
    unit_pairs: np.ndarray,
    output_rows: np.ndarray,
    noise_rows: np.ndarray,
    noise_weight: float,
    learning_rate: float,
    with_loss: bool = True,
    applied_curvature: tuple[np.ndarray, np.ndarray] | None = None,
    carried: CarriedRows | None = None,
    tiles: PairTiles | None = None,
    scratch: RowScratch | None = None,
) -> float:
    """Apply one SGD step in place (curvature-limited per row); return the batch's loss before it.

    With ``U`` units and ``B`` pairs, pair ``b`` belongs to unit ``u`` when it is among the
    ``unit_pairs[u]`` pairs after those of units ``0..u-1``. The positive terms are scored by
    tiles (`PairTiles`: ``T`` tiles of ``P`` units against ``W`` center cells each), the noise
    terms by the ``D`` distinct context rows of the units.

    Parameters
    ----------
    input_vectors : numpy.ndarray
        ``(rows, dim) float32`` v, updated in place.
    output_vectors : numpy.ndarray
        ``(rows, dim) float32`` v', updated in place.
    unit_rows : numpy.ndarray
        ``(U,) int64`` input row (the context word) of each unit.
    unit_pairs : numpy.ndarray
        ``(U,) int64`` number of pairs of each unit, at least 1.
    output_rows : numpy.ndarray
        ``(B,) int64`` output row (the center word) of each pair.
    noise_rows : numpy.ndarray
        ``(M,) int64`` rows of the minibatch's noise pool.
    noise_weight : float
        Weight of each pool word in every pair's loss.
    learning_rate : float
    with_loss : bool
        Compute the loss (it costs about 5% of the step); 0.0 is returned otherwise.
    applied_curvature : tuple of numpy.ndarray, optional
        ``(input rows,)`` and ``(output rows,)`` float32 sums of each row's limited step
        curvature, added to in place (a diagnostic of the benchmark's simulator).
    carried : CarriedRows, optional
        Rows that step at ``carried.learning_rate`` instead of `learning_rate`.
    tiles : PairTiles, optional
        The minibatch's tiles, when built with others' (`PairTiles.of_minibatches`).
    scratch : RowScratch, optional
        The block's scratch, kept across its minibatches; a fresh one otherwise.

    Returns
    -------
    float
        Sum over the batch's (center, context) pairs of the loss above.
    """
    if tiles is None:
        tiles = PairTiles.of(unit_pairs, output_rows, output_vectors.shape[0])
    if scratch is None:
        scratch = RowScratch.of(input_vectors, output_vectors, output_rows.size + noise_rows.size)
    counts = tiles.pair_counts  # (T, P, W)
    units_count = unit_rows.size
    padded_units = input_vectors[tiles.padded_units(unit_rows)]  # (T * P, dim) v_c
    tile_units = padded_units.reshape(counts.shape[0], tiles.units_per_tile, -1)  # (T, P, dim)
    centers = output_vectors[tiles.padded_centers()].reshape(counts.shape[0], tiles.width, -1)  # (T, W, dim) v'_w
    noise = output_vectors[noise_rows]  # (M, dim) v'_m
    # the noise term depends on the context row alone: once per distinct row, at its units' summed weight
    # (D,) distinct rows and their first units, (U,) each unit's distinct row
    context_rows, first_unit, unit_context = distinct_rows(unit_rows, scratch.first_units)
    contexts = padded_units[first_unit]  # (D, dim) v_c
    context_noise_weight = (np.float32(noise_weight) * np.bincount(
        unit_context, weights=unit_pairs, minlength=context_rows.size).astype(np.float32))[:, None]  # (D, 1)
    # d(-loss)/d(score) of one pair, g = 1 - s, and its sensitivity max(g s, GRADIENT_SHARE g) = g max(s, share)
    positive_gradient = sigmoid_complement(tile_units @ centers.transpose(0, 2, 1))  # (T, P, W) 1 - s(v'_w . v_c)
    positive = 1.0 - positive_gradient  # (T, P, W) s(v'_w . v_c)
    noise_complement = sigmoid_complement(contexts @ noise.T)  # (D, M) 1 - s(v'_m . v_c)
    loss = 0.0
    if with_loss:
        loss = -float((np.log(np.maximum(positive, LOG_FLOOR)) * counts).sum()) - float(
            (np.log(np.maximum(noise_complement, LOG_FLOOR)) * context_noise_weight).sum()
        )
    positive_sensitivity = np.maximum(positive, GRADIENT_SHARE, out=positive)  # (T, P, W), reused in place
    positive_gradient *= counts  # now summed over the cell's pairs
    positive_sensitivity *= positive_gradient
    # -d(-loss)/d(score), g = s, and its sensitivity max((1 - s) s, GRADIENT_SHARE s) w = g w max(1 - s, share)
    negative_gradient = 1.0 - noise_complement  # (D, M) s(v'_m . v_c)
    noise_sensitivity = np.maximum(noise_complement, GRADIENT_SHARE, out=noise_complement)  # (D, M), in place
    negative_gradient *= context_noise_weight
    noise_sensitivity *= negative_gradient
    unit_norms = np.vecdot(tile_units, tile_units)  # (T, P) |v_c|^2
    center_norms = np.vecdot(centers, centers)  # (T, W) |v'_w|^2
    # input rows: one slot per distinct row (its units' positive terms and its noise terms);
    # output rows: one per tile's center, one per pool word
    unit_curvature = np.matvec(positive_sensitivity, center_norms).reshape(-1)[:units_count]  # (U,)
    input_curvature = (noise_sensitivity @ np.vecdot(noise, noise) + np.bincount(
        unit_context, weights=unit_curvature, minlength=context_rows.size)).astype(np.float32)  # (D,)
    output_slots = np.concatenate([tiles.center_rows, noise_rows])  # (C + M,)
    output_curvature = np.concatenate([
        np.vecmat(unit_norms, positive_sensitivity).reshape(-1)[tiles.center_cells],  # (C,)
        noise_sensitivity.T @ unit_norms.reshape(-1)[first_unit],  # (M,)
    ])
    input_applied, output_applied = applied_curvature or (None, None)
    input_rate = slot_rates(context_rows, learning_rate, carried, INPUT_SIDE)  # (D,), or a scalar
    output_rate = slot_rates(output_slots, learning_rate, carried, OUTPUT_SIDE)  # (C + M,), or a scalar
    # an input row has one slot; an output row's slots are summed first (a row's slots share one rate)
    input_rates = input_rate * curvature_step_limit(context_rows, input_rate * input_curvature,
                                                    input_applied)  # (D,)
    output_row_curvature = row_totals(output_slots, output_rate * output_curvature, scratch.output_sums)
    output_rates = output_rate * curvature_step_limit(output_slots, output_row_curvature,
                                                      output_applied)  # (C + M,)
    # each row's step: its summed gradient times its rate (the same for every slot of a row);
    # an input row's units are summed on its distinct row, which starts from its noise terms
    input_update = np.negative(negative_gradient @ noise)  # (D, dim)
    positive_update = (positive_gradient @ centers).reshape(-1, centers.shape[2])[:units_count]  # (U, dim)
    scatter_add_rows(input_update, unit_context, positive_update, scratch.lanes)
    input_update *= input_rates[:, None]
    center_count = tiles.center_rows.size
    output_update = np.empty((output_slots.size, centers.shape[2]), dtype=np.float32)  # (C + M, dim)
    center_update = positive_gradient.transpose(0, 2, 1) @ tile_units  # (T, W, dim)
    output_update[:center_count] = center_update.reshape(-1, centers.shape[2])[tiles.center_cells]
    np.matmul(negative_gradient.T, contexts, out=output_update[center_count:])
    output_update[center_count:] *= -1.0
    output_update *= output_rates[:, None]
    input_vectors[context_rows] += input_update  # distinct rows: plain indexing
    scatter_add_rows(output_vectors, output_slots, output_update, scratch.lanes)
    return loss


def slot_rates(slots: np.ndarray, learning_rate: float, carried: CarriedRows | None, side: int
               ) -> np.ndarray | np.float32:
    """Each slot's step size on `side`: ``carried.learning_rate`` where its
    row is carried over, else `learning_rate` (one scalar when no row is carried)."""
    rate = np.float32(learning_rate)
    if carried is None:
        return rate
    return np.where(carried[side][slots], np.float32(carried.learning_rate), rate)  # (slots,)


def curvature_step_limit(rows: np.ndarray, row_curvature: np.ndarray,
                         applied: np.ndarray | None = None) -> np.ndarray:
    """``(slots,) float32`` factors <= 1 that keep each row's summed step from overshooting.

    A minibatch sums all gradients of a row, every one taken at the pre-step values, where
    sequential SGD would see each step's effect before the next. Along a direction where the
    loss has curvature h, a step of rate x gradient overshoots when rate x h > 2. The row's
    curvature is bounded by the sum over its slots of ``s(1 - s) |x|^2`` (the trace of its
    Hessian block, x the vector it is scored against). A saturated score has s(1 - s) near 0
    but a gradient near 1, and a row repeated in many such slots would take its whole summed
    step unlimited; so each slot counts at least `GRADIENT_SHARE` x its |gradient| x |x|^2,
    which bounds how far the step moves the row's scores. The larger of the two counts, not
    their sum: a score that is not saturated is limited exactly as by its curvature (after 5
    epochs at 2 shards the sum scored 38.2% analogy / 0.656 WS353, the larger 39.4% / 0.666).
    Where the row's rate x that sum exceeds `MAX_CURVATURE_STEP`, its step is scaled down to it;
    the bound is half the overshoot limit (the limit itself, 2, lowered the training loss by 0.1
    to 0.2% and left the scores where they were at 1 and 5 epochs; measured).
    Rows of frequent words, summed over many slots, are the ones limited. Without the
    curvature part, training diverged once the learning rate stayed near 0.025 for longer than
    about half an epoch (5-epoch runs); without the gradient part, 64 word groups diverged
    (their blocks repeat a few frequent pairs many times per minibatch; simulated).

    Parameters
    ----------
    rows : numpy.ndarray
        ``(slots,)`` row of each slot, repeats allowed.
    row_curvature : numpy.ndarray
        ``(slots,)`` the rate x summed ``max(s(1 - s), GRADIENT_SHARE |g|) |x|^2`` of each
        slot's row, over all the row's slots (`row_totals` where a row has several).
    applied : numpy.ndarray, optional
        ``(rows of the matrix,)`` each row's limited rate x curvature, added to in place.
    """
    if applied is not None:  # a row's slots carry one sum, so the buffered assignment adds it once
        applied[rows] += np.minimum(row_curvature, MAX_CURVATURE_STEP)
    return MAX_CURVATURE_STEP / np.maximum(row_curvature, MAX_CURVATURE_STEP)


def row_totals(rows: np.ndarray, values: np.ndarray, row_sums: np.ndarray) -> np.ndarray:
    """``(slots,) float32`` the sum of `values` over all slots of each slot's row.

    Parameters
    ----------
    rows : numpy.ndarray
        ``(slots,)`` row of each slot, repeats allowed.
    values : numpy.ndarray
        ``(slots,)``.
    row_sums : numpy.ndarray
        ``(rows of the matrix,)`` float32 zeros (`RowScratch`), zeros again on return. The sums
        are taken there with the fast 1-D ``np.add.at``: five times faster than ``np.unique``
        and ``np.bincount`` on the slots.
    """
    np.add.at(row_sums, rows, values.astype(np.float32))
    totals = row_sums[rows]  # (slots,)
    row_sums[rows] = 0.0
    return totals


def distinct_rows(rows: np.ndarray, first_units: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of a minibatch's units in the order they first appear, without a sort.

    Like ``np.unique(rows, return_index=True, return_inverse=True)`` but in first-appearance
    order: 250 captured minibatches' rows took 13.5 against 21.7 us each on one core (measured).

    Parameters
    ----------
    rows : numpy.ndarray
        ``(U,) int64`` each unit's row, repeats allowed.
    first_units : numpy.ndarray
        ``(rows of the matrix,) int64`` `NO_UNIT` everywhere (`RowScratch`), again on return.

    Returns
    -------
    tuple of numpy.ndarray
        ``(D,)`` the distinct rows, ``(D,)`` the unit where each first appears (ascending), and
        ``(U,)`` each unit's index among the distinct rows.
    """
    units = np.arange(rows.size)  # (U,)
    np.minimum.at(first_units, rows, units)
    first_unit_of = first_units[rows]  # (U,) the first unit of each unit's row
    first_flags = first_unit_of == units  # (U,)
    first_unit = np.flatnonzero(first_flags)  # (D,)
    distinct = rows[first_unit]  # (D,)
    first_units[distinct] = NO_UNIT
    return distinct, first_unit, (np.cumsum(first_flags) - 1)[first_unit_of]


def scatter_lane_type(dim: int) -> type[np.number]:
    """The element a summing scatter adds a row of `dim` float32 values by: where the width is
    even, complex64 pairs of them (complex addition adds the two float32 parts exactly as float32
    addition does, so the sums are the same to the bit, and the scatter and its index cover half
    as many elements: a (700, 100) update took 80 against 130 us on one core, measured)."""
    return np.complex64 if dim % 2 == 0 else np.float32


def scatter_lanes(dim: int, slots: int) -> np.ndarray:
    """``(slots x lanes,) int64`` each lane's place in its row, ``0 .. lanes - 1``, row after row:
    the part of `scatter_add_rows`'s flat index that is the same in every call (adding it to the
    repeated row starts took 10 against 15 us for 400 rows of 50 lanes on one core, where the
    index by broadcasting runs numpy's inner loop once per row; measured)."""
    lanes = dim * np.dtype(np.float32).itemsize // np.dtype(scatter_lane_type(dim)).itemsize
    return np.tile(np.arange(lanes), slots)


def scatter_add_rows(matrix: np.ndarray, rows: np.ndarray, updates: np.ndarray, lanes: np.ndarray) -> None:
    """``matrix[rows] += updates`` with repeated rows summed, by numpy's fast 1-D ``np.add.at``
    on flat views of `scatter_lane_type` (much faster than 2-D ``np.add.at``).

    Parameters
    ----------
    matrix : numpy.ndarray
        ``(n, dim)`` float32, C-contiguous, updated in place.
    rows : numpy.ndarray
        ``(m,)`` int row indices, repeats allowed.
    updates : numpy.ndarray
        ``(m, dim)`` float32, C-contiguous.
    lanes : numpy.ndarray
        ``scatter_lanes(dim, slots)`` for any ``slots >= m``.
    """
    lane_type = scatter_lane_type(matrix.shape[1])
    flat_matrix = matrix.view(lane_type).reshape(-1)  # (n * width,)
    flat_updates = updates.view(lane_type)  # (m, width)
    width = flat_updates.shape[1]
    flat_index = np.repeat(rows * width, width)  # (m * width,) the first lane of each slot's row
    flat_index += lanes[: flat_index.size]
    np.add.at(flat_matrix, flat_index, flat_updates.reshape(-1))
