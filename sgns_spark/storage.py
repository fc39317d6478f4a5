"""Files under the run root, on any Hadoop filesystem (local, hdfs://, s3a://, ...).

Small text files (markers, reports, manifests, the lock), listings and directory moves go
through the JVM's Hadoop FileSystem, so the same code serves every URI Spark can read. This
module is the one place that reaches the JVM's Hadoop classes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from sgns_spark.errors import DamagedFileError, UserError, java_causes
from sgns_spark.layout import STAGING_DIRECTORY, damage_remedy, pointed_number
from sgns_spark.spark_metrics import MILLISECONDS

COPY_BUFFER_BYTES = 1 << 20  # the JVM's buffer when concatenating part files
PART_FILE_PREFIX = "part-"  # Spark's data files; _SUCCESS and checksum files are skipped
PROBE_PREFIX = "_write-probe-"
MISSING_FILESYSTEM_SIGNS = ("No FileSystem for scheme", "ClassNotFoundException")
RUN_ROOT_SETTING = "the run root (--root)"
UNCHANGED_TIME = -1  # `FileSystem.setTimes` leaves a time given as -1 as it is (in milliseconds, as Hadoop keeps them)
GLOB_CHARACTER = re.compile(r"[\\{}\[\]*?]")  # what Hadoop's glob patterns give a meaning, escaped by a backslash
LOCAL_SCHEME = "file"  # the driver's own disk
BINARY_FILE_FORMAT = "binaryFile"  # Spark's source of files as rows: path, length, time (content read only if asked)
CODEC_PROBE = "probe"  # the name a suffix is given to ask Hadoop for its codec
CHECKSUM_ERROR = "Checksum error"  # how Hadoop's ChecksumException starts its message
# Spark's error conditions for a Parquet directory to read that is gone, or holds no data files
UNREADABLE_DIRECTORY_REASONS = {"PATH_NOT_FOUND": "it is missing",
                                "UNABLE_TO_INFER_SCHEMA": "it holds no Parquet files"}


@dataclass(frozen=True)
class FileEntry:
    """One file found by `list_files`: its qualified URI, size and modification time, and the
    extension of the Hadoop codec Spark decompresses it with (``.gz``), None for a plain file."""

    path: str
    size: int
    modified_ms: int
    codec: str | None


def glob_escaped(uri: str) -> str:
    """`uri` with Hadoop's glob characters escaped, for Spark's readers, which take every path as
    a glob: a file named ``notes [draft].txt``, or a root ``runs [prod]``, was read as no file."""
    return GLOB_CHARACTER.sub(r"\\\g<0>", uri)


def same_file(first: str, second: str) -> bool:
    """Whether two spellings of a URI name one file (Spark writes ``file:///x``, Hadoop ``file:/x``)."""
    return file_key(first) == file_key(second)


def file_key(uri: str) -> str:
    """One spelling of a file's URI, the same for every spelling `same_file` equates."""
    return re.sub(r"^file:/+", "file:/", uri)


def hadoop_filesystem(spark: SparkSession, uri: str, setting: str):
    """The JVM Hadoop FileSystem and qualified Path of `uri`.

    Raises
    ------
    UserError
        When no file system serves the URI's scheme, naming `setting`.
    """
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    try:
        filesystem = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    except Py4JJavaError as error:
        causes = " ".join(message for _, message in java_causes(error))
        if any(sign in causes for sign in MISSING_FILESYSTEM_SIGNS):
            scheme = uri.split(":", 1)[0] if ":" in uri else "file"
            raise UserError(
                f"no file system for the {scheme}:// scheme of {setting} {uri}; add its Hadoop connector "
                f"to Spark (for s3a: --packages org.apache.hadoop:hadoop-aws:<Spark's Hadoop version>)"
            ) from None
        raise
    return filesystem, filesystem.makeQualified(path)


def list_files(spark: SparkSession, pattern: str, setting: str) -> tuple[list[str], list[FileEntry]] | None:
    """The directories a path or glob names, and the files with bytes it names (those below a
    directory recursively), in path order; None when it names nothing. Spark's own listing finds
    the files (`BINARY_FILE_FORMAT`), so they are the ones its readers read: hidden names
    (starting with ``_`` or ``.``) and empty files are left out.

    The files come back from the JVM as one small table, not as calls of Python into the JVM for
    each file's path, size, time and codec: 2,000 files took 10.3 s to list that way, one Spark
    job takes about 1.3 s (measured).
    """
    filesystem, path = hadoop_filesystem(spark, pattern, setting)
    matches = filesystem.globStatus(path) or []
    if not matches:
        return None
    directories = sorted(str(status.getPath().toString()) for status in matches if status.isDirectory())
    found = spark.read.format(BINARY_FILE_FORMAT).option("recursiveFileLookup", "true").load(
        str(path.toString())).select("path", "length", F.unix_millis("modificationTime").alias("modified_ms"))
    jvm = spark.sparkContext._jvm
    codecs = jvm.org.apache.hadoop.io.compress.CompressionCodecFactory(
        spark.sparkContext._jsc.hadoopConfiguration())  # Spark's text reader picks codecs by this factory
    extensions: dict[str, str | None] = {}  # a file suffix's codec extension (a codec is known by its suffix)

    def codec_of(name: str) -> str | None:
        suffix = Path(name).suffix
        if suffix not in extensions:
            codec = codecs.getCodec(jvm.org.apache.hadoop.fs.Path(f"{CODEC_PROBE}{suffix}"))
            extensions[suffix] = str(codec.getDefaultExtension()) if codec is not None else None
        return extensions[suffix]

    entries = [FileEntry(row["path"], int(row["length"]), int(row["modified_ms"]), codec_of(row["path"]))
               for row in found.collect()]
    return directories, sorted(entries, key=lambda entry: entry.path)


def file_head(spark: SparkSession, uri: str, count: int, setting: str) -> bytes:
    """The first `count` bytes of file `uri` as stored (fewer when the file is shorter); `setting`
    names the file in an error, as in `hadoop_filesystem`."""
    filesystem, path = hadoop_filesystem(spark, uri, setting)
    stream = filesystem.open(path)
    try:
        return bytes(stream.readNBytes(count))
    finally:
        stream.close()


class Storage:
    """Paths and atomic file operations below one run root.

    Parameters
    ----------
    spark : SparkSession
    root : str
        A local path or Hadoop URI; every relative path is taken below it.
    setting : str
        What names the root in an error: `RUN_ROOT_SETTING`, or the setting that names a
        published version read from another root.
    """

    def __init__(self, spark: SparkSession, root: str, setting: str = RUN_ROOT_SETTING):
        self._spark, self._jvm = spark, spark.sparkContext._jvm
        self._filesystem, root_path = hadoop_filesystem(spark, root.rstrip("/"), setting)
        self.root = root_path.toString()
        self.setting = setting

    def relative_path(self, uri: str) -> str | None:
        """`uri`'s path below the root, or None for a file elsewhere (any spelling of a file URI)."""
        prefix, key = f"{file_key(self.root)}/", file_key(uri)
        return key.removeprefix(prefix) if key.startswith(prefix) else None

    def damaged(self, relative: str, reason: str) -> DamagedFileError:
        """The error for file `relative` below the root, which cannot be read or parsed."""
        if reason.startswith(CHECKSUM_ERROR):  # Hadoop's message names the file and two numbers
            reason = "its bytes do not match its checksum file"
        remedy = damage_remedy(relative) if self.setting == RUN_ROOT_SETTING else f"point {self.setting} elsewhere"
        return DamagedFileError(self.path(relative), reason, remedy)

    def check_writable(self) -> None:
        """Create the root if needed and write and delete a small probe file in it.

        Raises
        ------
        UserError
            When the root cannot be created or written, before any work is done.
        """
        probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        try:
            self._filesystem.mkdirs(self._hadoop_path(""))
            with self.open_write(probe) as stream:
                stream.write(b"probe")
            self.delete(probe)
        except Py4JJavaError as error:
            reason = java_causes(error)[-1][1]
            raise UserError(f"run root {self.root} cannot be written ({reason}); "
                            "choose another --root (OUT= for make run)") from None

    def create_exclusive(self, relative: str, text: str) -> bool:
        """Create file `relative` holding `text` unless it exists; return whether it was created.

        Creation fails if the file exists, atomically on HDFS and local disks (object stores
        without conditional writes give no such guarantee). On a local disk Hadoop checks for the
        file and then creates it, so two runs starting together both created it (two threads: 58
        times in 300 tries): there the file is a hard link to a complete temporary file, which
        the system makes at once, or refuses for a name that exists.
        """
        target = self._local_file(relative)
        if target is not None:
            temporary = written_beside(target, text)
            try:
                os.link(temporary, target)
            except FileExistsError:
                return False
            finally:
                temporary.unlink()
            return True
        try:
            stream = self._filesystem.create(self._hadoop_path(relative), False)
        except Py4JJavaError as error:
            if any("FileAlreadyExists" in name for name, _ in java_causes(error)):
                return False
            raise
        with HadoopOutput(stream, self._jvm) as output:
            output.write(text.encode("utf-8"))
        return True

    def path(self, *parts: str) -> str:
        """Return the URI of `parts` below the root."""
        return "/".join([self.root, *(part for part in parts if part)])

    def _hadoop_path(self, relative: str):
        return self._jvm.org.apache.hadoop.fs.Path(self.path(relative))

    def _local_file(self, relative: str) -> Path | None:
        """File `relative` as a path of the driver's own disk, or None below a root elsewhere."""
        if self._filesystem.getScheme() != LOCAL_SCHEME:
            return None
        return Path(str(self._hadoop_path(relative).toUri().getPath()))

    def exists(self, relative: str) -> bool:
        """Return whether `relative` exists below the root."""
        return bool(self._filesystem.exists(self._hadoop_path(relative)))

    def touch(self, relative: str) -> None:
        """Set file `relative`'s modification time to now, without rewriting it."""
        self._filesystem.setTimes(self._hadoop_path(relative), round(time.time() * MILLISECONDS), UNCHANGED_TIME)

    def modified_at(self, relative: str) -> float:
        """File `relative`'s modification time, in seconds since the epoch (as `time.time`)."""
        return self._filesystem.getFileStatus(self._hadoop_path(relative)).getModificationTime() / MILLISECONDS

    def delete(self, relative: str) -> None:
        """Delete a file or directory below the root, if present."""
        self._filesystem.delete(self._hadoop_path(relative), True)

    def list_names(self, relative: str) -> list[str]:
        """Return the names directly inside directory `relative` (empty if it is absent)."""
        if not self.exists(relative):
            return []
        return sorted(status.getPath().getName()
                      for status in self._filesystem.listStatus(self._hadoop_path(relative)))

    def write_text(self, relative: str, text: str) -> None:
        """Replace file `relative` with `text` in one step: a reader finds the old text or the new,
        never a part, nor no file (a ``_LATEST`` pointer, polled by the lake's readers).

        The text is written whole to a temporary sibling, which is then renamed over the file: on a
        local disk by the system's rename, on HDFS by its rename with OVERWRITE (through Hadoop's
        ``FileContext``; its ``FileSystem`` rename refuses a name that exists). Object stores have
        no atomic rename, so there the rename is a copy. A local file is written without Hadoop's
        ``.crc`` file: it would be renamed in a second step, and a reader between the two would
        find the new text with the old checksum.
        """
        target = self._local_file(relative)
        if target is not None:
            temporary = written_beside(target, text)
            target.with_name(f".{target.name}.crc").unlink(missing_ok=True)  # of the text it replaces
            try:
                os.replace(temporary, target)
            except OSError:  # the name is a directory, say: leave no temporary sibling behind
                temporary.unlink(missing_ok=True)
                raise
            return
        temporary = f"{relative}.{uuid.uuid4().hex}.tmp"
        rename = self._jvm.org.apache.hadoop.fs.Options.Rename
        overwrite = self._spark.sparkContext._gateway.new_array(rename, 1)
        overwrite[0] = rename.OVERWRITE
        try:
            with self.open_write(temporary) as stream:
                stream.write(text.encode("utf-8"))
            self._file_context.rename(self._hadoop_path(temporary), self._hadoop_path(relative), overwrite)
        except Py4JJavaError:  # a full disk, a name that is a directory: leave no temporary sibling behind
            with contextlib.suppress(Py4JJavaError):
                self.delete(temporary)
            raise

    @functools.cached_property
    def _file_context(self):
        """Hadoop's FileContext of the root's file system, whose rename can replace a file; made
        once per root (on HDFS each one holds a client of its own)."""
        return self._jvm.org.apache.hadoop.fs.FileContext.getFileContext(self._filesystem.getUri(),
                                                                         self._filesystem.getConf())

    def open_write(self, relative: str) -> HadoopOutput:
        """Open `relative` for writing bytes (a context manager with ``write(bytes)``)."""
        return HadoopOutput(self._filesystem.create(self._hadoop_path(relative), True), self._jvm)

    def read_text(self, relative: str) -> str:
        """Return the UTF-8 text of file `relative`.

        Raises
        ------
        UserError
            When the file cannot be read, naming it and what to do (`damaged`). Most often a
            checksum error: Hadoop's local file system keeps a ``.crc`` file beside each file,
            and a file edited by other tools no longer matches it.
        """
        try:
            stream = self._filesystem.open(self._hadoop_path(relative))
            try:
                return str(self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
            finally:
                stream.close()
        except Py4JJavaError as error:
            raise self.damaged(relative, java_causes(error)[-1][1]) from None

    def write_json(self, relative: str, document: dict[str, Any]) -> None:
        """Write `document` as indented JSON to `relative`, atomically."""
        self.write_text(relative, json.dumps(document, indent=2, sort_keys=True) + "\n")

    def read_json(self, relative: str) -> dict[str, Any]:
        """Return the JSON document in file `relative` (`read_text`, then `parse_json`)."""
        return self.parse_json(relative, self.read_text(relative))

    def read_pointer(self, relative: str, key: str) -> dict[str, Any]:
        """The JSON document of ``_LATEST`` pointer `relative`, which names a round or version as `key`.

        Raises
        ------
        DamagedFileError
            When it cannot be read, is not JSON or names no `key` (`layout.pointed_number`).
        """
        pointer = self.read_json(relative)
        if pointed_number(pointer, key) is None:
            raise self.damaged(relative, f"it names no {key}")
        return pointer

    def parse_json(self, relative: str, text: str) -> dict[str, Any]:
        """Return the JSON document `text`, read from file `relative` (a UserError when it is not JSON)."""
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise self.damaged(relative, f"not JSON: {error}") from None

    def read_parquet(self, relative: str, schema: StructType | None = None) -> DataFrame:
        """The Parquet files of directory `relative` (with `schema`, none is inferred).

        Raises
        ------
        DamagedFileError
            When the directory is missing or holds no Parquet files (`damaged`). A file that
            cannot be read fails the job that reads it, later (`sgns_spark.cli.user_error_of`).
        """
        reader = self._spark.read if schema is None else self._spark.read.schema(schema)
        try:
            return reader.parquet(glob_escaped(self.path(relative)))
        except AnalysisException as error:
            reason = UNREADABLE_DIRECTORY_REASONS.get(error.getCondition())
            if reason is None:
                raise
            raise self.damaged(relative, reason) from None

    def move(self, source: str, destination: str) -> None:
        """Rename `source` to `destination` (atomic on HDFS and local disks)."""
        destination_path = self._hadoop_path(destination)
        self._filesystem.mkdirs(destination_path.getParent())
        if not self._filesystem.rename(self._hadoop_path(source), destination_path):
            raise OSError(f"could not rename {self.path(source)} to {self.path(destination)}")

    def concatenate(self, parts: str, destination: str, header: bytes) -> None:
        """Write `header`, then the part files of directory `parts` in name order, to `destination`.

        Spark names part files by partition number, so name order is partition order. The
        bytes are copied inside the JVM (`HadoopOutput.append_from`); they never reach Python,
        so the driver's memory does not grow with the files.
        """
        names = [name for name in self.list_names(parts) if name.startswith(PART_FILE_PREFIX)]
        with self.open_write(destination) as output:
            output.write(header)
            for name in names:
                part = self._filesystem.open(self._hadoop_path(f"{parts}/{name}"))
                try:
                    output.append_from(part)
                finally:
                    part.close()

    def clear_staging(self) -> None:
        """Remove what a killed stage left half-written in the staging directory."""
        self.delete(STAGING_DIRECTORY)

    def staging_path(self, name: str) -> str:
        """Return a fresh relative path under the staging directory for output `name`."""
        return f"{STAGING_DIRECTORY}/{name}-{uuid.uuid4().hex}"


def written_beside(target: Path, text: str) -> Path:
    """A complete temporary sibling of local file `target` holding `text`, for a rename into its place
    (its directory is created, as Hadoop's create does). Nothing is left when the write fails."""
    temporary = target.with_name(f"{target.name}.{uuid.uuid4().hex}.tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        temporary.write_text(text, encoding="utf-8")
    except OSError:  # a full disk, say
        temporary.unlink(missing_ok=True)
        raise
    return temporary


class HadoopOutput:
    """A Hadoop output stream taking Python bytes or the contents of JVM input streams."""

    def __init__(self, stream, jvm):
        self._stream = stream
        self._copy_bytes = jvm.org.apache.hadoop.io.IOUtils.copyBytes

    def write(self, data: bytes) -> None:
        """Append `data`."""
        self._stream.write(bytearray(data))

    def append_from(self, source) -> None:
        """Append what is left in the JVM input stream `source`, copied inside the JVM through
        a buffer of `COPY_BUFFER_BYTES` (`source` stays open)."""
        self._copy_bytes(source, self._stream, COPY_BUFFER_BYTES, False)

    def __enter__(self) -> HadoopOutput:
        return self

    def __exit__(self, *exc_info) -> None:
        self._stream.close()
