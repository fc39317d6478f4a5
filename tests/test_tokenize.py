import gzip
import math
import os
import re
import string
import unicodedata
from collections import Counter

import numpy as np
import pytest
from conftest import make_config
from pyspark.sql import functions as F

from sgns_spark.preflight import corpus_input
from sgns_spark.stages import line_files, read_corpus, run_vocab_stage
from sgns_spark.storage import Storage, list_files
from sgns_spark.tokenize import (
    ASCII_LIMIT,
    LINE_SEPARATOR,
    MAX_LINE_BYTES,
    PATHS_PER_LISTING_TASK,
    ascii_token_bytes,
    count_words,
    read_records,
    read_sentences,
    sentence_lengths,
    split_batch,
    split_text,
)

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


def reference_tokens(text: str) -> list[list[str]]:
    """Plain-Python tokenization: NFKC, lowercase, split on non-letter/digit/underscore."""
    lines = unicodedata.normalize("NFKC", text).lower().split("\n")
    return [[token for token in re.split(r"[^\w]+|_", line) if token] for line in lines]


def collected(sentences):
    rows = sentences.orderBy("sentence_key").select("tokens").collect()
    return [row["tokens"] for row in rows if row["tokens"]]


def test_sentence_lengths_cut_long_lines_and_drop_empty_ones():
    lengths = sentence_lengths(np.array([0, 3, 10, 7, 0]), max_length=5)
    assert lengths.tolist() == [3, 5, 5, 5, 2]


def test_split_text_normalises_and_keeps_line_structure():
    settings = make_config().corpus
    tokens, line_lengths = split_text("ＡＢＣ Straße, ﬁne!\n\nÉcole 42_x", settings)
    assert tokens.to_pylist() == ["abc", "straße", "fine", "école", "42_x"]
    assert line_lengths.tolist() == [3, 0, 2]


def test_the_default_patterns_ascii_table_keeps_letters_digits_and_underscores():
    token_bytes = ascii_token_bytes(make_config().corpus)
    assert bytes(np.flatnonzero(token_bytes).astype(np.uint8)).decode() == (
        string.digits + string.ascii_uppercase + "_" + string.ascii_lowercase)
    assert ascii_token_bytes(make_config("corpus.split_pattern=[ ]+").corpus) is None  # another pattern: the regex


@pytest.mark.parametrize("overrides", [(), ("corpus.lowercase=false",), ("corpus.unicode_normalization=none",),
                                       ("corpus.unicode_normalization=NFD",), ("corpus.split_pattern=[^a-z]+",)])
def test_a_batch_is_split_as_the_pattern_splits_it_line_by_line(overrides):
    """`split_batch`, whose ASCII lines go by a byte table, against `split_text`, the pattern on
    every line: random lines of ASCII (every character, control ones too), letters of other
    scripts, compatibility forms, emoji and bytes that are not UTF-8, in every mix."""
    settings = make_config(*overrides).corpus
    generator = np.random.default_rng(7)
    ascii_pieces = [chr(code) for code in range(ASCII_LIMIT) if chr(code) != "\n"] + ["Word", "x_1", "  ", "42"]
    wide_pieces = ["École", "straße", "ＡＢＣ", "ﬁne", "日本語", "🙂", "Ωμέγα", "e\u0301"]
    batches = [b"", b"\n", b"\n\n", b"Ab_1\n", b"\n\ncaf\xc3\xa9 Bar\n", b"x\0y z\r\n\xff"]
    for mix in (0.0, 0.05, 0.5, 1.0):  # the share of lines that are not ASCII
        lines = []
        for _ in range(300):
            pieces = ascii_pieces + (wide_pieces if generator.random() < mix else [])
            chosen = generator.choice(len(pieces), size=generator.integers(0, 30))
            line = "".join(pieces[index] for index in chosen).encode("utf-8")
            lines.append(line + (b"\xff\xfe" if mix and generator.random() < 0.1 else b""))
        batches.append(b"\n".join(lines))
    for batch in batches:
        raw = np.frombuffer(batch, dtype=np.uint8)
        text = batch.decode("utf-8", errors="replace")
        tokens, line_lengths = split_batch(raw, text, settings)
        expected_tokens, expected_lengths = split_text(text, settings)
        assert tokens.to_pylist() == expected_tokens.to_pylist()
        assert line_lengths.tolist() == expected_lengths.tolist()


def test_giant_single_line_is_split_over_partitions_without_loss(spark, tmp_path):
    rng = np.random.default_rng(7)
    words = [WORDS[i] + str(i * 7 % 13) for i in rng.integers(0, len(WORDS), size=60_000)]
    path = tmp_path / "giant.txt"
    path.write_text(" " + " ".join(words))  # one line, leading space, like text8
    config = make_config("corpus.max_sentence_length=1000")
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(64 * 1024))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "1500")
    try:
        sentences = read_sentences(spark, str(path), config.corpus)
        assert sentences.rdd.getNumPartitions() > 4
        per_sentence = collected(sentences)
        counts = {row["word"]: row["count"] for row in count_words(sentences).collect()}
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "100000")
    assert [token for sentence in per_sentence for token in sentence] == words
    assert counts == Counter(words)  # each batch's counts, summed over batches and partitions
    assert max(len(sentence) for sentence in per_sentence) == 1000
    assert len(per_sentence) < len(words) / 500  # cut at the cap, not at every batch


def test_lines_become_sentences_and_gzip_is_read(spark, tmp_path):
    text = "The cat sat.\nA dog, the DOG!\n\nÉlan ＦＵＬＬ width\n"
    path = tmp_path / "small.txt.gz"
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    sentences = collected(read_sentences(spark, str(path), make_config().corpus))
    assert sentences == [line for line in reference_tokens(text) if line]


def test_word_counts_match_python_reference(spark, tmp_path):
    text = "\n".join(" ".join(WORDS[: 1 + i % len(WORDS)]) for i in range(200))
    path = tmp_path / "counts.txt"
    path.write_text(text)
    counts = {row["word"]: row["count"] for row in
              count_words(read_sentences(spark, str(path), make_config().corpus)).collect()}
    expected: dict[str, int] = {}
    for line in reference_tokens(text):
        for token in line:
            expected[token] = expected.get(token, 0) + 1
    assert counts == expected


def test_invalid_utf8_is_replaced_and_counted_with_nul_bytes(spark, tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_bytes(b"good words here \xff\xfe more good \xc3 words\0\n")
    sentences = read_sentences(spark, str(path), make_config().corpus)
    totals = sentences.agg(F.sum("invalid_bytes"), F.sum("input_bytes")).first()
    assert totals[0] == 4  # three undecodable bytes and a NUL
    assert totals[1] == len(path.read_bytes()) + 1  # each record regains its separator
    assert collected(sentences) == [["good", "words", "here", "more", "good", "words"]]


@pytest.mark.parametrize("max_length", [10, 37])
def test_sentence_cap_holds_for_multi_line_text(spark, tmp_path, max_length):
    lines = [" ".join(WORDS * (i % 9)) for i in range(30)]
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(lines))
    config = make_config(f"corpus.max_sentence_length={max_length}")
    sentences = collected(read_sentences(spark, str(path), config.corpus))
    expected = []
    for line in reference_tokens("\n".join(lines)):
        expected.extend(line[i : i + max_length] for i in range(0, len(line), max_length))
    assert sentences == expected


def test_files_are_read_by_line_only_where_every_line_fits(spark, tmp_path):
    short = "alpha beta gamma\n" * 200
    long = short + "delta " * (MAX_LINE_BYTES // 6 + 100) + "\n" + short  # one line longer than a record
    # names Spark percent-encodes in its records' file paths
    (tmp_path / "short one.txt").write_text(short)
    (tmp_path / "long one.txt").write_text(long)
    (tmp_path / "short #2.txt.gz").write_bytes(gzip.compress(short.encode()))
    (tmp_path / "long #2.txt.gz").write_bytes(gzip.compress(long.encode()))
    (tmp_path / "unterminated.txt").write_text(short + "epsilon")  # no newline at its end
    files = corpus_input(spark, str(tmp_path)).files
    by_line = {path.rsplit("/", 1)[1] for path in line_files(spark, list(files))}
    assert by_line == {"short one.txt", "short #2.txt.gz", "unterminated.txt"}


def test_files_whose_names_hold_glob_characters_are_read(spark, tmp_path):
    """Spark takes a path as a glob: a directory holding "notes [draft].txt" failed its read with
    a trace (PATH_NOT_FOUND), and an input escaped by hand (data\\[1\\].txt) did too."""
    names = ["notes [draft].txt", "a{b,c}.txt", "why?.txt", "star*.txt.gz", "back\\slash.txt", "plain.txt"]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index, name in enumerate(names):
        text = f"{WORDS[index]} {WORDS[index]} file{index}\n"
        (corpus / name).write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    (corpus / "long [one].txt").write_text("omega " * (MAX_LINE_BYTES // 5))  # read a word per record
    sentences, totals, _, by_line, _ = read_corpus(spark, corpus_input(spark, str(corpus)), make_config())
    try:
        assert {path.rsplit("/", 1)[1] for path in by_line} == set(names)
        tokens = sorted(token for sentence in collected(sentences) for token in sentence if token != "omega")
        assert tokens == sorted([f"file{index}" for index in range(len(names))] + 2 * WORDS[:len(names)])
        assert totals["tokens"] == 3 * len(names) + MAX_LINE_BYTES // 5
    finally:
        sentences.unpersist()


def test_a_run_root_whose_name_holds_glob_characters_is_read_back(spark, tmp_path):
    """A root named "runs [prod]{1}" ended the vocab stage with its own staged corpus reported
    missing (Spark read the path as a glob), as if the root were damaged."""
    (tmp_path / "corpus.txt").write_text(" ".join(WORDS * 20) + "\n")
    storage = Storage(spark, str(tmp_path / "runs [prod]{1}"))
    report = run_vocab_stage(spark, make_config("vocab.min_count=1"), corpus_input(spark, str(tmp_path / "corpus.txt")),
                             storage)
    assert report["counts"]["vocab_size"] == len(WORDS)
    assert sorted(row["word"] for row in storage.read_parquet("vocab").collect()) == sorted(WORDS)


def test_a_line_too_long_for_a_record_is_read_whole(spark, tmp_path):
    words = [WORDS[i % len(WORDS)] for i in range(MAX_LINE_BYTES // 4)]  # a line of about 1.5 MiB
    text = "first short line\n" + " ".join(words) + "\nlast line\n"
    (tmp_path / "plain.txt").write_text(text)
    (tmp_path / "packed.txt.gz").write_bytes(gzip.compress(text.encode()))
    for name in ("plain.txt", "packed.txt.gz"):
        sentences, totals, _, by_line, _ = read_corpus(spark, corpus_input(spark, str(tmp_path / name)),
                                                       make_config())
        try:
            assert by_line == []
            found = collected(sentences)
            assert found[0] == ["first", "short", "line"] and found[-1] == ["last", "line"]
            assert sum(found[1:-1], []) == words
            assert totals["tokens"] == len(words) + 5
        finally:
            sentences.unpersist()


def test_lines_as_records_are_never_cut_at_partition_ends(spark, tmp_path):
    lines = [" ".join(WORDS[: 1 + i % len(WORDS)]) for i in range(3000)]
    path = tmp_path / "lines.txt"
    path.write_text("\n".join(lines) + "\n")
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(16 * 1024))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "100")
    try:
        by_line = read_sentences(spark, [], make_config().corpus, [str(path)])
        by_space = read_sentences(spark, [str(path)], make_config().corpus)
        assert by_line.rdd.getNumPartitions() > 4
        line_sentences, space_sentences = collected(by_line), collected(by_space)
        both = collected(read_sentences(spark, [str(path)], make_config().corpus, [str(path)]))
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "100000")
    assert line_sentences == [line.split() for line in lines]
    assert sum(space_sentences, []) == sum(line_sentences, [])  # spaces cut lines at partition ends
    assert len(space_sentences) > len(line_sentences)
    assert sorted(both) == sorted(line_sentences + space_sentences)  # distinct sentence keys


JVM_CALLS_PER_LISTING = 200  # a listing's calls of Python into the JVM: 76 to 108 for 30 or 300 files (measured)


def test_a_listing_names_the_files_spark_reads_in_a_few_calls_into_the_jvm(spark, tmp_path, monkeypatch):
    """Each listed file cost about ten calls of Python into the JVM (its path, size, time, codec):
    2,000 files took 10.3 s to list, a fifth of a vocab job's wall time. The listing names the
    files Spark's readers read: hidden names and empty files are left out."""
    corpus = tmp_path / "corpus [1]"
    for index in range(300):
        (corpus / f"part {index // 100}").mkdir(parents=True, exist_ok=True)
        (corpus / f"part {index // 100}" / f"f{index:03d}.txt").write_text(f"w{index}\n")
    with gzip.open(corpus / "z.txt.gz", "wt") as compressed:
        compressed.write("compressed words\n")
    for hidden in ("_SUCCESS", ".f.txt.crc", "_tmp/a.txt", ".git/b.txt"):
        (corpus / hidden).parent.mkdir(exist_ok=True)
        (corpus / hidden).write_text("not read\n")
    (corpus / "empty.txt").touch()
    client, calls = spark.sparkContext._gateway._gateway_client, []
    send_command = client.send_command
    monkeypatch.setattr(client, "send_command", lambda *arguments, **options: (
        calls.append(1), send_command(*arguments, **options))[1])
    directories, files = list_files(spark, str(corpus).replace("[", "\\["), "the test's input")
    monkeypatch.undo()
    assert directories == [f"file:{corpus}"] and len(calls) < JVM_CALLS_PER_LISTING, len(calls)
    assert [entry.path for entry in files] == [f"file:{corpus}/part {index // 100}/f{index:03d}.txt"
                                               for index in range(300)] + [f"file:{corpus}/z.txt.gz"]
    assert [entry.codec for entry in files] == [None] * 300 + [".gz"]
    for entry in files[::100] + files[-1:]:
        status = os.stat(entry.path.removeprefix("file:"))
        assert (entry.size, entry.modified_ms) == (status.st_size, status.st_mtime_ns // 1_000_000)
    assert list_files(spark, str(tmp_path / "absent*"), "the test's input") is None


def test_many_files_are_listed_by_a_task_per_core_not_a_task_per_file(spark, tmp_path):
    """Spark listed a read of more than 32 paths by a job of one task per path: 2,000 small files
    took 8 to 13 s per read to list. The listing job now has a task per core (or per
    `PATHS_PER_LISTING_TASK` paths), and the read still holds every file."""
    paths = []
    for index in range(300):
        path = tmp_path / f"part-{index:03d}.txt"
        path.write_text(f"{WORDS[index % len(WORDS)]} w{index}\n")
        paths.append(str(path))
    tracker = spark.sparkContext.statusTracker()
    spark.sparkContext.setJobGroup("listing", "the read's listing")
    try:
        records = read_records(spark, paths, LINE_SEPARATOR)
    finally:
        spark.sparkContext.setJobGroup("", "")
    listing_tasks = [tracker.getStageInfo(stage).numTasks for job in tracker.getJobIdsForGroup("listing")
                     for stage in tracker.getJobInfo(job).stageIds]
    expected_tasks = max(spark.sparkContext.defaultParallelism, math.ceil(len(paths) / PATHS_PER_LISTING_TASK))
    assert listing_tasks == [expected_tasks]  # one listing job
    assert records.select("_metadata.file_path").distinct().count() == len(paths)
