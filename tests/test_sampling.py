import numpy as np

from sgns_spark.sampling import (
    NoiseSampler,
    context_window,
    draw_shard_samples,
    shard_generators,
)


def test_noise_sampler_follows_unigram_power_within_tolerance():
    counts = np.array([1000, 300, 100, 30, 10, 3, 1], dtype=np.float64)
    weights = counts**0.75 / (counts**0.75).sum()
    draws = NoiseSampler(weights).draw(np.random.default_rng(0), (2_000_000,))
    frequencies = np.bincount(draws, minlength=counts.size) / draws.size
    # 2M draws: the standard error of a frequency p is sqrt(p(1-p)/2e6) < 4e-4
    np.testing.assert_allclose(frequencies, weights, atol=2e-3)


def test_subsampling_keeps_words_at_their_keep_probability():
    keep = np.array([1.0, 0.5, 0.1, 0.02])
    word_ids = np.repeat(np.arange(4), 250_000).astype(np.int32)
    samples = draw_shard_samples(word_ids, np.zeros(word_ids.size, np.int64), keep,
                                 NoiseSampler(np.full(4, 0.25)), window=3, batch_centers=1000,
                                 noise_pool=7, generators=shard_generators(1, 0, 0, 0))
    kept_rate = np.bincount(samples.word_ids, minlength=4) / 250_000
    np.testing.assert_allclose(kept_rate, keep, atol=3e-3)
    assert samples.reduced_window.min() == 1 and samples.reduced_window.max() == 3
    assert samples.noise_ids.shape == (-(-samples.word_ids.size // 1000), 7)  # a pool per minibatch


def test_draws_depend_only_on_seed_epoch_round_and_shard():
    first = shard_generators(5, 1, 2, 3)["noise"].random(4)
    again = shard_generators(5, 1, 2, 3)["noise"].random(4)
    other = shard_generators(5, 1, 2, 4)["noise"].random(4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_context_window_matches_a_loop():
    rng = np.random.default_rng(4)
    sentence_index = np.repeat(np.arange(6), rng.integers(1, 8, 6))
    window = 3
    reduced = rng.integers(1, window + 1, sentence_index.size)
    start, stop = 2, sentence_index.size - 1
    positions, mask = context_window(sentence_index, reduced, window, start, stop)
    for center in range(start, stop):
        expected = {
            center + offset for offset in range(-reduced[center], reduced[center] + 1)
            if offset and 0 <= center + offset < sentence_index.size
            and sentence_index[center + offset] == sentence_index[center]
        }
        slots = np.flatnonzero(mask[center - start])
        assert {positions[center - start + slot] for slot in slots} == expected


def test_guide_table_draws_equal_inverse_cdf_search():
    rng = np.random.default_rng(5)
    weights = rng.pareto(1.0, 3000) + 1e-9
    weights /= weights.sum()
    sampler = NoiseSampler(weights)
    uniform = np.random.default_rng(6).random(200_000)
    expected = np.minimum(np.searchsorted(sampler.cumulative, uniform, side="right"), weights.size - 1)
    np.testing.assert_array_equal(sampler.draw(np.random.default_rng(6), (200_000,)), expected)
