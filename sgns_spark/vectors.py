"""Read-only word vectors, separate from the trainer (gensim's KeyedVectors idea).

Loads a published Parquet vector set or a word2vec text/binary file, and offers the names
and argument order people know from gensim: ``most_similar``, ``similarity``,
``save_word2vec_format``, ``index_to_key``, ``key_to_index``, ``vectors``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sgns_spark.errors import UserError
from sgns_spark.layout import (
    EXPORT_DIRECTORY,
    EXPORT_LATEST,
    LATEST_NAME,
    MANIFEST_NAME,
    PARQUET_NAME,
    REPORTS_DIRECTORY,
    pointed_number,
    version_name,
)

FLOAT32_LITTLE_ENDIAN = np.dtype("<f4")
BINARY_VALUE_BYTES = FLOAT32_LITTLE_ENDIAN.itemsize  # a value's bytes in the word2vec binary format
TEXT_VALUE_BYTES = 2  # a value's bytes in the text format at least: one digit and its separator
NORM_FLOOR = 1e-12  # guards the unit-length division of an all-zero vector


class Vectors:
    """Words and their vectors, most frequent first.

    Parameters
    ----------
    words : list of str
    vectors : numpy.ndarray
        ``(words, dim) float32``.
    counts : numpy.ndarray, optional
        ``(words,) int64`` corpus counts.
    manifest : dict, optional
        The manifest of the published version they were loaded from.
    """

    def __init__(self, words: list[str], vectors: np.ndarray, counts: np.ndarray | None = None,
                 manifest: dict[str, Any] | None = None):
        self.index_to_key = list(words)
        self.key_to_index = {word: index for index, word in enumerate(self.index_to_key)}
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.counts = counts
        self.manifest = manifest
        self._unit: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index_to_key)

    def __contains__(self, word: str) -> bool:
        return word in self.key_to_index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self.key_to_index[word]]

    @property
    def dim(self) -> int:
        """Vector dimensions."""
        return self.vectors.shape[1]

    @property
    def unit_vectors(self) -> np.ndarray:
        """``(words, dim) float32`` vectors scaled to unit length (computed once)."""
        if self._unit is None:
            norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self._unit = self.vectors / np.maximum(norms, NORM_FLOOR)
        return self._unit

    @property
    def lineage(self) -> dict[str, Any] | None:
        """Where a published version comes from (`sgns_spark.lineage`); None for a plain file."""
        return self.manifest.get("lineage") if self.manifest else None

    @classmethod
    def load(cls, location: str | Path) -> Vectors:
        """Load a published version directory (with its manifest), a run root's ``export``
        (whose ``_LATEST`` is followed) or the run root itself, a ``vectors.parquet`` path, or a
        word2vec ``.txt``/``.bin`` file.
        """
        path = Path(location)
        if (path / REPORTS_DIRECTORY).is_dir():  # a run root: its export's newest version
            if not (path / EXPORT_LATEST).exists():
                raise UserError(f"run root {location} has published no version yet; run the export stage "
                                "(jobs/export.py) on it, or give a published version")
            path = path / EXPORT_DIRECTORY
        if (path / LATEST_NAME).exists():  # its version, in this export root wherever it was copied to
            path = path / version_name(latest_version(path / LATEST_NAME))
            if not path.exists():
                raise UserError(f"{location}/{LATEST_NAME} names version {path}, which is missing (deleted?); give "
                                "another published version, or rerun the export stage to publish one")
        if (path / MANIFEST_NAME).exists():
            vectors = cls.load_parquet(path / PARQUET_NAME)
            vectors.manifest = json.loads((path / MANIFEST_NAME).read_text())
            return vectors
        if not path.exists():
            raise UserError(f"no vectors at {location}; give a published version, Parquet or word2vec file")
        if path.suffix in (".txt", ".bin"):
            return cls.load_word2vec_format(path, binary=path.suffix == ".bin")
        return cls.load_parquet(path)

    @classmethod
    def load_parquet(cls, path: str | Path) -> Vectors:
        """Load a published ``word, vector, count`` Parquet file or directory.

        Raises
        ------
        UserError
            When `path` is not Parquet, or lacks those columns.
        """
        try:
            table = pq.read_table(path, columns=["word", "vector", "count"])
        except (pa.ArrowException, OSError) as error:
            raise UserError(f"{path} is not a Parquet vector set with columns word, vector, count "
                            f"({str(error).splitlines()[0]})") from None
        vectors = np.asarray(table.column("vector").combine_chunks().flatten(), dtype=np.float32)
        return cls(table.column("word").to_pylist(), vectors.reshape(table.num_rows, -1),
                   table.column("count").to_numpy())

    @classmethod
    def load_word2vec_format(cls, path: str | Path, binary: bool = False) -> Vectors:
        """Load the word2vec.c text or binary format (header ``"<count> <dim>"``).

        Raises
        ------
        UserError
            When the file does not hold what its header announces.
        """
        with open(path, "rb") as stream:
            header = stream.readline()
            try:
                count, dim = (int(field) for field in header.split())
            except ValueError:
                raise UserError(f"{path} is not a word2vec {'binary' if binary else 'text'} file: its first line "
                                f"is not '<words> <dimensions>' ({header[:40]!r})") from None
            try:
                size = Path(path).stat().st_size
                if count < 0 or dim < 1 or count * dim * (BINARY_VALUE_BYTES if binary else TEXT_VALUE_BYTES) > size:
                    raise ValueError(f"the file has {size:,} bytes")  # before a huge count allocates or loops
                return cls(*(_read_binary_rows if binary else _read_text_rows)(stream, count, dim))
            except (ValueError, UnicodeDecodeError) as error:
                raise UserError(f"{path} does not hold the {count} words x {dim} dimensions its header "
                                f"announces ({error})") from None

    def save_word2vec_format(self, path: str | Path, binary: bool = False) -> None:
        """Write the word2vec.c text or binary format, as gensim and word2vec.c load it."""
        with open(path, "wb") as stream:
            stream.write(f"{len(self)} {self.dim}\n".encode())
            for block in word2vec_records(self.index_to_key, self.vectors, binary):
                stream.write(block)

    def similarity(self, first: str, second: str) -> float:
        """Cosine similarity of two words."""
        unit = self.unit_vectors
        return float(unit[self.key_to_index[first]] @ unit[self.key_to_index[second]])

    def most_similar(
        self,
        positive: str | list[str] = (),
        negative: list[str] = (),
        topn: int = 10,
        restrict_vocab: int | None = None,
    ) -> list[tuple[str, float]]:
        """The `topn` words nearest (by cosine) to the mean of `positive` minus `negative`.

        The query words themselves are never returned. Raises KeyError for an unknown word.
        """
        positive = [positive] if isinstance(positive, str) else list(positive)
        unit = self.unit_vectors
        query = np.zeros(self.dim, dtype=np.float32)
        for word, sign in [(w, 1.0) for w in positive] + [(w, -1.0) for w in negative]:
            if word not in self.key_to_index:
                raise KeyError(f"word {word!r} is not in the vocabulary")
            query += sign * unit[self.key_to_index[word]]
        query /= max(float(np.linalg.norm(query)), NORM_FLOOR)
        candidates = unit[:restrict_vocab] if restrict_vocab else unit
        scores = candidates @ query  # (candidates,)
        for word in (*positive, *negative):
            index = self.key_to_index[word]
            if index < scores.size:
                scores[index] = -np.inf
        count = min(topn, scores.size)
        if count < 1:
            return []
        best = np.argpartition(-scores, count - 1)[:count]
        best = best[np.argsort(-scores[best])]
        return [(self.index_to_key[index], float(scores[index])) for index in best
                if np.isfinite(scores[index])]


def word2vec_records(words: list[str], vectors: np.ndarray, binary: bool):
    """Yield the bytes of word2vec.c records (no header), a block of rows at a time.

    Text: ``word v1 ... vd\\n``. Binary: ``word `` then dim little-endian float32, then
    ``\\n`` (as word2vec.c writes it).
    """
    block_rows = 4096
    for start in range(0, len(words), block_rows):
        block = word2vec_record_bodies(words[start : start + block_rows], vectors[start : start + block_rows], binary)
        yield b"\n".join(block) + b"\n"


def word2vec_record_bodies(words: list[str], vectors: np.ndarray, binary: bool) -> list[bytes]:
    """Each word's word2vec.c record without the newline that ends it.

    A binary body may itself contain newline bytes (inside the floats); readers never split
    on them, they read ``dim`` floats after the word.
    """
    if binary:
        raw = vectors.astype(FLOAT32_LITTLE_ENDIAN).tobytes()
        width = 4 * vectors.shape[1]
        return [word.encode("utf-8") + b" " + raw[row * width : (row + 1) * width] for row, word in enumerate(words)]
    return [
        (word + " " + " ".join(f"{value:.6g}" for value in row)).encode("utf-8")
        for word, row in zip(words, vectors.tolist(), strict=True)
    ]


def _read_text_rows(stream, count: int, dim: int) -> tuple[list[str], np.ndarray]:
    """``count`` records ``word v1 .. vdim`` of the word2vec text format; ValueError when one is
    short or not numbers, or the file ends first."""
    rows = []
    for number in range(1, count + 1):
        row = stream.readline().decode("utf-8").rstrip("\n").split(" ")
        if len(row) <= dim:
            raise ValueError(f"word {number} has fewer than {dim} values, or the file ends before it")
        rows.append(row)
    vectors = np.array([row[1 : dim + 1] for row in rows], dtype=np.float32)  # ValueError on a non-number
    return [row[0] for row in rows], vectors.reshape(count, dim)


def _read_binary_rows(stream, count: int, dim: int) -> tuple[list[str], np.ndarray]:
    """``count`` records of the word2vec binary format; ValueError when the file ends first."""
    words, vectors = [], np.empty((count, dim), dtype=np.float32)
    for index in range(count):
        words.append(_read_binary_word(stream))
        values = stream.read(BINARY_VALUE_BYTES * dim)
        if len(values) < BINARY_VALUE_BYTES * dim:
            raise ValueError(f"the file ends in word {index + 1}")
        vectors[index] = np.frombuffer(values, dtype=FLOAT32_LITTLE_ENDIAN)
    return words, vectors


def _read_binary_word(stream) -> str:
    characters = bytearray()
    while True:
        character = stream.read(1)
        if character == b" " or not character:
            break
        if character != b"\n":  # the newline word2vec.c writes after each vector
            characters.extend(character)
    return characters.decode("utf-8")


def latest_version(pointer: Path) -> int:
    """The version an export root's ``_LATEST`` file names.

    Raises
    ------
    UserError
        When it is not a JSON pointer naming a version (edited by hand, say).
    """
    try:
        version = pointed_number(json.loads(pointer.read_text(encoding="utf-8")), "version")
    except (json.JSONDecodeError, UnicodeDecodeError):
        version = None
    if version is None:
        raise UserError(f"{pointer} names no version (it is not a JSON pointer with a version number); give a "
                        "published version directory, or rerun the export stage to publish one")
    return version
