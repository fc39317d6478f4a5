"""Warm start: a new vocabulary's first rows from a published version (``train.warm_start_from``).

Words in both vocabularies start from the parent's input and output rows as trained (the
version's ``model.parquet``, never normalised); new words from the seeded initialisation, the
very rows a cold start would give them; words the new vocabulary lacks are dropped. The rows
are matched by a Spark join on the word: the driver holds one vocabulary-sized flag array (which
ids are carried over), never rows or a dictionary of words. The carried rows learn from their
own rate, ``train.warm_start_learning_rate``, and new words from ``train.learning_rate``.

A run root's training keeps one parent: every committed model round pins the version it was
trained from (`run_parent`), so a run resumed after the parent's export root published again
still trains from, and names in its lineage, the version it started from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from pyspark import RDD
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sgns_spark.config import Config
from sgns_spark.errors import UserError
from sgns_spark.layout import (
    EXPORT_DIRECTORY,
    LATEST_NAME,
    MANIFEST_NAME,
    MODEL_LATEST,
    MODEL_ROWS_NAME,
    REPORTS_DIRECTORY,
    SIDE_COLUMN,
    SIDE_NAMES,
    version_name,
)
from sgns_spark.session import broadcast
from sgns_spark.storage import Storage
from sgns_spark.train.model_store import initial_rows, keyed_rows, read_latest, round_settings
from sgns_spark.train.schedule import INPUT_SIDE, OUTPUT_SIDE

SETTING = "train.warm_start_from"
PIN_KEY = "warm_start_parent"  # the field of model/_LATEST that pins the parent (`Parent.pin`)
PIN_FIELDS = ("path", "manifest_sha256")  # the fields of `Parent` that name it: `Parent.lineage`


@dataclass(frozen=True)
class Parent:
    """The published version a run warm-starts from."""

    path: str
    manifest_sha256: str
    vocab_size: int

    def storage(self, spark: SparkSession) -> Storage:
        """The version's directory, whose damaged files name `SETTING`."""
        return Storage(spark, self.path, SETTING)

    def lineage(self) -> dict:
        """The manifest's ``lineage.parent``: the `PIN_FIELDS`."""
        return {field: getattr(self, field) for field in PIN_FIELDS}

    def pin(self) -> dict:
        """The field a committed model round's ``_LATEST`` keeps of its parent (`run_parent`)."""
        return {PIN_KEY: self.lineage()}


def run_parent(spark: SparkSession, config: Config, storage: Storage) -> Parent:
    """The parent of the training in run root `storage`: the version pinned by its committed
    model rounds when the run resumes them (the same train settings), else `SETTING` resolved now.

    An export root's ``_LATEST`` may move while a run is stopped; following it again on resume
    would train the rest of the run against another parent's words and name that parent in the
    lineage.

    Raises
    ------
    UserError
        When the pinned version no longer exists or has changed since (its manifest's SHA-256),
        or as `parent_version`.
    """
    train = config.train
    latest = None if train.restart else read_latest(storage)
    settings = latest.get("settings") if latest is not None else None
    resumed = isinstance(settings, dict) and round_settings(config) == {
        key: value for key, value in settings.items() if key.startswith("train.")}
    if not resumed or PIN_KEY not in latest:
        return parent_version(spark, train.warm_start_from, train.dim)
    pinned = latest[PIN_KEY]
    if not (isinstance(pinned, dict) and all(isinstance(pinned.get(key), str) for key in PIN_FIELDS)):
        raise storage.damaged(MODEL_LATEST, f"its {PIN_KEY} names no {' and '.join(PIN_FIELDS)}")
    trained_from = f"the model rounds in {storage.root} were trained from {pinned['path']}"
    restart = f"set train.restart=true to train again from {SETTING} = {train.warm_start_from} as it is now"
    if not Storage(spark, pinned["path"], SETTING).exists(MANIFEST_NAME):
        raise UserError(f"{trained_from}, which no longer holds a published version; {restart}")
    parent = parent_version(spark, pinned["path"], train.dim)
    if parent.manifest_sha256 != pinned["manifest_sha256"]:
        raise UserError(f"{trained_from}, whose manifest has changed since (another SHA-256); {restart}")
    return parent


def parent_version(spark: SparkSession, location: str, dim: int) -> Parent:
    """Resolve `location` (a version directory, an export root whose ``_LATEST`` is followed, or
    the run root of that export).

    Raises
    ------
    UserError
        When it holds no published version with model rows, or its ``dim`` is not `dim`.
    """
    storage = Storage(spark, location, SETTING)
    if storage.exists(REPORTS_DIRECTORY):  # a run root: its export
        storage = Storage(spark, storage.path(EXPORT_DIRECTORY), SETTING)
    if storage.exists(LATEST_NAME):  # its version, in this export root wherever it was copied to
        version = storage.read_pointer(LATEST_NAME, "version")["version"]
        storage = Storage(spark, storage.path(version_name(version)), SETTING)
    if not storage.exists(MANIFEST_NAME):
        raise UserError(f"{SETTING} = {location} holds no published version (no {MANIFEST_NAME}); "
                        "give a version directory, an export root with _LATEST, or the run root of one")
    text = storage.read_text(MANIFEST_NAME)
    manifest = storage.parse_json(MANIFEST_NAME, text)
    if not storage.exists(MODEL_ROWS_NAME):
        raise UserError(f"{SETTING} = {location} was published without its model rows ({MODEL_ROWS_NAME}); "
                        "export it again with this version of sgns-spark")
    if manifest["dim"] != dim:
        raise UserError(f"{SETTING} = {location} has dim {manifest['dim']} but train.dim = {dim}; "
                        f"set train.dim = {manifest['dim']} or start cold")
    return Parent(storage.root, hashlib.sha256(text.encode()).hexdigest(), int(manifest["vocab_size"]))


class WarmStart:
    """A new vocabulary matched against its parent's model rows by a Spark join on the word.

    Parameters
    ----------
    vocab : DataFrame
        ``word, id`` of the new vocabulary.
    """

    def __init__(self, spark: SparkSession, parent: Parent, vocab: DataFrame, vocab_size: int):
        self.spark, self.parent, self.vocab_size = spark, parent, vocab_size
        trained = parent.storage(spark).read_parquet(MODEL_ROWS_NAME)
        self.shared = vocab.join(trained, "word").select("id", "input_vector", "output_vector")
        shared_ids = self.shared.select("id").toArrow().column("id").to_numpy()
        carried = np.zeros(vocab_size, dtype=bool)  # (vocab,) the ids whose rows come from the parent
        carried[shared_ids] = True
        self.carried = broadcast(spark.sparkContext, carried)  # read by the initialisation and the kernel

    def counts(self) -> dict:
        """``parent`` (its lineage), ``shared_words``, ``new_words``, ``dropped_words``."""
        shared = int(self.carried.value.sum())
        return {"parent": self.parent.lineage(), "shared_words": shared, "new_words": self.vocab_size - shared,
                "dropped_words": self.parent.vocab_size - shared}

    def rows(self, dim: int, seed: int, groups: int, phase: int) -> RDD:
        """``(task, Rows)`` of the first rows, keyed by their owners in `phase` of a round of `groups`:
        the parent's for shared words, the seeded initialisation for new ones."""
        sides = [self.shared.select("id", F.col(column).alias("vector"), F.lit(SIDE_NAMES[side]).alias(SIDE_COLUMN))
                 for side, column in ((INPUT_SIDE, "input_vector"), (OUTPUT_SIDE, "output_vector"))]
        parent_rows = keyed_rows(sides[0].unionByName(sides[1]), dim, groups, phase)
        return parent_rows.union(initial_rows(self.spark, self.vocab_size, dim, seed, groups, phase, self.carried))
