import numpy as np

from sgns_spark.train.sampling import (
    SUBSAMPLE_STREAM,
    WINDOW_STREAM,
    NoiseSampler,
    run_start_flags,
    seeded_generator,
    skipgram_pairs,
)


def test_noise_sampler_follows_unigram_power_within_tolerance():
    counts = np.array([1000, 300, 100, 30, 10, 3, 1], dtype=np.float64)
    weights = counts**0.75 / (counts**0.75).sum()
    draws = NoiseSampler(weights).draw(np.random.default_rng(0), (2_000_000,))
    frequencies = np.bincount(draws, minlength=counts.size) / draws.size
    # 2M draws: the standard error of a frequency p is sqrt(p(1-p)/2e6) < 4e-4
    np.testing.assert_allclose(frequencies, weights, atol=2e-3)


def generators(seed=1):
    return seeded_generator(seed, 0, 0, SUBSAMPLE_STREAM, 0), seeded_generator(seed, 0, 0, WINDOW_STREAM, 0)


def test_subsampling_keeps_words_at_their_keep_probability():
    keep = np.array([1.0, 0.5, 0.1, 0.02])
    for word, probability in enumerate(keep):
        word_ids = np.full(250_000, word, dtype=np.int32)
        pairs = skipgram_pairs(word_ids, np.zeros(word_ids.size, np.int64), keep, 3, *generators())
        assert abs(pairs.kept_tokens / word_ids.size - probability) < 3e-3


def test_draws_depend_only_on_seed_epoch_round_stream_and_index():
    first = seeded_generator(5, 1, 2, 3, 4).random(4)
    again = seeded_generator(5, 1, 2, 3, 4).random(4)
    np.testing.assert_array_equal(first, again)
    for other in ((5, 1, 2, 3, 5), (5, 1, 2, 4, 4), (5, 1, 3, 3, 4), (5, 2, 2, 3, 4), (6, 1, 2, 3, 4)):
        assert not np.array_equal(first, seeded_generator(*other).random(4))


def test_skipgram_pairs_match_a_loop_over_centers():
    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 12, 30)
    sentence_index = np.repeat(np.arange(lengths.size), lengths)
    word_ids = rng.integers(0, 20, sentence_index.size).astype(np.int32)
    keep = rng.uniform(0.3, 1.0, 20)
    window = 3
    pairs = skipgram_pairs(word_ids, sentence_index, keep, window, *generators(7))
    # the same draws, written out per center as word2vec.c does
    subsample, shrink = generators(7)
    kept = subsample.random(word_ids.size) < keep[word_ids]
    ids, sentence = word_ids[kept], sentence_index[kept]
    reach = shrink.integers(1, window + 1, ids.size)
    expected = sorted(
        (center + offset, ids[center + offset], ids[center])
        for center in range(ids.size) for offset in range(-reach[center], reach[center] + 1)
        if offset and 0 <= center + offset < ids.size and sentence[center + offset] == sentence[center]
    )
    assert pairs.kept_tokens == ids.size and len(expected) > 300
    assert np.all(np.diff(pairs.context_position) >= 0)  # ordered by context position
    found = sorted(zip(pairs.context_position, pairs.context_ids, pairs.center_ids, strict=True))
    assert found == expected


def test_guide_table_draws_equal_inverse_cdf_search():
    rng = np.random.default_rng(5)
    weights = rng.pareto(1.0, 3000) + 1e-9
    weights /= weights.sum()
    sampler = NoiseSampler(weights)
    uniform = np.random.default_rng(6).random(200_000)
    expected = np.minimum(np.searchsorted(sampler.cumulative, uniform, side="right"), weights.size - 1)
    np.testing.assert_array_equal(sampler.draw(np.random.default_rng(6), (200_000,)), expected)


def test_run_start_flags_mark_each_run_of_all_keys_and_nothing_when_empty():
    first = np.array([1, 1, 1, 2, 2, 3])
    second = np.array([5, 5, 6, 6, 6, 6])
    assert run_start_flags(first).tolist() == [True, False, False, True, False, True]
    assert run_start_flags(first, second).tolist() == [True, False, True, True, False, True]
    assert run_start_flags(np.array([], dtype=np.int64)).size == 0
