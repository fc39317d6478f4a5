"""Quality measures fixed by DESIGN.md section 5, the same code for every system compared.

* Analogy: questions-words.txt, 3CosAdd on unit vectors over the `top_words` most frequent
  words; the three question words are excluded as answers; questions with a word outside
  those words are skipped (word2vec's compute-accuracy convention). Case-insensitive.
* Similarity: Spearman rho between cosine similarity and the human score over the pairs
  whose two words are both in the vocabulary.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sgns_spark.errors import UserError
from sgns_spark.vectors import Vectors

QUESTION_BATCH = 1024  # questions scored per matrix product
SIMILARITY_LAYOUT = "word, word, then the score, between tabs, commas or spaces; # comments"


def text_lines(path: str | Path) -> list[str]:
    """The lines of a local UTF-8 text file.

    Raises
    ------
    UserError
        When the file cannot be read or is not UTF-8 text.
    """
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise UserError(f"{path} is not UTF-8 text (byte {error.start} is not)") from None
    except OSError as error:
        raise UserError(f"{path} cannot be read ({error.strerror or error})") from None


def read_analogy_questions(path: str | Path) -> list[tuple[str, str, str, str]]:
    """The lowercased questions of a questions-words.txt file, section lines dropped.

    Raises
    ------
    UserError
        When the file is not UTF-8 text or holds no question (a line of four words).
    """
    questions = []
    for line in text_lines(path):
        fields = line.lower().split()
        if len(fields) == 4 and not line.startswith(":"):
            questions.append(tuple(fields))
    if not questions:
        raise UserError(f"{path} holds no analogy question (a line of four words, as in questions-words.txt)")
    return questions


def analogy_accuracy(vectors: Vectors, questions_path: str | Path, top_words: int = 30_000) -> dict:
    """3CosAdd analogy accuracy of `vectors`.

    Returns
    -------
    dict
        ``accuracy`` (correct / covered), ``coverage`` (covered / all questions),
        ``correct``, ``covered``, ``questions``.
    """
    questions = read_analogy_questions(questions_path)
    limit = min(top_words, len(vectors))
    index = {word: i for word, i in vectors.key_to_index.items() if i < limit}
    covered = np.array([[index[word] for word in question] for question in questions
                        if all(word in index for word in question)], dtype=np.int64).reshape(-1, 4)
    unit = vectors.unit_vectors[:limit]  # (limit, dim)
    correct = 0
    for start in range(0, len(covered), QUESTION_BATCH):
        batch = covered[start : start + QUESTION_BATCH]  # (batch, 4): a b c expected
        targets = unit[batch[:, 1]] - unit[batch[:, 0]] + unit[batch[:, 2]]  # (batch, dim)
        scores = targets @ unit.T  # (batch, limit)
        rows = np.arange(len(batch))[:, None]
        scores[rows, batch[:, :3]] = -np.inf
        correct += int((scores.argmax(axis=1) == batch[:, 3]).sum())
    return {
        "accuracy": correct / len(covered) if len(covered) else 0.0,
        "coverage": len(covered) / len(questions) if questions else 0.0,
        "correct": correct,
        "covered": len(covered),
        "questions": len(questions),
    }


def read_similarity_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """``(word, word, score)`` of a word-similarity file in any of the common layouts.

    A line holds two words (neither a number), then the human score: the first field after the
    words that is a finite number (SimLex-999's and SimVerb-3500's original files put a part of
    speech between, and more columns after). Fields are separated by tabs where the line has one
    (WordSim-353, SimLex-999, RW), else by commas where it has one (MTurk-771), else by spaces
    (MEN). Lines starting with ``#`` are comments, and a first line with no score is a header.

    Raises
    ------
    UserError
        When the file is not UTF-8 text, a line after the first has no two words and a score, or
        no line has.
    """
    pairs = []
    first = True
    for number, line in enumerate(text_lines(path), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = similarity_fields(line)
        words = fields[:2]
        score = next((value for value in map(finite_number, fields[2:]) if value is not None), None)
        is_first, first = first, False
        # a word is never a number: a word2vec text file's rows ("the 0.12 -0.3 ...") are not pairs
        if score is None or not all(words) or any(finite_number(word) is not None for word in words):
            if is_first:  # a header: "word1<TAB>word2<TAB>POS<TAB>SimLex999<TAB>..."
                continue
            raise UserError(f"{path} line {number} is not two words and a score ({SIMILARITY_LAYOUT}): "
                            f"{line[:60]!r}")
        pairs.append((words[0].lower(), words[1].lower(), score))
    if not pairs:
        raise UserError(f"{path} holds no word pair ({SIMILARITY_LAYOUT})")
    return pairs


def similarity_fields(line: str) -> list[str]:
    """A similarity line's fields, split at tabs where it has one, else at commas, else at spaces."""
    separator = "\t" if "\t" in line else "," if "," in line else None
    return [field.strip() for field in line.split(separator)]


def finite_number(field: str) -> float | None:
    """`field` as a finite number, or None when it is not one."""
    try:
        value = float(field)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def similarity_spearman(vectors: Vectors, pairs_path: str | Path) -> dict:
    """Spearman rho of cosine similarity against human scores, with coverage."""
    pairs = read_similarity_pairs(pairs_path)
    known = [(a, b, score) for a, b, score in pairs if a in vectors and b in vectors]
    model_scores = np.array([vectors.similarity(a, b) for a, b, _ in known])
    human_scores = np.array([score for _, _, score in known])
    return {
        "spearman": spearman(model_scores, human_scores) if len(known) > 1 else 0.0,
        "coverage": len(known) / len(pairs) if pairs else 0.0,
        "pairs": len(known),
    }


def spearman(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman rank correlation, ties given their average rank."""
    first_ranks, second_ranks = average_ranks(first), average_ranks(second)
    return float(np.corrcoef(first_ranks, second_ranks)[0, 1])


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of `values`, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    group_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    group_ends = np.r_[group_starts[1:], values.size]
    mean_rank = (group_starts + group_ends + 1) / 2.0  # (groups,) mean of ranks start+1..end
    ranks = np.empty(values.size)
    ranks[order] = np.repeat(mean_rank, group_ends - group_starts)
    return ranks
