"""Warm start: day 2 begins from day 1's published rows (train.warm_start_from)."""

import hashlib
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import assert_names_damage, cut_short, make_config, model_matrix

from sgns_spark.cli import read_roots, user_error_of
from sgns_spark.errors import UserError
from sgns_spark.export import parent_drift, run_export_stage
from sgns_spark.layout import LATEST_NAME, MANIFEST_NAME, MODEL_LATEST, MODEL_ROWS_NAME, PARQUET_NAME, round_directory
from sgns_spark.preflight import corpus_input
from sgns_spark.stages import run_vocab_stage
from sgns_spark.storage import Storage
from sgns_spark.summary import print_export_summary
from sgns_spark.train.driver import run_train_stage
from sgns_spark.train.model_store import initial_rows, read_latest
from sgns_spark.train.schedule import INPUT_SIDE, OUTPUT_SIDE
from sgns_spark.train.warm_start import WarmStart, parent_version, run_parent

DIM = 8
SETTINGS = (f"train.dim={DIM}", "train.window=3", "train.num_shards=2", "vocab.min_count=1", "train.seed=4")
DAY_ONE_WORDS = [f"w{rank}" for rank in range(60)]
DAY_TWO_WORDS = [f"w{rank}" for rank in range(10, 80)]  # w0..w9 leave, w60..w79 arrive


def write_corpus(path, words, seed):
    rng = np.random.default_rng(seed)
    probabilities = 1.0 / np.arange(1, len(words) + 1)
    tokens = rng.choice(words, size=30_000, p=probabilities / probabilities.sum())
    path.write_text("\n".join(" ".join(tokens[start : start + 20]) for start in range(0, tokens.size, 20)) + "\n")
    return path


def run_day(spark, root, corpus, *overrides):
    config = make_config(*SETTINGS, *overrides)
    storage = Storage(spark, str(root))
    run_vocab_stage(spark, config, corpus_input(spark, str(corpus)), storage)
    run_train_stage(spark, config, storage)
    run_export_stage(spark, config, storage)
    return storage


@pytest.fixture(scope="module")
def day_one(spark, tmp_path_factory):
    directory = tmp_path_factory.mktemp("day-one")
    corpus = write_corpus(directory / "corpus.txt", DAY_ONE_WORDS, 1)
    storage = run_day(spark, directory / "root", corpus)
    version = storage.read_json("export/_LATEST")["path"].removeprefix("file:")
    return {"storage": storage, "export": storage.path("export"), "version": version, "corpus": corpus}


def test_day_two_starts_from_day_one_rows_new_words_fresh_dropped_words_gone(spark, day_one, tmp_path):
    trained = pq.read_table(f"{day_one['version']}/model.parquet").to_pylist()
    parent_rows = {row["word"]: (row["input_vector"], row["output_vector"]) for row in trained}
    published = pq.read_table(f"{day_one['version']}/vectors.parquet").to_pylist()
    assert [row["word"] for row in trained] == [row["word"] for row in published]  # the same order, id order
    assert all(row["vector"] == parent_rows[row["word"]][0] for row in published)  # not normalised: equal

    corpus = write_corpus(tmp_path / "corpus.txt", DAY_TWO_WORDS, 2)
    config = make_config(*SETTINGS, f"train.warm_start_from={day_one['export']}")
    storage = Storage(spark, str(tmp_path / "root"))
    run_vocab_stage(spark, config, corpus_input(spark, str(corpus)), storage)
    vocab = spark.read.parquet(storage.path("vocab")).select("word", "id")
    words = [row["word"] for row in vocab.orderBy("id").collect()]
    warm = WarmStart(spark, parent_version(spark, day_one["export"], DIM), vocab, len(words))
    assert {key: value for key, value in warm.counts().items() if key != "parent"} == {
        "shared_words": 50, "new_words": 20, "dropped_words": 10}

    first = {side: np.full((len(words), DIM), np.nan, np.float32) for side in (INPUT_SIDE, OUTPUT_SIDE)}
    for _, chunk in warm.rows(DIM, seed=4, groups=2, phase=0).collect():
        assert np.isnan(first[chunk.side][chunk.ids]).all()  # each row once
        first[chunk.side][chunk.ids] = chunk.vectors
    cold = {side: np.zeros((len(words), DIM), np.float32) for side in (INPUT_SIDE, OUTPUT_SIDE)}
    for _, chunk in initial_rows(spark, len(words), DIM, seed=4, groups=2, phase=0).collect():
        cold[chunk.side][chunk.ids] = chunk.vectors
    for index, word in enumerate(words):
        for side in (INPUT_SIDE, OUTPUT_SIDE):
            expected = np.array(parent_rows[word][side], np.float32) if word in parent_rows else cold[side][index]
            np.testing.assert_array_equal(first[side][index], expected)  # bit for bit
    assert not set(words) & set(DAY_ONE_WORDS[:10]) and set(DAY_TWO_WORDS[-20:]) <= set(words)

    run_train_stage(spark, config, storage)
    run_export_stage(spark, config, storage)
    manifest = json.loads(open(storage.read_json("export/_LATEST")["path"].removeprefix("file:")
                               + "/manifest.json").read())
    parent_manifest = open(f"{day_one['version']}/manifest.json", "rb").read()
    assert manifest["lineage"]["parent"] == {"path": f"file:{day_one['version']}",
                                             "manifest_sha256": hashlib.sha256(parent_manifest).hexdigest()}
    assert manifest["training"]["warm_start"]["dropped_words"] == 10
    assert manifest["lineage"]["settings"]["train.warm_start_from"] == day_one["export"]


def test_carried_rows_frozen_at_rate_zero_leave_training_as_they_came_while_new_words_learn(
        spark, day_one, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", DAY_TWO_WORDS, 2)
    storage = run_day(spark, tmp_path / "root", corpus, f"train.warm_start_from={day_one['export']}",
                      "train.warm_start_learning_rate=0")
    version = storage.read_json("export/_LATEST")["path"].removeprefix("file:")
    parent = {row["word"]: row for row in pq.read_table(f"{day_one['version']}/model.parquet").to_pylist()}
    trained = pq.read_table(f"{version}/model.parquet").to_pylist()
    vocab = {row["word"]: row["id"] for row in spark.read.parquet(storage.path("vocab")).collect()}
    cold = {side: np.zeros((len(vocab), DIM), np.float32) for side in (INPUT_SIDE, OUTPUT_SIDE)}
    for _, chunk in initial_rows(spark, len(vocab), DIM, seed=4, groups=2, phase=0).collect():
        cold[chunk.side][chunk.ids] = chunk.vectors
    carried = [row for row in trained if row["word"] in parent]
    new = [row for row in trained if row["word"] not in parent]
    assert len(carried) == 50 and len(new) == 20
    for row in carried:
        for column in ("input_vector", "output_vector"):
            assert row[column] == parent[row["word"]][column]  # bit for bit after a whole epoch
    for row in new:
        assert not np.allclose(row["input_vector"], cold[INPUT_SIDE][vocab[row["word"]]], atol=1e-3)
        assert np.abs(row["output_vector"]).max() > 1e-3  # output rows start at zero


def test_a_parent_that_is_missing_or_of_another_dim_is_refused_in_one_line(spark, day_one, tmp_path):
    with pytest.raises(UserError, match=f"train.warm_start_from = {day_one['export']} has dim {DIM} but "
                                        "train.dim = 16; set train.dim = 8 or start cold"):
        parent_version(spark, day_one["export"], 16)
    with pytest.raises(UserError, match="train.warm_start_from = .* holds no published version"):
        parent_version(spark, str(tmp_path / "nothing"), DIM)


def test_a_run_root_as_the_parent_is_its_exports_newest_version(spark, day_one):
    """The run root of an export, as `python -m sgns_spark.query` takes it (it said "holds no
    published version")."""
    assert parent_version(spark, day_one["storage"].root, DIM) == parent_version(spark, day_one["export"], DIM)


def test_a_damaged_parent_is_named_with_the_setting_to_change(spark, day_one, tmp_path):
    """A parent version whose files were damaged on disk: the user error that a training job
    prints as its one line (`sgns_spark.cli.run_job`) names the file and the setting."""
    remedy = "point train.warm_start_from elsewhere"
    parent = tmp_path / "parent"
    shutil.copytree(day_one["version"], parent)
    (parent / MANIFEST_NAME).write_text("{")
    with pytest.raises(UserError) as raised:
        parent_version(spark, str(parent), DIM)
    assert_names_damage(str(raised.value), parent, MANIFEST_NAME, "not JSON: ", remedy)

    shutil.copy(f"{day_one['version']}/{MANIFEST_NAME}", parent)
    cut_short(min((parent / MODEL_ROWS_NAME).glob("part-*.parquet")))
    config = make_config(*SETTINGS, f"train.warm_start_from={parent}")
    storage = Storage(spark, str(tmp_path / "root"))
    run_vocab_stage(spark, config, corpus_input(spark, str(write_corpus(tmp_path / "corpus.txt", DAY_TWO_WORDS, 2))),
                    storage)
    with pytest.raises(Exception) as raised:
        run_train_stage(spark, config, storage)
    error = str(user_error_of(raised.value, read_roots(spark, "train", config, storage)))  # as the job maps it
    assert_names_damage(error, parent, f"{MODEL_ROWS_NAME}/part-", "", remedy)
    assert not storage.exists("model")


def rewrite(path, text):
    """Replace a file of a local Hadoop file system, and drop its checksum file."""
    path.write_text(text)
    path.with_name(f".{path.name}.crc").unlink(missing_ok=True)


def test_a_resumed_run_keeps_the_parent_of_its_first_rounds_when_the_parent_root_publishes_again(
        spark, day_one, tmp_path):
    """Day two is stopped after round 3 of 4; meanwhile day one's export root publishes a second
    version without five of the shared words. The resumed run still trains from the first
    version, bit for bit as if undisturbed, and names it as the parent; a pinned parent that
    changed or went is refused in one line, and train.restart=true follows the export root again."""
    parent_root = tmp_path / "parent-export"
    shutil.copytree(day_one["export"].removeprefix("file:"), parent_root)
    first = parent_root / day_one["version"].rsplit("/", 1)[1]
    config = make_config(*SETTINGS, f"train.warm_start_from={parent_root}", "train.commit_words=1")
    storage = Storage(spark, str(tmp_path / "root"))
    run_vocab_stage(spark, config, corpus_input(spark, str(write_corpus(tmp_path / "corpus.txt", DAY_TWO_WORDS, 2))),
                    storage)
    run_train_stage(spark, config, storage)
    undisturbed = model_matrix(spark, storage)
    pinned = {"path": f"file:{first}",
              "manifest_sha256": hashlib.sha256((first / MANIFEST_NAME).read_bytes()).hexdigest()}
    assert read_latest(storage)["warm_start_parent"] == pinned
    assert storage.read_json("reports/train.json")["counts"]["warm_start"]["parent"] == pinned

    def stop_after_round_3():
        storage.delete(round_directory(4))
        storage.write_json(MODEL_LATEST, {**read_latest(storage), "round": 3})
        storage.delete("reports/train.json")

    second = parent_root / "version=000002"
    shutil.copytree(first, second)
    rows = pq.read_table(second / MODEL_ROWS_NAME)
    shutil.rmtree(second / MODEL_ROWS_NAME)
    (second / MODEL_ROWS_NAME).mkdir()
    pq.write_table(rows.filter(pc.invert(pc.is_in(rows.column("word"), pa.array(DAY_TWO_WORDS[:5])))),
                   second / MODEL_ROWS_NAME / "part-00000.parquet")
    rewrite(second / MANIFEST_NAME, (first / MANIFEST_NAME).read_text() + " ")
    latest = json.loads((parent_root / LATEST_NAME).read_text())
    rewrite(parent_root / LATEST_NAME, json.dumps({**latest, "version": 2, "path": f"file:{second}"}))
    assert parent_version(spark, str(parent_root), DIM).path == f"file:{second}"

    stop_after_round_3()
    assert read_roots(spark, "train", config, storage)[1].root == f"file:{first}"
    run_train_stage(spark, config, storage)
    report = storage.read_json("reports/train.json")["counts"]
    assert report["resumed_from_round"] == 3 and report["warm_start"]["parent"] == pinned
    np.testing.assert_array_equal(model_matrix(spark, storage), undisturbed)

    restart = f"set train.restart=true to train again from train.warm_start_from = {parent_root} as it is now"
    stop_after_round_3()
    rewrite(first / MANIFEST_NAME, (first / MANIFEST_NAME).read_text() + "\n")
    with pytest.raises(UserError) as raised:
        run_train_stage(spark, config, storage)
    assert str(raised.value) == (f"the model rounds in {storage.root} were trained from file:{first}, whose "
                                 f"manifest has changed since (another SHA-256); {restart}")
    shutil.rmtree(first)
    with pytest.raises(UserError, match=f"were trained from file:{first}, which no longer holds a published "
                                        f"version; {restart}$"):
        run_train_stage(spark, config, storage)
    storage.write_json(MODEL_LATEST, {**read_latest(storage), "warm_start_parent": str(first)})  # edited by hand
    with pytest.raises(UserError, match="model/_LATEST cannot be read \\(its warm_start_parent names no path and "
                                        "manifest_sha256\\)"):
        run_parent(spark, config, storage)
    restarted = make_config(*SETTINGS, f"train.warm_start_from={parent_root}", "train.commit_words=1",
                            "train.restart=true")
    assert run_parent(spark, restarted, storage).path == f"file:{second}"


def reference_drift(new_table, parent_table, neighbours=10):
    """The drift figures by plain numpy: explicit alignment, full sorts."""
    parent = {row["word"]: row["vector"] for row in parent_table.to_pylist()}
    shared = sorted((row for row in new_table.to_pylist() if row["word"] in parent),
                    key=lambda row: (-row["count"], row["word"]))

    def unit(rows):
        matrix = np.array(rows, np.float64)
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)

    a, b = unit([row["vector"] for row in shared]), unit([parent[row["word"]] for row in shared])
    left, _, right = np.linalg.svd(a.T @ b)
    aligned = a @ (left @ right)
    overlaps = []
    for index in range(len(shared)):
        found = []
        for space in (a, b):
            scores = space @ space[index]
            scores[index] = -np.inf
            found.append(set(np.argsort(-scores, kind="stable")[:neighbours]))
        overlaps.append(len(found[0] & found[1]) / neighbours)
    return {"shared_words": len(shared), "mean_cosine": float(np.mean(np.sum(a * b, axis=1))),
            "mean_cosine_aligned": float(np.mean(np.sum(aligned * b, axis=1))),
            "neighbour_overlap": float(np.mean(overlaps))}


def test_drift_of_day_two_matches_a_numpy_reference(spark, day_one, tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", DAY_TWO_WORDS, 2)
    storage = run_day(spark, tmp_path / "root", corpus, f"train.warm_start_from={day_one['export']}")
    version = storage.read_json("export/_LATEST")["path"].removeprefix("file:")
    drift = json.loads(open(f"{version}/manifest.json").read())["drift"]
    expected = reference_drift(pq.read_table(f"{version}/vectors.parquet"),
                               pq.read_table(f"{day_one['version']}/vectors.parquet"))
    assert drift["shared_words"] == expected["shared_words"] == 50 and drift["neighbour_words"] == 50
    for name in ("mean_cosine", "mean_cosine_aligned", "neighbour_overlap"):
        assert drift[name] == pytest.approx(expected[name], abs=1e-5), name
    assert drift["mean_cosine_aligned"] >= drift["mean_cosine"]


def test_drift_sees_through_a_rotation(spark):
    from sgns_spark.drift import drift_report

    rng = np.random.default_rng(8)
    vectors = rng.normal(size=(300, DIM)).astype(np.float32)
    rotation, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    words, counts = [f"w{index}" for index in range(300)], list(range(300, 0, -1))

    def frame(matrix):
        return spark.createDataFrame([(word, [float(x) for x in row], count)
                                      for word, row, count in zip(words, matrix, counts, strict=True)],
                                     "word string, vector array<float>, count bigint")

    drift = drift_report(spark, frame(vectors @ rotation), frame(vectors), DIM)
    assert drift["mean_cosine_aligned"] == pytest.approx(1.0, abs=1e-5)
    assert drift["neighbour_overlap"] == pytest.approx(1.0, abs=0.01) and abs(drift["mean_cosine"]) < 0.5


def test_a_rerun_of_a_finished_day_is_a_no_op_and_a_failed_day_leaves_the_last_version_published(
        spark, day_one, tmp_path):
    storage = day_one["storage"]
    names = ("export/_LATEST", "reports/vocab.json", "reports/train.json", "reports/export.json", "model/_LATEST")
    before = {name: storage.read_text(name) for name in names}
    run_day(spark, storage.root, day_one["corpus"])
    assert {name: storage.read_text(name) for name in names} == before
    assert [name for name in storage.list_names("export") if name.startswith("version=")] == ["version=000001"]
    failing = write_corpus(tmp_path / "corpus.txt", DAY_TWO_WORDS, 2)
    with pytest.raises(UserError, match="occurs fewer than vocab.min_count = 1000000 times"):
        run_day(spark, tmp_path / "root", failing, "vocab.min_count=1000000",
                f"train.warm_start_from={day_one['export']}")
    assert not Storage(spark, str(tmp_path / "root")).exists("export/_LATEST")
    assert {name: storage.read_text(name) for name in names} == before


def test_a_parent_damaged_or_deleted_after_training_leaves_the_export_published_without_drift(
        spark, day_one, tmp_path, capsys):
    """Training read the parent; by export time a retention job may have deleted it, or its files
    may be damaged. The drift is a comparison only: the version is published, and its manifest
    and the summary say why it has no drift report."""
    parent = tmp_path / "parent"
    shutil.copytree(day_one["version"], parent)
    config = make_config(*SETTINGS, f"train.warm_start_from={parent}")
    storage = Storage(spark, str(tmp_path / "root"))
    run_vocab_stage(spark, config, corpus_input(spark, str(write_corpus(tmp_path / "corpus.txt", DAY_TWO_WORDS, 2))),
                    storage)
    train_report = run_train_stage(spark, config, storage)
    damaged = min((parent / PARQUET_NAME).glob("part-*.parquet"))
    cut_short(damaged)
    print_export_summary(run_export_stage(spark, config, storage))
    version = storage.read_json("export/_LATEST")["path"].removeprefix("file:")
    manifest = json.loads(open(f"{version}/{MANIFEST_NAME}").read())
    expected = f"the parent version's file:{damaged} cannot be read ("
    assert manifest["drift"]["unavailable"].startswith(expected), manifest["drift"]
    assert manifest["lineage"]["parent"]["path"] == f"file:{parent}"
    assert pq.read_table(f"{version}/{PARQUET_NAME}").num_rows == 70  # published whole
    summary = capsys.readouterr().out
    assert f"[export] warning: no drift report: {expected}" in summary, summary
    assert summary.rstrip().splitlines()[-1].startswith("[export] published version 1 ")

    shutil.rmtree(parent)
    vectors = spark.read.parquet(f"{version}/{PARQUET_NAME}")
    assert parent_drift(spark, vectors, train_report, DIM) == {
        "unavailable": f"the parent version's file:{parent}/{PARQUET_NAME} cannot be read (it is missing)"}
