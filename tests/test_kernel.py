"""The kernel against a slow per-pair loop, finite differences, and a toy corpus."""

import numpy as np
import pytest

from sgns_spark.train import kernel
from sgns_spark.train.kernel import (
    GRADIENT_SHARE,
    NO_UNIT,
    CarriedRows,
    RowScratch,
    distinct_rows,
    scatter_add_rows,
    scatter_lanes,
    sgns_step,
)

NEGATIVE = 3


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


UNITS, MOST_UNIT_PAIRS, POOL = 6, 4, 4  # `batch_with_duplicates`' sizes
MOST_PAIRS = UNITS * MOST_UNIT_PAIRS


def batch_with_duplicates(rng, rows=7, dim=5, units=UNITS, pool=POOL):
    """One minibatch: input and output rows, units (context rows and pair counts), centers, noise pool."""
    input_vectors = rng.normal(0, 0.5, (rows, dim)).astype(np.float32)
    output_vectors = rng.normal(0, 0.5, (rows, dim)).astype(np.float32)
    unit_rows = rng.integers(0, 3, size=units)  # few rows: many repeats
    unit_pairs = rng.integers(1, MOST_UNIT_PAIRS + 1, size=units)
    center_rows = rng.integers(0, 4, size=int(unit_pairs.sum()))
    noise_rows = rng.integers(0, 4, size=pool)  # overlaps centers and itself
    return input_vectors, output_vectors, unit_rows, unit_pairs, center_rows, noise_rows


def pairs_of(unit_rows, unit_pairs, center_rows):
    """(context row, center row) for every pair: a unit's pairs follow those of the units before it."""
    contexts = np.repeat(unit_rows, unit_pairs)
    yield from zip(contexts, center_rows, strict=True)


def reference_loss(input_vectors, output_vectors, unit_rows, unit_pairs, center_rows, noise_rows):
    """The documented loss, pair by pair: each pool word at weight NEGATIVE / pool size."""
    weight = NEGATIVE / noise_rows.size
    loss = 0.0
    for context, center in pairs_of(unit_rows, unit_pairs, center_rows):
        v = input_vectors[context].astype(np.float64)
        loss -= np.log(sigmoid(output_vectors[center] @ v))
        for n in noise_rows:
            loss -= weight * np.log(sigmoid(-(output_vectors[n] @ v)))
    return loss


def reference_step(input_vectors, output_vectors, unit_rows, unit_pairs, center_rows, noise_rows, rate,
                   limited=True):
    """Minibatch SGD written pair by pair: every gradient from the pre-step parameters, summed per
    row, and (if `limited`) each row's step limited so that rate x its summed
    max(s(1 - s), GRADIENT_SHARE |gradient|) |x|^2 is at most 1.

    `rate` is one step size, or ``(input rates (rows,), output rates (rows,))`` of every row.

    Returns the new input and output vectors and the step factors of both (1 = not limited).
    """
    rates = (rate, rate) if np.isscalar(rate) else rate
    gradient_in = np.zeros(input_vectors.shape)
    gradient_out = np.zeros(output_vectors.shape)
    curvature_in = np.zeros(len(input_vectors))
    curvature_out = np.zeros(len(output_vectors))
    weight = NEGATIVE / noise_rows.size
    for context, center in pairs_of(unit_rows, unit_pairs, center_rows):
        v = input_vectors[context].astype(np.float64)
        for row, label, pair_weight in [(center, 1.0, 1.0)] + [(n, 0.0, weight) for n in noise_rows]:
            u = output_vectors[row].astype(np.float64)
            probability = sigmoid(u @ v)
            g = pair_weight * (label - probability)
            gradient_in[context] += g * u
            gradient_out[row] += g * v
            sensitivity = pair_weight * max(probability * (1 - probability), GRADIENT_SHARE * abs(label - probability))
            curvature_in[context] += sensitivity * (u @ u)
            curvature_out[row] += sensitivity * (v @ v)
    factors = []
    new_vectors = []
    for vectors, gradient, curvature, side_rate in ((input_vectors, gradient_in, curvature_in, rates[0]),
                                                    (output_vectors, gradient_out, curvature_out, rates[1])):
        factor = np.minimum(1.0, 1.0 / np.maximum(side_rate * curvature, 1e-12)) if limited else np.ones(len(vectors))
        new_vectors.append(vectors + (side_rate * factor)[:, None] * gradient)
        factors.append(factor)
    return (*new_vectors, *factors)


def step(input_vectors, output_vectors, unit_rows, unit_pairs, center_rows, noise_rows, rate):
    """The kernel's step with the pool at weight NEGATIVE / pool size, as the reference."""
    return sgns_step(input_vectors, output_vectors, unit_rows, unit_pairs, center_rows, noise_rows,
                     NEGATIVE / noise_rows.size, rate)


def test_kernel_matches_per_pair_reference_with_duplicate_ids():
    rng = np.random.default_rng(0)
    arrays = batch_with_duplicates(rng)
    expected_loss = reference_loss(*arrays)
    for rate in (0.1, 0.5):  # at 0.5 the step limit binds for some rows and not for others
        expected_in, expected_out, factor_in, factor_out = reference_step(*arrays, rate)
        input_vectors, output_vectors, *rest = (a.copy() for a in arrays)
        loss = step(input_vectors, output_vectors, *rest, rate)
        assert abs(loss - expected_loss) < 1e-4
        np.testing.assert_allclose(input_vectors, expected_in, atol=1e-5)
        np.testing.assert_allclose(output_vectors, expected_out, atol=1e-5)
    factors = np.concatenate([factor_in, factor_out])
    assert (factors < 0.9).any() and (factors == 1).any()


def test_kernel_matches_the_reference_over_several_tiles_with_a_partial_last_one():
    """Units beyond one tile (the last one partial), repeated (context, center) rows in a tile,
    and centers shared between tiles: the tiles change the order of the sums, not the step."""
    rng = np.random.default_rng(4)
    units = 3 * kernel.UNITS_PER_TILE + 5
    arrays = batch_with_duplicates(rng, rows=9, units=units)
    tiles = kernel.PairTiles.of(arrays[3], arrays[4], 9)
    assert tiles.pair_counts.shape[0] == 4 and tiles.pair_counts.max() >= 2  # a cell holds repeated pairs
    assert tiles.pair_counts.sum() == arrays[4].size
    expected_in, expected_out, *_ = reference_step(*arrays, 0.05)
    input_vectors, output_vectors, *rest = (a.copy() for a in arrays)
    loss = step(input_vectors, output_vectors, *rest, 0.05)
    assert abs(loss - reference_loss(*arrays)) < 1e-3
    np.testing.assert_allclose(input_vectors, expected_in, atol=1e-5)
    np.testing.assert_allclose(output_vectors, expected_out, atol=1e-5)


def test_tiles_built_for_several_minibatches_at_once_hold_each_minibatchs_pairs_cell_by_cell():
    """`PairTiles.of_minibatches` against a per-pair loop: minibatches of one, several and a
    partial last tile, each with its own width; every pair is counted in the cell of its unit
    and its center, and each tile lists its distinct centers once."""
    rng = np.random.default_rng(7)
    rows, sizes = 11, (5, kernel.UNITS_PER_TILE, 2 * kernel.UNITS_PER_TILE + 3, 1)  # units per minibatch
    unit_pairs = rng.integers(1, 6, size=sum(sizes))
    output_rows = rng.integers(0, rows, size=unit_pairs.sum())
    first_units = np.cumsum(sizes) - np.array(sizes)
    built = kernel.PairTiles.of_minibatches(unit_pairs, output_rows, rows, first_units)
    assert len(built) == len(sizes)
    pair_unit = np.repeat(np.arange(unit_pairs.size), unit_pairs)
    for tiles, first, units in zip(built, first_units.tolist(), sizes, strict=True):
        per_tile = min(kernel.UNITS_PER_TILE, units)
        expected = np.zeros_like(tiles.pair_counts)
        tile_of_cell = tiles.center_cells // tiles.width
        for pair in np.flatnonzero((pair_unit >= first) & (pair_unit < first + units)):
            unit = pair_unit[pair] - first
            tile = unit // per_tile
            (cell,) = np.flatnonzero((tile_of_cell == tile) & (tiles.center_rows == output_rows[pair]))
            expected[tile, unit % per_tile, tiles.center_cells[cell] % tiles.width] += 1
        np.testing.assert_array_equal(tiles.pair_counts, expected)
        assert tiles.units_per_tile == per_tile and tiles.pair_counts.shape[0] == -(-units // per_tile)
        for tile in range(tiles.pair_counts.shape[0]):
            in_tile = (pair_unit >= first + tile * per_tile) & (pair_unit < first + min((tile + 1) * per_tile, units))
            assert sorted(tiles.center_rows[tile_of_cell == tile]) == sorted(set(output_rows[in_tile]))


def test_carried_rows_step_at_their_own_rate_as_the_reference_and_stay_put_at_rate_zero():
    rng = np.random.default_rng(3)
    arrays = batch_with_duplicates(rng)
    input_carried = np.array([True, False, True, False, False, True, False])  # rows 0 and 2 are context rows
    output_carried = np.array([False, True, True, False, True, False, False])
    for rate, carried_rate in ((0.5, 0.05), (0.1, 0.0)):
        rates = tuple(np.where(flags, carried_rate, rate) for flags in (input_carried, output_carried))
        expected_in, expected_out, *_ = reference_step(*arrays, rates)
        input_vectors, output_vectors, *rest = (a.copy() for a in arrays)
        sgns_step(input_vectors, output_vectors, *rest, NEGATIVE / arrays[5].size, rate,
                  carried=CarriedRows(input_carried, output_carried, carried_rate))
        np.testing.assert_allclose(input_vectors, expected_in, atol=1e-5)
        np.testing.assert_allclose(output_vectors, expected_out, atol=1e-5)
        assert not np.allclose(input_vectors[1], arrays[0][1])  # a row not carried moved
    np.testing.assert_array_equal(input_vectors[input_carried], arrays[0][input_carried])  # rate 0: frozen
    np.testing.assert_array_equal(output_vectors[output_carried], arrays[1][output_carried])


def test_step_limit_keeps_a_large_rate_from_raising_the_loss():
    rng = np.random.default_rng(0)
    arrays = batch_with_duplicates(rng)
    before = reference_loss(*arrays)
    plain_in, plain_out, *_ = reference_step(*arrays, 0.5, limited=False)
    assert reference_loss(plain_in, plain_out, *arrays[2:]) > before  # summed stale steps overshoot
    input_vectors, output_vectors, *rest = (a.copy() for a in arrays)
    step(input_vectors, output_vectors, *rest, 0.5)
    assert reference_loss(input_vectors, output_vectors, *rest) < before


def test_kernel_step_is_minus_the_finite_difference_gradient():
    rng = np.random.default_rng(1)
    arrays = batch_with_duplicates(rng, dim=4)
    input_vectors, output_vectors, *batch = arrays
    rate = 1e-3
    stepped_in, stepped_out = input_vectors.copy(), output_vectors.copy()
    step(stepped_in, stepped_out, *batch, rate)
    epsilon = 1e-4
    for matrix, stepped in ((input_vectors, stepped_in), (output_vectors, stepped_out)):
        numeric = np.zeros_like(matrix, dtype=np.float64)
        for index in np.ndindex(matrix.shape):
            original = matrix[index]
            matrix[index] = original + epsilon
            plus = reference_loss(input_vectors, output_vectors, *batch)
            matrix[index] = original - epsilon
            minus = reference_loss(input_vectors, output_vectors, *batch)
            matrix[index] = original
            numeric[index] = (plus - minus) / (2 * epsilon)
        np.testing.assert_allclose((stepped - matrix) / rate, -numeric, atol=2e-2, rtol=2e-2)


def test_kept_scratch_gives_each_minibatch_the_reference_step_and_is_left_as_it_was():
    rng = np.random.default_rng(5)
    input_vectors, output_vectors, *_ = batch_with_duplicates(rng)
    scratch = RowScratch.of(input_vectors, output_vectors, MOST_PAIRS + POOL)
    for _ in range(3):  # sums left over from a minibatch would shrink the next one's steps
        _, _, *batch = batch_with_duplicates(rng)
        expected_in, expected_out, factor_in, _ = reference_step(input_vectors, output_vectors, *batch, 0.5)
        assert (factor_in < 0.9).any()  # the limit binds
        sgns_step(input_vectors, output_vectors, *batch, NEGATIVE / batch[-1].size, 0.5, scratch=scratch)
        np.testing.assert_allclose(input_vectors, expected_in, atol=1e-5)
        np.testing.assert_allclose(output_vectors, expected_out, atol=1e-5)
    assert not scratch.output_sums.any() and (scratch.first_units == NO_UNIT).all()


def test_distinct_rows_are_numpys_unique_in_first_appearance_order():
    rng = np.random.default_rng(7)
    rows = rng.integers(0, 30, size=200)  # many repeats
    first_units = np.full(40, NO_UNIT, dtype=np.int64)
    for _ in range(2):  # the second call sees the array as the first left it
        distinct, first_unit, inverse = distinct_rows(rows, first_units)
        expected_rows, expected_first = np.unique(rows, return_index=True)
        order = np.argsort(expected_first)
        np.testing.assert_array_equal(distinct, expected_rows[order])
        np.testing.assert_array_equal(first_unit, expected_first[order])
        np.testing.assert_array_equal(distinct[inverse], rows)
        assert (first_units == NO_UNIT).all()


def test_scatter_add_sums_repeated_rows():
    matrix = np.zeros((3, 2), dtype=np.float32)
    scatter_add_rows(matrix, np.array([2, 0, 2, 2]), np.arange(8, dtype=np.float32).reshape(4, 2),
                     scatter_lanes(2, 4))
    np.testing.assert_array_equal(matrix, [[2, 3], [0, 0], [0 + 4 + 6, 1 + 5 + 7]])


@pytest.mark.parametrize("dim", [4, 5])  # even rows are scattered as complex64 pairs, odd ones as float32
def test_scatter_add_equals_a_row_by_row_loop_to_the_bit(dim):
    rng = np.random.default_rng(dim)
    matrix = rng.normal(size=(6, dim)).astype(np.float32)
    rows = rng.integers(0, 4, size=40)  # many repeats, rows 4 and 5 untouched
    updates = rng.normal(size=(40, dim)).astype(np.float32)
    expected = matrix.copy()
    for row, update in zip(rows, updates, strict=True):  # float32 sums in the scatter's order
        expected[row] += update
    scatter_add_rows(matrix, rows, updates, scatter_lanes(dim, 2 * rows.size))  # lanes for more rows than these
    np.testing.assert_array_equal(matrix, expected)


def test_loss_falls_on_a_toy_corpus():
    rng = np.random.default_rng(2)
    rows, dim, units, pool, window = 20, 8, 16, 6, 2
    input_vectors = ((rng.random((rows, dim)) - 0.5) / dim).astype(np.float32)
    output_vectors = np.zeros((rows, dim), dtype=np.float32)
    stream = np.tile(np.arange(10), 40)  # a repeating sentence: strong co-occurrence
    offsets = np.r_[-window:0, 1 : window + 1]  # (2W,) centers around each context position
    losses = []
    for _ in range(30):
        total = 0.0
        for start in range(window, stream.size - units - window, units):
            contexts = np.arange(start, start + units)  # (U,) positions
            centers = stream[(contexts[:, None] + offsets).reshape(-1)]  # (U * 2W,)
            noise = rng.integers(10, rows, pool)
            total += sgns_step(input_vectors, output_vectors, stream[contexts], np.full(units, offsets.size),
                               centers, noise, NEGATIVE / pool, 0.05)
        losses.append(total)
    assert losses[-1] < 0.25 * losses[0]
    assert all(later <= earlier * 1.01 for earlier, later in zip(losses, losses[1:], strict=False))


def test_a_saturated_pair_repeated_in_one_batch_moves_toward_its_label_without_overshooting(monkeypatch):
    """s(1 - s) is about 0 at a score of -10, so the curvature alone would not limit 300 summed
    steps of gradient 1; the gradient share does (without it the score jumps to about -400)."""
    context = np.full((1, 4), 2.0, np.float32)
    centers = np.full((2, 4), -1.25, np.float32)  # score -10 for a true pair; row 1 is a zero noise word
    sgns_step(context, centers, np.array([0]), np.array([300]), np.zeros(300, np.int64), np.array([1]), 0.0, 0.025)
    score = float(context[0] @ centers[0])
    assert -10.0 < score < 0.0
    monkeypatch.setattr(kernel, "GRADIENT_SHARE", np.float32(0.0))
    context = np.full((1, 4), 2.0, np.float32)
    centers = np.full((2, 4), -1.25, np.float32)
    sgns_step(context, centers, np.array([0]), np.array([300]), np.zeros(300, np.int64), np.array([1]), 0.0, 0.025)
    assert float(context[0] @ centers[0]) < -100.0  # the overshoot the gradient share prevents
