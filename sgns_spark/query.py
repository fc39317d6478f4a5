"""Query published vectors from the command line, without Spark.

    python -m sgns_spark.query <vectors> similar paris [--topn 10]
    python -m sgns_spark.query <vectors> analogy king man woman     (king - man + woman)
    python -m sgns_spark.query <vectors> evaluate --analogy questions-words.txt --similarity ws353.tsv
    python -m sgns_spark.query <vectors> info                     (version, size, lineage: JSON)

<vectors> is a published version directory (or a run root's ``export``, whose ``_LATEST`` is
followed), a ``vectors.parquet`` path, or a word2vec ``.txt``/``.bin`` file.
"""

from __future__ import annotations

import argparse
import json
import sys

from sgns_spark.errors import UserError
from sgns_spark.evaluate import analogy_accuracy, similarity_spearman
from sgns_spark.vectors import Vectors


def describe(vectors: Vectors) -> dict:
    """What ``info`` prints: size, and for a published version its number and lineage."""
    manifest = vectors.manifest or {}
    return {"words": len(vectors), "dim": vectors.dim, "version": manifest.get("version"),
            "created_utc": manifest.get("created_utc"), "lineage": vectors.lineage}


def positive_count(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("vectors")
    commands = parser.add_subparsers(dest="command", required=True)
    similar = commands.add_parser("similar", help="nearest neighbours of words (summed)")
    similar.add_argument("words", nargs="+")
    similar.add_argument("--topn", type=positive_count, default=10)
    analogy = commands.add_parser("analogy", help="a - b + c, e.g. king man woman")
    analogy.add_argument("words", nargs=3)
    analogy.add_argument("--topn", type=positive_count, default=10)
    evaluate = commands.add_parser("evaluate", help="analogy accuracy and similarity Spearman")
    evaluate.add_argument("--analogy")
    evaluate.add_argument("--similarity")
    evaluate.add_argument("--top-words", type=positive_count, default=30_000)
    commands.add_parser("info", help="size, version and lineage (corpus, settings, code), as JSON")
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "evaluate" and not (arguments.analogy or arguments.similarity):
            raise UserError("evaluate needs --analogy questions-words.txt, --similarity pairs.tsv, or both")
        vectors = Vectors.load(arguments.vectors)  # after the arguments' checks: a model may take minutes
        if arguments.command == "info":
            print(json.dumps(describe(vectors), indent=2))
            return 0
        if arguments.command == "evaluate":
            scores = {}
            if arguments.analogy:
                scores["analogy"] = analogy_accuracy(vectors, arguments.analogy, arguments.top_words)
            if arguments.similarity:
                scores["similarity"] = similarity_spearman(vectors, arguments.similarity)
            print(json.dumps(scores, indent=2))
            return 0
        if arguments.command == "similar":
            results = vectors.most_similar(arguments.words, topn=arguments.topn)
        else:
            first, minus, plus = arguments.words
            results = vectors.most_similar([first, plus], [minus], topn=arguments.topn)
    except (UserError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) else error  # a KeyError's str() is quoted
        print(f"sgns-spark query: error: {message}", file=sys.stderr)
        return 2
    for word, similarity in results:
        print(f"{similarity:.4f}  {word}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
