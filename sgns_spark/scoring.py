"""Scores of a trained model, computed on the driver from a bounded set of rows.

Only the `analogy_top_words` most frequent words, plus the words the similarity pairs and the
neighbour list name, travel to the driver: never the whole model.
"""

from __future__ import annotations

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sgns_spark.arrow import collect_by_id
from sgns_spark.config import EvaluateSettings
from sgns_spark.evaluate import analogy_accuracy, read_similarity_pairs, similarity_spearman
from sgns_spark.vectors import Vectors


def evaluation_vectors(vectors: DataFrame, settings: EvaluateSettings) -> Vectors:
    """The top words, then any other word the evaluation names, in id order.

    Parameters
    ----------
    vectors : DataFrame
        ``id, word, vector, count``.
    """
    named = set(settings.neighbour_words)
    if settings.similarity_path:
        for first, second, _ in read_similarity_pairs(settings.similarity_path):
            named.update((first, second))
    wanted = (F.col("id") < settings.analogy_top_words) | F.col("word").isin(sorted(named))
    table = collect_by_id(vectors.where(wanted), "word", "vector", "count")
    matrix = np.asarray(table.column("vector").combine_chunks().flatten(), dtype=np.float32)
    return Vectors(table.column("word").to_pylist(), matrix.reshape(table.num_rows, -1),
                   table.column("count").to_numpy())


def score(vectors: Vectors, settings: EvaluateSettings) -> dict:
    """Analogy and similarity scores, and nearest neighbours of the configured words."""
    scores: dict = {}
    if settings.analogy_path:
        scores["analogy"] = analogy_accuracy(vectors, settings.analogy_path, settings.analogy_top_words)
    if settings.similarity_path:
        scores["similarity"] = similarity_spearman(vectors, settings.similarity_path)
    scores["neighbours"] = {
        word: [[neighbour, round(similarity, 4)] for neighbour, similarity in
               vectors.most_similar(word, topn=settings.neighbours)]
        for word in settings.neighbour_words if word in vectors
    }
    unknown = [word for word in settings.neighbour_words if word not in vectors]
    if unknown:
        scores["neighbour_words_not_in_vocabulary"] = unknown
    return scores
