"""The kernel against a slow per-pair loop, finite differences, and a toy corpus."""

import numpy as np

from sgns_spark.kernel import pairs_per_position, scatter_add_rows, sgns_step

WINDOW = 2
SLOTS = 2 * WINDOW + 1


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


NEGATIVE = 3


def batch_with_duplicates(rng, rows=7, dim=5, batch=6, pool=4):
    """One minibatch: input and output rows, window rows, context mask, centers, noise pool."""
    input_vectors = rng.normal(0, 0.5, (rows, dim)).astype(np.float32)
    output_vectors = rng.normal(0, 0.5, (rows, dim)).astype(np.float32)
    window_rows = rng.integers(0, 3, size=batch + 2 * WINDOW)  # few rows: many repeats
    mask = rng.random((batch, SLOTS)) < 0.7
    mask[:, WINDOW] = False
    center_rows = rng.integers(0, 4, size=batch)
    noise_rows = rng.integers(0, 4, size=pool)  # overlaps centers and itself
    return input_vectors, output_vectors, window_rows, mask, center_rows, noise_rows


def pairs_of(window_rows, mask, center_rows):
    """(context row, center row) for every pair, in the kernel's layout."""
    for center, slot in zip(*np.nonzero(mask), strict=True):
        yield window_rows[center + slot], center_rows[center]


def reference_loss(input_vectors, output_vectors, window_rows, mask, center_rows, noise_rows):
    """The documented loss, pair by pair: each pool word at weight NEGATIVE / pool size."""
    weight = NEGATIVE / noise_rows.size
    loss = 0.0
    for context, center in pairs_of(window_rows, mask, center_rows):
        v = input_vectors[context].astype(np.float64)
        loss -= np.log(sigmoid(output_vectors[center] @ v))
        for n in noise_rows:
            loss -= weight * np.log(sigmoid(-(output_vectors[n] @ v)))
    return loss


def reference_step(input_vectors, output_vectors, window_rows, mask, center_rows, noise_rows, rate,
                   in_scale, out_scale, limited=True):
    """Minibatch SGD written pair by pair: every gradient from the pre-step parameters, summed per
    row, and (if `limited`) each row's step limited so that rate x its summed s(1 - s)|x|^2 is at
    most 1.

    Returns the new input and output vectors and the step factors of both (1 = not limited).
    """
    gradient_in = np.zeros(input_vectors.shape)
    gradient_out = np.zeros(output_vectors.shape)
    curvature_in = np.zeros(len(input_vectors))
    curvature_out = np.zeros(len(output_vectors))
    weight = NEGATIVE / noise_rows.size
    for context, center in pairs_of(window_rows, mask, center_rows):
        v = input_vectors[context].astype(np.float64)
        for row, label, pair_weight in [(center, 1.0, 1.0)] + [(n, 0.0, weight) for n in noise_rows]:
            u = output_vectors[row].astype(np.float64)
            probability = sigmoid(u @ v)
            g = pair_weight * (label - probability)
            gradient_in[context] += g * u
            gradient_out[row] += g * v
            curvature_in[context] += pair_weight * probability * (1 - probability) * (u @ u)
            curvature_out[row] += pair_weight * probability * (1 - probability) * (v @ v)
    factors = []
    new_vectors = []
    for vectors, gradient, curvature, scale in ((input_vectors, gradient_in, curvature_in, in_scale),
                                                (output_vectors, gradient_out, curvature_out, out_scale)):
        step = rate * scale
        factor = np.minimum(1.0, 1.0 / np.maximum(step * curvature, 1e-12)) if limited else np.ones(len(vectors))
        new_vectors.append(vectors + (step * factor)[:, None] * gradient)
        factors.append(factor)
    return (*new_vectors, *factors)


def test_kernel_matches_per_pair_reference_with_duplicate_ids():
    rng = np.random.default_rng(0)
    arrays = batch_with_duplicates(rng)
    in_scale = rng.uniform(1, 2, 7).astype(np.float32)
    out_scale = rng.uniform(1, 2, 7).astype(np.float32)
    expected_loss = reference_loss(*arrays)
    for rate in (0.1, 0.5):  # at 0.5 the step limit binds for some rows and not for others
        expected_in, expected_out, factor_in, factor_out = reference_step(*arrays, rate, in_scale, out_scale)
        input_vectors, output_vectors, *rest = (a.copy() for a in arrays)
        loss = sgns_step(input_vectors, output_vectors, *rest, NEGATIVE, rate, in_scale, out_scale)
        assert abs(loss - expected_loss) < 1e-4
        np.testing.assert_allclose(input_vectors, expected_in, atol=1e-5)
        np.testing.assert_allclose(output_vectors, expected_out, atol=1e-5)
    factors = np.concatenate([factor_in, factor_out])
    assert (factors < 0.9).any() and (factors[factors < 1] < 1).any() and (factors == 1).any()


def test_step_limit_keeps_a_large_rate_from_raising_the_loss():
    rng = np.random.default_rng(3)
    arrays = batch_with_duplicates(rng)
    ones = np.ones(7, dtype=np.float32)
    before = reference_loss(*arrays)
    plain_in, plain_out, *_ = reference_step(*arrays, 0.5, ones, ones, limited=False)
    assert reference_loss(plain_in, plain_out, *arrays[2:]) > before  # summed stale steps overshoot
    input_vectors, output_vectors, *rest = (a.copy() for a in arrays)
    sgns_step(input_vectors, output_vectors, *rest, NEGATIVE, 0.5, ones, ones)
    assert reference_loss(input_vectors, output_vectors, *rest) < before


def test_kernel_step_is_minus_the_finite_difference_gradient():
    rng = np.random.default_rng(1)
    arrays = batch_with_duplicates(rng, dim=4)
    input_vectors, output_vectors, *batch = arrays
    ones = np.ones(7, dtype=np.float32)
    rate = 1e-3
    stepped_in, stepped_out = input_vectors.copy(), output_vectors.copy()
    sgns_step(stepped_in, stepped_out, *batch, NEGATIVE, rate, ones, ones)
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


def test_pairs_per_position_counts_each_position_as_context():
    mask = np.array([[1, 0, 0, 0, 1], [0, 1, 0, 1, 1]], dtype=bool)  # centers 0, 1 with W = 2
    # center 0 uses positions 0 and 4; center 1 uses positions 2, 4 and 5 (slot j -> i + j)
    np.testing.assert_array_equal(pairs_per_position(mask), [1, 0, 1, 0, 2, 1])


def test_scatter_add_sums_repeated_rows():
    matrix = np.zeros((3, 2), dtype=np.float32)
    scatter_add_rows(matrix, np.array([2, 0, 2, 2]), np.arange(8, dtype=np.float32).reshape(4, 2))
    np.testing.assert_array_equal(matrix, [[2, 3], [0, 0], [0 + 4 + 6, 1 + 5 + 7]])


def test_loss_falls_on_a_toy_corpus():
    rng = np.random.default_rng(2)
    rows, dim, batch, pool = 20, 8, 16, 6
    input_vectors = ((rng.random((rows, dim)) - 0.5) / dim).astype(np.float32)
    output_vectors = np.zeros((rows, dim), dtype=np.float32)
    stream = np.tile(np.arange(10), 40)  # a repeating sentence: strong co-occurrence
    ones = np.ones(rows, dtype=np.float32)
    losses = []
    for _ in range(30):
        total = 0.0
        for start in range(WINDOW, stream.size - batch - WINDOW, batch):
            window_rows = stream[start - WINDOW : start + batch + WINDOW]
            mask = np.ones((batch, SLOTS), dtype=bool)
            mask[:, WINDOW] = False
            centers, noise = stream[start : start + batch], rng.integers(10, rows, pool)
            total += sgns_step(input_vectors, output_vectors, window_rows, mask, centers, noise, NEGATIVE, 0.05,
                               ones, ones)
        losses.append(total)
    assert losses[-1] < 0.25 * losses[0]
    assert all(later <= earlier * 1.01 for earlier, later in zip(losses, losses[1:], strict=False))
