import gzip
import json
import math
import sys
from collections import Counter

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import TEST_MASTER, make_config, run_job, shared_file

from sgns_spark import synthetic
from sgns_spark.errors import UserError
from sgns_spark.preflight import corpus_input
from sgns_spark.stages import run_vocab_stage
from sgns_spark.tokenize import read_sentences
from sgns_spark.vocab import build_vocab, encode_corpus


def corpus_text() -> str:
    rng = np.random.default_rng(3)
    words = [f"w{rank}" for rank in range(40)]
    probabilities = 1.0 / np.arange(1, 41)
    probabilities /= probabilities.sum()
    lines = [" ".join(rng.choice(words, size=25, p=probabilities)) for _ in range(120)]
    return "\n".join(lines)


def reference_vocab(text: str, min_count: int, max_size: int, sample: float, alpha: float):
    counts = Counter(text.split())
    kept = sorted(((c, w) for w, c in counts.items() if c >= min_count), key=lambda cw: (-cw[0], cw[1]))
    if max_size:
        kept = kept[:max_size]
    total = sum(c for c, _ in kept)
    noise_total = sum(c**alpha for c, _ in kept)
    rows = []
    for index, (count, word) in enumerate(kept):
        threshold = sample * total
        keep = min(1.0, (math.sqrt(count / threshold) + 1) * threshold / count)
        rows.append((word, index, count, keep, count**alpha / noise_total))
    return rows


@pytest.mark.parametrize("min_count,max_size,sample,alpha", [(5, 0, 1e-3, 0.75), (20, 7, 1e-2, 0.5)])
def test_vocab_matches_plain_python(spark, tmp_path, min_count, max_size, sample, alpha):
    text = corpus_text()
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    config = make_config(f"vocab.min_count={min_count}", f"vocab.max_vocab_size={max_size}",
                         f"vocab.sample={sample}", f"vocab.noise_exponent={alpha}")
    from sgns_spark.tokenize import count_words
    vocab = build_vocab(count_words(read_sentences(spark, str(path), config.corpus)), config.vocab)
    rows = [(r.word, r.id, r["count"], r.keep_prob, r.noise_weight) for r in vocab.orderBy("id").collect()]
    expected = reference_vocab(text, min_count, max_size, sample, alpha)
    assert [row[:3] for row in rows] == [row[:3] for row in expected]
    np.testing.assert_allclose([row[3:] for row in rows], [row[3:] for row in expected], rtol=1e-12)


def test_encoded_corpus_drops_unknown_words_and_empty_sentences(spark, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("a b c a\nzzz\nb a q\n")
    sentences = read_sentences(spark, str(path), make_config().corpus)
    encoded = encode_corpus(sentences, ["a", "b", "c"], partitions=3)
    assert sorted(row["ids"] for row in encoded.collect()) == [[0, 1, 2, 0], [1, 0]]


def test_vocab_stage_publishes_outputs_and_report_and_skips_when_done(spark, storage, tmp_path):
    text = corpus_text()
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    config = make_config()
    report = run_vocab_stage(spark, config, corpus_input(spark, str(path)), storage)
    assert report["counts"]["corpus_tokens"] == len(text.split())
    expected = reference_vocab(text, 5, 0, 1e-3, 0.75)
    assert report["counts"]["vocab_size"] == len(expected)
    assert report["counts"]["retained_tokens"] == sum(row[2] for row in expected)
    assert storage.exists("vocab/_SUCCESS") and storage.exists("corpus/_SUCCESS")
    assert storage.list_names("_staging") == []
    assert storage.read_json("reports/vocab.json")["counts"] == report["counts"]
    encoded = spark.read.parquet(storage.path("corpus"))
    assert encoded.selectExpr("sum(size(ids))").first()[0] == report["counts"]["retained_tokens"]
    words = [row.word for row in spark.read.parquet(storage.path("vocab")).orderBy("id").collect()]
    decoded = Counter(words[index] for row in encoded.collect() for index in row["ids"])
    assert decoded == Counter({row[0]: row[2] for row in expected})  # ids name the right words
    again = run_vocab_stage(spark, config, corpus_input(spark, str(path)), storage)
    assert again["seconds"] == report["seconds"]  # skipped: the stored report comes back


def test_a_corpus_whose_tokens_outgrow_the_drivers_heap_is_counted_and_encoded(tmp_path):
    """The vocab stage keeps the tokenized corpus on Spark's local disk. Kept in the JVM's heap, the
    benchmark corpus (17M tokens, here in lines of 1,000 words) ran a 512m local driver out of
    heap, and a 1 GB corpus a 2g one (the default)."""
    words = gzip.decompress(shared_file("enwiki_text8style_1e8.gz").read_bytes()).decode("ascii").split()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(" ".join(words[start : start + 1000]) + "\n" for start in range(0, len(words), 1000)))
    counts = Counter(words)
    del words
    root = tmp_path / "root"
    done = run_job("vocab", root, "--input", str(corpus), "--set", "spark.driver_memory=512m", master=TEST_MASTER)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((root / "reports" / "vocab.json").read_text())["counts"]
    assert report["corpus_tokens"] == sum(counts.values())
    assert report["vocab_size"] == sum(count >= 5 for count in counts.values())
    assert report["retained_tokens"] == sum(count for count in counts.values() if count >= 5)
    encoded = pq.read_table(root / "corpus", columns=["ids"]).column("ids")
    assert pc.sum(pc.list_value_length(encoded)).as_py() == report["retained_tokens"]


def test_a_second_make_run_keeps_its_demo_corpus_so_its_done_stages_are_skipped(spark, storage, tmp_path,
                                                                                monkeypatch, capsys):
    """`make run` writes the demo corpus every time. Rewritten, the file was a changed input, and a
    second `make run` on the same root was refused (`check_same_files`) where it had been a no-op."""
    path = tmp_path / "demo" / "corpus.txt"

    def write_demo(tokens: int) -> str:
        monkeypatch.setattr(sys, "argv", ["synthetic", "--out", str(path), "--tokens", str(tokens)])
        synthetic.main()
        return capsys.readouterr().out.splitlines()[-1]  # its line, after the stages' own

    assert write_demo(20_000).startswith("wrote ")
    written = path.stat().st_mtime_ns
    report = run_vocab_stage(spark, make_config(), corpus_input(spark, str(path)), storage)
    assert write_demo(20_000).startswith("kept ") and path.stat().st_mtime_ns == written
    assert run_vocab_stage(spark, make_config(), corpus_input(spark, str(path)), storage) == report
    assert write_demo(30_000).startswith("wrote ")  # another DEMO_TOKENS on the same OUT: another input
    with pytest.raises(UserError, match=r"changed since run root .* read it: 1 file changed"):
        run_vocab_stage(spark, make_config(), corpus_input(spark, str(path)), storage)


def test_corpus_fingerprint_is_the_xor_of_sentence_hashes_whatever_the_partitioning(spark, tmp_path):
    from functools import reduce

    from pyspark.sql import functions as F

    from sgns_spark.lineage import corpus_fingerprint, fingerprint_text

    text = corpus_text()
    (tmp_path / "a.txt").write_text(text)
    (tmp_path / "b.txt").write_text(text.replace("w3", "w4", 1))  # one token differs
    settings = make_config().corpus

    def fingerprints(name: str, partitions: int) -> tuple[str, str]:
        sentences = read_sentences(spark, [str(tmp_path / name)], settings).repartition(partitions)
        aggregated = sentences.agg(corpus_fingerprint("sentence_key", "tokens").alias("f")).first()["f"]
        hashes = [row[0] for row in sentences.select(F.xxhash64("sentence_key", "tokens")).collect()]
        return fingerprint_text(aggregated), fingerprint_text(reduce(lambda x, y: x ^ y, hashes))

    first, reference = fingerprints("a.txt", 1)
    assert first == reference and first == fingerprints("a.txt", 5)[0]
    assert fingerprints("b.txt", 3)[0] != first
