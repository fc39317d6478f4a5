"""Raw text to sentences of tokens, and word counts, on Spark.

Spark reads a file a line per record when every line of it fits in `MAX_LINE_BYTES`, and
otherwise with a space as its record separator, so that even a corpus that is one 100 MB line
(text8) streams as small records through many splits. Each partition's records are rebuilt
into text per Arrow batch, decoded with replacement, normalised, split by an RE2 pattern and
cut into sentences of at most ``max_sentence_length`` tokens. With the default pattern, a line
that is ASCII is split by a table of its bytes instead, three times as fast and with the same
tokens (`split_batch`). A line longer than a batch continues across batches: only newlines, the
length cap and partition ends cut it.

Lines are the faster records where they fit, because the JVM's cost is per record: the
benchmark corpus (100 MB in lines of 1,000 words) reached the Python workers in 0.4 s as its
17k lines against 4.3 to 4.8 s as its 17M words, and was tokenized in 3.5 to 4.8 s against 7.3
to 8.6 s (a warm application on 2 cores, 3 times each; measured).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sgns_spark.arrow import list_lengths, lists_from_lengths, spark_schema
from sgns_spark.config import WORD_SEPARATORS, CorpusSettings
from sgns_spark.storage import glob_escaped

SPACE_SEPARATOR, LINE_SEPARATOR = " ", "\n"  # the two record separators (`read_records`)
REPLACEMENT_CHARACTER = "\ufffd"
REPLACEMENT_CHARACTER_UTF8 = REPLACEMENT_CHARACTER.encode("utf-8")
NEWLINE_BYTE = ord("\n")
ASCII_LIMIT = 0x80  # ASCII characters are the bytes below; every byte of any other UTF-8 character is not
BYTE_VALUES = 256
OFFSET_LIMIT = 2**31  # an Arrow string array's int32 offsets reach this many bytes
NUL_BYTE = b"\0"  # valid UTF-8, but never in text: UTF-16 and UTF-32 text and binary files are full of them
MAX_RECORD_BYTES = 64 << 20  # a run this long without a space is not text; Spark holds records in one array
# a file is read a line per record only if no line is longer (an Arrow batch holds whole records)
MAX_LINE_BYTES = 1 << 20
MAX_RECORD_OPTION = "mapreduce.input.linerecordreader.line.maxlength"  # Hadoop's reader skips longer records
# Spark lists the paths of a read of more than 32 by a job of one task per path (up to 10,000): a
# corpus of 2,000 small files took 8 to 13 s to list per read, and the vocab stage reads it 3 times.
# With a task per core, or per this many paths where that is more, it took 0.7 s (measured).
LISTING_PARALLELISM = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
PATHS_PER_LISTING_TASK = 100
PARTITION_KEY_SHIFT = 32  # sentence_key = partition << 32 | sentence number in partition
SENTENCE_SCHEMA = pa.schema([
    ("sentence_key", pa.int64()),
    ("tokens", pa.list_(pa.string())),
    # batch statistics, carried on one sentence of the batch: its undecodable and total bytes, and
    # its distinct tokens with their counts (`count_words`)
    ("invalid_bytes", pa.int64()),
    ("input_bytes", pa.int64()),
    ("counted_words", pa.list_(pa.string())),
    ("word_counts", pa.list_(pa.int64())),
])


def read_sentences(spark: SparkSession, paths: str | list[str], settings: CorpusSettings,
                   line_paths: str | list[str] = ()) -> DataFrame:
    """Read text files (plain or compressed, any Hadoop URI) as sentences of normalised tokens.

    Parameters
    ----------
    spark : SparkSession
    paths : str or list of str
        Corpus files read a space-separated record at a time, whatever their lines' lengths.
    settings : CorpusSettings
    line_paths : str or list of str
        Corpus files read a line per record: only files whose lines all fit in `MAX_LINE_BYTES`
        (`sgns_spark.stages.line_files` finds them; a longer line would be skipped).

    Returns
    -------
    DataFrame
        ``sentence_key long, tokens array<string>``, and the batch statistics of
        `SENTENCE_SCHEMA`: summing ``invalid_bytes`` and ``input_bytes`` gives the corpus's
        undecodable and total bytes, and `count_words` sums the counts.
    """
    # a union's partitions are numbered across its parts, so the sentence keys stay distinct
    return functools.reduce(DataFrame.union, [
        read_records(spark, chosen, separator).select(F.col("value").cast("binary").alias("piece")).mapInArrow(
            functools.partial(tokenize_partition, settings=settings, separator=separator),
            spark_schema(SENTENCE_SCHEMA))
        for chosen, separator in ((paths, SPACE_SEPARATOR), (line_paths, LINE_SEPARATOR)) if chosen])


def read_records(spark: SparkSession, paths: str | list[str], separator: str) -> DataFrame:
    """The corpus files `paths` (names, not globs) as Spark's text source reads them here:
    ``value string`` records, each followed in its file by `separator` (`SPACE_SEPARATOR` or
    `LINE_SEPARATOR`).

    A record longer than its separator's limit (`MAX_RECORD_BYTES`, `MAX_LINE_BYTES`) is skipped
    by the reader rather than grown until the JVM runs out of heap; `record_bytes_per_file` lets
    the caller find such files.
    """
    limit = MAX_RECORD_BYTES if separator == SPACE_SEPARATOR else MAX_LINE_BYTES
    files = [paths] if isinstance(paths, str) else paths
    spark.conf.set(LISTING_PARALLELISM, str(max(spark.sparkContext.defaultParallelism,
                                                  math.ceil(len(files) / PATHS_PER_LISTING_TASK))))
    return spark.read.option("lineSep", separator).option(MAX_RECORD_OPTION, str(limit)).text(
        [glob_escaped(path) for path in files])


def record_bytes_per_file(records: DataFrame) -> dict[str, int]:
    """Bytes each file's records stand for, one separator each (a JVM-only job)."""
    rows = records.groupBy(F.col("_metadata.file_path").alias("path")).agg(
        F.sum(F.octet_length("value") + 1).alias("bytes")).collect()
    return {row["path"]: int(row["bytes"]) for row in rows}


def tokenize_partition(
    batches: Iterator[pa.RecordBatch], settings: CorpusSettings, separator: str
) -> Iterator[pa.RecordBatch]:
    """Executor side: turn one partition's records, separated by `separator`, into sentences."""
    context = TaskContext.get()
    partition = context.partitionId() if context is not None else 0
    builder = SentenceBuilder(partition, settings.max_sentence_length)
    for batch in batches:
        pieces = batch.column(0)
        raw = join_pieces(pieces, separator)  # (bytes,) uint8
        data = raw.tobytes()
        text = data.decode("utf-8", errors="replace")
        # not text: what does not decode (each replaced by U+FFFD), and NUL bytes
        invalid = text.count(REPLACEMENT_CHARACTER) - data.count(REPLACEMENT_CHARACTER_UTF8) + data.count(NUL_BYTE)
        tokens, line_lengths = split_batch(raw, text, settings)
        yield builder.add(tokens, line_lengths, invalid_bytes=invalid, input_bytes=raw.size)
    yield builder.finish()


def join_pieces(pieces: pa.BinaryArray, separator: str) -> np.ndarray:
    """Rebuild the text of consecutive records, each followed by the `separator` it lost.

    Returns
    -------
    numpy.ndarray
        ``(total bytes + records,) uint8``.
    """
    count = len(pieces)
    offsets = np.frombuffer(pieces.buffers()[1], dtype=np.int32)[
        pieces.offset : pieces.offset + count + 1
    ]  # (count + 1,)
    data = np.frombuffer(pieces.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    piece_of_byte = np.repeat(np.arange(count), np.diff(offsets))  # (bytes,)
    joined = np.full(data.size + count, ord(separator), dtype=np.uint8)
    joined[np.arange(data.size) + piece_of_byte] = data
    return joined


def split_text(text: str, settings: CorpusSettings) -> tuple[pa.Array, np.ndarray]:
    """Normalise `text` and split it into tokens, line by line.

    Returns
    -------
    tokens : pyarrow.StringArray
        Every non-empty token in order.
    line_lengths : numpy.ndarray
        ``(lines,) int64``: tokens per newline-separated line.
    """
    lines = prepared(pa.array(text.split("\n"), type=pa.string()), settings)
    split = pc.split_pattern_regex(lines, pattern=settings.split_pattern)
    values = split.flatten()
    nonempty = np.asarray(pc.greater(pc.binary_length(values), 0), dtype=bool)
    line_of_value = np.repeat(np.arange(len(lines)), list_lengths(split))
    line_lengths = np.bincount(line_of_value[nonempty], minlength=len(lines))
    return values.filter(pa.array(nonempty)), line_lengths


def prepared(lines: pa.StringArray, settings: CorpusSettings) -> pa.StringArray:
    """`lines` normalised and lowercased as the settings say, ready to split."""
    if settings.unicode_normalization != "none":
        lines = pc.utf8_normalize(lines, form=settings.unicode_normalization)
    if settings.lowercase:
        lines = pc.utf8_lower(lines)
    return lines


@functools.cache
def ascii_token_bytes(settings: CorpusSettings) -> np.ndarray | None:
    """``(256,) bool``: the ASCII bytes that are token characters, found by `split_text`'s own
    steps on every ASCII character alone; or None where the split pattern is not the default, or
    where those steps do to an ASCII character anything but Arrow's ASCII lowercasing (when
    ``lowercase``) or nothing.

    The default pattern is one character class repeated, so a character's side of it does not
    depend on its neighbours, and the table splits an ASCII line exactly as the pattern does.
    """
    if settings.split_pattern != WORD_SEPARATORS:
        return None
    characters = pa.array([chr(code) for code in range(ASCII_LIMIT)], type=pa.string())
    ready = prepared(characters, settings)
    if not ready.equals(pc.ascii_lower(characters) if settings.lowercase else characters):
        return None
    split = pc.split_pattern_regex(ready, pattern=settings.split_pattern).to_pylist()
    token_bytes = np.zeros(BYTE_VALUES, dtype=bool)
    token_bytes[:ASCII_LIMIT] = ["".join(pieces) == character
                                 for pieces, character in zip(split, ready.to_pylist(), strict=True)]
    return token_bytes


def split_batch(raw: np.ndarray, text: str, settings: CorpusSettings) -> tuple[pa.Array, np.ndarray]:
    """`split_text` of a batch's `text`, decoded from its bytes `raw`: lines that are ASCII by a
    byte table (`ascii_token_bytes`), the others by the pattern.

    The pattern's split was most of a batch's time (RE2 at about 25 MB/s). On 20 MB of the
    benchmark corpus the table took 240 against 711 ms, 306 against 651 ms with 5% of the lines not
    ASCII, and 696 against 817 ms with half of them (one core; the same tokens; measured). A
    newline byte is a newline character in `text` too (UTF-8 decoding with replacement never
    swallows an ASCII byte), so the lines of `raw` and of `text` are the same lines.
    """
    token_bytes = ascii_token_bytes(settings)
    if token_bytes is None or not raw.size or raw.size >= OFFSET_LIMIT:
        return split_text(text, settings)
    newlines = np.flatnonzero(raw == NEWLINE_BYTE)  # (lines - 1,)
    line_starts = np.r_[0, newlines + 1]  # (lines,)
    # a line's largest byte, or the newline that ends it when it is empty
    wide_lines = np.flatnonzero(np.maximum.reduceat(raw, np.minimum(line_starts, raw.size - 1)) >= ASCII_LIMIT)
    if wide_lines.size == line_starts.size:
        return split_text(text, settings)
    in_token = token_bytes[raw]  # (bytes,) the lines that are not ASCII are split again below
    starts = np.flatnonzero(in_token & ~np.r_[False, in_token[:-1]])  # (tokens,)
    ends = np.flatnonzero(in_token & ~np.r_[in_token[1:], False]) + 1  # (tokens,)
    offsets = np.r_[0, np.cumsum(ends - starts)].astype(np.int32)  # (tokens + 1,)
    tokens = pa.StringArray.from_buffers(starts.size, pa.py_buffer(offsets), pa.py_buffer(raw[in_token]))
    if settings.lowercase:
        tokens = pc.ascii_lower(tokens)
    line_lengths = np.diff(np.r_[np.searchsorted(starts, line_starts), starts.size])  # (lines,)
    if not wide_lines.size:
        return tokens, line_lengths
    lines = text.split("\n")
    wide_tokens, wide_lengths = split_text("\n".join(lines[line] for line in wide_lines), settings)
    # the tokens of each run of lines of one kind, from its own part (the table's tokens of lines
    # that are not ASCII are left out), run after run
    wide = np.zeros(line_starts.size, dtype=bool)
    wide[wide_lines] = True
    wide_line_lengths = np.zeros_like(line_lengths)
    wide_line_lengths[wide_lines] = wide_lengths
    run_starts = np.flatnonzero(np.r_[True, wide[1:] != wide[:-1]])  # (runs,) the first line of each
    run_bounds = np.r_[run_starts, line_starts.size]  # (runs + 1,)
    bounds = {False: np.r_[0, np.cumsum(line_lengths)][run_bounds].tolist(),  # (runs + 1,) in each part
              True: np.r_[0, np.cumsum(wide_line_lengths)][run_bounds].tolist()}
    parts = {False: tokens, True: wide_tokens}
    runs = [parts[kind].slice(bounds[kind][run], bounds[kind][run + 1] - bounds[kind][run])
            for run, kind in enumerate(wide[run_starts].tolist())]
    line_lengths[wide_lines] = wide_lengths
    return pa.concat_arrays(runs), line_lengths


def sentence_lengths(line_lengths: np.ndarray, max_length: int) -> np.ndarray:
    """Cut lines of the given token counts into sentences of at most `max_length` tokens.

    Empty lines give no sentence. Returns ``(sentences,) int64`` lengths, in line order.
    """
    full_chunks = line_lengths // max_length
    remainders = line_lengths % max_length
    chunks_per_line = full_chunks + (remainders > 0)
    lengths = np.full(int(chunks_per_line.sum()), max_length, dtype=np.int64)
    last_chunk = np.cumsum(chunks_per_line) - 1  # (lines,) index of each line's last chunk
    has_remainder = remainders > 0
    lengths[last_chunk[has_remainder]] = remainders[has_remainder]
    return lengths


class SentenceBuilder:
    """Executor-side state of one partition: the unfinished last line and pending statistics.

    Parameters
    ----------
    partition : int
        The Spark partition index, the high bits of every sentence key.
    max_length : int
        Tokens per sentence at most.
    """

    def __init__(self, partition: int, max_length: int):
        self.max_length = max_length
        self.next_key = partition << PARTITION_KEY_SHIFT
        self.carry = pa.array([], type=pa.string())
        self.pending_invalid = 0
        self.pending_bytes = 0

    def add(
        self, tokens: pa.Array, line_lengths: np.ndarray, invalid_bytes: int, input_bytes: int
    ) -> pa.RecordBatch:
        """Take one batch's tokens; return the sentences it completes."""
        tokens = pa.concat_arrays([self.carry, tokens])
        line_lengths = line_lengths.copy()
        line_lengths[0] += len(self.carry)
        carried = int(line_lengths[-1] % self.max_length)  # the last line may go on
        line_lengths[-1] -= carried
        self.carry = tokens.slice(len(tokens) - carried)
        self.pending_invalid += invalid_bytes
        self.pending_bytes += input_bytes
        return self._emit(tokens.slice(0, len(tokens) - carried), line_lengths)

    def finish(self) -> pa.RecordBatch:
        """Return the partition's last sentence and any statistics not yet emitted."""
        batch = self._emit(self.carry, np.array([len(self.carry)]))
        if batch.num_rows == 0 and (self.pending_invalid or self.pending_bytes):
            return self._batch([0], pa.array([], type=pa.string()))
        return batch

    def _emit(self, tokens: pa.Array, line_lengths: np.ndarray) -> pa.RecordBatch:
        return self._batch(sentence_lengths(line_lengths, self.max_length), tokens)

    def _batch(self, lengths, tokens: pa.Array) -> pa.RecordBatch:
        count = len(lengths)
        keys = np.arange(self.next_key, self.next_key + count, dtype=np.int64)
        self.next_key += count
        invalid = np.zeros(count, dtype=np.int64)
        input_bytes = np.zeros(count, dtype=np.int64)
        counted = pc.value_counts(tokens)  # the batch's distinct tokens, on its first sentence
        counted_lengths = np.zeros(count, dtype=np.int64)
        if count:
            invalid[0], input_bytes[0] = self.pending_invalid, self.pending_bytes
            counted_lengths[0] = len(counted)
            self.pending_invalid = self.pending_bytes = 0
        return pa.RecordBatch.from_arrays(
            [pa.array(keys), lists_from_lengths(lengths, tokens), pa.array(invalid), pa.array(input_bytes),
             lists_from_lengths(counted_lengths, counted.field("values")),
             lists_from_lengths(counted_lengths, pc.cast(counted.field("counts"), pa.int64()))],
            schema=SENTENCE_SCHEMA,
        )


def count_words(sentences: DataFrame) -> DataFrame:
    """Return ``word string, count long`` over all tokens of `sentences` (`read_sentences`).

    The tokenizer counted each batch's tokens in C++ (``value_counts``) as it cut them, so Spark
    sums those partial counts and never hands the tokens to Python again: on the benchmark corpus
    the vocab stage's count step took 2.8 and 3.5 s against 4.2 and 4.9 s when a second Python
    pass counted the persisted tokens (alternately; the same vocabulary; measured).
    """
    partial = sentences.select(F.inline(F.arrays_zip("counted_words", "word_counts")))
    return partial.groupBy(F.col("counted_words").alias("word")).agg(F.sum("word_counts").alias("count"))
