"""Bad input: one line naming the problem and the setting, as the last line on stderr, exit code 2,
no trace, nothing half-written, and checked before Spark does any work where it can be."""

import bz2
import datetime
import gzip
import io
import json
import lzma
import os
import pickle
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    JOBS,
    PLANTED_ARGUMENTS,
    PLANTED_SETTINGS,
    TRACE,
    assert_names_damage,
    assert_one_line_ending,
    cut_short,
    job_environment,
    make_config,
    run_job,
)
from py4j.protocol import Py4JJavaError

from sgns_spark import lock
from sgns_spark.cli import user_error_of
from sgns_spark.errors import UserError
from sgns_spark.export import run_export_stage
from sgns_spark.preflight import check_root_outside, corpus_input
from sgns_spark.query import main as query_main
from sgns_spark.session import broadcast
from sgns_spark.stages import run_vocab_stage
from sgns_spark.storage import Storage
from sgns_spark.tokenize import MAX_RECORD_BYTES
from sgns_spark.train.driver import run_train_stage
from sgns_spark.vectors import Vectors

WORDS = " ".join(f"w{index % 50}" for index in range(20_000))
LOCK_RACES = 100  # two runs creating the lock at once, this many times
TAKEOVER_RACES = 50  # two runs taking over one stale lock at once, this many times
DEAD_PID = 2 ** 22 + 1  # above Linux's largest pid (pid_max is at most 2^22): no process has it
DISK_FULL_LINE = ("a disk filled up (No space left on device); free space under the run root and spark.local.dir, "
                  "or choose another --root")


def assert_one_line_error(result, job, first_words):
    """Exit 2, our line last and alone, starting with `first_words`, and no trace anywhere."""
    assert_one_line_ending(result.returncode, result.stderr, 2, f"sgns-spark {job}: error: {first_words}")


def assert_nothing_published(root: Path):
    for name in ("vocab", "corpus", "reports", "model", "export", "_LOCK"):
        assert not (root / name).exists(), name
    assert not list((root / "_staging").glob("*")) if (root / "_staging").exists() else True


def gzip_bytes(text: str) -> bytes:
    return gzip.compress(text.encode())


def test_bad_corpus_ends_the_job_with_one_line(tmp_path):
    """A refusal of the vocab stage, end to end; the stage's other refusals are tested in process
    (`test_stage_raises_user_error_in_process_with_nothing_published`)."""
    path = tmp_path / "corpus.txt"
    path.write_bytes("caf\xe9 na\xefve \xe9l\xe8ve r\xe9sum\xe9 \xe0 la fa\xe7on ".encode("latin-1") * 200)
    result = run_job("vocab", tmp_path / "root", "--input", str(path))
    assert_one_line_error(result, "vocab", f"input corpus {path} is not UTF-8 text")
    assert_nothing_published(tmp_path / "root")


@pytest.mark.parametrize("override,first_words", [
    ("vocab.min_cont=3", "unknown config key vocab.min_cont; known keys of [vocab]: min_count,"),
    ("train.dim=0", "train.dim = 0 is out of range; allowed 2 to 4096"),
], ids=["unknown-key", "dim-0"])
def test_bad_setting_ends_the_job_before_spark_starts(tmp_path, override, first_words):
    result = run_job("vocab", tmp_path / "root", "--input", "x.txt", "--set", override)
    assert_one_line_error(result, "vocab", first_words)
    assert "Spark" not in result.stderr.replace("sgns-spark", "")  # no JVM was started
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("master,environment,first_words", [
    ("yarn", {"HADOOP_CONF_DIR": None, "YARN_CONF_DIR": None},
     "spark.master = 'yarn' needs HADOOP_CONF_DIR or YARN_CONF_DIR in the environment"),
    ("k8s://https://127.0.0.1:9", {},
     "Spark could not start on spark.master = 'k8s://https://127.0.0.1:9' (ConnectException: Connection refused;"),
    ("local[1]", {"JAVA_HOME": "/nonexistent"},
     "Spark's JVM ended as it started, with spark.master = 'local[1]' (its own lines above say why); check"),
], ids=["yarn-without-its-configuration", "cluster-manager-refuses", "no-java"])
def test_a_spark_that_cannot_start_is_one_line_naming_the_master(tmp_path, master, environment, first_words):
    """Each ended the job with Java's or Python's trace, exit 1 (the YARN and Java cases), or blamed
    a file system (the cluster manager's refused connection); a standalone master that never answers
    takes the cluster manager's path after Spark's 60 s of retries (tried by hand). `environment`'s
    None removes a variable."""
    (tmp_path / "corpus.txt").write_text(WORDS)
    variables = {name: value for name, value in {**job_environment(), **environment}.items() if value is not None}
    result = subprocess.run([sys.executable, str(JOBS / "pipeline.py"), "--root", str(tmp_path / "root"),
                             "--input", str(tmp_path / "corpus.txt"), "--set", f"spark.master={master}"],
                            capture_output=True, text=True, timeout=300, env=variables)
    assert_one_line_error(result, "pipeline", first_words)
    assert not (tmp_path / "root").exists()


def other_minor_python() -> str | None:
    """A Python 3.10 or later of another minor version than this one, on PATH or installed by pyenv, or None."""
    for minor in range(10, 15):
        if minor == sys.version_info.minor:
            continue
        candidates = [shutil.which(f"python3.{minor}"),
                      *map(str, sorted(Path.home().glob(f".pyenv/versions/3.{minor}.*/bin/python3.{minor}")))]
        for found in filter(None, candidates):
            if subprocess.run([found, "--version"], capture_output=True).returncode == 0:
                return found
    return None


@pytest.mark.parametrize("executors_python", ["without-packages", "another-version"])
def test_executors_whose_python_cannot_run_the_job_end_it_in_one_line(tmp_path, executors_python):
    """A wrong PYSPARK_PYTHON, or a cluster's executors without the packed environment: every task
    failed, and the job ended with Spark's lines holding the workers' Python traces, then the
    driver's own trace, exit 1. The executors' Python is this one without its site-packages, or
    another minor version."""
    python = tmp_path / "executors-python"
    if executors_python == "without-packages":
        python.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
        python.chmod(0o755)
        first_words, exception = "the executors' Python cannot import what sgns-spark needs (No module named '", \
            "ModuleNotFoundError: No module named '"
    else:
        other = other_minor_python()
        if other is None:
            pytest.skip("no Python 3.10 to 3.14 of another minor version on PATH or in ~/.pyenv/versions")
        python = Path(other)
        version = subprocess.run([other, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        first_words = (f"the executors' Python is {version} and the driver's {sys.version_info.major}."
                       f"{sys.version_info.minor}, and PySpark needs one minor version on both")
        exception = "PySparkRuntimeError: [PYTHON_VERSION_MISMATCH] Python in worker has different version"
    (tmp_path / "corpus.txt").write_text(WORDS)
    result = run_job("pipeline", tmp_path / "root", "--input", str(tmp_path / "corpus.txt"),
                     environment={"PYSPARK_PYTHON": str(python)})
    assert_one_line_error(result, "pipeline", first_words)
    assert exception in result.stderr  # Spark's lines keep the exception's own line
    assert_nothing_published(tmp_path / "root")


@pytest.mark.parametrize("given,first_words", [
    ("{tmp}/absent.txt", "input corpus {tmp}/absent.txt does not exist or matches no file; set CORPUS="),
    ("{tmp}/*.nothing", "input corpus {tmp}/*.nothing does not exist or matches no file"),
    ("s3a://bucket/corpus.txt", "no file system for the s3a:// scheme of the input corpus (--input, CORPUS="),
    ("{tmp}", "run root file:{tmp}/root lies inside input corpus {tmp}, so the next run would read this one's"),
], ids=["missing-path", "empty-glob", "scheme-without-filesystem", "root-inside-input"])
def test_unusable_input_path_is_refused_before_any_work(tmp_path, given, first_words):
    (tmp_path / "corpus.txt").write_text(WORDS)
    result = run_job("pipeline", tmp_path / "root", "--input", given.format(tmp=tmp_path))
    assert_one_line_error(result, "pipeline", first_words.format(tmp=tmp_path))
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("output", ["day-1/reports/vocab.json", "published/version=000003/manifest.json"],
                         ids=["run-root", "published-version"])
def test_an_input_holding_sgns_spark_output_is_refused_before_any_work(spark, tmp_path, output):
    """A nightly job whose --input directory also holds an earlier day's run root (or a copied
    version) would read its Parquet and vectors as text."""
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "corpus.txt").write_text(WORDS)
    assert len(corpus_input(spark, str(tmp_path / "lake")).files) == 1
    (tmp_path / "lake" / output).parent.mkdir(parents=True)
    (tmp_path / "lake" / output).write_text("{}")
    with pytest.raises(UserError) as raised:
        corpus_input(spark, str(tmp_path / "lake"))
    assert str(raised.value) == (
        f"input corpus {tmp_path}/lake holds sgns-spark output (file:{tmp_path}/lake/{output}), whose files would "
        "be read as text; point --input (CORPUS= for make run) at the text alone, and keep run roots outside it")


def zip_bytes(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("corpus.txt", text)
    return buffer.getvalue()


@pytest.mark.parametrize("name,content,first_words", [
    ("corpus.txt.xz", lzma.compress(WORDS.encode()), "is compressed in a format Spark cannot read, and would be read"),
    ("corpus.zip", zip_bytes(WORDS), "is compressed in a format Spark cannot read, and would be read"),
    # an lz4 frame's header (magic, flags, block size, header checksum), then its first block
    ("corpus.txt.lz4", bytes.fromhex("04224d186440a7") + b"\x0b\x00\x00\x80w0 w1 w2 w3\x00\x00\x00\x00",
     "is in the lz4 tool's frame format, which Spark's .lz4 codec (Hadoop's block format) reads as no text"),
], ids=["xz", "zip", "lz4-frame"])
def test_a_file_compressed_in_a_way_spark_does_not_read_is_refused_before_any_work(spark, tmp_path, name, content,
                                                                                   first_words):
    """Spark read an .xz or .zip file's compressed bytes as text (refused only later, as "not
    UTF-8", with advice to convert it), and an lz4 tool's file as no text at all, without a word."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt.gz").write_bytes(gzip_bytes(WORDS))
    (tmp_path / "corpus" / "b.txt.bz2").write_bytes(bz2.compress(WORDS.encode()))
    assert [entry.codec for entry in corpus_input(spark, str(tmp_path / "corpus")).files] == [".gz", ".bz2"]
    (tmp_path / "corpus" / name).write_bytes(content)
    with pytest.raises(UserError) as raised:
        corpus_input(spark, str(tmp_path / "corpus"))
    assert str(raised.value).startswith(f"input file file:{tmp_path}/corpus/{name} {first_words}"), raised.value
    assert str(raised.value).endswith("; decompress it, or recompress it as gzip (.gz), bzip2 (.bz2) or zstd (.zst)")


@pytest.mark.parametrize("given,named", [
    ("{tmp}/2026-12-07T00:00", "input corpus {tmp}/2026-12-07T00:00"),
    ("{tmp}/2026-12-07T00:00/corpus.txt", "input corpus {tmp}/2026-12-07T00:00/corpus.txt"),
    ("{tmp}/lines", "input file file:{tmp}/lines/part:1.txt"),
], ids=["directory", "file-below-it", "file-in-a-directory"])
def test_a_name_with_a_colon_is_refused_before_spark_reads_it(spark, tmp_path, given, named):
    """A named path with a ':' in it ended the job with Python's and Java's traces, exit 1; a file
    below a directory failed every task attempt, with Hadoop's "Relative path in absolute URI"."""
    for directory, name in [("2026-12-07T00:00", "corpus.txt"), ("lines", "part:1.txt"), ("lines", "part-2.txt")]:
        (tmp_path / directory).mkdir(exist_ok=True)
        (tmp_path / directory / name).write_text(WORDS)
    with pytest.raises(UserError) as raised:
        corpus_input(spark, given.format(tmp=tmp_path))
    assert str(raised.value) == (f"{named.format(tmp=tmp_path)} has a ':' in a file or directory name, which "
                                 "Hadoop's paths cannot hold, so Spark cannot read it; rename it, or link it under a "
                                 "name without ':'")
    assert corpus_input(spark, str(tmp_path / "lines" / "part-2.txt")).files  # the same files, named without ':'


@pytest.mark.parametrize("given", ["{tmp}/fifo", "/dev/null", "file:/dev/null"], ids=["named-pipe", "device", "uri"])
def test_a_pipe_or_a_device_as_input_is_named_as_one_not_as_an_empty_corpus(spark, tmp_path, given):
    """``--input /dev/stdin`` under ``zcat x.gz |`` said the corpus was empty: Spark lists a pipe as
    an empty file, and its executors could not read the driver's pipe anyway."""
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(UserError) as raised:
        corpus_input(spark, given.format(tmp=tmp_path))
    assert str(raised.value).startswith(f"input corpus {given.format(tmp=tmp_path)} is a pipe or a device, not a "
                                        "file, and Spark reads only files"), raised.value


def test_a_root_is_inside_an_input_only_below_one_of_its_directories(spark, tmp_path):
    for name in ("lake", "lake2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "corpus.txt").write_text(WORDS)
    lake = corpus_input(spark, str(tmp_path / "lake"))
    assert lake.directories == (f"file:{tmp_path}/lake",)
    for inside in ("lake", "lake/runs/day-1"):
        with pytest.raises(UserError, match=f"^run root file:{tmp_path}/{inside} lies inside input corpus "):
            check_root_outside(lake, Storage(spark, str(tmp_path / inside)))
    for outside in ("lake2/run", "lake-run", "run"):
        check_root_outside(lake, Storage(spark, str(tmp_path / outside)))
    files_only = corpus_input(spark, str(tmp_path / "lake*" / "*.txt"))  # a glob of files names no directory
    assert files_only.directories == () and len(files_only.files) == 2
    check_root_outside(files_only, Storage(spark, str(tmp_path / "lake" / "run")))


@pytest.mark.parametrize("root,first_words", [
    ("/proc/forbidden/x", "run root file:/proc/forbidden/x cannot be written"),
    ("s3a://bucket/run", "no file system for the s3a:// scheme of the run root (--root) s3a://bucket/run"),
], ids=["not-writable", "scheme-without-filesystem"])
def test_unusable_run_root_is_refused_before_tokenizing(tmp_path, root, first_words):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(WORDS)
    result = run_job("pipeline", root, "--input", str(corpus))
    assert_one_line_error(result, "pipeline", first_words)
    assert "[vocab]" not in result.stdout


def test_an_input_file_removed_after_the_job_listed_it_is_named_as_input_that_changed(spark, tmp_path):
    """A directory that another process still writes to or rotates: a file the job's checks listed,
    then removed before the vocab stage read it, ended the job with Spark's AnalysisException and
    its trace, exit 1. (Removed while a task reads it, it is Java's FileNotFoundException, which
    ends the same way; tried by hand: 40 files, 11 removed as the stage read them.)"""
    (tmp_path / "in").mkdir()
    for name in "ab":
        (tmp_path / "in" / f"{name}.txt").write_text(WORDS)
    corpus = corpus_input(spark, str(tmp_path / "in"))
    (tmp_path / "in" / "b.txt").unlink()
    storage = Storage(spark, str(tmp_path / "root"))
    with pytest.raises(Exception) as raised:  # noqa: B017 - which exception is the subject: user_error_of's
        run_vocab_stage(spark, make_config(), corpus, storage)
    assert str(user_error_of(raised.value, [storage])) == (
        f"input file file:{tmp_path}/in/b.txt cannot be read (it was removed after the job listed it): the input "
        "changed while the job read it; rerun once it no longer changes (a scheduled run: on a complete directory, "
        "written elsewhere and moved into place)")


def test_truncated_gzip_is_named_and_a_setting_skips_it(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.gz").write_bytes(gzip_bytes(WORDS))
    # the first 5 kB of a gzip file, under a name Spark percent-encodes in its errors
    (corpus / "b c.gz").write_bytes(gzip_bytes(WORDS * 20)[:5_000])
    (corpus / "c.txt").write_text(WORDS)
    result = run_job("vocab", tmp_path / "root", "--input", str(corpus))
    assert_one_line_error(result, "vocab", f"input file file://{corpus}/b c.gz cannot be read (Unexpected end of input")
    assert result.stderr.strip().splitlines()[-1].endswith("or set corpus.skip_corrupt_files=true to skip such files")
    assert_nothing_published(tmp_path / "root")
    skipped = run_job("vocab", tmp_path / "root", "--input", str(corpus), "--set", "corpus.skip_corrupt_files=true")
    assert skipped.returncode == 0, skipped.stderr[-2000:]
    assert not TRACE.search(skipped.stderr), skipped.stderr[-2000:]
    counts = json.loads((tmp_path / "root" / "reports" / "vocab.json").read_text())["counts"]
    assert counts["skipped_corrupt_files"] == 1 and counts["corrupt_files"] == [f"file://{corpus}/b c.gz"]
    assert counts["corpus_tokens"] == 2 * 20_000 and counts["input_files"] == 2
    again = run_job("vocab", tmp_path / "root", "--input", str(corpus), "--set", "corpus.skip_corrupt_files=true")
    assert again.returncode == 0 and "[vocab] already done in " in again.stdout, again.stderr[-2000:]  # not a change


def test_a_done_vocab_stage_is_not_reused_for_input_files_that_changed(spark, storage, tmp_path):
    """A rerun on a root whose input gained, lost or changed a file said "already done" and went on
    with the old files' vocabulary: a nightly run reusing its root republished yesterday's vectors."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(WORDS)
    (corpus / "b.txt").write_text(WORDS)
    config = make_config()
    first = run_vocab_stage(spark, config, corpus_input(spark, str(corpus)), storage)
    assert run_vocab_stage(spark, config, corpus_input(spark, str(corpus)), storage) == first  # unchanged: reused
    changes = [
        (lambda: (corpus / "c.txt").write_text(WORDS), "1 file added (file:{corpus}/c.txt)"),
        (lambda: (corpus / "c.txt").unlink() or (corpus / "b.txt").unlink(), "1 file removed (file:{corpus}/b.txt)"),
        (lambda: (corpus / "b.txt").write_text(WORDS + " w1"), "1 file changed (file:{corpus}/b.txt)"),
        (lambda: [(corpus / name).write_text(WORDS) for name in ("b.txt", "c.txt", "d.txt")],
         "2 files added (file:{corpus}/c.txt, ...); 1 file changed (file:{corpus}/b.txt)"),
    ]
    for change, found in changes:
        change()
        with pytest.raises(UserError) as raised:
            run_vocab_stage(spark, config, corpus_input(spark, str(corpus)), storage)
        assert str(raised.value) == (
            f"input corpus {corpus} changed since run root {storage.root} read it: {found.format(corpus=corpus)}; the "
            "root's vocabulary, model and exports are of the files it read then: use a new output root (OUT=, "
            "--root) for new input, as a scheduled run does with its date, or delete it")


def test_a_directory_of_gzip_and_plain_files_is_read_whole_and_hidden_files_are_skipped(spark, storage, tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "more").mkdir(parents=True)
    (corpus / "a.txt.gz").write_bytes(gzip_bytes("alpha beta " * 50))
    (corpus / "b.txt").write_text("gamma delta " * 30)
    (corpus / "more" / "c.txt").write_text("alpha " * 7)
    (corpus / "_SUCCESS").write_text("")
    (corpus / ".b.txt.crc").write_text("not text")
    report = run_vocab_stage(spark, make_config("vocab.min_count=1"), corpus_input(spark, str(corpus)), storage)
    assert report["counts"]["corpus_tokens"] == 100 + 60 + 7 and report["counts"]["input_files"] == 3
    assert report["counts"]["vocab_size"] == 4


def live_lock(root: Path, pid: int, heartbeat: datetime.datetime, host: str = socket.gethostname()):
    """A lock of `pid` on `host`, whose heartbeat (the file's modification time) is `heartbeat`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "_LOCK").write_text(json.dumps({
        "host": host, "pid": pid, "job": "pipeline", "started_utc": "2026-01-01T00:00:00+00:00"}))
    os.utime(root / "_LOCK", (heartbeat.timestamp(), heartbeat.timestamp()))


def test_a_second_run_on_a_root_held_by_a_live_run_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(WORDS)
    root = tmp_path / "root"
    now = datetime.datetime.now(datetime.UTC)
    live_lock(root, os.getpid(), now)  # this test's own process: alive
    result = run_job("vocab", root, "--input", str(corpus))
    assert_one_line_error(result, "vocab", f"run root file:{root} is in use by the pipeline job of pid {os.getpid()}")
    assert "wait for it to end, or delete" in result.stderr and not (root / "vocab").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    live_lock(root, int(dead.stdout), now)  # a process of this host that has ended
    taken = run_job("vocab", root, "--input", str(corpus))
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert f"[lock] taking over the lock of file:{root}: its holder, pid {int(dead.stdout)} on this host, is gone" \
        in taken.stdout
    assert not (root / "_LOCK").exists() and (root / "vocab").exists()


def test_of_two_runs_creating_the_lock_at_once_exactly_one_gets_it(spark, tmp_path):
    """Hadoop's local file system checks for a file and then creates it: two threads racing for
    the lock both got it 58 times in 300 tries."""
    storage = Storage(spark, str(tmp_path / "root 50% #1"))
    storage.check_writable()

    def race(text, barrier, won):
        barrier.wait()
        if storage.create_exclusive("_LOCK", text):
            won.append(text)

    for attempt in range(LOCK_RACES):
        barrier, won = threading.Barrier(2), []
        racers = [threading.Thread(target=race, args=(f"run {name} of race {attempt}", barrier, won))
                  for name in "ab"]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        assert len(won) == 1 and storage.read_text("_LOCK") == won[0], (attempt, won)
        storage.delete("_LOCK")
    assert os.listdir(tmp_path / "root 50% #1") == []  # no temporary file left


def test_a_full_disk_that_python_meets_is_the_disk_full_line():
    """On a local disk the lock and the pointers are written by Python, whose full disk is an
    OSError, not a Java exception (`/dev/full` refuses every write as a full disk does)."""
    with pytest.raises(OSError) as raised, open("/dev/full", "w") as full:
        full.write("x")
        full.flush()
    assert str(user_error_of(raised.value, [])) == DISK_FULL_LINE


FULL_DISK_WORDS = 2_000  # distinct words of the full-disk corpus, each 10 times
FULL_DISK = "5m"  # its file system: room for the run root's training (one model round: 1.6 MB), not its export


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of `FULL_DISK` (a tmpfs mounted on a directory), or skip: mounting needs root."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FULL_DISK}", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a small file system for a full disk needs mount (root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_job_that_fills_the_disk_ends_in_one_line_and_frees_what_it_half_wrote(tmp_path, small_disk):
    """A real full disk: training fits on it, the export does not. The job ended in one line, but
    left its half-written export in the run root's staging, holding the disk full until the next
    run on the root (which clears the staging first, as after a kill)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(" ".join(f"w{index % FULL_DISK_WORDS}" for index in range(FULL_DISK_WORDS * 10)))
    root = small_disk / "root"
    result = run_job("pipeline", root, "--input", str(corpus))
    assert_one_line_error(result, "pipeline", DISK_FULL_LINE)
    assert (root / "model" / "_LATEST").exists() and not (root / "export" / "_LATEST").exists()
    assert [path for path in (root / "_staging").rglob("*") if path.is_file()] == []


def fill(disk: Path) -> None:
    """Write to `disk` until it has no room left."""
    with open(disk / "ballast", "wb", buffering=0) as ballast, pytest.raises(OSError):
        while True:
            ballast.write(bytes(1 << 16))


def test_a_broadcast_that_spark_local_dir_has_no_room_for_is_the_disk_full_line(spark, small_disk, monkeypatch,
                                                                                capfd):
    """PySpark writes a broadcast to a file under spark.local.dir (its context's temporary directory).
    On a full disk it printed its own trace, then raised a PicklingError over the OSError, which was
    not taken for a full disk: the job ended with Python's trace, exit 1."""
    fill(small_disk)
    monkeypatch.setattr(spark.sparkContext, "_temp_dir", str(small_disk))
    with pytest.raises(pickle.PicklingError) as raised:
        broadcast(spark.sparkContext, np.zeros(1 << 16))
    assert "Traceback" not in capfd.readouterr().err
    assert str(user_error_of(raised.value, [])) == DISK_FULL_LINE


def test_spark_logs_an_exception_by_the_first_line_of_its_message(tmp_path):
    """A failed Spark job's exception holds its task's whole trace in its message, and Spark's
    lines showed it ("Aborting job ... (Job aborted due to stage failure: ... at ...)")."""
    script = tmp_path / "log.py"
    script.write_text(
        "from sgns_spark.config import load_config\n"
        "from sgns_spark.session import build_session\n"
        "spark = build_session(load_config(None, ['spark.master=local[1]']), 'log')\n"
        "error = spark._jvm.java.io.IOException('the first line\\n\\tat the second line')\n"
        "spark._jvm.org.apache.logging.log4j.LogManager.getLogger('sgns.Probe').error('a failure', error)\n"
        "spark.stop()\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                            env=job_environment(), cwd=JOBS.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    logged = [line for line in result.stderr.splitlines() if "a failure" in line]
    assert len(logged) == 1 and logged[0].endswith(" ERROR Probe: a failure (the first line)"), \
        result.stderr[-2000:]
    assert "the second line" not in result.stderr


def test_of_two_runs_taking_over_one_stale_lock_at_once_exactly_one_gets_it(spark, tmp_path, monkeypatch):
    """Two runs that both found a dead run's lock stale both deleted "it": the later delete could
    remove the lock the other had just made, and then both ran on the root (at race 1)."""
    monkeypatch.setattr(lock, "TAKEOVER_WAIT_SECONDS", 0.01)  # the loser's wait for the guard
    root = tmp_path / "root"
    storage = Storage(spark, str(root))
    storage.check_writable()
    now = datetime.datetime.now(datetime.UTC)

    def race(name, barrier, won, refused):
        run = lock.RunLock(storage, name)
        barrier.wait()
        try:
            run.__enter__()
        except UserError as error:
            refused.append(str(error))
            return
        won.append(run)

    for attempt in range(TAKEOVER_RACES):
        live_lock(root, DEAD_PID, now)
        barrier, won, refused = threading.Barrier(2), [], []
        racers = [threading.Thread(target=race, args=(f"run {name}", barrier, won, refused)) for name in "ab"]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        assert len(won) == 1 and json.loads((root / "_LOCK").read_text()) == won[0].holder, (attempt, refused)
        assert len(refused) == 1 and " is in use by the run " in refused[0], refused
        won[0].__exit__(None, None, None)
    assert os.listdir(root) == []  # no lock, no takeover guard left


@pytest.mark.parametrize("uri,first_words", [
    ("hdfs://localhost:9/corpus",
     "a file system at localhost:9 cannot be reached (ConnectException: Connection refused)"),
    ("hdfs://no-such-host.invalid:8020/corpus",
     "a file system cannot be reached (UnknownHostException: no-such-host.invalid)"),
], ids=["refused", "unknown-host"])
def test_a_file_system_that_cannot_be_reached_is_one_line(spark, uri, first_words):
    """An HDFS --input, --root or warm-start parent whose name node is down, or whose host is
    wrong, ended the job with a Python and Java trace, exit 1 (as PySpark's own exception for an
    unknown host, which the error mapping did not look into)."""
    with pytest.raises(Exception) as raised:  # noqa: B017 - whatever the JVM and PySpark raise
        corpus_input(spark, uri)
    error = user_error_of(raised.value, [])
    assert str(error) == (f"{first_words}; check the host and port of --input, --root and train.warm_start_from, "
                          "and that the file system is up")


def test_a_lock_of_another_host_is_stale_only_once_its_heartbeat_is_older_than_ten_minutes(spark, tmp_path, capsys):
    root = tmp_path / "root"
    storage = Storage(spark, str(root))
    now = datetime.datetime.now(datetime.UTC)
    live_lock(root, 1, now - datetime.timedelta(minutes=9), host="another-host")
    with pytest.raises(UserError, match=f"^run root file:{root} is in use by the pipeline job of pid 1 on host "
                                        "another-host since 2026-01-01T00:00:00"):
        lock.RunLock(storage, "train").__enter__()
    live_lock(root, 1, now - datetime.timedelta(minutes=11), host="another-host")
    with lock.RunLock(storage, "train") as held:
        assert json.loads((root / "_LOCK").read_text()) == held.holder
    assert capsys.readouterr().out.startswith(f"[lock] taking over the lock of file:{root}: its heartbeat is 66")
    assert not (root / "_LOCK").exists()


def test_the_heartbeat_refreshes_the_lock_in_place_and_a_failed_refresh_is_tried_again(spark, storage, monkeypatch,
                                                                                        capsys):
    """The heartbeat rewrote the lock by a delete and a rename, so the root had no lock between
    the two; and a refresh that failed (a full disk) ended its thread with a Java trace, leaving
    the lock unrefreshed for the rest of the run, for another run to take over 10 minutes on."""
    monkeypatch.setattr(lock, "HEARTBEAT_SECONDS", 0.05)
    touch, failures = storage.touch, []

    def failing_twice(relative):
        if len(failures) < 2:
            try:
                spark.sparkContext._jvm.java.io.FileInputStream("/proc/no-such-file")  # a real Java IO failure
            except Py4JJavaError as error:
                failures.append(error)
                raise
        touch(relative)

    monkeypatch.setattr(storage, "touch", failing_twice)
    with lock.RunLock(storage, "train") as held:
        created = storage.modified_at("_LOCK")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and storage.modified_at("_LOCK") == created:
            assert json.loads(storage.read_text("_LOCK")) == held.holder  # always there, always whole
        assert held.heartbeat.is_alive() and storage.modified_at("_LOCK") > created
    output = capsys.readouterr()
    assert len(failures) == 2 and not TRACE.search(output.err), output.err
    lines = output.out.splitlines()
    assert lines[0].startswith(f"[lock] warning: the heartbeat of {storage.path('_LOCK')} cannot be refreshed (")
    assert lines[1:] == [f"[lock] the heartbeat of {storage.path('_LOCK')} is refreshed again"]
    assert not storage.exists("_LOCK")


def test_a_release_that_fails_after_the_job_failed_leaves_the_jobs_error_and_the_lock(spark, storage, monkeypatch):
    """A lock whose delete failed as the job ended replaced the job's error with its own (a JVM
    shutting down under the job, say). The lock stays, for the next run to take over; a release
    that fails after a job that succeeded is still raised."""
    def failing(relative):
        spark.sparkContext._jvm.java.io.FileInputStream("/proc/no-such-file")  # a real Java IO failure

    monkeypatch.setattr(storage, "delete", failing)
    with pytest.raises(ValueError, match="^the job's own$"), lock.RunLock(storage, "train"):
        raise ValueError("the job's own")
    assert storage.exists("_LOCK")
    monkeypatch.undo()  # the lock above is held by this live process: remove it
    storage.delete("_LOCK")
    monkeypatch.setattr(storage, "delete", failing)
    with pytest.raises(Py4JJavaError, match="no-such-file"), lock.RunLock(storage, "train"):
        pass


def point_latest_at(model: Path, model_round: int) -> None:
    """Edit ``_LATEST`` by hand, as a user rolling back would."""
    latest = json.loads((model / "_LATEST").read_text())
    (model / "_LATEST").write_text(json.dumps({**latest, "round": model_round}))


def flip_a_byte(path: Path) -> None:
    """Change a byte in the middle of a file that Spark wrote, beside its checksum file."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


RETRAIN = "set train.restart=true to train again from round 0"
RERUN = "run the pipeline again on a new --root (or delete this one)"


def copied_run_root(planted_run, directory: Path) -> Path:
    """A copy of the planted run's root, trained and not exported."""
    root = directory / "root"
    shutil.copytree(planted_run["storage"].root.removeprefix("file:"), root)
    shutil.rmtree(root / "export", ignore_errors=True)
    (root / "reports" / "export.json").unlink(missing_ok=True)
    return root


@pytest.mark.parametrize("stage,damage,damaged,reason,remedy", [
    (run_export_stage, lambda root: (root / "model" / "_LATEST").write_text("{}"), "model/_LATEST",
     "it names no round", RETRAIN),
    (run_export_stage, lambda root: (root / "model" / "_LATEST").write_text('{"round": "9"}'), "model/_LATEST",
     "it names no round", RETRAIN),
    (run_export_stage, lambda root: flip_a_byte(min((root / "vocab").glob("part-*"))), "vocab/part-",
     "its bytes do not match its checksum file", RERUN),
    (run_export_stage, lambda root: point_latest_at(root / "model", 10), "model/round=000010", "it is missing",
     RETRAIN),
    (run_train_stage, lambda root: shutil.rmtree(root / "corpus"), "corpus", "it is missing", RERUN),
    (run_export_stage, lambda root: [part.unlink() for part in (root / "vocab").glob("part-*")], "vocab",
     "it holds no Parquet files", RERUN),
], ids=["latest-emptied", "latest-round-as-text", "vocab-edited", "latest-at-a-missing-round", "corpus-deleted",
        "vocab-emptied"])
def test_a_damaged_run_root_is_named_with_what_to_do(spark, planted_run, tmp_path, stage, damage, damaged, reason,
                                                      remedy):
    """A run root's file changed outside sgns-spark or gone, as a stage reads it: the user error
    that a job prints as its one line (`sgns_spark.cli.run_job`) names it and what to do."""
    root = copied_run_root(planted_run, tmp_path)
    damage(root)
    storage = Storage(spark, str(root))
    with pytest.raises(Exception) as raised:
        stage(spark, make_config(*PLANTED_SETTINGS, "train.restart=true"), storage)
    error = user_error_of(raised.value, [storage])  # as the job maps it
    assert error is not None, raised.value
    assert_names_damage(str(error), root, damaged, reason, remedy)
    assert not (root / "export").exists()


def test_a_model_round_cut_short_ends_the_job_in_one_line(planted_run, tmp_path):
    root = copied_run_root(planted_run, tmp_path)
    cut_short(min((root / "model" / "round=000009").glob("part-*.parquet")))
    result = run_job("export", root, *PLANTED_ARGUMENTS)
    assert_one_line_error(result, "export", f"file:{root}/model/round=000009/part-")
    assert_names_damage(result.stderr.strip().splitlines()[-1].split(": error: ", 1)[1], root,
                        "model/round=000009/part-", "", RETRAIN)
    assert not (root / "export").exists()


def test_a_little_invalid_utf8_is_tolerated_and_reported(spark, storage, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes((b"the cat sat on the mat " * 10 + b"\xff ") * 20)  # 0.4% invalid
    report = run_vocab_stage(spark, make_config("vocab.min_count=1"), corpus_input(spark, str(path)), storage)
    assert report["counts"]["invalid_utf8_bytes"] == 20
    assert report["counts"]["vocab_size"] == 5


def test_evaluation_files_must_exist_on_the_driver(tmp_path):
    result = run_job("export", tmp_path / "root", "--set", f"evaluate.analogy_path={tmp_path}/q.txt")
    assert_one_line_error(result, "export", f"evaluate.analogy_path = {tmp_path}/q.txt is not a file on the driver")


@pytest.mark.parametrize("content,first_words", [
    (b"", "input corpus {path} is empty; point CORPUS="),
    (np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes(), "input corpus {path} is not UTF-8"),
    (b"rare words appear once each here\n", "every word of {path} occurs fewer than vocab.min_count = 5"),
    (b"... --- !!! ???\n", "input corpus {path} has no tokens under corpus.split_pattern"),
    (("the cat sat on the mat\n" * 200).encode("utf-16"),  # its byte-order mark alone is undecodable
     "input corpus {path} is not UTF-8 text: 50.0% of its bytes are undecodable or NUL (UTF-16 text"),
    (b"alpha\nbeta\ngamma\n" * 20 + b"two rare words\n",  # its only sentence of two words has no word of the vocabulary
     "no sentence of input corpus {path} holds two words of the vocabulary, so there is no (center, context) pair"),
], ids=["empty", "random-bytes", "below-min-count", "no-tokens", "utf-16", "one-word-lines"])
def test_stage_raises_user_error_in_process_with_nothing_published(spark, storage, tmp_path, content, first_words):
    """The vocab stage's own refusals (a job prints them as its one line, as above)."""
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(UserError) as raised:
        run_vocab_stage(spark, make_config(), corpus_input(spark, str(path)), storage)
    assert str(raised.value).startswith(first_words.format(path=path)), raised.value
    assert not storage.exists("vocab") and not storage.exists("corpus") and storage.list_names("_staging") == []


def test_more_shards_than_words_is_refused_before_training(spark, storage, tmp_path):
    """500 shards on a vocabulary of 5 words ran 500,000 Spark tasks an epoch, of empty groups."""
    path = tmp_path / "corpus.txt"
    path.write_text("the cat sat on mat\n" * 50)
    run_vocab_stage(spark, make_config("vocab.min_count=1"), corpus_input(spark, str(path)), storage)
    with pytest.raises(UserError) as raised:
        run_train_stage(spark, make_config("vocab.min_count=1", "train.num_shards=6"), storage)
    assert str(raised.value).startswith("train.num_shards = 6 is more than the vocabulary's 5 words")
    assert str(raised.value).endswith("lower train.num_shards to at most 5")
    assert not storage.exists("model") and not storage.exists("reports/train.json")


def test_a_run_of_text_longer_than_a_spark_record_is_refused_not_skipped_or_fatal(tmp_path):
    path = tmp_path / "corpus.txt"
    with open(path, "w") as stream:  # a plain file: its size tells what the reader skipped
        stream.write(WORDS + " ")
        stream.write("x" * (MAX_RECORD_BYTES + 1))
        stream.write(" " + WORDS + "\n")
    result = run_job("vocab", tmp_path / "root", "--input", str(path))
    assert_one_line_error(result, "vocab", f"input file file:{path} holds a run of text of more than 64 MiB")
    assert_nothing_published(tmp_path / "root")


@pytest.mark.parametrize("setting,content,first_words", [
    ("similarity_path", b"love sex 6.77\ntiger cat\n", "{path} line 2 is not two words and a score"),
    ("similarity_path", b"love\tsex\t6.77\ntiger\tcat\tmuch\n", "{path} line 2 is not two words and a score"),
    ("similarity_path", b"# only a comment\nword1\tword2\tscore\n", "{path} holds no word pair"),
    ("similarity_path", b"2 3\nparis 0.1 0.2 0.3\n", "{path} line 2 is not two words and a score"),
    ("similarity_path", "caf\xe9\tth\xe9\t5.0\n".encode("latin-1"), "{path} is not UTF-8 text"),
    ("analogy_path", b": capital-common-countries\nathens greece\n", "{path} holds no analogy question"),
], ids=["no-score", "score-not-a-number", "comment-and-header-only", "word2vec-vectors", "latin-1", "no-questions"])
def test_a_malformed_evaluation_file_is_refused_before_any_work(tmp_path, setting, content, first_words):
    path = tmp_path / "evaluation.txt"
    path.write_bytes(content)
    result = run_job("pipeline", tmp_path / "root", "--input", str(path), "--set", f"evaluate.{setting}={path}")
    assert_one_line_error(result, "pipeline", f"evaluate.{setting}: {first_words.format(path=path)}")
    assert result.stderr.strip().endswith(f'set evaluate.{setting} to ""')
    assert not (tmp_path / "root").exists()  # refused before Spark started: no root, no Spark log


def query(capsys, *arguments):
    """The query CLI in process: its exit code and its stderr's lines."""
    code = query_main([str(argument) for argument in arguments])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture
def word2vec_files(tmp_path):
    vectors = Vectors(["paris", "france", "berlin", "germany"], np.eye(4, 3, dtype=np.float32) + 0.1)
    vectors.save_word2vec_format(tmp_path / "vectors.txt")
    vectors.save_word2vec_format(tmp_path / "vectors.bin", binary=True)
    return tmp_path


@pytest.mark.parametrize("name,content,first_words", [
    ("corpus.txt", b"the cat sat on the mat\n", "{path} is not a word2vec text file: its first line is not"),
    ("short.txt", b"2 3\nparis 0.1 0.2 0.3\nfrance 0.1\n", "{path} does not hold the 2 words x 3 dimensions"),
    ("letters.txt", b"1 2\nparis 0.1 x\n", "{path} does not hold the 1 words x 2 dimensions"),
    ("huge.txt", b"99999999999 100\n", "{path} does not hold the 99999999999 words x 100 dimensions"),
    ("random.parquet", bytes(range(256)) * 8, "{path} is not a Parquet vector set"),
], ids=["a-corpus", "a-short-row", "not-a-number", "a-header-larger-than-the-file", "not-parquet"])
def test_the_query_cli_refuses_files_that_are_not_vectors_in_one_line(tmp_path, capsys, name, content, first_words):
    path = tmp_path / name
    path.write_bytes(content)
    code, lines = query(capsys, path, "similar", "paris")
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"sgns-spark query: error: {first_words.format(path=path)}"), lines[0]


def test_the_query_cli_refuses_a_truncated_binary_file(word2vec_files, capsys):
    path = word2vec_files / "truncated.bin"
    path.write_bytes((word2vec_files / "vectors.bin").read_bytes()[:-5])
    code, lines = query(capsys, path, "similar", "paris")
    assert code == 2 and lines == [f"sgns-spark query: error: {path} does not hold the 4 words x 3 dimensions "
                                   "its header announces (the file ends in word 4)"]


def test_the_query_cli_names_the_missing_version_an_export_roots_latest_names(tmp_path, capsys):
    export = tmp_path / "export"
    export.mkdir()
    (export / "_LATEST").write_text(json.dumps({"version": 3, "path": f"file:{export}/version=000003"}))
    code, lines = query(capsys, export, "similar", "paris")
    assert code == 2 and lines == [f"sgns-spark query: error: {export}/_LATEST names version {export}/version=000003, "
                                   "which is missing (deleted?); give another published version, or rerun the "
                                   "export stage to publish one"]


def test_the_query_cli_names_a_run_root_that_has_published_nothing(tmp_path, capsys):
    (tmp_path / "root" / "reports").mkdir(parents=True)
    code, lines = query(capsys, tmp_path / "root", "similar", "paris")
    assert code == 2 and lines == [f"sgns-spark query: error: run root {tmp_path}/root has published no version "
                                   "yet; run the export stage (jobs/export.py) on it, or give a published version"]


@pytest.mark.parametrize("text", ["{}", '{"version": "3"}', "not json", "\udcff"], ids=["empty", "text", "not-json",
                                                                                        "not-utf-8"])
def test_the_query_cli_names_an_export_roots_latest_that_names_no_version(tmp_path, capsys, text):
    export = tmp_path / "export"
    export.mkdir()
    (export / "_LATEST").write_bytes(text.encode("utf-8", "surrogateescape"))
    code, lines = query(capsys, export, "similar", "paris")
    assert code == 2 and lines == [f"sgns-spark query: error: {export}/_LATEST names no version (it is not a JSON "
                                   "pointer with a version number); give a published version directory, or rerun "
                                   "the export stage to publish one"]


def test_the_query_cli_names_bad_words_and_files_in_one_line(word2vec_files, capsys):
    vectors = word2vec_files / "vectors.txt"
    assert query(capsys, vectors, "similar", "paris", "--topn", "1") == (0, [])
    assert query(capsys, vectors, "similar", "rome") == (
        2, ["sgns-spark query: error: word 'rome' is not in the vocabulary"])  # not the KeyError's quoted form
    assert query(capsys, vectors, "evaluate", "--analogy", word2vec_files / "missing.txt") == (
        2, [f"sgns-spark query: error: {word2vec_files}/missing.txt cannot be read (No such file or directory)"])
    assert query(capsys, vectors, "evaluate")[0] == 2
    with pytest.raises(SystemExit) as stopped:  # argparse's usage and its error line
        query_main([str(vectors), "similar", "paris", "--topn", "0"])
    assert stopped.value.code == 2 and "'0' is not a whole number of at least 1" in capsys.readouterr().err
