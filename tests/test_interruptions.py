"""Interruptions of a local run. A stop signal mid-training (Ctrl-C's SIGINT, a scheduler's
SIGTERM to the whole process group, as systemd, `timeout` and `kill -- -PGID` send it): one
line, exit code 128 + the signal's number, no trace, the lock released, the committed rounds
kept, nothing exported, and the same command resumes from the last committed round. Python
workers killed mid-task: the tasks are retried, and the run goes on. Both end with the
undisturbed run's rows, bit for bit. Python workers killed in every attempt of a task: the run
ends in one line too."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import JOBS, PLANTED_ARGUMENTS, assert_one_line_ending, job_environment, read_round_files

from sgns_spark import session
from sgns_spark.cli import (
    SIGNAL_EXIT_BASE,
    SPARK_OUT_OF_MEMORY_EXIT,
    STOP_SIGNALS,
    WORKER_CRASH,
    Stopped,
    job_error,
    stop_on_signals,
    user_error_of,
)
from sgns_spark.session import LOCAL_TASK_ATTEMPTS, with_task_retries

COMMITTED = re.compile(r"\[train\] rounds \d+-\d+ of \d+ .*committed round (\d+)")
RUN_TIMEOUT = 300  # seconds a run may take at most
KILL_INTERVAL = 0.1  # seconds between sweeps that kill every Python worker of a run
PROGRESS_SECONDS = 1  # the runs report progress too, so that signals and kills meet its thread
# the smallest driver heap the settings allow, and both sides of a model it cannot hold (20,000 words
# x 4096 dimensions x 4 bytes, 330 MB a side), trained on 80,000 tokens
OUT_OF_HEAP_WORDS = 20_000
OUT_OF_HEAP_SETTINGS = ("spark.master=local[2]", "spark.driver_memory=512m", "train.dim=4096", "vocab.min_count=1")
OUT_OF_HEAP_LINE = ("Spark's JVM (the driver's) ended under the job: its heap ran out (java.lang.OutOfMemoryError); "
                    "what the job committed or published stays, so rerun the same command to resume, with a larger "
                    "spark.driver_memory")
# how a job aborted for a task's OutOfMemoryError carries it: as text in Spark's message
ABORTED_FOR_A_TASKS_HEAP = ("Job aborted due to stage failure: Task 0 in stage 24.0 failed 1 times, most recent "
                            "failure: Lost task 0.0 in stage 24.0: java.lang.OutOfMemoryError: Java heap space")
# a job aborted for Spark's memory manager refusing a task's aggregation a page (the vocab stage's count
# of a 1 GB corpus under a 4g local driver, whose heap held the tokenized corpus)
ABORTED_FOR_A_TASKS_AGGREGATION = (
    "Job aborted due to stage failure: Task 0 in stage 5.0 failed 4 times, most recent failure: Lost task 0.3 in "
    "stage 5.0 (TID 33) (192.0.2.2 executor driver): org.apache.spark.memory.SparkOutOfMemoryError: "
    "[AGGREGATE_OUT_OF_MEMORY] No enough memory for aggregation SQLSTATE: 82001\n"
    "\tat org.apache.spark.sql.execution.aggregate.TungstenAggregationIterator.processInputs(x.scala:1)")
# a job aborted as a task's last attempt lost its Python worker while starting it (seen in a fresh
# clone's run of the test that kills every worker: killed between the daemon's fork and its handshake)
ABORTED_FOR_A_WORKER_AT_START = (
    "Job aborted due to stage failure: Task 0 in stage 3.0 failed 4 times, most recent failure: Lost task 0.3 in "
    "stage 3.0 (TID 13) (192.0.2.2 executor driver): java.io.EOFException\n"
    "\tat java.base/java.io.DataInputStream.readInt(DataInputStream.java:386)\n"
    "\tat org.apache.spark.security.SocketAuthHelper.readUtf8(SocketAuthHelper.scala:116)\n"
    "\tat org.apache.spark.security.SocketAuthHelper.authToServer(SocketAuthHelper.scala:101)\n"
    "\tat org.apache.spark.api.python.PythonWorkerFactory.createWorker$1(PythonWorkerFactory.scala:220)\n")
# the lines of PySpark's daemon's trace of a connection the dying JVM broke, which other processes' lines
# may cut apart: frames of the executors' pyspark (from pyspark.zip, which the job's own Python never
# runs), so a trace of the job's own Python still shows by its files' lines
DAEMON_BROKEN_PIPE = re.compile(r"^(?:Traceback \(most recent call last\):|  File .*/pyspark\.zip/pyspark/.*|"
                                r"(?:BrokenPipeError|ConnectionResetError): \[Errno \d+\] .*)\n", re.MULTILINE)
# labelled with the pipeline's stage at work
PROGRESS = re.compile(r"^\[(vocab|train|export)\] working for \d+s: Spark job \d+ has \d+ of \d+ tasks done",
                      re.MULTILINE)
LAST_ROUND = "round=000009"  # the planted run's last round (2 epochs of 4 rounds, after the warm-up round)


def pipeline_command(root: Path, corpus: Path) -> list[str]:
    return [sys.executable, str(JOBS / "pipeline.py"), "--root", str(root), "--input", str(corpus),
            *PLANTED_ARGUMENTS,
            "--set", "spark.master=local[2]", "--set", f"spark.progress_seconds={PROGRESS_SECONDS}"]


def watched_run(command: list[str], directory: Path, name: str, on_commit: Callable) -> tuple[list[int], str, str, int]:
    """Run `command` and call ``on_commit(process, rounds committed so far, stderr so far)`` at each
    round it commits; return the rounds it committed, its stdout, its stderr and its exit code."""
    log = open(directory / f"stderr-{name}.txt", "w+")  # a pipe would fill up and stall the job
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=job_environment(),
                               start_new_session=True)  # its own process group, which a stop signal may target
    committed_rounds, output = [], []
    for line in process.stdout:
        output.append(line)
        committed = COMMITTED.search(line)
        if committed:
            committed_rounds.append(int(committed.group(1)))
            log.seek(0)
            on_commit(process, committed_rounds, log.read())
    returncode = process.wait(timeout=RUN_TIMEOUT)
    log.seek(0)
    return committed_rounds, "".join(output), log.read(), returncode


def descendants(ancestor: int) -> dict[int, tuple[int, bytes]]:
    """``{pid: (parent, command line)}`` of the processes below process `ancestor`."""
    parents, commands = {}, {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
            commands[int(status.parent.name)] = (status.parent / "cmdline").read_bytes()
        except OSError:  # the process ended meanwhile
            continue
        parents[int(status.parent.name)] = int(fields[1])

    def below(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == ancestor:
                return True
        return False

    return {pid: (parent, commands[pid]) for pid, parent in parents.items() if below(pid)}


def python_workers(ancestor: int) -> list[int]:
    """Process ids of the Python workers that Spark's daemons forked, below process `ancestor`."""
    processes, daemon = descendants(ancestor), b"pyspark.daemon"
    return [pid for pid, (parent, command) in processes.items()
            if daemon in command and daemon in processes.get(parent, (0, b""))[1]]


def spark_jvms(ancestor: int) -> list[int]:
    """Process ids of the Spark JVMs (local mode's driver and executors in one) below process `ancestor`."""
    return [pid for pid, (_, command) in descendants(ancestor).items()
            if b"org.apache.spark.deploy.SparkSubmit" in command]


def test_a_run_stopped_by_signals_and_robbed_of_its_workers_ends_with_the_undisturbed_rows(planted_run, tmp_path):
    root = tmp_path / "root"
    command = pipeline_command(root, planted_run["corpus"])
    latest = 0
    # each run resumes the one before; SIGINT to the driver alone, SIGTERM to its process group: the
    # driver, its JVM and Python workers at once (the JVM ignores it and is stopped by the driver)
    for stop_signal, send in ((signal.SIGINT, os.kill), (signal.SIGTERM, os.killpg)):

        def stop(process, committed_rounds, stderr, stop_signal=stop_signal, send=send):
            if len(committed_rounds) == 1:
                send(process.pid, stop_signal)  # lands in the next round's job

        committed_rounds, _, stderr, returncode = watched_run(command, tmp_path, stop_signal.name, stop)
        assert_one_line_ending(returncode, stderr, SIGNAL_EXIT_BASE + stop_signal,
                               f"sgns-spark pipeline: stopped by {stop_signal.name}; ")
        assert not (root / "_LOCK").exists()
        assert not (root / "export").exists()
        assert committed_rounds and committed_rounds[0] == latest + 1, committed_rounds  # resumed, not restarted
        latest = json.loads((root / "model" / "_LATEST").read_text())["round"]
        assert latest >= committed_rounds[-1]

    killed = []

    def kill_workers(process, committed_rounds, stderr):
        if WORKER_CRASH not in stderr:  # until a kill hits a running task
            time.sleep(1.0)  # into the next round's tasks
            for worker in python_workers(process.pid):
                os.kill(worker, signal.SIGKILL)
                killed.append(worker)

    committed_rounds, output, stderr, returncode = watched_run(command, tmp_path, "workers-killed", kill_workers)
    assert returncode == 0, stderr[-3000:]
    assert killed and WORKER_CRASH in stderr, stderr[-3000:]
    assert committed_rounds[0] == latest + 1 and "[export] published version 1" in output
    assert PROGRESS.search(output), output
    ours = read_round_files(root / "model" / LAST_ROUND)
    reference = planted_run["storage"]
    expected = read_round_files(Path(reference.path(f"model/{LAST_ROUND}").removeprefix("file:")))
    for side in ("input", "output"):
        np.testing.assert_array_equal(ours[side][0], expected[side][0])
        np.testing.assert_array_equal(ours[side][1], expected[side][1])


def test_a_driver_jvm_killed_mid_run_ends_the_run_in_one_line_with_its_rounds_kept(planted_run, tmp_path):
    """The system's out-of-memory killer picks the largest process, which the driver's JVM often
    is. The driver then printed Py4J's traces and PySpark's accumulator server's, exit 1. The lock
    stays behind, its holder gone, for the next run to take over (`test_bad_input`)."""
    root = tmp_path / "root"
    killed = []

    def kill_jvm(process, committed_rounds, stderr):
        if len(committed_rounds) == 1:
            killed.extend(spark_jvms(process.pid))
            for jvm in killed:
                os.kill(jvm, signal.SIGKILL)

    committed_rounds, _, stderr, returncode = watched_run(pipeline_command(root, planted_run["corpus"]), tmp_path,
                                                          "jvm-killed", kill_jvm)
    assert len(killed) == 1
    assert_one_line_ending(returncode, stderr, 2, "sgns-spark pipeline: error: Spark's JVM (the driver's) ended "
                                                  "under the job: killed by SIGKILL, most often by the system for "
                                                  "want of memory; what the job committed or published stays")
    assert committed_rounds == [1]
    assert json.loads((root / "model" / "_LATEST").read_text())["round"] == 1
    assert not (root / "export").exists()


def test_a_driver_jvm_out_of_heap_ends_the_run_in_one_line_naming_the_heap(tmp_path):
    """A JVM out of heap stops Spark's context as it exits, and the job's Spark call then failed in
    one of three ways by the race: Py4J's connection broken (the line of a killed JVM), broken while
    the Java exception was read (Py4J's trace), or the job cancelled because the context was shut
    down (Spark's trace, exit 1)."""
    corpus = tmp_path / "corpus.txt"
    generator = np.random.default_rng(1)
    corpus.write_text("\n".join(" ".join(f"w{word}" for word in line)
                                 for line in generator.integers(0, OUT_OF_HEAP_WORDS, (OUT_OF_HEAP_WORDS // 5, 20))))
    command = [sys.executable, str(JOBS / "pipeline.py"), "--root", str(tmp_path / "root"), "--input", str(corpus),
               *[argument for setting in OUT_OF_HEAP_SETTINGS for argument in ("--set", setting)]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=job_environment())
    # a Python worker that wrote to the dying JVM may print its broken pipe: PySpark's daemon does so,
    # in local mode to the job's stderr (README: Checks before any work, and errors)
    assert_one_line_ending(result.returncode, DAEMON_BROKEN_PIPE.sub("", result.stderr), 2,
                           f"sgns-spark pipeline: error: {OUT_OF_HEAP_LINE}")
    assert not (tmp_path / "root" / "export").exists()


def java_error_of_an_aborted_job(spark, message: str = ABORTED_FOR_A_TASKS_HEAP) -> BaseException:
    """A real Java exception, raised through Py4J, whose message holds `message`."""
    with pytest.raises(Exception) as raised:  # noqa: B017 - Py4J's error of a Java exception
        spark._jvm.java.lang.Integer.parseInt(message)
    return raised.value


def test_a_worker_lost_as_it_started_in_a_tasks_last_attempt_is_the_workers_line(spark):
    """The last attempt's failure is an EOFException in the handshake, not Spark's crash message:
    the job ended with Spark's trace, exit 1. An EOFException elsewhere is not a worker's death."""
    error = user_error_of(java_error_of_an_aborted_job(spark, ABORTED_FOR_A_WORKER_AT_START), [])
    assert str(error).startswith("a Python worker died in every attempt of a task")
    elsewhere = ABORTED_FOR_A_WORKER_AT_START.replace("api.python.PythonWorkerFactory", "storage.BlockManager")
    assert user_error_of(java_error_of_an_aborted_job(spark, elsewhere), []) is None


def test_a_job_aborted_for_a_tasks_heap_before_the_jvm_exits_awaits_the_exit_and_names_the_heap(spark):
    """The race's fourth order, seen in CI: a task's OutOfMemoryError aborted the job before the JVM
    exited with Spark's code 52, and the error, which carries it only as text, ended the job with
    Spark's trace, exit 1. Here the driver's JVM is a process that exits with that code."""
    exiting_jvm = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({SPARK_OUT_OF_MEMORY_EXIT})"])
    driver = SimpleNamespace(sparkContext=SimpleNamespace(_gateway=SimpleNamespace(proc=exiting_jvm)))
    assert str(job_error(driver, java_error_of_an_aborted_job(spark), [])).startswith(OUT_OF_HEAP_LINE)


def test_a_failure_no_mapping_names_is_the_jvms_end_where_the_jvm_ends_meanwhile(spark):
    """Spark's own failure as its context stops under the job, in words no mapping knows, ended the
    job with Spark's trace, exit 1, although its JVM was exiting for want of heap."""
    with pytest.raises(Exception) as raised:  # noqa: B017 - Py4J's error of a Java exception
        spark._jvm.java.lang.Integer.parseInt("an unnamed failure")
    exiting_jvm = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({SPARK_OUT_OF_MEMORY_EXIT})"])
    driver = SimpleNamespace(sparkContext=SimpleNamespace(_gateway=SimpleNamespace(proc=exiting_jvm)))
    assert str(job_error(driver, raised.value, [])).startswith(OUT_OF_HEAP_LINE)
    assert job_error(spark, raised.value, []) is None  # a JVM that lives on: the failure's own trace


def test_an_out_of_memory_error_under_a_jvm_that_lives_on_is_the_memory_line(spark, monkeypatch):
    """Where the driver's JVM does not exit (an OutOfMemoryError outside a task), the job's line
    names the memory settings, once the wait for an exit is over."""
    monkeypatch.setattr(session, "JVM_EXIT_WAIT", 0.5)
    assert str(job_error(spark, java_error_of_an_aborted_job(spark), [])) == (
        "Spark ran out of memory (java.lang.OutOfMemoryError); raise spark.driver_memory (under spark-submit: "
        "--driver-memory and spark.executor.memory), or raise train.num_shards so that each task holds fewer rows")


def test_a_task_refused_memory_by_sparks_memory_manager_is_the_memory_line_without_awaiting_the_jvm(spark,
                                                                                                 monkeypatch):
    """Spark's own SparkOutOfMemoryError (its memory manager refusing a task's aggregation a page)
    ended the job with Spark's trace, exit 1, after the wait for a JVM exit that never comes: the
    JVM lives on. Its line names the error and the memory setting, and no wait precedes it."""
    waits = []
    monkeypatch.setattr("sgns_spark.cli.driver_jvm_exit", lambda spark, wait: waits.append(wait))
    error = job_error(spark, java_error_of_an_aborted_job(spark, ABORTED_FOR_A_TASKS_AGGREGATION), [])
    assert str(error) == (
        "Spark's tasks ran out of memory ([AGGREGATE_OUT_OF_MEMORY] No enough memory for aggregation); raise "
        "spark.driver_memory (under spark-submit: spark.executor.memory; in local mode the tasks share the "
        "driver's heap)")
    assert waits == []


def test_a_stop_signal_that_lands_in_a_finalizer_is_sent_again_and_stops_the_job():
    """Python ignores an exception raised in a finalizer (Py4J frees garbage-collected Java objects
    in one), so a signal handled there must be sent again to stop the job."""
    handlers, hook = {number: signal.getsignal(number) for number in STOP_SIGNALS}, sys.unraisablehook
    stop_on_signals(None)
    try:
        class Held:
            pass

        def finalizer(_):  # the signal comes while it runs, and its handler raises here
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100_000):
                pass

        held = Held()
        reference = weakref.ref(held, finalizer)
        with pytest.raises(Stopped) as stopped:
            del held  # the finalizer runs
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.01)
        assert stopped.value.signal_number == signal.SIGTERM and reference() is None
    finally:
        sys.unraisablehook = hook
        for number, handler in handlers.items():
            signal.signal(number, handler)


@pytest.mark.parametrize("master,started", [
    ("local", "local[1,4]"), ("local[2]", "local[2,4]"), ("local[*]", "local[*,4]"),
    ("local[2,1]", "local[2,1]"), ("local-cluster[2,1,1024]", "local-cluster[2,1,1024]"), ("yarn", "yarn"),
])
def test_a_local_master_without_a_failure_count_retries_tasks_as_a_cluster_does(master, started):
    assert with_task_retries(master) == started


def test_python_workers_killed_in_every_attempt_of_a_task_end_the_run_in_one_line(planted_run, tmp_path):
    root = tmp_path / "root"
    log = open(tmp_path / "stderr.txt", "w+")  # a pipe would fill up and stall the job
    process = subprocess.Popen(pipeline_command(root, planted_run["corpus"]), stdout=subprocess.DEVNULL, stderr=log,
                               env=job_environment())
    killed, deadline = 0, time.monotonic() + RUN_TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        for worker in python_workers(process.pid):
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(worker, signal.SIGKILL)
                killed += 1
        time.sleep(KILL_INTERVAL)
    returncode = process.wait(timeout=RUN_TIMEOUT)
    log.seek(0)
    stderr = log.read()
    assert_one_line_ending(returncode, stderr, 2,
                           "sgns-spark pipeline: error: a Python worker died in every attempt of a task")
    assert killed >= LOCAL_TASK_ATTEMPTS
    assert not (root / "_LOCK").exists() and not (root / "reports").exists()
