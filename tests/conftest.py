"""Shared fixtures: one local SparkSession per test process, run roots, shared data, and the
environment of the jobs that tests start as subprocesses."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
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
# A job's driver JVM starts in half the time when it maps Spark's classes from a class-data-sharing
# archive instead of loading them from the jars: a session and one stage took 5.7 against 11.3 s,
# make test 651 against 781 s (measured). The archive is dumped once per test run by a small
# pipeline (`class_archive_options`); a JVM that cannot map it (another class path) loads its
# classes as before, and says nothing of it.
SILENT_CLASS_SHARING = "-Xlog:cds*=off"
ARCHIVE_DUMP_TIMEOUT = 120  # seconds for the dumping pipeline's JVM to write the archive and end
CLASS_ARCHIVE_DIRECTORY = "SGNS_SPARK_TEST_CLASS_ARCHIVE"  # the environment variable naming its directory
# Every JVM of the test run keeps its temporary files (spark.local.dir's default among them) in one
# directory of the run, removed at its end: a JVM that a test kills leaves its directories behind,
# and the cluster test's killed executor left its 108 MB copy of the archive in /tmp on every run
# (seen: 754 MB after 14 runs; that executor gets the directory by test_cluster's own option).
JVM_TEMPORARY_DIRECTORY = "SGNS_SPARK_TEST_JVM_TMPDIR"  # the environment variable naming it


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
    and the class archive's options added to ``SPARK_SUBMIT_OPTS``, which spark-submit passes to
    the driver's JVM (local mode's executors included)."""
    return submit_environment(f"{SUBPROCESS_JVM_OPTIONS} {class_archive_options()}")


def run_job(job: str, root: Path, *arguments: str, environment: dict[str, str] | None = None,
            master: str = "local[1]") -> subprocess.CompletedProcess:
    """`job` as a subprocess on `master` (one core unless given), its environment `job_environment()`
    updated by `environment`."""
    return subprocess.run([sys.executable, str(JOBS / f"{job}.py"), "--root", str(root), *arguments,
                           "--set", f"spark.master={master}"], capture_output=True, text=True, timeout=300,
                          env={**job_environment(), **(environment or {})})


def submit_environment(jvm_options: str) -> dict[str, str]:
    """This process's environment with `jvm_options` added to ``SPARK_SUBMIT_OPTS``."""
    return {**os.environ, "SPARK_SUBMIT_OPTS": f"{os.environ.get('SPARK_SUBMIT_OPTS', '')} {jvm_options}".strip()}


def pytest_configure(config):
    """The test run's directories of the class archive and of its JVMs' temporary files, made by
    its first process (the only one, or pytest-xdist's controller) and named in the environment
    its workers and their jobs inherit (``SPARK_SUBMIT_OPTS`` gives every JVM its ``java.io.tmpdir``)."""
    if not hasattr(config, "workerinput"):
        os.environ[CLASS_ARCHIVE_DIRECTORY] = tempfile.mkdtemp(prefix="sgns-spark-classes-")
        temporary = os.environ[JVM_TEMPORARY_DIRECTORY] = tempfile.mkdtemp(prefix="sgns-spark-jvm-tmp-")
        os.environ.update(submit_environment(f"-Djava.io.tmpdir={temporary}"))


def pytest_unconfigure(config):
    """The directories are removed by the process that made them, once its tests are done."""
    if not hasattr(config, "workerinput"):
        for variable in (CLASS_ARCHIVE_DIRECTORY, JVM_TEMPORARY_DIRECTORY):
            shutil.rmtree(os.environ.pop(variable), ignore_errors=True)


@functools.cache
def class_archive_options() -> str:
    """The JVM options that map the archive of the classes a job's driver loads; no options where
    this Java dumps no archive. The first call of the test run dumps it, by the pipeline on a tiny
    corpus, while the run's other processes wait for it."""
    directory = Path(os.environ[CLASS_ARCHIVE_DIRECTORY])
    archive, attempted = directory / "spark.jsa", directory / "attempted"
    with open(directory / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not attempted.exists():
            dump_class_archive(directory, archive)
            attempted.touch()
    return f"-XX:SharedArchiveFile={archive} {SILENT_CLASS_SHARING}" if archive.exists() else ""


def dump_class_archive(directory: Path, archive: Path) -> None:
    """Run the pipeline on a tiny corpus below `directory`, its JVM writing the classes it loaded
    to `archive` as it ends; leave no archive where that fails or takes too long."""
    corpus = directory / "corpus.txt"
    corpus.write_text("a b c d e f g h\n" * 100)
    dumping = f"{SUBPROCESS_JVM_OPTIONS} -XX:ArchiveClassesAtExit={archive} {SILENT_CLASS_SHARING}"
    command = [sys.executable, str(JOBS / "pipeline.py"), "--root", str(directory / "root"), "--input", str(corpus),
               "--set", "vocab.min_count=1", "--set", "spark.master=local[1]"]
    # its own process group: the JVM writes the archive as it exits, after the job's Python has ended
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env=submit_environment(dumping), start_new_session=True)
    deadline = time.monotonic() + ARCHIVE_DUMP_TIMEOUT
    with contextlib.suppress(ProcessLookupError):
        while time.monotonic() < deadline:
            job.poll()  # reaps the job's Python once it has ended
            os.killpg(job.pid, 0)  # raises once no process of the group is left
            time.sleep(0.2)
        os.killpg(job.pid, signal.SIGKILL)  # out of time: the tests go on without an archive
        job.wait()
        archive.unlink(missing_ok=True)


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
