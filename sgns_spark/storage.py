"""Files under the run root, on any Hadoop filesystem (local, hdfs://, s3a://, ...).

Small text files (markers, reports, manifests) and directory moves go through the JVM's
Hadoop FileSystem, so the same code serves every URI Spark can read.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pyspark.sql import SparkSession

STAGING_DIRECTORY = "_staging"
COPY_BUFFER_BYTES = 1 << 20  # the JVM's buffer when concatenating part files
PART_FILE_PREFIX = "part-"  # Spark's data files; _SUCCESS and checksum files are skipped


class Storage:
    """Paths and atomic file operations below one run root.

    Parameters
    ----------
    spark : SparkSession
    root : str
        A local path or Hadoop URI; every relative path is taken below it.
    """

    def __init__(self, spark: SparkSession, root: str):
        self.root = root.rstrip("/")
        jvm = spark.sparkContext._jvm
        self._jvm = jvm
        root_path = jvm.org.apache.hadoop.fs.Path(self.root)
        self._filesystem = root_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        self.root = self._filesystem.makeQualified(root_path).toString()

    def path(self, *parts: str) -> str:
        """Return the URI of `parts` below the root."""
        return "/".join([self.root, *parts])

    def _hadoop_path(self, relative: str):
        return self._jvm.org.apache.hadoop.fs.Path(self.path(relative))

    def exists(self, relative: str) -> bool:
        """Return whether `relative` exists below the root."""
        return bool(self._filesystem.exists(self._hadoop_path(relative)))

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
        """Write `text` to `relative` atomically: to a hidden sibling, then renamed over it."""
        temporary = f"{relative}.{uuid.uuid4().hex}.tmp"
        with self.open_write(temporary) as stream:
            stream.write(text.encode("utf-8"))
        self.delete(relative)
        self.move(temporary, relative)

    def open_write(self, relative: str) -> HadoopOutput:
        """Open `relative` for writing bytes (a context manager with ``write(bytes)``)."""
        return HadoopOutput(self._filesystem.create(self._hadoop_path(relative), True), self._jvm)

    def read_text(self, relative: str) -> str:
        """Return the UTF-8 text of file `relative`."""
        stream = self._filesystem.open(self._hadoop_path(relative))
        try:
            return str(self._jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8"))
        finally:
            stream.close()

    def write_json(self, relative: str, document: dict[str, Any]) -> None:
        """Write `document` as indented JSON to `relative`, atomically."""
        self.write_text(relative, json.dumps(document, indent=2, sort_keys=True) + "\n")

    def read_json(self, relative: str) -> dict[str, Any]:
        """Return the JSON document in file `relative`."""
        return json.loads(self.read_text(relative))

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
