"""A deterministic synthetic corpus with planted structure: the demo and a test fixture.

Words of a *family* (geography, gender, tense, number) come in *groups* that fill *roles*:
``france paris french`` is the geography group of France in the roles country, capital,
language. A planted sentence holds one member word with two words of its role's context
and two of its group's topic, shuffled into Zipf-distributed filler. So a member's vector
is about role + topic, and ``paris - france + germany`` lands on ``berlin``.

Run ``python -m sgns_spark.synthetic --out corpus.txt --questions questions.txt``.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_TOKENS = 2_000_000
SENTENCE_TOKENS = 12  # tokens per line
PLANTED_FRACTION = 0.5  # share of lines that carry a member word
CONTEXT_WORDS_PER_ROLE = 4  # words that mark a role (e.g. capital: city words)
TOPIC_WORDS_PER_GROUP = 4  # words that mark a group (e.g. everything French)
CONTEXT_DRAWS = 2  # role words and topic words placed in each planted line
FILLER_WORDS = 2500  # at most len(SYLLABLES) ** FILLER_SYLLABLES
ZIPF_EXPONENT = 1.0
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "bu", "da", "fe", "go", "hi")
FILLER_SYLLABLES = 3


@dataclass(frozen=True)
class Family:
    """Groups of words that fill the same roles, e.g. (country, capital, language)."""

    name: str
    roles: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]


FAMILIES = (
    Family("geography", ("country", "capital", "language"), (
        ("france", "paris", "french"), ("germany", "berlin", "german"),
        ("italy", "rome", "italian"), ("spain", "madrid", "spanish"),
        ("russia", "moscow", "russian"), ("japan", "tokyo", "japanese"),
        ("china", "beijing", "chinese"), ("greece", "athens", "greek"),
        ("portugal", "lisbon", "portuguese"), ("poland", "warsaw", "polish"),
    )),
    Family("gender", ("male", "female"), (
        ("king", "queen"), ("man", "woman"), ("boy", "girl"), ("father", "mother"),
        ("son", "daughter"), ("brother", "sister"), ("uncle", "aunt"),
        ("husband", "wife"), ("prince", "princess"), ("actor", "actress"),
    )),
    Family("tense", ("present", "past"), (
        ("walk", "walked"), ("go", "went"), ("run", "ran"), ("see", "saw"),
        ("eat", "ate"), ("write", "wrote"), ("take", "took"), ("give", "gave"),
        ("speak", "spoke"), ("swim", "swam"),
    )),
    Family("number", ("cardinal", "ordinal"), (
        ("one", "first"), ("two", "second"), ("three", "third"), ("four", "fourth"),
        ("five", "fifth"), ("six", "sixth"), ("seven", "seventh"), ("eight", "eighth"),
        ("nine", "ninth"), ("ten", "tenth"),
    )),
)


def member_words() -> list[tuple[str, Family, int, int]]:
    """Every planted word with its family, group index and role index."""
    return [
        (word, family, group_index, role_index)
        for family in FAMILIES
        for group_index, group in enumerate(family.groups)
        for role_index, word in enumerate(group)
    ]


def pseudo_words(count: int, prefix: str) -> list[str]:
    """`count` distinct made-up words, deterministic, none of them an English member word."""
    combos = itertools.product(SYLLABLES, repeat=FILLER_SYLLABLES)
    return [prefix + "".join(parts) for parts in itertools.islice(combos, count)]


def generate_lines(tokens: int = DEFAULT_TOKENS, seed: int = 1) -> list[str]:
    """Return the corpus as lines of `SENTENCE_TOKENS` words, about `tokens` words in all."""
    rng = np.random.default_rng(seed)
    members = member_words()
    role_context = {
        (family.name, role): pseudo_words(CONTEXT_WORDS_PER_ROLE, f"{role[:3]}x")
        for family in FAMILIES for role in family.roles
    }
    filler = pseudo_words(FILLER_WORDS, "")
    lines_count = max(1, tokens // SENTENCE_TOKENS)
    zipf = 1.0 / np.arange(1, FILLER_WORDS + 1) ** ZIPF_EXPONENT
    words = np.array(filler, dtype=object)[
        rng.choice(FILLER_WORDS, size=(lines_count, SENTENCE_TOKENS), p=zipf / zipf.sum())
    ]  # (lines, SENTENCE_TOKENS) object
    planted = np.flatnonzero(rng.random(lines_count) < PLANTED_FRACTION)  # (planted,)
    chosen = rng.integers(0, len(members), size=planted.size)  # (planted,) member index
    slots = np.argsort(rng.random((planted.size, SENTENCE_TOKENS)), axis=1)  # random positions
    context_draws = rng.integers(0, CONTEXT_WORDS_PER_ROLE, size=(planted.size, CONTEXT_DRAWS))
    topic_draws = rng.integers(0, TOPIC_WORDS_PER_GROUP, size=(planted.size, CONTEXT_DRAWS))
    for row, (line, member) in enumerate(zip(planted, chosen, strict=True)):
        word, family, group_index, role_index = members[member]
        topic = pseudo_words(TOPIC_WORDS_PER_GROUP, f"{family.name}{group_index}q")
        context = role_context[(family.name, family.roles[role_index])]
        placed = [word, *(context[i] for i in context_draws[row]), *(topic[i] for i in topic_draws[row])]
        words[line, slots[row, : len(placed)]] = placed
    return [" ".join(line) for line in words]


def analogy_questions() -> list[str]:
    """Analogy questions in questions-words.txt format over the planted families."""
    lines = []
    for family in FAMILIES:
        for first_role, second_role in itertools.permutations(range(len(family.roles)), 2):
            lines.append(f": {family.name}-{family.roles[first_role]}-{family.roles[second_role]}")
            for group_a, group_b in itertools.permutations(family.groups, 2):
                lines.append(" ".join((group_a[first_role], group_a[second_role],
                                       group_b[first_role], group_b[second_role])))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="corpus text file to write")
    parser.add_argument("--questions", type=Path, help="analogy questions file to write")
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="corpus size in words")
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    wrote = write_if_changed(arguments.out, "\n".join(generate_lines(arguments.tokens, arguments.seed)) + "\n")
    if arguments.questions:
        write_if_changed(arguments.questions, "\n".join(analogy_questions()) + "\n")
    print(f"{'wrote' if wrote else 'kept'} {arguments.out} ({arguments.tokens:,} tokens, seed {arguments.seed})")


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` to `path` unless it holds that text already; return whether it wrote.

    A file left alone keeps its modification time, so a second ``make run`` on the same root finds
    the input its vocab stage read, and skips the stages that are done (a rewritten file is a
    changed input: `sgns_spark.stages.check_same_files`).
    """
    if path.is_file() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


if __name__ == "__main__":
    main()
