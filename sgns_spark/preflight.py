"""What a job checks before Spark does any work: its input files, and the local files it names.

The run root's own checks (a file system for its scheme, writable, not locked by a live
run) live with the root: `sgns_spark.storage.Storage.check_writable` and `sgns_spark.lock`.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException
from pyspark.sql import SparkSession

from sgns_spark.config import Config
from sgns_spark.errors import DamagedFileError, UserError, java_causes
from sgns_spark.evaluate import read_analogy_questions, read_similarity_pairs
from sgns_spark.layout import MANIFEST_NAME, VERSION_PREFIX, report_path
from sgns_spark.storage import FileEntry, Storage, file_head, file_key, list_files

INPUT_SETTING = "the input corpus (--input, CORPUS= for make run)"
# a file every run root holds once its vocab stage has run, and one every published version holds:
# an input that lists either would read sgns-spark's own output (Parquet, vectors) as text
OUTPUT_MARKER = re.compile(rf"/({re.escape(report_path('vocab'))}|{re.escape(VERSION_PREFIX)}\d+/"
                           rf"{re.escape(MANIFEST_NAME)})$")
# compressed formats by suffix, for a file Spark has no codec for and would read as raw bytes
# (CC-100's corpora come as .xz, for one); the formats Spark decompresses are named in the error
ARCHIVE_SUFFIXES = (".xz", ".lzma", ".zip", ".7z", ".rar", ".br", ".lzo", ".Z")
READABLE_COMPRESSION = "gzip (.gz), bzip2 (.bz2) or zstd (.zst)"
# the lz4 tool writes its frame format, which starts with this magic number; Hadoop's .lz4 codec
# reads only Hadoop's own block format, and reads such a file as no text at all, without an error
LZ4_FRAME_MAGIC = bytes.fromhex("04224d18")
# Hadoop's paths read a ':' in a file or directory name as the start of a URI (HADOOP-14217, still
# open): Spark's listing and readers fail on such a name with "Relative path in absolute URI"
NAME_COLON = ":"
LOCAL_SCHEMES = ("", "file")  # a path on the driver's own disk
# Spark's message for a file a job could not read, with the file's URI (percent-encoded, so without
# spaces) and a sentence's full stop after it; a footer error goes on over more lines
UNREADABLE_FILE = re.compile(r"FAILED_READ_FILE[\w.]*\] Encountered error while reading file (\S+?)\.?(?:\s|$)")
# a file listed, then gone: Spark's error class as it plans a read, Java's exception as a task reads
PATH_NOT_FOUND = "PATH_NOT_FOUND"
FILE_NOT_FOUND = "java.io.FileNotFoundException"
REMOVED = "it was removed after the job listed it"


@dataclass(frozen=True)
class CorpusInput:
    """The corpus a job was given and the files it resolves to, in path order."""

    path: str
    directories: tuple[str, ...]  # the directories it names, read recursively
    files: tuple[FileEntry, ...]


def corpus_input(spark: SparkSession, path: str) -> CorpusInput:
    """Resolve ``--input`` (a file, a directory read recursively, or a glob) to its files.

    Raises
    ------
    UserError
        When the path does not exist, matches nothing, names only empty directories, holds
        sgns-spark's output (`OUTPUT_MARKER`: a run root or a published version below it), holds
        a file compressed in a way Spark does not read (`check_compression`), has a name, or
        holds a file with a name, that Spark cannot read (`check_name`), or is a pipe or a device
        (`check_not_special`).
    """
    check_name(path, "input corpus")
    check_not_special(path)
    listing = list_files(spark, path, INPUT_SETTING)
    if listing is None:
        raise UserError(f"input corpus {path} does not exist or matches no file; set CORPUS= (make) or --input")
    directories, files = listing
    if not files:
        raise empty_corpus(path)
    for entry in files:
        if OUTPUT_MARKER.search(entry.path):
            raise UserError(f"input corpus {path} holds sgns-spark output ({entry.path}), whose files would be read "
                            "as text; point --input (CORPUS= for make run) at the text alone, and keep run roots "
                            "outside it")
        check_name(entry.path, "input file")
        check_compression(spark, entry)
    return CorpusInput(path, tuple(directories), tuple(files))


def check_name(uri: str, what: str) -> None:
    """Refuse a path whose file or directory names hold a ':' (`NAME_COLON`), before Spark fails on it
    with a Java trace (a named file or directory) or in every task attempt (a file below a directory).

    Raises
    ------
    UserError
        When the path part of `uri` (after any scheme and host:port) holds a ':'.
    """
    if NAME_COLON in urllib.parse.urlsplit(uri).path:
        raise UserError(f"{what} {uri} has a ':' in a file or directory name, which Hadoop's paths cannot hold, so "
                        "Spark cannot read it; rename it, or link it under a name without ':'")


def check_not_special(path: str) -> None:
    """Refuse a local input that is neither a file nor a directory (``/dev/stdin``, a named pipe, a
    device), which Spark lists as an empty file, so that the job said the corpus was empty.

    Raises
    ------
    UserError
        When `path` (without a scheme, or ``file:``) names such a thing on the driver's disk.
    """
    parts = urllib.parse.urlsplit(path)
    local = Path(parts.path)
    if parts.scheme in LOCAL_SCHEMES and local.exists() and not (local.is_file() or local.is_dir()):
        raise UserError(f"input corpus {path} is a pipe or a device, not a file, and Spark reads only files (its "
                        "executors read the input themselves, in parallel); write the text to a file, and point "
                        "--input (CORPUS= for make run) at it")


def empty_corpus(path: str) -> UserError:
    """The error for an input corpus without text: its files are empty, or hidden, which Spark does not read."""
    return UserError(f"input corpus {path} is empty; point CORPUS= (--input) at text (names starting with _ or . "
                     "are not read)")


def check_compression(spark: SparkSession, entry: FileEntry) -> None:
    """Refuse an input file compressed in a way Spark would not undo: it would read the file's
    compressed bytes as text, or (an lz4 tool's file) read no text from it.

    Raises
    ------
    UserError
        When a file without a Hadoop codec has the suffix of a compressed format
        (`ARCHIVE_SUFFIXES`), or an ``.lz4`` file is in the lz4 tool's frame format.
    """
    if entry.codec is None and entry.path.endswith(ARCHIVE_SUFFIXES):
        raise UserError(f"input file {entry.path} is compressed in a format Spark cannot read, and would be read as "
                        f"raw bytes; decompress it, or recompress it as {READABLE_COMPRESSION}")
    if entry.codec == ".lz4" and file_head(spark, entry.path, len(LZ4_FRAME_MAGIC), INPUT_SETTING) == LZ4_FRAME_MAGIC:
        raise UserError(f"input file {entry.path} is in the lz4 tool's frame format, which Spark's .lz4 codec "
                        f"(Hadoop's block format) reads as no text; decompress it, or recompress it as "
                        f"{READABLE_COMPRESSION}")


def check_root_outside(corpus: CorpusInput, storage: Storage) -> None:
    """Refuse a run root inside a directory of the input: its first run would pass (the root does
    not exist when the input is listed), and every later run would find its output there.

    Raises
    ------
    UserError
        When the root lies in or below one of the input's directories.
    """
    root = f"{file_key(storage.root)}/"
    for directory in corpus.directories:
        if root.startswith(f"{file_key(directory).rstrip('/')}/"):
            raise UserError(f"run root {storage.root} lies inside input corpus {corpus.path}, so the next run "
                            "would read this one's output as text; choose a --root outside the input (OUT= for "
                            "make run)")


def check_local_files(config: Config) -> None:
    """The evaluation files are read by the driver itself: they must exist on its disk and parse,
    which is checked here, before training, rather than after it."""
    readers = {"analogy_path": read_analogy_questions, "similarity_path": read_similarity_pairs}
    for name, reader in readers.items():
        value = getattr(config.evaluate, name)
        if not value:
            continue
        if not Path(value).is_file():
            raise UserError(f"evaluate.{name} = {value} is not a file on the driver; fix the path or set it to \"\"")
        try:
            reader(value)
        except UserError as error:
            raise UserError(f"evaluate.{name}: {error}; fix the file or set evaluate.{name} to \"\"") from None


class UnreadableFile(NamedTuple):
    """A file a Spark job failed to read (`unreadable_file`)."""

    path: str  # in the spelling of the file listing
    reason: str
    removed: bool  # it was there when the job listed it, and not when the job read it


def unreadable_file(error: BaseException) -> UnreadableFile | None:
    """The file a Spark job failed to read, as it read it or as it planned the read (a file listed,
    then removed: a directory that another process still writes to or rotates), else None."""
    if isinstance(error, AnalysisException) and error.getCondition() == PATH_NOT_FOUND:
        return UnreadableFile(listed_spelling(error.getMessageParameters()["path"]), REMOVED, True)
    if not isinstance(error, Py4JJavaError):
        return None
    causes = java_causes(error)
    removed = any(name == FILE_NOT_FOUND for name, _ in causes)
    for _, message in causes:
        match = UNREADABLE_FILE.search(message)
        if match:
            return UnreadableFile(listed_spelling(match.group(1)),
                                  REMOVED if removed else causes[-1][1] or causes[-1][0], removed)
    return None


def damaged_file(error: BaseException, roots: Sequence[Storage]) -> DamagedFileError | None:
    """The damaged file `error` stands for, when it failed on a file below one of `roots`: a file
    a root's reader refused (`Storage.damaged`), or one a Spark job could not read, of the first
    root it lies below (`unreadable_file`). None for any other error."""
    if isinstance(error, DamagedFileError):
        return error if any(root.relative_path(error.path) is not None for root in roots) else None
    unreadable = unreadable_file(error)
    if unreadable is None:
        return None
    for root in roots:
        relative = root.relative_path(unreadable.path)
        if relative is not None:
            return root.damaged(relative, unreadable.reason)
    return None


def listed_spelling(spark_uri: str) -> str:
    """A file's URI as Spark names it in records and errors, percent-encoded (``a%20b.txt``), in
    the spelling of the file listing (`FileEntry`, ``a b.txt``)."""
    return urllib.parse.unquote(spark_uri)
