"""Training schedules simulated in one process (numpy only, no Spark): the cheap place to try them.

The simulator trains with the project's own kernel and samplers, on a corpus of tokens between
spaces (the benchmark corpus, or one the bench prepared) encoded once, and walks a schedule's
phases in order, each round's sentences in a drawn order as the product trains them. Blocks of
one phase own disjoint rows, so running them one after another gives the same rows as running
them in parallel tasks.

    python bench/simulate.py --shards 2,16,64 --rounds 1,2 [--hot-words 0,1000] [--warmup 0.05]
        [--line-words 0] [--decay-end 0.5] [--similarity <files>]
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from run import OWN_LINES  # noqa: E402 (the bench's own-lines width, which a prepared corpus keeps)

from sgns_spark.evaluate import analogy_accuracy, similarity_spearman  # noqa: E402
from sgns_spark.train.kernel import RowScratch, sgns_step  # noqa: E402
from sgns_spark.train.sampling import (  # noqa: E402
    SENTENCE_ORDER_STREAM,
    NoiseSampler,
    seeded_generator,
    skipgram_pairs,
)
from sgns_spark.train.schedule import pair_strata, word_groups  # noqa: E402
from sgns_spark.vectors import Vectors  # noqa: E402

SHARED = REPOSITORY.parent / "shared" / "data"
CACHE = REPOSITORY / "bench-results" / "cache"
QUESTIONS = SHARED / "questions-words.txt"
WORDSIM = SHARED / "wordsim353.tsv"
MIN_COUNT, SAMPLE, NOISE_EXPONENT = 5, 1e-3, 0.75
DIM, WINDOW, NEGATIVE, POOL, BATCH_PAIRS = 100, 5, 5, 128, 768
LEARNING_RATE, MIN_RATIO = 0.025, 1e-4
LINE_WORDS = 1000
LINE_WORDS_HELP = "words a sentence; 0 = the corpus's own lines (a corpus the bench prepared with LINES=0)"
SIMILARITY_HELP = "comma-separated similarity sets scored beside WS353 and SimLex-999"
DECAY_END_HELP = "the rate at the end of the last epoch, as a share of the start (word2vec.c: 1e-4)"
SEED = 1


def encoded_corpus(source: Path, line_words: int) -> dict:
    """Token ids, sentence index, words and counts of a corpus of tokens between spaces (cached as
    .npz), in sentences of `line_words`, or in its own lines when that is `OWN_LINES`."""
    target = CACHE / f"simulate-{source.name.split('.')[0]}-{line_words}.npz"
    if target.exists():
        data = np.load(target, allow_pickle=True)
        return {key: data[key] for key in data.files}
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt", encoding="utf-8") as stream:
        if line_words == OWN_LINES:
            lines = [line.split() for line in stream]
            words = [word for line in lines for word in line]
            sentence = np.repeat(np.arange(len(lines), dtype=np.int64), [len(line) for line in lines])
        else:
            words = stream.read().split()
            sentence = np.arange(len(words), dtype=np.int64) // line_words
    counts = Counter(words)
    vocabulary = sorted((word for word, count in counts.items() if count >= MIN_COUNT),
                        key=lambda word: (-counts[word], word))
    index = {word: i for i, word in enumerate(vocabulary)}
    ids = np.fromiter((index.get(word, -1) for word in words), dtype=np.int32, count=len(words))
    known = ids >= 0
    CACHE.mkdir(parents=True, exist_ok=True)
    data = {"ids": ids[known], "sentence": sentence[known], "words": np.array(vocabulary, dtype=object),
            "counts": np.array([counts[word] for word in vocabulary], dtype=np.int64),
            "raw_words": np.array(len(words))}
    np.savez(target, **data)
    return data


def vocabulary_columns(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """keep_prob and noise_weight as sgns_spark.vocab computes them."""
    total = counts.sum()
    threshold = SAMPLE * total
    keep = np.minimum(1.0, (np.sqrt(counts / threshold) + 1) * threshold / counts)
    noise = counts.astype(np.float64) ** NOISE_EXPONENT
    return keep, noise / noise.sum()


class Model:
    """Input and output rows of the whole vocabulary (word2vec.c's initialisation)."""

    def __init__(self, vocab_size: int):
        rng = np.random.default_rng(SEED)
        self.input = ((rng.random((vocab_size, DIM), dtype=np.float32) - 0.5) / DIM).astype(np.float32)
        self.output = np.zeros((vocab_size, DIM), dtype=np.float32)


def learning_rate(progress: float, decay_end: float) -> float:
    """The rate after `progress` of all epochs' words: linear from `LEARNING_RATE` to `decay_end`
    x that (the product's `train.min_learning_rate_ratio`), never under `MIN_RATIO` x that."""
    return LEARNING_RATE * max(MIN_RATIO, 1.0 - (1.0 - decay_end) * progress)


def train_block(model, context_ids, center_ids, position, pool_sampler, pool_ids, noise_weight,
                generator, progress_start, progress_span, decay_end, applied=None):
    """Minibatch SGD over one block's pairs (context-position order), as sgns_spark.shard does."""
    if center_ids.size == 0:
        return 0.0
    starts = np.flatnonzero(np.r_[True, position[1:] != position[:-1]])  # (units,)
    unit_pairs = np.diff(np.r_[starts, position.size])
    unit_ids = context_ids[starts]
    unit_end = np.cumsum(unit_pairs)
    batch_of_unit = (unit_end - 1) // BATCH_PAIRS
    batch_start = np.flatnonzero(np.r_[True, batch_of_unit[1:] != batch_of_unit[:-1]])
    batch_stop = np.r_[batch_start[1:], unit_ids.size]
    batch_pair_bounds = np.r_[0, unit_end[batch_stop - 1]]  # (batches + 1,) each one's first pair, then all pairs
    pools = pool_ids[pool_sampler.draw(generator, (batch_start.size, POOL))]
    loss = 0.0
    pairs = center_ids.size
    scratch = RowScratch.of(model.input, model.output, int(np.diff(batch_pair_bounds).max()) + POOL)
    for number, (first, stop) in enumerate(zip(batch_start, batch_stop, strict=True)):
        pair_first, pair_stop = batch_pair_bounds[number], batch_pair_bounds[number + 1]
        rate = learning_rate(progress_start + progress_span * pair_first / pairs, decay_end)
        loss += sgns_step(model.input, model.output, unit_ids[first:stop], unit_pairs[first:stop],
                          center_ids[pair_first:pair_stop], pools[number], noise_weight, rate,
                          with_loss=number % 8 == 0, applied_curvature=applied, scratch=scratch)
    return loss


class HotRows:
    """The replicated rows (ids below `count`) of one phase: each task starts from the phase's
    values, and their deltas are merged when the phase ends."""

    def __init__(self, model, count: int, vocab_size: int, merge: str):
        self.model, self.count, self.merge = model, count, merge
        self.applied = (np.zeros(vocab_size, np.float32), np.zeros(vocab_size, np.float32))

    def start_phase(self):
        self.start = [self.model.input[: self.count].copy(), self.model.output[: self.count].copy()]
        self.delta = [np.zeros_like(matrix) for matrix in self.start]
        self.total = [np.zeros(self.count) for _ in self.start]
        self.saturation = [np.zeros(self.count) for _ in self.start]

    def start_task(self):
        self.model.input[: self.count] = self.start[0]
        self.model.output[: self.count] = self.start[1]
        for applied in self.applied:
            applied[: self.count] = 0.0

    def end_task(self):
        for side, matrix in enumerate((self.model.input, self.model.output)):
            self.delta[side] += matrix[: self.count] - self.start[side]
            curvature = self.applied[side][: self.count].astype(np.float64)
            self.total[side] += curvature
            self.saturation[side] += -np.expm1(-curvature)

    def end_phase(self, tasks: int):
        for side, matrix in enumerate((self.model.input, self.model.output)):
            if self.merge == "sum":
                factor = np.ones(self.count)
            elif self.merge == "average":
                factor = np.full(self.count, 1.0 / tasks)
            else:  # what serial SGD on one quadratic would have moved, given the replicas' moves
                factor = np.divide(-np.expm1(-self.total[side]), self.saturation[side],
                                   out=np.ones(self.count), where=self.saturation[side] > 0)
            matrix[: self.count] = self.start[side] + (factor[:, None] * self.delta[side]).astype(np.float32)


def simulate(corpus: dict, shards: int, rounds: int, epochs: int, hot_words: int = 0,
             merge: str = "curvature", warmup: float = 0.0, decay_end: float = MIN_RATIO) -> Model:
    """Stratified training over the cold words, the `hot_words` most frequent replicated in
    every task and merged after each phase; hot_words = 0 is the product's schedule."""
    counts = corpus["counts"]
    vocab_size = counts.size
    keep, noise = vocabulary_columns(counts)
    hot = np.arange(vocab_size) < hot_words
    group = np.full(vocab_size, -1, dtype=np.int64)
    group[hot_words:] = word_groups(np.arange(vocab_size - hot_words), shards)
    center_share = counts * keep / (counts * keep).sum()
    share = np.bincount(group[~hot], center_share[~hot], shards) + center_share[hot].sum() / shards  # (S,)
    samplers, candidates, noise_weights = [], [], []
    for out in range(shards):
        ids = np.r_[np.flatnonzero(hot), np.flatnonzero(group == out)]
        weights = np.where(hot[ids], noise[ids], noise[ids] / share[out])
        candidates.append(ids)
        samplers.append(NoiseSampler(weights / weights.sum()))
        noise_weights.append(NEGATIVE / POOL * weights.sum())
    ids, sentence = corpus["ids"], corpus["sentence"]
    sentence_draws = np.random.default_rng(SEED).random(int(sentence[-1]) + 1)
    # the first `warmup` of the sentences train serially (round 0), the rest in `rounds` rounds
    round_of_sentence = np.where(sentence_draws < warmup, 0,
                                 1 + ((sentence_draws - warmup) / (1 - warmup) * rounds).astype(np.int64))
    round_of_sentence = np.minimum(round_of_sentence, rounds)
    token_round = round_of_sentence[sentence]
    rounds += 1
    words_per_round = np.bincount(token_round, minlength=rounds)
    everything = np.arange(vocab_size)
    serial_sampler = NoiseSampler(noise)
    words_total = epochs * ids.size
    model = Model(vocab_size)
    replicas = HotRows(model, hot_words, vocab_size, merge) if hot_words else None
    started = time.perf_counter()
    words_done = 0
    for epoch, round_index in itertools.product(range(epochs), range(rounds)):
        key = (SEED, epoch, round_index)
        # the round's sentences in a drawn order, as the product trains them (`sentence_tokens`)
        sentence_rank = seeded_generator(*key, SENTENCE_ORDER_STREAM, 0).permutation(sentence_draws.size)
        tokens = np.flatnonzero(token_round == round_index)
        tokens = tokens[np.argsort(sentence_rank[sentence[tokens]], kind="stable")]
        pairs = skipgram_pairs(ids[tokens], sentence_rank[sentence[tokens]], keep, WINDOW,
                               seeded_generator(*key, 0, 0), seeded_generator(*key, 1, 0))
        spread = seeded_generator(*key, 3, 0).integers(shards, size=(2, pairs.kept_tokens))
        context_group, center_group = group[pairs.context_ids], group[pairs.center_ids]
        context_hot, center_hot = hot[pairs.context_ids], hot[pairs.center_ids]
        stratum = np.where(context_hot | center_hot, spread[0][pairs.context_position],
                           pair_strata(context_group, center_group, shards))
        task = np.where(~context_hot, context_group,
                        np.where(~center_hot, (center_group - stratum) % shards, spread[1][pairs.context_position]))
        block = stratum.astype(np.int64) * shards + task
        order = np.argsort(block, kind="stable")
        bounds = np.searchsorted(block[order], np.arange(shards * shards + 1))
        round_share = words_per_round[round_index] / words_total
        if round_index == 0:
            if pairs.center_ids.size:
                train_block(model, pairs.context_ids, pairs.center_ids, pairs.context_position, serial_sampler,
                            everything, NEGATIVE / POOL, seeded_generator(*key, 2, 0), words_done / words_total,
                            round_share, decay_end)
            words_done += words_per_round[round_index]
            continue
        for phase in range(shards):
            progress = (words_done / words_total) + round_share * phase / shards
            if replicas:
                replicas.start_phase()
            for owner in range(shards):
                chosen_pairs = order[bounds[phase * shards + owner]: bounds[phase * shards + owner + 1]]
                out = (owner + phase) % shards
                if replicas:
                    replicas.start_task()
                train_block(model, pairs.context_ids[chosen_pairs], pairs.center_ids[chosen_pairs],
                            pairs.context_position[chosen_pairs], samplers[out], candidates[out],
                            noise_weights[out], seeded_generator(*key, 2, phase * shards + owner),
                            progress, round_share / shards, decay_end, replicas.applied if replicas else None)
                if replicas:
                    replicas.end_task()
            if replicas:
                replicas.end_phase(shards)
        words_done += words_per_round[round_index]
        print(f"  epoch {epoch + 1} round {round_index + 1}/{rounds}: {time.perf_counter() - started:.0f} s",
              flush=True)
    return model


def score(model: Model, corpus: dict, held_out: str = "") -> dict:
    """Analogy, WS353, SimLex-999 and each of the comma-separated similarity files `held_out`
    (named by its stem) of the model's input vectors."""
    vectors = Vectors(list(corpus["words"]), model.input)
    simlex = Path(__import__("gensim").__file__).parent / "test" / "test_data" / "simlex999.txt"
    sets = [Path(path) for path in held_out.split(",") if path]
    return {"analogy": analogy_accuracy(vectors, QUESTIONS)["accuracy"],
            "ws353": similarity_spearman(vectors, WORDSIM)["spearman"],
            "simlex": similarity_spearman(vectors, simlex)["spearman"],
            **{path.stem: similarity_spearman(vectors, path)["spearman"] for path in sets}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=SHARED / "enwiki_text8style_1e8.gz")
    parser.add_argument("--shards", default="2")
    parser.add_argument("--rounds", default="4")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--line-words", type=int, default=LINE_WORDS, help=LINE_WORDS_HELP)
    parser.add_argument("--similarity", default="", help=SIMILARITY_HELP)
    parser.add_argument("--decay-end", type=float, default=MIN_RATIO, help=DECAY_END_HELP)
    parser.add_argument("--hot-words", default="0")
    parser.add_argument("--merge", default="curvature")
    parser.add_argument("--warmup", default="0")
    arguments = parser.parse_args()
    corpus = encoded_corpus(arguments.corpus, arguments.line_words)
    for shards, rounds, hot_words, merge, warmup in itertools.product(
            map(int, arguments.shards.split(",")), map(int, arguments.rounds.split(",")),
            map(int, arguments.hot_words.split(",")), arguments.merge.split(","),
            map(float, arguments.warmup.split(","))):
        started = time.perf_counter()
        scores = score(simulate(corpus, shards, rounds, arguments.epochs, hot_words, merge, warmup,
                                arguments.decay_end), corpus, arguments.similarity)
        row = {"shards": shards, "rounds": rounds, "epochs": arguments.epochs, "hot_words": hot_words,
               "merge": merge, "warmup": warmup, **scores,
               "seconds": round(time.perf_counter() - started)}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
