"""The benchmark's per-pair reference trainer (bench/reference.py), the yardstick of training
quality, against finite differences of the SGNS loss of one pair."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import reference  # noqa: E402

RATE = 0.05
STEP = 1e-6  # finite-difference step (float64)


def pair_loss(model, context, center, noise):
    """-[log s(v'_w . v_c) + sum over noise words n != w of log s(-v'_n . v_c)], in float64."""
    v = model.input[context]
    loss = np.logaddexp(0.0, -(model.output[center] @ v))
    for word in noise:
        if word != center:
            loss += np.logaddexp(0.0, model.output[word] @ v)
    return loss


def small_model(rng, rows=6, dim=4):
    return SimpleNamespace(input=rng.normal(0, 0.5, (rows, dim)), output=rng.normal(0, 0.5, (rows, dim)))


def numeric_gradient(model, matrix_name, row, context, center, noise):
    matrix = getattr(model, matrix_name)
    gradient = np.zeros(matrix.shape[1])
    for d in range(matrix.shape[1]):
        saved = matrix[row, d]
        matrix[row, d] = saved + STEP
        up = pair_loss(model, context, center, noise)
        matrix[row, d] = saved - STEP
        down = pair_loss(model, context, center, noise)
        matrix[row, d] = saved
        gradient[d] = (up - down) / (2 * STEP)
    return gradient


def test_one_pair_steps_every_row_along_its_negative_gradient():
    rng = np.random.default_rng(3)
    model = small_model(rng)
    context, center, noise = 0, 1, [2, 3, 4, 5, 1]  # the last noise word is the center: skipped
    expected = {("input", context): model.input[context] - RATE * numeric_gradient(
        model, "input", context, context, center, noise)}
    for row in (1, 2, 3, 4, 5):
        expected["output", row] = model.output[row] - RATE * numeric_gradient(
            model, "output", row, context, center, noise)
    reference.sgns_pair(model, context, center, noise, np.float32(RATE))
    for (matrix_name, row), value in expected.items():
        np.testing.assert_allclose(getattr(model, matrix_name)[row], value, rtol=1e-6, atol=1e-9)


def test_a_repeated_noise_word_sees_its_first_step():
    rng = np.random.default_rng(4)
    model = small_model(rng)
    once = small_model(np.random.default_rng(4))
    reference.sgns_pair(model, 0, 1, [2, 2], np.float32(RATE))
    # by hand: the second draw of word 2 is scored against its row after the first step
    context_before = once.input[0].copy()
    step = np.zeros_like(context_before)
    for target, label in ((1, 1.0), (2, 0.0), (2, 0.0)):
        gradient = RATE * (label - 1.0 / (1.0 + np.exp(-(once.output[target] @ context_before))))
        step += gradient * once.output[target]
        once.output[target] += gradient * context_before
    np.testing.assert_allclose(model.output, once.output, rtol=1e-6)
    np.testing.assert_allclose(model.input[0], context_before + step, rtol=1e-6)
