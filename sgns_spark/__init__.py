"""sgns-spark: word2vec skip-gram with negative sampling, trained as distributed PySpark jobs."""

__version__ = "0.1.0"
