"""Where a published version comes from: its corpus, its settings, its code.

Every manifest carries a ``lineage`` record (`lineage_record`), which
``python -m sgns_spark.query <vectors> info`` prints and `sgns_spark.vectors.Vectors.lineage`
exposes::

    parent   the published version a warm start began from (its path and the SHA-256 of its
             manifest), or null for a cold start
    corpus   the input as given, each file read (URI, bytes, modification time), the token
             count and a content fingerprint of the tokens
    settings every setting that shaped the vectors, as resolved: the vocabulary's and the
             training's as their stages ran, the export's as this export ran
    code     the package version and a SHA-256 over its source files
"""

from __future__ import annotations

import datetime
import hashlib
from pathlib import Path
from typing import Any

from pyspark.sql import Column
from pyspark.sql import functions as F

from sgns_spark import __version__
from sgns_spark.config import Config
from sgns_spark.storage import FileEntry

FINGERPRINT_FORMAT = "xxhash64-xor"  # how `corpus_fingerprint` is computed, named in the record
HEX_DIGITS_64 = 16
UNSIGNED_64 = 1 << 64
PACKAGE_DIRECTORY = Path(__file__).parent


def corpus_fingerprint(sentence_key: str, tokens: str) -> Column:
    """An aggregate column: the XOR over sentences of xxhash64(key, tokens).

    It does not depend on partitioning or order, costs one pass that the token count already
    makes, and changes with any token of any sentence (or a sentence's place in its file).
    """
    return F.bit_xor(F.xxhash64(sentence_key, tokens))


def fingerprint_text(value: int) -> str:
    """A signed 64-bit fingerprint as ``xxhash64-xor:<16 hex digits>``."""
    return f"{FINGERPRINT_FORMAT}:{value % UNSIGNED_64:0{HEX_DIGITS_64}x}"


def input_files(files: list[FileEntry]) -> list[dict[str, Any]]:
    """The files read, as the manifest lists them."""
    return [{"path": entry.path, "bytes": entry.size,
             "modified_utc": datetime.datetime.fromtimestamp(entry.modified_ms / 1000, datetime.UTC)
             .isoformat(timespec="seconds")} for entry in files]


def code_version() -> dict[str, str]:
    """The package version and a SHA-256 over its source files (path and contents, in path order)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIRECTORY.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIRECTORY).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return {"sgns_spark_version": __version__, "source_sha256": digest.hexdigest()}


def lineage_record(config: Config, vocab_report: dict[str, Any], train_report: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``lineage``, from the vocabulary and training stages' reports and the export's config."""
    counts = vocab_report["counts"]
    training = {key: value for key, value in train_report["settings"].items() if key != "vocab"}
    warm_start = train_report["counts"].get("warm_start")
    return {
        "parent": warm_start["parent"] if warm_start else None,
        "corpus": {key: counts[key] for key in ("input", "files", "corpus_tokens", "fingerprint")},
        "settings": {**vocab_report["settings"], **training, **config.prefixed("export"),
                     **config.prefixed("evaluate")},
        "code": code_version(),
    }
