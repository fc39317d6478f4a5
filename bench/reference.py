"""The yardstick: plain SGNS, one pair at a time in word2vec.c's order, in one process.

No minibatch, no noise pool, no step limit, no word groups: for each kept center word, in
corpus order, and each context word of its shrunk window, the context's input row meets the
center's output row (label 1) and `NEGATIVE` noise words drawn independently from P_n (label
0), each step taken at the current values, as word2vec.c's skip-gram does. It reads the same
encoded corpus, vocabulary, subsampling draws and windows as the simulator, so a difference
between the two is the product's training, not its data. Slow (about 10 us per pair): a
1-epoch run of the benchmark corpus takes about 15 minutes on one core.

    python bench/reference.py [--line-words 12] [--fraction 0.3] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY / "bench"))

from simulate import (  # noqa: E402
    DECAY_END_HELP,
    LEARNING_RATE,
    LINE_WORDS,
    LINE_WORDS_HELP,
    MIN_RATIO,
    NEGATIVE,
    SHARED,
    SIMILARITY_HELP,
    WINDOW,
    Model,
    encoded_corpus,
    score,
    vocabulary_columns,
)

from sgns_spark.train.sampling import NoiseSampler, seeded_generator  # noqa: E402

RATE_UPDATE_WORDS = 10_000  # word2vec.c recomputes its decayed rate every 10k words
DRAW_CHUNK = 1 << 20  # noise draws taken from the generator at once
LABELS = np.r_[1.0, np.zeros(NEGATIVE)].astype(np.float32)  # (k + 1,) the center's label, then the noise words'


def sigmoid(score: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-score))


def sgns_pair(model: Model, context: int, center: int, noise: list[int], rate: np.float32) -> None:
    """word2vec.c's update of one (context, center) pair with its `NEGATIVE` noise words.

    A noise word equal to the center is skipped, as in word2vec.c and gensim. The targets'
    output rows step in turn from the context row's old value; the context row takes its
    summed step last. When the targets are distinct, one product over all of them is the
    same arithmetic; a repeated target is stepped one at a time so that it sees its first step.
    """
    targets = [center, *(word for word in noise if word != center)]  # the center first
    labels = LABELS[: len(targets)]  # (targets,) 1 for the center, 0 for noise
    context_row = model.input[context]  # (dim,) v_c, a view
    if len(set(targets)) == len(targets):
        outputs = model.output[targets]  # (targets, dim) v'_t
        gradient = rate * (labels - sigmoid(outputs @ context_row))  # (targets,) rate x d(log-lik)/d(score)
        context_step = gradient @ outputs  # (dim,)
        model.output[targets] = outputs + gradient[:, None] * context_row
    else:
        context_step = np.zeros_like(context_row)
        for target, label in zip(targets, labels, strict=True):
            output_row = model.output[target]  # (dim,), a view
            gradient = rate * (label - sigmoid(output_row @ context_row))
            context_step += gradient * output_row
            output_row += gradient * context_row
    context_row += context_step


def train_epoch(model: Model, ids: np.ndarray, sentence: np.ndarray, keep: np.ndarray, sampler: NoiseSampler,
                key: tuple[int, int, int], progress_start: float, progress_span: float, decay_end: float) -> int:
    """One pass of sequential SGD in word2vec.c's order: center positions in corpus order, and
    for each its context positions from the farthest left to the farthest right; return the pairs.

    Subsampling and window draws are those of `sgns_spark.train.sampling.skipgram_pairs` with
    the same generators, so the pairs are the same set as the simulator's.
    """
    kept = seeded_generator(*key, 0, 0).random(ids.size) < keep[ids]
    kept_ids, kept_sentence = ids[kept], sentence[kept]  # (kept,) each
    reach = seeded_generator(*key, 1, 0).integers(1, WINDOW + 1, size=kept_ids.size)  # (kept,)
    sentence_start = np.flatnonzero(np.r_[True, kept_sentence[1:] != kept_sentence[:-1]])  # (sentences,)
    sentence_stop = np.r_[sentence_start[1:], kept_ids.size]
    kept_count, kept_ids, reach = kept_ids.size, kept_ids.tolist(), reach.tolist()  # lists index faster
    noise_generator = seeded_generator(*key, 2, 0)
    pair, rate = 0, np.float32(LEARNING_RATE)
    noise: list[list[int]] = []
    for first, stop in zip(sentence_start.tolist(), sentence_stop.tolist(), strict=True):
        for position in range(first, stop):
            if position % RATE_UPDATE_WORDS == 0:  # the linear decay over the epoch's kept words
                progress = progress_start + progress_span * position / kept_count
                rate = np.float32(LEARNING_RATE * max(MIN_RATIO, 1.0 - (1.0 - decay_end) * progress))
            center = kept_ids[position]
            for context_position in range(max(first, position - reach[position]),
                                          min(stop, position + reach[position] + 1)):
                if context_position == position:
                    continue
                if pair % DRAW_CHUNK == 0:
                    noise = sampler.draw(noise_generator, (DRAW_CHUNK, NEGATIVE)).tolist()
                sgns_pair(model, kept_ids[context_position], center, noise[pair % DRAW_CHUNK], rate)
                pair += 1
    return pair


def reference_model(corpus: dict, epochs: int, fraction: float, seed: int, decay_end: float) -> Model:
    """Train the reference on the first `fraction` of the corpus for `epochs`, its rate falling
    linearly from `LEARNING_RATE` to `decay_end` x that at the end of the last epoch."""
    counts = corpus["counts"]
    keep, noise = vocabulary_columns(counts)
    stop = int(corpus["ids"].size * fraction)
    sampler = NoiseSampler(noise)
    model = Model(counts.size)
    for epoch in range(epochs):
        pairs = train_epoch(model, corpus["ids"][:stop], corpus["sentence"][:stop], keep, sampler,
                            (seed, epoch, 0), epoch / epochs, 1.0 / epochs, decay_end)
        print(f"  epoch {epoch + 1}: {pairs} pairs", flush=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=SHARED / "enwiki_text8style_1e8.gz")
    parser.add_argument("--line-words", type=int, default=LINE_WORDS, help=LINE_WORDS_HELP)
    parser.add_argument("--similarity", default="", help=SIMILARITY_HELP)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the corpus trained, from its start")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--decay-end", type=float, default=MIN_RATIO, help=DECAY_END_HELP)
    arguments = parser.parse_args()
    corpus = encoded_corpus(arguments.corpus, arguments.line_words)
    started = time.perf_counter()
    model = reference_model(corpus, arguments.epochs, arguments.fraction, arguments.seed, arguments.decay_end)
    print(json.dumps({"system": "reference", "lines": arguments.line_words, "epochs": arguments.epochs,
                      "fraction": arguments.fraction, "seed": arguments.seed, "decay_end": arguments.decay_end,
                      **score(model, corpus, arguments.similarity),
                      "seconds": round(time.perf_counter() - started)}), flush=True)


if __name__ == "__main__":
    main()
