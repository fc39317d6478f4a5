"""Training end to end on the planted corpus, and the properties the schedule and driver promise."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import (
    JOBS,
    job_environment,
    make_config,
    model_matrix,
    read_round_files,
    train_planted,
    write_planted_corpus,
    write_round_file,
)

from sgns_spark.errors import UserError
from sgns_spark.evaluate import analogy_accuracy
from sgns_spark.layout import MODEL_LATEST, report_path, round_directory
from sgns_spark.preflight import corpus_input
from sgns_spark.stages import run_vocab_stage
from sgns_spark.storage import Storage
from sgns_spark.synthetic import FAMILIES
from sgns_spark.train import driver as driver_module
from sgns_spark.train import task as task_module
from sgns_spark.train.model_store import read_latest, read_side
from sgns_spark.train.sampling import (
    SENTENCE_ORDER_STREAM,
    SUBSAMPLE_STREAM,
    WINDOW_STREAM,
    seeded_generator,
    skipgram_pairs,
)
from sgns_spark.train.schedule import (
    INPUT_SIDE,
    OUTPUT_SIDE,
    noise_scales,
    owner_task,
    pair_strata,
    rounds,
    word_groups,
)
from sgns_spark.train.task import (
    Pairs,
    PhasePlan,
    RoundPlan,
    Rows,
    sentence_tokens,
    source_bounds,
    source_pairs,
    train_phase,
    training_order,
)
from sgns_spark.vectors import Vectors

# Calibrated over corpus seeds 1..4 with these settings: analogy 0.96..0.99, neighbour rate
# 0.97..1.00. An untrained or broken model scores about 0 on both.
MIN_PLANTED_ANALOGY = 0.85
MIN_PLANTED_NEIGHBOURS = 0.9


def model_vectors(spark, storage) -> Vectors:
    model = read_side(storage, read_latest(storage)["round"], INPUT_SIDE)
    table = spark.read.parquet(storage.path("vocab")).join(model, "id").orderBy("id").toArrow()
    matrix = np.asarray(table.column("vector").combine_chunks().flatten(), np.float32).reshape(table.num_rows, -1)
    return Vectors(table.column("word").to_pylist(), matrix)


def planted_neighbour_rate(vectors: Vectors, topn: int = 5) -> float:
    """Share of member words whose `topn` nearest words all fill the same role of the family
    (paris: berlin, rome, ...): the planted role contexts make them neighbours."""
    hits = total = 0
    for family in FAMILIES:
        for role in range(len(family.roles)):
            same_role = {group[role] for group in family.groups}
            for group in family.groups:
                neighbours = {word for word, _ in vectors.most_similar(group[role], topn=topn)}
                hits += neighbours <= same_role
                total += 1
    return hits / total


def test_planted_analogies_and_neighbours_are_recovered(spark, planted_run):
    vectors = model_vectors(spark, planted_run["storage"])
    analogy = analogy_accuracy(vectors, planted_run["questions"])
    assert analogy["coverage"] == 1.0
    assert analogy["accuracy"] >= MIN_PLANTED_ANALOGY
    assert planted_neighbour_rate(vectors) >= MIN_PLANTED_NEIGHBOURS


def test_train_report_round_layout_and_spark_stages(planted_run):
    storage, config = planted_run["storage"], planted_run["config"]
    report = storage.read_json("reports/train.json")
    schedule = rounds(config.train)
    assert [planned.groups for planned in schedule] == [1, 2, 2, 2, 2, 2, 2, 2, 2]  # serial start, 2 x 4 rounds
    assert report["counts"]["rounds"] == len(schedule) == 9
    assert report["counts"]["trained_words"] == 2 * storage.read_json("reports/vocab.json")["counts"]["retained_tokens"]
    assert np.isfinite(report["counts"]["mean_loss"])
    assert read_latest(storage)["round"] == 9
    assert storage.list_names("model") == ["_LATEST"] + [f"round={r:06d}" for r in range(1, 10)]
    # committing every round: per job one load stage, per round one pairs stage and one per group
    assert report["counts"]["spark_stages"] == len(schedule) + sum(planned.groups + 1 for planned in schedule)
    kinds = report["counts"]["shuffle_bytes_by_kind"]
    assert set(kinds) == {"rows", "pairs"} and sum(kinds.values()) == report["counts"]["shuffle_bytes"]
    assert 0 < report["counts"]["critical_path_seconds"] and 0 < report["counts"]["task_seconds"]


def test_same_seed_gives_identical_vectors_and_resume_and_commit_spacing_do_not_change_them(spark, planted_run,
                                                                                            tmp_path, capsys):
    """A second run, killed after round 2 and resumed, and a run committing only at the end,
    end bitwise equal to the first."""
    storage = planted_run["storage"]
    corpus = planted_run["corpus"]
    _, once = train_planted(spark, tmp_path / "once", corpus, "train.commit_words=1000000000")
    assert once.list_names("model") == ["_LATEST", "round=000009"]
    np.testing.assert_array_equal(model_matrix(spark, once), model_matrix(spark, storage))
    _, resumed = train_planted(spark, tmp_path / "again", corpus)
    # simulate a driver killed after committing round 2, mid-way through writing round 3
    for model_round in range(3, 10):
        resumed.delete(round_directory(model_round))
    resumed.write_json(MODEL_LATEST, {**read_latest(resumed), "round": 2})
    resumed.delete("reports/train.json")
    resumed.write_text("_staging/round-000003-deadbeef/part-00000.parquet", "half written")
    capsys.readouterr()
    config, resumed = train_planted(spark, tmp_path / "again", corpus)
    assert resumed.read_json("reports/train.json")["counts"]["resumed_from_round"] == 2
    # each commit but the last tells the run's share done (the schedule's, so resumed rounds count) and a time left
    commits = [line for line in capsys.readouterr().out.splitlines() if "committed round" in line]
    schedule = rounds(config.train)
    expected = [f"{planned.number}; {(planned.progress_start + planned.progress_span) / config.train.epochs:.0%} "
                "of the run done, about T left" for planned in schedule[2:-1]]
    assert [re.sub(r"\d+(m\d\d)?s left$", "T left", line.split("committed round ")[1])
            for line in commits] == [*expected, f"{len(schedule)}"]
    assert resumed.list_names("_staging") == []
    np.testing.assert_array_equal(model_matrix(spark, resumed), model_matrix(spark, storage))


def test_other_settings_on_the_same_root_are_refused_until_restart(spark, planted_run, tmp_path):
    _, storage = train_planted(spark, tmp_path / "root", planted_run["corpus"], "train.epochs=1")
    with pytest.raises(UserError, match="holds a train stage built with other settings"):
        train_planted(spark, tmp_path / "root", planted_run["corpus"], "train.epochs=1", "train.seed=9")
    train_planted(spark, tmp_path / "root", planted_run["corpus"], "train.epochs=1", "train.seed=9",
                  "train.restart=true")
    assert storage.read_json("reports/train.json")["settings"]["train.seed"] == 9


def test_non_finite_parameters_stop_training_with_the_learning_rate_named_and_keep_latest(spark, tmp_path):
    """The kernel's step limit keeps even large rates finite, so the guard is driven by a model
    round holding an infinite value, as a corrupt or diverged round would."""
    corpus, _ = write_planted_corpus(tmp_path / "data")
    _, storage = train_planted(spark, tmp_path / "root", corpus, "train.epochs=1")
    directory = Path(storage.path(round_directory(1)).removeprefix("file:"))
    sides = read_round_files(directory)
    sides["input"][1][0, 0] = np.inf
    storage.delete(round_directory(1))
    write_round_file(directory, sides)
    for model_round in range(2, 6):
        storage.delete(round_directory(model_round))
    storage.write_json(MODEL_LATEST, {**read_latest(storage), "round": 1})
    storage.delete("reports/train.json")
    with pytest.raises(UserError, match=r"diverged .* lower train.learning_rate \(now 0.025\)") as error:
        train_planted(spark, tmp_path / "root", corpus, "train.epochs=1")
    assert "model round 1 stays the latest" in str(error.value)
    assert read_latest(storage)["round"] == 1
    assert not storage.exists(round_directory(2))
    assert not storage.exists("reports/train.json")


def test_automatic_rounds_keep_every_epoch_within_the_stage_budget():
    for shards in (1, 2, 4, 8, 16, 32, 64, 1000):
        schedule = rounds(make_config(f"train.num_shards={shards}", "train.epochs=3").train)
        for epoch in range(3):
            planned = [r for r in schedule if r.epoch == epoch]
            stages = 1 + sum(r.groups + 1 for r in planned)  # one model load, then pairs and phases
            assert stages <= 2 * shards + 10, (shards, epoch, stages)
            assert np.isclose(sum(r.progress_span for r in planned), 1.0)  # the epoch's sentences, once each


# --- the executor task, outside Spark -------------------------------------------------------------------

def small_round(rng, vocab=60, dim=8, shards=3, sources=2):
    """Sentences of `sources` batches, the rows of a random model as records, and a round plan."""
    counts = np.sort(rng.integers(5, 500, vocab))[::-1].astype(np.float64)
    batches = [pa.table({
        "sentence_key": pa.array(rng.permutation(20).astype(np.int64) + 100 * source),
        "ids": pa.array([rng.integers(0, vocab, 30).astype(np.int32).tolist() for _ in range(20)],
                        pa.list_(pa.int32())),
    }) for source in range(sources)]
    vectors = {side: rng.normal(0, 0.1, (vocab, dim)).astype(np.float32) for side in (INPUT_SIDE, OUTPUT_SIDE)}
    noise = counts**0.75 / (counts**0.75).sum()
    settings = make_config(f"train.dim={dim}", f"train.num_shards={shards}").train
    plan = RoundPlan(settings, epoch=0, number=2, groups=shards, progress_start=0.05, progress_span=0.3)
    return batches, vectors, noise, noise_scales(counts * 0.9, noise, shards), plan


def owned_records(vectors, task, phase, shards):
    """The Rows a task owns in a phase: the input rows of its group and the output rows of its group + phase."""
    records = []
    for side, matrix in vectors.items():
        ids = np.arange(len(matrix))
        group = word_groups(ids, shards)
        for value in range(shards):
            if owner_task(value, side, phase, shards) == task:
                chosen = np.flatnonzero(group == value)
                records.append(Rows(side, value, chosen.astype(np.int32), matrix[chosen]))
    return records


def all_pairs(batches, plan):
    keep = np.full(60, 0.9)
    return [keyed for number, batch in enumerate(batches) for keyed in source_pairs(batch, number, plan, keep)]


def group_ids(group, groups, vocab=60):
    """The word ids of a group in id order: its rows (`sgns_spark.train.schedule.group_rows`)."""
    return np.flatnonzero(word_groups(np.arange(vocab), groups) == group)


def test_source_pairs_read_back_through_their_groups_are_the_sources_pairs_each_once():
    """Every (context, center) pair of a source lands in the part of its context group's task
    and its stratum, as rows of the two groups in the smallest type (uint8 for 20 words a group)."""
    batches, _, _, _, plan = small_round(np.random.default_rng(3))
    keep, key = np.full(60, 0.9), (plan.settings.seed, plan.epoch, plan.number)
    for number, batch in enumerate(batches):
        word_ids, sentence_index = sentence_tokens(batch, seeded_generator(*key, SENTENCE_ORDER_STREAM, number))
        expected = skipgram_pairs(word_ids, sentence_index, keep, plan.settings.window,
                                  seeded_generator(*key, SUBSAMPLE_STREAM, number),
                                  seeded_generator(*key, WINDOW_STREAM, number))
        found = []
        for task, part in source_pairs(batch, number, plan, keep):
            assert part.center_rows.dtype == part.context_rows.dtype == part.context_pairs.dtype == np.uint8
            contexts = group_ids(task, plan.groups)[np.repeat(part.context_rows, part.context_pairs)]
            centers = group_ids((task + part.stratum) % plan.groups, plan.groups)[part.center_rows]
            assert (pair_strata(word_groups(contexts, 3), word_groups(centers, 3), 3) == part.stratum).all()
            found += zip(contexts.tolist(), centers.tolist(), strict=True)
        assert len(found) > 500
        assert sorted(found) == sorted(zip(expected.context_ids.tolist(), expected.center_ids.tolist(), strict=True))


def test_a_source_trains_its_sentences_in_a_seeded_order_that_arrival_order_does_not_change():
    """Sentence-key order follows the corpus; training follows a permutation of it drawn from the
    source's generator: the same draws give the same tokens whatever order the rows came in."""
    keys = np.arange(40, dtype=np.int64)
    table = pa.table({"sentence_key": keys, "ids": pa.array([[key, key] for key in keys.tolist()],
                                                            pa.list_(pa.int32()))})
    scrambled = table.take(pa.array(np.random.default_rng(5).permutation(40)))

    def sentence_order(sentences, draws):
        word_ids, sentence_index = sentence_tokens(sentences, seeded_generator(*draws))
        assert (np.diff(sentence_index) >= 0).all() and sentence_index.size == word_ids.size == 80
        return word_ids[::2].tolist()  # a sentence's first token is its key

    first = sentence_order(table, (1, 0, 2, SENTENCE_ORDER_STREAM, 7))
    assert sorted(first) == keys.tolist() and first != keys.tolist()
    assert sentence_order(scrambled, (1, 0, 2, SENTENCE_ORDER_STREAM, 7)) == first
    assert sentence_order(table, (1, 0, 2, SENTENCE_ORDER_STREAM, 8)) != first  # another source
    assert sentence_order(table, (2, 0, 2, SENTENCE_ORDER_STREAM, 7)) != first  # another seed


def test_a_block_trains_its_sources_in_a_seeded_order_and_each_sources_parts_in_turn():
    _, _, _, _, plan = small_round(np.random.default_rng(3))
    empty = np.zeros(0, np.uint8)
    parts = [Pairs(0, source, part, empty, empty, empty) for source in range(12) for part in range(2)]

    def order_of(found):
        return [(part.source, part.part) for part in found]

    ordered = order_of(training_order(parts, plan))
    sources = [source for source, part in ordered if part == 0]
    assert sorted(ordered) == order_of(parts) and sources != sorted(sources)
    assert all(ordered[2 * rank : 2 * rank + 2] == [(source, 0), (source, 1)] for rank, source in enumerate(sources))
    assert order_of(training_order(parts[::-1], plan)) == ordered  # not arrival order
    assert order_of(training_order(parts, dataclasses.replace(plan, number=3))) != ordered  # another round


def test_pair_strata_are_the_groups_difference_modulo_the_groups():
    for groups in (1, 2, 3, 7):
        context, center = (grid.ravel().astype(np.int32) for grid in np.meshgrid(np.arange(groups), np.arange(groups)))
        strata = pair_strata(context, center, groups)  # every (context group, center group) once
        assert strata.dtype == np.int32
        assert strata.tolist() == [(b - a) % groups for a, b in zip(context.tolist(), center.tolist(), strict=True)]


def test_blocks_of_a_phase_own_disjoint_rows_and_together_all_of_them():
    rng = np.random.default_rng(0)
    shards = 3
    batches, vectors, noise, scale, plan = small_round(rng, shards=shards)
    found = all_pairs(batches, plan)
    for phase in range(shards):
        phase_plan = PhasePlan(plan, phase, shards, (phase + 1) % shards)
        emitted = []
        for task in range(shards):
            mine = [part for owner, part in found if owner == task]
            records = owned_records(vectors, task, phase, shards)
            used = [part for part in mine if part.stratum == phase]
            # the block's pairs only read rows the task owns: contexts of its group, centers of its output group
            owned = {side: np.concatenate([r.ids for r in records if r.side == side]) for side in (0, 1)}
            assert all(np.isin(group_ids(task, shards)[part.context_rows], owned[INPUT_SIDE]).all() for part in used)
            assert all(np.isin(group_ids((task + phase) % shards, shards)[part.center_rows], owned[OUTPUT_SIDE]).all()
                       for part in used)
            keyed, statistics = train_phase(task, [*records, *mine], phase_plan, noise, scale)
            assert statistics.pairs == sum(part.center_rows.size for part in used) > 0
            for owner, chunk in keyed:  # each row goes to its owner in the next phase
                next_owner = owner_task(word_groups(chunk.ids, shards), chunk.side, (phase + 1) % shards, shards)
                assert (next_owner == owner).all()
            emitted += [chunk for _, chunk in keyed]
        keys = np.concatenate([chunk.ids.astype(np.int64) * 2 + chunk.side for chunk in emitted])
        np.testing.assert_array_equal(np.sort(keys), np.arange(2 * 60))  # each row of each side exactly once
        trained = {side: np.zeros_like(matrix) for side, matrix in vectors.items()}
        for chunk in emitted:
            trained[chunk.side][chunk.ids] = chunk.vectors
        changed = ~np.isclose(trained[INPUT_SIDE], vectors[INPUT_SIDE]).all(axis=1)
        assert changed.sum() > 30  # most input rows trained in every phase
        vectors = trained


def test_a_task_without_pairs_passes_its_rows_through_unchanged():
    _, vectors, noise, scale, plan = small_round(np.random.default_rng(2), shards=2)
    records = owned_records(vectors, 0, 0, 2)
    keyed, statistics = train_phase(0, records, PhasePlan(plan, 0, 2, 1), noise, scale)
    assert statistics.pairs == 0 and statistics.loss == 0.0
    for _, chunk in keyed:
        np.testing.assert_array_equal(chunk.vectors, vectors[chunk.side][chunk.ids])


def test_minibatches_of_one_position_scatter_their_centers_and_a_whole_noise_pool():
    """The block's kept scratch is sized for its largest minibatch's pairs and its pool: with one
    context position a minibatch, the pool's rows outnumber the pairs' centers."""
    rng = np.random.default_rng(4)
    batches, vectors, noise, scale, plan = small_round(rng, shards=2)
    plan = dataclasses.replace(plan, settings=dataclasses.replace(plan.settings, batch_pairs=1))
    parts = [part for owner, part in all_pairs(batches, plan) if owner == 0]
    trained, statistics = train_phase(0, [*owned_records(vectors, 0, 0, 2), *parts], PhasePlan(plan, 0, 2, 1),
                                      noise, scale)
    assert statistics.pairs == sum(part.center_rows.size for part in parts if part.stratum == 0) > 0
    moved = [not np.array_equal(chunk.vectors, vectors[chunk.side][chunk.ids]) for _, chunk in trained]
    assert all(moved) and all(np.isfinite(chunk.vectors).all() for _, chunk in trained)


def test_a_retried_task_yields_identical_rows_whatever_the_arrival_order_or_parts(monkeypatch):
    rng = np.random.default_rng(1)
    batches, vectors, noise, scale, plan = small_round(rng, shards=2)
    found = all_pairs(batches, plan)
    again = all_pairs([batch.take(rng.permutation(batch.num_rows)) for batch in batches], plan)
    assert len(found) == len(again) and all(
        first == second and all(np.array_equal(a, b) for a, b in zip(p[3:], q[3:], strict=True))
        for (first, p), (second, q) in zip(found, again, strict=True))
    phase_plan = PhasePlan(plan, 1, 2, 0)
    records = [*owned_records(vectors, 0, 1, 2), *(part for owner, part in found if owner == 0)]
    first, _ = train_phase(0, records, phase_plan, noise, scale)
    shuffled = [records[index] for index in rng.permutation(len(records))]
    retried, _ = train_phase(0, shuffled, phase_plan, noise, scale)
    monkeypatch.setattr(task_module, "MAX_PART_PAIRS", 37)  # blocks cut into many parts
    parts = [part for owner, part in all_pairs(batches, plan) if owner == 0]
    assert len(parts) > 2 * sum(1 for owner, _ in found if owner == 0)
    in_parts, _ = train_phase(0, [*owned_records(vectors, 0, 1, 2), *parts[::-1]], phase_plan, noise,
                              scale)
    for other in (retried, in_parts):
        assert [(owner, chunk.side, chunk.group) for owner, chunk in other] == [
            (owner, chunk.side, chunk.group) for owner, chunk in first]
        for (_, chunk), (_, expected) in zip(other, first, strict=True):
            np.testing.assert_array_equal(chunk.ids, expected.ids)
            np.testing.assert_array_equal(chunk.vectors, expected.vectors)


def test_sources_are_runs_of_sentences_that_start_within_the_token_limit():
    lengths = np.array([3, 5, 2, 7, 1, 9])  # tokens before each: 0, 3, 8, 10, 17, 18
    assert list(source_bounds(lengths, max_tokens=6)) == [(0, 2), (2, 4), (4, 5), (5, 6)]
    assert list(source_bounds(lengths, max_tokens=100)) == [(0, 6)]
    assert list(source_bounds(np.array([40]), max_tokens=6)) == [(0, 1)]  # one longer sentence alone
    assert list(source_bounds(np.zeros(0, np.int64), max_tokens=6)) == []


def test_sources_are_key_ordered_runs_of_each_rounds_sentences_whatever_the_batches_and_the_job(monkeypatch):
    class PartitionThree:
        @staticmethod
        def get():
            return PartitionThree

        @staticmethod
        def partitionId():  # noqa: N802 (Spark's name)
            return 3

    monkeypatch.setattr(driver_module, "TaskContext", PartitionThree)
    length = task_module.MAX_SOURCE_TOKENS // 2 + 1  # two sentences start within the limit, not three
    keys = [4, 0, 3, 1, 2, 7, 5, 6, 9, 8]  # arrival (scan) order
    positions = {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.35, 4: 0.45, 5: 0.5, 6: 0.7, 7: 0.9, 8: 0.25, 9: 0.05}
    batch = pa.RecordBatch.from_pydict({
        "sentence_key": pa.array(keys, pa.int64()),
        "ids": pa.array([[key] * length for key in keys], pa.list_(pa.int32())),
        "position": pa.array([positions[key] for key in keys], pa.float64()),
    })

    def sources_of(batches, spans):
        made = driver_module.sentence_sources(iter(batches), spans, chunk_rows=5)
        rows = [row for out in made for row in out.to_pylist()]
        return [(row["round_number"], row["source"], pa.ipc.open_stream(pa.py_buffer(row["sentences"])).read_all())
                for row in rows]

    # round 7 holds [0, 0.5), round 8 [0.5, 0.8); key 7 is in neither, and round 9 repeats [0.3, 0.4)
    spans = ((7, 0.0, 0.5), (8, 0.5, 0.8), (9, 0.3, 0.4))
    sources = sources_of([batch], spans)
    # round 7's first chunk of 5 rows in scan order is keys 4, 0, 3, 1, 2, its second 9, 8
    assert [(number, source & ((1 << task_module.SOURCE_SHIFT) - 1), table.column("sentence_key").to_pylist())
            for number, source, table in sources] == [
        (7, 0, [0, 1]), (7, 1, [2, 3]), (7, 2, [4]), (7, 3, [8, 9]), (8, 0, [5, 6]), (9, 0, [2, 3])]
    assert all(source >> task_module.SOURCE_SHIFT == 3 for _, source, _ in sources)
    assert all(table.column_names == ["sentence_key", "ids"] for _, _, table in sources)
    assert all(ids == [key] * length for _, _, table in sources
               for key, ids in zip(table.column("sentence_key").to_pylist(), table.column("ids").to_pylist(),
                                   strict=True))

    def by_round(found, number):
        return [(source, table.to_pydict()) for round_number, source, table in found if round_number == number]

    # the same rows in other batches, or in a job of fewer rounds, give each round the same sources
    rebatched = [batch.slice(0, 2), batch.slice(2, 5), batch.slice(7)]
    for number in (7, 8, 9):
        assert by_round(sources_of(rebatched, spans), number) == by_round(sources, number)
        alone = tuple(span for span in spans if span[0] == number)
        assert by_round(sources_of(rebatched, alone), number) == by_round(sources, number)


def test_phase_learning_rate_decays_linearly_over_the_schedule_to_its_end_ratio():
    _, _, _, _, plan = small_round(np.random.default_rng(0), shards=2)
    settings = dataclasses.replace(plan.settings, epochs=1, min_learning_rate_ratio=0.2)
    plan = dataclasses.replace(plan, settings=settings, progress_start=0.5, progress_span=0.5)
    assert PhasePlan(plan, 0, 2, 1).decay(0.0) == pytest.approx(1 - 0.8 * 0.5)
    assert PhasePlan(plan, 1, 2, 0).decay(0.5) == pytest.approx(1 - 0.8 * (0.5 + 0.5 * 0.75))
    assert PhasePlan(plan, 1, 2, 0).decay(1.0) == pytest.approx(0.2)


def test_a_source_whose_sentences_keep_at_most_one_word_has_no_pairs():
    """One-word lines (a word list, titles), or sentences subsampling left one word of: no pair, no part."""
    _, _, _, _, plan = small_round(np.random.default_rng(5))
    one_word = pa.table({"sentence_key": pa.array(np.arange(40, dtype=np.int64)),
                         "ids": pa.array([[word % 60] for word in range(40)], pa.list_(pa.int32()))})
    assert list(source_pairs(one_word, 0, plan, np.full(60, 0.9))) == []
    two_words = pa.table({"sentence_key": pa.array([0], pa.int64()), "ids": pa.array([[3, 4]], pa.list_(pa.int32()))})
    assert list(source_pairs(two_words, 0, plan, np.zeros(60))) == []  # both subsampled away


def test_a_job_of_many_phases_ends_without_overflowing_the_drivers_stack(spark, tmp_path):
    """After a job Spark walks its lineage by recursion; 20 rounds of 2 shards in one job (41
    phases) overflowed a driver whose threads have 200 KiB of stack (1 MiB, the default,
    overflowed at 257 phases). The trainer walks it every few phases (`driver.walk_lineage`)."""
    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(["alpha", "beta", "gamma"], 8)) for _ in range(300)) + "\n")
    storage = Storage(spark, str(tmp_path / "root"))
    run_vocab_stage(spark, make_config(), corpus_input(spark, str(corpus)), storage)
    environment = job_environment()
    environment["SPARK_SUBMIT_OPTS"] += " -Xss200k"  # the default stack of every JVM thread, Spark's included
    result = subprocess.run([sys.executable, str(JOBS / "train.py"), "--root", str(tmp_path / "root"),
                             "--set", "spark.master=local[2]", "--set", "train.rounds_per_epoch=20"],
                            capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "root" / report_path("train")).read_text())["counts"]["rounds"] == 21
