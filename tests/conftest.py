"""Shared fixtures: one local SparkSession for the whole run, run roots, shared data."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from sgns_spark.config import load_config
from sgns_spark.session import build_session
from sgns_spark.storage import Storage
from sgns_spark.train.model_store import read_latest, read_side
from sgns_spark.train.schedule import INPUT_SIDE, OUTPUT_SIDE

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
JOBS = Path(__file__).resolve().parents[1] / "jobs"  # the entry points, which some tests run as subprocesses
TEST_MASTER = "local[2]"
TRACE = re.compile(r"^\s+at |Traceback|^Caused by|\.(java|scala):\d+\)|^\s+File \"", re.MULTILINE)
# A job run as a subprocess starts a JVM of its own and mostly ends before the JIT's second tier
# pays off: with the first tier alone a tiny vocab job took 17.1 s against 20.0, and make test 542 s
# against 607 to 651 (measured). The in-process session lives for the whole suite and keeps both
# tiers: with the first alone, its training tests ran slower (make test 572 s).
SUBPROCESS_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"


def shared_file(name: str) -> Path:
    """A file of ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: shared test data is only in the project's CI checkout")
    return path


def assert_one_line_ending(returncode: int, stderr: str, exit_code: int, line_start: str) -> None:
    """A job's end: exit `exit_code`, our line last and alone, starting with `line_start`, and no
    trace anywhere."""
    lines = stderr.strip().splitlines()
    assert returncode == exit_code, stderr[-2000:]
    assert lines[-1].startswith(line_start), lines[-1]
    assert [line for line in lines if line.startswith("sgns-spark")] == [lines[-1]]
    assert not TRACE.search(stderr), stderr[-2000:]


def job_environment() -> dict[str, str]:
    """The environment of a job run as a subprocess: this process's, with `SUBPROCESS_JVM_OPTIONS`
    added to ``SPARK_SUBMIT_OPTS``, which spark-submit passes to the driver's JVM (local mode's
    executors included)."""
    options = f"{os.environ.get('SPARK_SUBMIT_OPTS', '')} {SUBPROCESS_JVM_OPTIONS}".strip()
    return {**os.environ, "SPARK_SUBMIT_OPTS": options}


def assert_names_damage(message: str, root: Path, damaged: str, reason: str, remedy: str) -> None:
    """A damaged file's user error: the file below `root`, the start of its `reason`, and `remedy`."""
    assert message.startswith(f"file:{root}/{damaged}") and f" cannot be read ({reason}" in message, message
    assert message.endswith(f"): it was changed outside sgns-spark or damaged; {remedy}"), message


def cut_short(path: Path) -> None:
    """Keep a file's first 300 bytes, and drop its checksum file so that Hadoop reads it unchecked."""
    path.write_bytes(path.read_bytes()[:300])
    path.with_name(f".{path.name}.crc").unlink()


def model_matrix(spark, storage) -> np.ndarray:
    """Both sides of the newest round, side by side, in id order."""
    latest = read_latest(storage)["round"]
    sides = [read_side(storage, latest, side).toArrow().sort_by("id") for side in (INPUT_SIDE, OUTPUT_SIDE)]
    return np.concatenate([np.asarray(side.column("vector").combine_chunks().flatten()).reshape(side.num_rows, -1)
                           for side in sides], axis=1)


def make_config(*overrides: str):
    """The default config with the test master and a few overrides."""
    return load_config(None, [f"spark.master={TEST_MASTER}", *overrides])


@pytest.fixture(scope="session")
def spark():
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = build_session(make_config("spark.shuffle_partitions=4"), "tests")
    yield session
    session.stop()


@pytest.fixture
def storage(spark, tmp_path) -> Storage:
    return Storage(spark, str(tmp_path / "root"))


@pytest.fixture(autouse=True)
def reset_shuffle_partitions(spark):
    """Training sets the session's shuffle partitions to its shard count; undo it per test."""
    yield
    spark.conf.set("spark.sql.shuffle.partitions", "4")


PLANTED_TOKENS = 400_000
PLANTED_SETTINGS = (
    "train.dim=32", "train.window=4", "train.epochs=2", "train.num_shards=2",
    "train.rounds_per_epoch=4", "train.commit_words=1", "train.keep_rounds=10", "vocab.min_count=5",
)
PLANTED_ARGUMENTS = tuple(argument for setting in PLANTED_SETTINGS for argument in ("--set", setting))  # for a job


def write_planted_corpus(directory: Path, seed: int = 1) -> tuple[Path, Path]:
    """The embedded synthetic corpus and its analogy questions, written to `directory`."""
    from sgns_spark.synthetic import analogy_questions, generate_lines

    directory.mkdir(parents=True, exist_ok=True)
    corpus, questions = directory / "corpus.txt", directory / "questions.txt"
    corpus.write_text("\n".join(generate_lines(PLANTED_TOKENS, seed)) + "\n")
    questions.write_text("\n".join(analogy_questions()) + "\n")
    return corpus, questions


def train_planted(spark, root: Path, corpus: Path, *overrides: str):
    """Run the vocab and train stages on `corpus` below `root`; return (config, storage)."""
    from sgns_spark.preflight import corpus_input
    from sgns_spark.stages import run_vocab_stage
    from sgns_spark.train.driver import run_train_stage

    config = make_config(*PLANTED_SETTINGS, *overrides)
    run_storage = Storage(spark, str(root))
    run_vocab_stage(spark, config, corpus_input(spark, str(corpus)), run_storage)
    run_train_stage(spark, config, run_storage)
    return config, run_storage


@pytest.fixture(scope="session")
def planted_run(spark, tmp_path_factory):
    """One trained run on the planted corpus, shared by the training and export tests."""
    directory = tmp_path_factory.mktemp("planted")
    corpus, questions = write_planted_corpus(directory / "data")
    config, run_storage = train_planted(spark, directory / "root", corpus)
    return {"config": config, "storage": run_storage, "corpus": corpus, "questions": questions}


def read_round_files(directory: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{side: (ids, vectors)}`` of a model round's Parquet files, by pyarrow alone, in id order."""
    table = pa.concat_tables(pq.read_table(file) for file in sorted(directory.glob("*.parquet")))
    sides = {}
    for side in ("input", "output"):
        chunks = table.filter(pc.equal(table.column("side"), side))
        ids = [np.frombuffer(value, "<i4") for value in chunks.column("ids").to_pylist()]
        vectors = [np.frombuffer(value, "<f4").reshape(part.size, -1)
                   for part, value in zip(ids, chunks.column("vectors").to_pylist(), strict=True)]
        order = np.argsort(np.concatenate(ids), kind="stable")
        sides[side] = (np.concatenate(ids)[order], np.concatenate(vectors)[order])
    return sides


def write_round_file(directory: Path, sides: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """A model round of one chunk per side, ``{side: (ids, vectors)}``, as one Parquet file."""
    directory.mkdir(parents=True, exist_ok=True)
    table = pa.table({"side": list(sides),
                      "ids": [np.asarray(ids, "<i4").tobytes() for ids, _ in sides.values()],
                      "vectors": [np.asarray(vectors, "<f4").tobytes() for _, vectors in sides.values()]})
    pq.write_table(table, directory / "part-00000.parquet")
