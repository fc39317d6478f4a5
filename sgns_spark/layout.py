"""Every path of a run root, in one place (run-root format 3). Plain names only: the query CLI
imports this without Spark.

    <root>/vocab/                            word, id, count, keep_prob, noise_weight
    <root>/corpus/                           sentence_key, ids
    <root>/model/round=NNNNNN/               side string (input: w_in, word2vec.c's syn0; output:
                                             w_out, syn1neg), ids binary, vectors binary: chunks
                                             of rows (sgns_spark.train.model_store)
    <root>/model/_LATEST                     the newest complete round, moved after it is written
    <root>/export/version=NNNNNN/            a published version (see sgns_spark.export)
    <root>/export/_LATEST                    the newest complete version
    <root>/reports/<stage>.json              each stage's report, written last
    <root>/_staging/                         work in progress, renamed into place when complete
    <root>/_LOCK                             the live run holding the root (sgns_spark.lock)
    <root>/_LOCK.takeover                    the run deleting a stale lock, for milliseconds
"""

from typing import Any

RUN_ROOT_FORMAT = 3  # 2: model rounds store each side as its own rows; 3: as chunks of rows
PUBLISHED_FORMAT = 1  # a published version's files and manifest
VOCAB_DIRECTORY = "vocab"
CORPUS_DIRECTORY = "corpus"
REPORTS_DIRECTORY = "reports"
MODEL_DIRECTORY = "model"
EXPORT_DIRECTORY = "export"
STAGING_DIRECTORY = "_staging"
LATEST_NAME = "_LATEST"
LOCK_FILE = "_LOCK"
TAKEOVER_FILE = f"{LOCK_FILE}.takeover"
MODEL_LATEST = f"{MODEL_DIRECTORY}/{LATEST_NAME}"
EXPORT_LATEST = f"{EXPORT_DIRECTORY}/{LATEST_NAME}"
ROUND_PREFIX, VERSION_PREFIX = "round=", "version="
SIDE_COLUMN = "side"
SIDE_NAMES = ("input", "output")  # the values of the side partition column, by side number
PARQUET_NAME = "vectors.parquet"  # the files of a published version
MODEL_ROWS_NAME = "model.parquet"  # word, input_vector, output_vector as trained: a warm start's source
TEXT_NAME = "vectors.txt"
BINARY_NAME = "vectors.bin"
MANIFEST_NAME = "manifest.json"


def damage_remedy(relative: str) -> str:
    """What a user can do when the run root's file `relative` is damaged (changed outside
    sgns-spark, or cut short on disk)."""
    if relative in (LOCK_FILE, TAKEOVER_FILE):
        return "delete it if no run uses the root"
    if relative.startswith(f"{MODEL_DIRECTORY}/") or relative == report_path("train"):
        return "set train.restart=true to train again from round 0"
    return "run the pipeline again on a new --root (or delete this one)"


def pointed_number(pointer: Any, key: str) -> int | None:
    """The round or version a ``_LATEST`` pointer's JSON document names as `key`, or None when it
    names none (a file edited by hand, say)."""
    number = pointer.get(key) if isinstance(pointer, dict) else None
    return number if isinstance(number, int) and not isinstance(number, bool) and number >= 0 else None


def report_path(stage: str) -> str:
    """Relative path of a stage's run report."""
    return f"{REPORTS_DIRECTORY}/{stage}.json"


def round_directory(model_round: int) -> str:
    """Relative path of a model round."""
    return f"{MODEL_DIRECTORY}/{ROUND_PREFIX}{model_round:06d}"


def version_name(version: int) -> str:
    """A published version's directory name, below the export root (``version=000003``)."""
    return f"{VERSION_PREFIX}{version:06d}"


def version_directory(version: int) -> str:
    """Relative path of a published version."""
    return f"{EXPORT_DIRECTORY}/{version_name(version)}"


def numbered(names: list[str], prefix: str) -> list[int]:
    """The numbers of the entries named ``<prefix>NNNNNN`` among `names`, ascending."""
    return sorted(int(name[len(prefix):]) for name in names if name.startswith(prefix))
