"""Publishing: layout, atomicity, and real readers (gensim, DuckDB, pyarrow, Spark)."""

import json
import os
import shutil
import threading
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import make_config, write_round_file
from gensim.models import KeyedVectors
from py4j.protocol import Py4JJavaError

import sgns_spark.export as export_module
import sgns_spark.storage as storage_module
from sgns_spark.arrow import lists_to_matrix
from sgns_spark.errors import UserError
from sgns_spark.export import run_export_stage
from sgns_spark.layout import EXPORT_LATEST, MODEL_LATEST, round_directory, version_directory
from sgns_spark.lineage import code_version
from sgns_spark.query import main
from sgns_spark.storage import Storage
from sgns_spark.train.warm_start import parent_version
from sgns_spark.vectors import Vectors, word2vec_records


def export(spark, storage, *overrides):
    return run_export_stage(spark, make_config(*overrides), storage)


def local(storage, relative):
    return storage.path(relative).removeprefix("file:")


def test_published_version_is_read_alike_by_gensim_duckdb_pyarrow_and_spark(spark, planted_run, monkeypatch):
    storage = planted_run["storage"]
    monkeypatch.setattr(export_module, "EXPORT_PARTITION_ROWS", 100)  # many part files to put in order
    report = export(spark, storage, "evaluate.neighbour_words=paris", "evaluate.neighbours=4")
    version = report["counts"]["version"]
    directory = local(storage, version_directory(version))
    published = sorted(name for name in os.listdir(directory) if not name.startswith("."))  # not checksums
    assert published == ["manifest.json", "model.parquet", "vectors.bin", "vectors.parquet", "vectors.txt"]
    manifest = json.loads(open(f"{directory}/manifest.json").read())
    assert manifest["format_version"] == 1 and manifest["model_round"] == 9
    assert manifest["evaluation"] == report["counts"]["evaluation"] and manifest["normalized"] is False
    assert manifest["vocab_size"] == storage.read_json("reports/vocab.json")["counts"]["vocab_size"]
    assert json.loads(open(local(storage, EXPORT_LATEST)).read())["version"] == version

    table = pq.read_table(f"{directory}/vectors.parquet")
    assert table.schema.field("word").type == pa.string()
    assert table.schema.field("vector").type == pa.list_(pa.float32())
    assert table.schema.field("count").type == pa.int64()
    counts = table.column("count").to_numpy()
    assert (np.diff(counts) <= 0).all()  # most frequent first
    ours = Vectors.load(directory)
    assert ours.index_to_key == table.column("word").to_pylist() and ours.manifest == manifest
    assert len(pq.ParquetDataset(f"{directory}/vectors.parquet").fragments) > 2

    dim = manifest["dim"]
    words, vectors = table.column("word").to_pylist(), lists_to_matrix(table.column("vector"), dim)
    for name, is_binary in (("vectors.txt", False), ("vectors.bin", True)):  # byte for byte, parts in order
        expected = f"{len(words)} {dim}\n".encode() + b"".join(word2vec_records(words, vectors, is_binary))
        assert open(f"{directory}/{name}", "rb").read() == expected

    text = KeyedVectors.load_word2vec_format(f"{directory}/vectors.txt", binary=False)
    binary = KeyedVectors.load_word2vec_format(f"{directory}/vectors.bin", binary=True)
    assert list(text.index_to_key) == ours.index_to_key == list(binary.index_to_key)
    np.testing.assert_array_equal(binary.vectors, ours.vectors)
    np.testing.assert_allclose(text.vectors, ours.vectors, rtol=1e-5, atol=1e-7)
    scored = manifest["evaluation"]["neighbours"]["paris"]  # scored on the rows published
    assert [w for w, _ in scored] == [w for w, _ in binary.most_similar("paris", topn=4)]
    for word in ("paris", "king", "walked"):
        assert [w for w, _ in binary.most_similar(word, topn=5)] == [w for w, _ in ours.most_similar(word, topn=5)]

    duck = duckdb.sql(
        f"""SELECT b.word, list_cosine_similarity(a.vector, b.vector) AS similarity
            FROM read_parquet('{directory}/vectors.parquet/*.parquet') a,
                 read_parquet('{directory}/vectors.parquet/*.parquet') b
            WHERE a.word = 'paris' AND b.word <> 'paris' ORDER BY similarity DESC LIMIT 3"""
    ).fetchall()
    assert [word for word, _ in duck] == [w for w, _ in ours.most_similar("paris", topn=3)]

    spark_schema = spark.read.parquet(f"{directory}/vectors.parquet").schema.simpleString()
    assert spark_schema == "struct<word:string,vector:array<float>,count:bigint>"


def test_manifest_records_lineage_and_the_query_cli_prints_it(spark, planted_run, capsys):
    storage = planted_run["storage"]
    export(spark, storage)
    assert main([local(storage, "export"), "info"]) == 0
    info = json.loads(capsys.readouterr().out)
    lineage = Vectors.load(local(storage, "export")).lineage
    published = storage.read_json("reports/export.json")["counts"]
    assert info["lineage"] == lineage and info["words"] == published["vocab_size"] and lineage["parent"] is None
    corpus = planted_run["corpus"]
    (listed,) = lineage["corpus"]["files"]
    assert listed["path"].endswith(str(corpus)) and listed["bytes"] == os.path.getsize(corpus)
    assert lineage["corpus"]["corpus_tokens"] == storage.read_json("reports/vocab.json")["counts"]["corpus_tokens"]
    assert lineage["corpus"]["fingerprint"].startswith("xxhash64-xor:")
    settings = lineage["settings"]  # training's as it ran (planted), the export's as this export ran
    trained = planted_run["config"].train
    assert settings["train.rounds_per_epoch"] == trained.rounds_per_epoch == 4 and settings["train.dim"] == trained.dim
    assert settings["vocab.min_count"] == planted_run["config"].vocab.min_count
    assert settings["export.normalize"] is False
    assert lineage["code"] == code_version() and len(lineage["code"]["source_sha256"]) == 64
    version = local(storage, version_directory(info["version"]))
    assert Vectors.load(f"{version}/vectors.bin").lineage is None  # a plain word2vec file has none


def test_query_cli_follows_latest_and_answers(planted_run, capsys):
    """Given the export root, or the run root itself (which said it was not Parquet)."""
    storage = planted_run["storage"]
    for given in (local(storage, "export"), local(storage, "")):
        assert main([given, "analogy", "france", "paris", "berlin", "--topn", "1"]) == 0
        assert capsys.readouterr().out.split()[-1] == "germany"
    assert main([local(storage, "export"), "similar", "no-such-word"]) == 2


def test_an_export_root_copied_elsewhere_is_followed_to_its_own_version(spark, planted_run, tmp_path):
    """`_LATEST` names its version's absolute path too; readers followed that path, so an export
    root copied to a lake (or to another machine) led them back to where it was written, or nowhere."""
    storage = planted_run["storage"]
    copy = tmp_path / "lake" / "export"
    shutil.copytree(local(storage, "export"), copy)
    latest = json.loads((copy / "_LATEST").read_text())
    (copy / "_LATEST").write_text(json.dumps({**latest, "path": "file:/machine/it/was/written/on/export"}))
    version = f"version={latest['version']:06d}"
    assert Vectors.load(copy).manifest == json.loads((copy / version / "manifest.json").read_text())
    parent = parent_version(spark, str(copy), planted_run["config"].train.dim)
    assert parent.path == f"file:{copy}/{version}"


POINTER_REWRITES = 300  # rewrites of a pointer while it is read (`Storage.write_text`)


def test_a_pointer_rewritten_while_it_is_read_is_always_there_and_whole(spark, tmp_path):
    """A pointer was replaced by a delete and then a rename: a reader polling ``_LATEST`` while it
    was rewritten 300 times found no file in 203,201 of 410,949 reads. Read here as the lake's
    readers do (plain file reads), and through Hadoop, which checks a file against its ``.crc``."""
    storage = Storage(spark, str(tmp_path / "root"))
    storage.write_json(EXPORT_LATEST, {"version": 0})
    written = [{"version": number, "path": "x" * (number % 50)} for number in range(1, POINTER_REWRITES + 1)]
    done = threading.Event()

    def rewrite():
        for pointer in written:
            storage.write_json(EXPORT_LATEST, pointer)
        done.set()

    writer, seen = threading.Thread(target=rewrite), []
    writer.start()
    while not done.is_set():
        seen.append(json.loads(open(local(storage, EXPORT_LATEST)).read())["version"])
        if len(seen) % 10 == 0:
            seen.append(storage.read_pointer(EXPORT_LATEST, "version")["version"])
    writer.join()
    assert len(seen) > POINTER_REWRITES and seen == sorted(seen)  # never missing nor partial, never older
    assert storage.read_pointer(EXPORT_LATEST, "version") == written[-1]
    assert sorted(os.listdir(tmp_path / "root" / "export")) == ["_LATEST"]  # no temporary file, no stale .crc


def test_a_pointer_below_a_root_elsewhere_is_replaced_by_hadoops_rename_with_overwrite(spark, tmp_path,
                                                                                       monkeypatch):
    """Off the driver's disk (HDFS), `Storage.write_text` renames with OVERWRITE through Hadoop's
    FileContext; run here on a local root taken for a remote one, so it shows the calls work and
    replace the file, not that they are atomic (HDFS's rename is; a local one through Hadoop is not)."""
    monkeypatch.setattr(storage_module, "LOCAL_SCHEME", "no-scheme")
    storage = Storage(spark, str(tmp_path / "root"))
    storage.write_json(EXPORT_LATEST, {"version": 1})
    storage.write_json(EXPORT_LATEST, {"version": 2})
    assert storage.read_pointer(EXPORT_LATEST, "version") == {"version": 2}
    assert sorted(os.listdir(tmp_path / "root" / "export")) == ["._LATEST.crc", "_LATEST"]


@pytest.mark.parametrize("through_hadoop", [False, True])
def test_a_pointer_that_cannot_be_replaced_leaves_no_temporary_file(spark, tmp_path, monkeypatch, through_hadoop):
    """The final rename fails (the name is a directory): the error goes up, and the complete
    temporary sibling written for the rename is removed, on a local disk and through Hadoop."""
    if through_hadoop:
        monkeypatch.setattr(storage_module, "LOCAL_SCHEME", "no-scheme")
    storage = Storage(spark, str(tmp_path / "root"))
    (tmp_path / "root" / "export" / "_LATEST").mkdir(parents=True)
    with pytest.raises(Py4JJavaError if through_hadoop else OSError):
        storage.write_json(EXPORT_LATEST, {"version": 1})
    assert [path.name for path in (tmp_path / "root" / "export").iterdir()] == ["_LATEST"]
    assert (tmp_path / "root" / "export" / "_LATEST").is_dir()


def test_reexport_is_a_new_version_normalised_and_old_ones_are_pruned(spark, planted_run):
    storage = planted_run["storage"]
    first_report = export(spark, storage, "export.keep_versions=2", "evaluate.neighbour_words=king")
    skipped = export(spark, storage, "export.keep_versions=2", "evaluate.neighbour_words=king")
    first = first_report["counts"]["version"]
    assert skipped == first_report  # same model and settings: already published, scores kept
    second = export(spark, storage, "export.normalize=true", "export.keep_versions=2")["counts"]["version"]
    assert second == first + 1
    vectors = Vectors.load_parquet(local(storage, version_directory(second)) + "/vectors.parquet")
    np.testing.assert_allclose(np.linalg.norm(vectors.vectors, axis=1), 1.0, rtol=1e-5)
    third = export(spark, storage, "export.keep_versions=2", "export.normalize=true",
                   "evaluate.neighbour_words=king", "evaluate.neighbours=3")
    assert third["counts"]["version"] == second + 1  # other evaluation settings: scored and published anew
    assert len(third["counts"]["evaluation"]["neighbours"]["king"]) == 3
    names = [n for n in storage.list_names("export") if n.startswith("version=")]
    assert len(names) == 2 and storage.list_names("_staging") == []


def fake_run(spark, storage, words):
    """A run root with a vocabulary and one model round, as if trained."""
    count = len(words)
    vocab = pa.table({"word": words, "id": pa.array(range(count), pa.int32()),
                      "count": pa.array(range(count, 0, -1), pa.int64()),
                      "keep_prob": [1.0] * count, "noise_weight": [1.0 / count] * count})
    spark.createDataFrame(vocab.to_pandas()).write.parquet(storage.path("vocab"))
    write_round_file(Path(local(storage, round_directory(1))), {
        "input": (np.arange(count), np.eye(count, 4, dtype=np.float32)),
        "output": (np.arange(count), np.zeros((count, 4), np.float32))})
    storage.write_json(MODEL_LATEST, {"round": 1})
    storage.write_json("reports/vocab.json", {"settings": {}, "counts": {
        "vocab_size": count, "input": "fake", "files": [], "corpus_tokens": count, "fingerprint": "fake"}})
    storage.write_json("reports/train.json", {"settings": {}, "counts": {}})


def test_whitespace_words_are_refused_before_anything_is_written(spark, storage):
    fake_run(spark, storage, ["ok", "fine"])
    first = export(spark, storage)["counts"]["version"]
    storage.delete("vocab")
    storage.delete("reports/export.json")
    fake_run_words = ["ok", "two words"]
    vocab = pa.table({"word": fake_run_words, "id": pa.array([0, 1], pa.int32()),
                      "count": pa.array([2, 1], pa.int64()), "keep_prob": [1.0, 1.0], "noise_weight": [0.5, 0.5]})
    spark.createDataFrame(vocab.to_pandas()).write.parquet(storage.path("vocab"))
    with pytest.raises(UserError, match="'two words' contains whitespace.*corpus.split_pattern"):
        export(spark, storage, "export.normalize=true")
    assert storage.read_json(EXPORT_LATEST)["version"] == first
    assert [n for n in storage.list_names("export") if n.startswith("version=")] == [f"version={first:06d}"]
    assert storage.list_names("_staging") == []


def test_evaluation_vectors_are_the_top_words_and_the_named_words_in_id_order(spark):
    from sgns_spark.config import EvaluateSettings
    from sgns_spark.scoring import evaluation_vectors

    rows = [(index, f"w{index}", [float(index), -float(index)], 100 - index) for index in range(12)]
    shuffled = spark.createDataFrame(rows[::-1], "id long, word string, vector array<float>, count long")
    settings = EvaluateSettings(analogy_top_words=3, neighbour_words=("w9", "w5"))
    vectors = evaluation_vectors(shuffled.repartition(4), settings)
    assert vectors.index_to_key == ["w0", "w1", "w2", "w5", "w9"]
    np.testing.assert_array_equal(vectors["w9"], [9.0, -9.0])
    np.testing.assert_array_equal(vectors.counts, [100, 99, 98, 95, 91])


def test_neighbour_words_outside_the_vocabulary_are_named_not_dropped(capsys):
    from sgns_spark.config import EvaluateSettings
    from sgns_spark.scoring import score
    from sgns_spark.summary import print_scores

    vectors = Vectors(["paris", "france", "berlin"], np.array([[1, 0], [0.9, 0.1], [0, 1]], dtype=np.float32))
    scores = score(vectors, EvaluateSettings(neighbour_words=("paris", "atlantis"), neighbours=1))
    assert scores["neighbours"] == {"paris": [["france", pytest.approx(0.9939, abs=1e-4)]]}
    assert scores["neighbour_words_not_in_vocabulary"] == ["atlantis"]
    print_scores(scores)
    assert capsys.readouterr().out.splitlines() == [
        "[evaluate] paris: france 0.99", "[evaluate] atlantis: not in the vocabulary (evaluate.neighbour_words)"]
    alone = Vectors(["solo"], np.ones((1, 2), dtype=np.float32))
    print_scores(score(alone, EvaluateSettings(neighbour_words=("solo",))))
    assert capsys.readouterr().out.splitlines() == ["[evaluate] solo: no other word in the vocabulary"]


@pytest.mark.parametrize("content", [
    "# WordSim-353 style\nparis\tfrance\t9.0\nparis\tberlin\t4.5\nfrance\tberlin\t1.0\n",
    "word1\tword2\tPOS\tSimLex999\tconc(w1)\nparis\tfrance\tN\t9.0\t4.1\nparis\tberlin\tN\t4.5\t4.2\n"
    "france\tberlin\tN\t1.0\t3.9\n",  # SimLex-999's original: a header, the score after the part of speech
    "Word 1,Word 2,Human (mean)\nparis, france, 9.0\nparis,berlin,4.5\nfrance,berlin,1.0\n",  # MTurk / WS353 csv
    "PARIS FRANCE 9.0\n\nparis  berlin 4.5\nfrance berlin 1.0\n",  # MEN: spaces, any case
], ids=["tabs", "simlex-original", "commas-with-header", "spaces"])
def test_similarity_files_in_the_common_layouts_give_the_same_pairs_and_score(tmp_path, content):
    from sgns_spark.evaluate import read_similarity_pairs, similarity_spearman

    path = tmp_path / "similarity.txt"
    path.write_text(content)
    assert read_similarity_pairs(path) == [("paris", "france", 9.0), ("paris", "berlin", 4.5),
                                           ("france", "berlin", 1.0)]
    # cosines 0.985, 0.447 and 0.287: the human scores' order, so rho is 1
    vectors = Vectors(["paris", "france", "berlin"], np.array([[1, 0.5], [1, 0.3], [0, 1]], dtype=np.float32))
    cosines = [vectors.similarity(a, b) for a, b in (("paris", "france"), ("paris", "berlin"), ("france", "berlin"))]
    assert cosines[0] > cosines[1] > cosines[2]
    assert similarity_spearman(vectors, path) == {"spearman": pytest.approx(1.0), "coverage": 1.0, "pairs": 3}
