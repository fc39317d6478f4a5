"""What every job shares: its arguments, its checks before any work, its session, and how a
user error ends it (one line on stderr, exit code 2, no trace unless asked for), and how a stop
signal does (one line on stderr, exit code 128 + the signal's number)."""

from __future__ import annotations

import argparse
import errno
import functools
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from py4j.protocol import Py4JNetworkError
from pyspark.sql import SparkSession

from sgns_spark.config import Config, load_config
from sgns_spark.errors import JvmEndedError, UserError, java_causes, jvm_gone, python_causes
from sgns_spark.lock import RunLock
from sgns_spark.preflight import (
    CorpusInput,
    check_local_files,
    check_root_outside,
    corpus_input,
    damaged_file,
    unreadable_file,
)
from sgns_spark.progress import Progress
from sgns_spark.session import (
    DEBUG_LEVEL,
    STOPPED_CONTEXT,
    build_session,
    driver_jvm_exit,
    drop_interrupted_call,
)
from sgns_spark.storage import Storage
from sgns_spark.train.warm_start import run_parent

EXIT_USER_ERROR = 2
TRAINING_STAGES = ("train", "pipeline")  # the jobs whose settings name a warm start's parent
OUT_OF_MEMORY = "java.lang.OutOfMemoryError"
# Spark's memory manager refusing a task the memory it asked for (a page of an aggregation or a sort),
# with its error class and message: Spark throws it, the task fails and the JVM lives on
TASK_OUT_OF_MEMORY = re.compile(
    r"org\.apache\.spark\.memory\.SparkOutOfMemoryError: ([^\r\n]+?)(?: SQLSTATE: \w+)?$", re.MULTILINE)
DISK_FULL = "No space left on device"
# a file system of --input, --root or a warm start's parent that does not answer (an HDFS name node
# that is down, a wrong host or port), and Hadoop's "Call From <client> to <server> failed" naming it
UNREACHABLE = re.compile(r"java\.net\.(ConnectException|UnknownHostException|NoRouteToHostException)")
UNREACHABLE_SERVER = re.compile(r" to (\S+) failed on ")
WORKER_CRASH = "Python worker exited unexpectedly"  # Spark's message for a task whose Python worker died
# a Python worker killed as it started: the JVM's handshake with it read the end of its socket, and
# a job aborted for that carries the frames of the task's failure in its message
WORKER_START_CRASH = re.compile(
    r"java\.io\.EOFException(?:\s+at \S+)*?\s+at org\.apache\.spark\.api\.python\.PythonWorkerFactory\.")
# a Python worker's import that failed: its interpreter lacks sgns-spark or a package it needs
WORKER_IMPORT = re.compile(r"(?:ModuleNotFoundError|ImportError): ([^\r\n]+)")
# PySpark's refusal of executors whose Python is another minor version than the driver's
WORKER_VERSION = re.compile(r"Python in worker has different version:? (\S+) than that in driver:? ([\d.]+)")
SIGNAL_EXIT_BASE = 128  # a job stopped by signal N exits 128 + N, as a shell reports a process a signal ended
# Spark's messages for a call on a context stopped under it: the jobs it cancels as it stops, a job
# started as it stops, and any call once it has
CONTEXT_SHUT_DOWN = re.compile(rf"SparkContext was shut down|SparkContext has been shutdown|{STOPPED_CONTEXT}")
# seconds a failure that no mapping names waits for the driver's JVM to end, before its trace
UNNAMED_FAILURE_EXIT_WAIT = 5.0
SPARK_OUT_OF_MEMORY_EXIT = 52  # Spark's exit code for an OutOfMemoryError no task caught (SparkExitCode.OOM)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; a scheduler's timeout, a pod's or node's shutdown
QUIET_STOP_LEVEL = "OFF"  # Spark's log level while a stop signal stops it
# seconds before a swallowed stop signal is sent again: enough for the hook that sends it to return first
REDELIVERY_DELAY = 0.01


class Stopped(BaseException):
    """A stop signal, raised in the main thread wherever it was. A BaseException, as
    KeyboardInterrupt is, so that no ``except Exception`` of ours or Spark's catches it."""

    def __init__(self, signal_number: int):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


def stop_on_signals(spark: SparkSession | None) -> None:
    """Raise `Stopped` on a stop signal from now on (replacing the SIGINT handler a SparkContext
    installs, which calls the JVM on the connection whose call it interrupted), and send a signal
    again where Python swallowed its `Stopped` (`redeliver_swallowed_stop`)."""
    for number in STOP_SIGNALS:
        signal.signal(number, functools.partial(raise_stopped, spark))
    sys.unraisablehook = redeliver_swallowed_stop


def redeliver_swallowed_stop(unraisable) -> None:
    """``sys.unraisablehook``: send again the signal of a `Stopped` that Python could not raise.

    A signal's handler runs wherever the main thread is, and when that is a finalizer (Py4J's
    callback that frees a garbage-collected Java object runs one often), Python prints the
    exception as ignored and goes on: the job then ran to its end as if never stopped (seen with a
    SIGTERM sent to a training job). The signal is sent again from another thread after
    `REDELIVERY_DELAY`, once this hook has returned, so that its handler runs in the code the main
    thread goes back to (and should that be a finalizer again, it comes back here). Any other
    exception goes to Python's hook.
    """
    if isinstance(unraisable.exc_value, Stopped):
        redelivery = threading.Timer(REDELIVERY_DELAY, os.kill, (os.getpid(), unraisable.exc_value.signal_number))
        redelivery.daemon = True
        redelivery.start()
    else:
        sys.__unraisablehook__(unraisable)


def end_on_signals() -> None:
    """From now on a stop signal ends the process at once: a job that is already ending is not
    cut short in its cleanup by a second exception."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_DFL)


def raise_stopped(spark: SparkSession | None, signal_number: int, frame) -> None:
    """A stop signal's handler: the main thread's interrupted JVM call is dropped, so the lock's
    release and Spark's stop can still call the JVM."""
    if spark is not None:
        drop_interrupted_call(spark)
    raise Stopped(signal_number)


@dataclass(frozen=True)
class Job:
    """What a job's body works with, all checked before it starts."""

    spark: SparkSession
    config: Config
    storage: Storage
    corpus: CorpusInput | None
    progress: Progress  # its lines name the job; a job of several stages names each as it begins


def job_arguments(description: str, needs_input: bool = False) -> argparse.ArgumentParser:
    """Return the argument parser every job starts from."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", required=True, help="run root: local path or Hadoop URI")
    parser.add_argument("--config", help="TOML config file (see conf/default.toml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one setting; repeatable",
    )
    parser.add_argument("--debug", action="store_true", help="print the trace of a user error too")
    if needs_input:
        parser.add_argument("--input", required=True, help="text corpus: file, directory or glob, any Hadoop URI")
    return parser


def run_job(stage: str, arguments: argparse.Namespace, body: Callable[[Job], None]) -> None:
    """Check the settings, the input and the run root, take the root's lock, then run `body`.

    A user error, or a Spark failure that is one (`job_error`), ends the job with one line
    naming the problem and what to change, as the last line on stderr, and exit code 2. SIGINT
    or SIGTERM stops Spark and ends it with one line and exit code 128 + the signal's number: the
    lock is released, and what is committed or published stays, so a rerun resumes.
    """
    debug = arguments.debug
    spark = None
    roots: list[Storage] = []  # where a file that fails to read is a damaged file (`read_roots`)
    stop_on_signals(None)
    try:
        config = load_config(arguments.config, arguments.overrides)
        debug = debug or config.spark.log_level == DEBUG_LEVEL
        check_local_files(config)
        spark = build_session(config, stage)
        stop_on_signals(spark)
        storage = Storage(spark, arguments.root)
        corpus = corpus_input(spark, arguments.input) if getattr(arguments, "input", None) else None
        if corpus is not None:
            check_root_outside(corpus, storage)
        roots = read_roots(spark, stage, config, storage)
        storage.check_writable()
        with RunLock(storage, stage), Progress(spark, stage, config.spark.progress_seconds) as progress:
            try:
                body(Job(spark, config, storage, corpus, progress))
            except Exception:
                discard_staging(storage)  # while the lock is held: the staging is this job's alone
                raise
    except Exception as error:  # noqa: BLE001 - anything that is not a user error is raised again
        user_error = job_error(spark, error, roots)
        if user_error is None:
            raise
        end_on_signals()
        if debug:
            traceback.print_exc()
        if spark is not None and not isinstance(user_error, JvmEndedError):
            spark.stop()  # Spark's own lines about the failure come before ours
        print(f"sgns-spark {stage}: error: {user_error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except (Stopped, KeyboardInterrupt) as stop:
        end_on_signals()
        signal_number = stop.signal_number if isinstance(stop, Stopped) else signal.SIGINT
        if spark is not None:
            if not debug:  # Spark's lines about the tasks and jobs its stop cuts short say nothing more
                spark.sparkContext.setLogLevel(QUIET_STOP_LEVEL)
            spark.stop()
        print(f"sgns-spark {stage}: stopped by {signal.Signals(signal_number).name}; the stages it finished, the "
              "model rounds it committed and the versions it published stay, and nothing half-written is "
              "published: rerun the same command to resume", file=sys.stderr, flush=True)
        sys.exit(SIGNAL_EXIT_BASE + signal_number)


def jvm_end_error(jvm_exit: int | None) -> JvmEndedError:
    """The user error of the driver's JVM ending under the job, by how it ended where that is known
    (`driver_jvm_exit`): its heap ran out, a signal killed it, or either."""
    ended = "Spark's JVM (the driver's) ended under the job"
    kept = "what the job committed or published stays, so rerun the same command to resume"
    if jvm_exit == SPARK_OUT_OF_MEMORY_EXIT:
        return JvmEndedError(f"{ended}: its heap ran out ({OUT_OF_MEMORY}); {kept}, with a larger "
                             "spark.driver_memory (under spark-submit --driver-memory; in local mode the "
                             "executors' tasks share the driver's heap)")
    if jvm_exit is not None and jvm_exit < 0:
        return JvmEndedError(f"{ended}: killed by {signal.Signals(-jvm_exit).name}, most often by the system for "
                             f"want of memory; {kept}, with more free memory on this machine")
    return JvmEndedError(f"{ended}: killed, most often by the system for want of memory, or crashed; {kept}, "
                         "with more memory for the driver (spark.driver_memory, under spark-submit --driver-memory) "
                         "or more free memory on this machine")


def discard_staging(storage: Storage) -> None:
    """Remove what a failing job half-wrote in its run root's staging directory (a model round, a
    version being exported), so that a job that failed for a full disk frees the space it took
    rather than holding it until the next run on the root. Nothing there is committed or published.
    Best effort: where the file system itself failed, the next run on the root clears it first."""
    try:
        storage.clear_staging()
    except Exception:  # noqa: BLE001 - the job's own error is the one it ends with
        pass


def first_match(pattern: re.Pattern, texts: list[str]) -> re.Match | None:
    """`pattern`'s match in the first of `texts` that holds one, or None."""
    return next((found for text in texts if (found := pattern.search(text))), None)


def out_of_memory(causes: list[tuple[str, str]]) -> bool:
    """Whether a Java error's `causes` (`java_causes`) are an ``OutOfMemoryError``, as one of them or
    named in a message: a job aborted for a task's carries it as text."""
    return any(name == OUT_OF_MEMORY or OUT_OF_MEMORY in message for name, message in causes)


def read_roots(spark: SparkSession, stage: str, config: Config, storage: Storage) -> list[Storage]:
    """The roots whose files a job reads: its run root (`storage`), and for a training job a warm
    start's parent version, which is resolved and checked here, before any work (`run_parent`)."""
    if stage in TRAINING_STAGES and config.train.warm_start_from:
        return [storage, run_parent(spark, config, storage).storage(spark)]
    return [storage]


def job_error(spark: SparkSession | None, error: BaseException, roots: Sequence[Storage]) -> UserError | None:
    """The user error a job ends with for `error` (`user_error_of`), or a `JvmEndedError` where the
    driver's JVM ended under the job. A JVM out of heap, by the race between its exit and the job's
    Spark call, breaks Py4J's connection in the job or while the Java exception is read, or shuts
    Spark's context down under the job, or aborts the job with a task's ``OutOfMemoryError``
    before it exits; for that last, the JVM's exit is awaited. A failure that no mapping names
    waits `UNNAMED_FAILURE_EXIT_WAIT` for that exit too, and is None (its trace) where none comes."""
    try:
        causes = java_causes(error)
        ended = bool(jvm_gone(error) or first_match(CONTEXT_SHUT_DOWN, [message for _, message in causes]))
        user_error = None if ended else user_error_of(error, roots)
    except (Py4JNetworkError, ConnectionError):  # the JVM ended while its exception was read
        causes, ended, user_error = [], True, None
    # what may be the JVM's end: a failure that says so, an OutOfMemoryError, or one no mapping names
    if not ended and (spark is None or (user_error is not None and not out_of_memory(causes))):
        return user_error
    wait = None if ended or user_error is not None else UNNAMED_FAILURE_EXIT_WAIT  # None: JVM_EXIT_WAIT
    jvm_exit = None if spark is None else driver_jvm_exit(spark, wait)
    return jvm_end_error(jvm_exit) if ended or jvm_exit is not None else user_error


def user_error_of(error: BaseException, roots: Sequence[Storage]) -> UserError | None:
    """The user error a job ends with for `error`, a failure while the driver's JVM lives: itself if
    it is one, else the user error a Spark failure stands for, or None for a failure of ours. A file
    Spark could not read is a damaged file of the first of `roots` it lies below (the run root, a
    warm start's parent), else an input file."""
    if isinstance(error, UserError):
        return error
    damage = damaged_file(error, roots)
    if damage is not None:
        return damage
    unreadable = unreadable_file(error)
    if unreadable is not None and unreadable.removed:
        return UserError(f"input file {unreadable.path} cannot be read ({unreadable.reason}): the input changed "
                         "while the job read it; rerun once it no longer changes (a scheduled run: on a complete "
                         "directory, written elsewhere and moved into place)")
    if unreadable is not None:
        return UserError(f"input file {unreadable.path} cannot be read ({unreadable.reason}); fix or remove it, "
                         "or set corpus.skip_corrupt_files=true to skip such files")
    causes = java_causes(error)
    messages = [message for _, message in causes]
    if out_of_memory(causes):
        return UserError(f"Spark ran out of memory ({OUT_OF_MEMORY}); raise spark.driver_memory (under spark-submit: "
                         "--driver-memory and spark.executor.memory), or raise train.num_shards so that each task "
                         "holds fewer rows")
    refused = first_match(TASK_OUT_OF_MEMORY, [f"{name}: {message}" for name, message in causes])
    if refused is not None:
        return UserError(f"Spark's tasks ran out of memory ({refused.group(1)}); raise spark.driver_memory (under "
                         "spark-submit: spark.executor.memory; in local mode the tasks share the driver's heap)")
    if any(WORKER_CRASH in message or WORKER_START_CRASH.search(message) for message in messages):
        return UserError("a Python worker died in every attempt of a task (killed, most often by the system for "
                         "want of memory); give the workers more memory (on a cluster spark.executor.memory and "
                         "spark.executor.pyspark.memory, locally free memory on this machine) or raise "
                         "train.num_shards, so that each task holds fewer rows")
    missing = first_match(WORKER_IMPORT, messages)
    if missing is not None:
        return UserError(f"the executors' Python cannot import what sgns-spark needs ({missing.group(1)}); run them "
                         "on a Python that has sgns-spark, numpy and pyarrow: PYSPARK_PYTHON or spark.pyspark.python, "
                         "on a cluster the packed environment (make package, README: Running on a cluster)")
    versions = first_match(WORKER_VERSION, messages)
    if versions is not None:
        return UserError(f"the executors' Python is {versions.group(1)} and the driver's {versions.group(2)}, and "
                         "PySpark needs one minor version on both; point PYSPARK_PYTHON or spark.pyspark.python (the "
                         "executors') and PYSPARK_DRIVER_PYTHON (the driver's) at one Python version")
    unreachable = first_match(UNREACHABLE, [f"{name} {message}" for name, message in causes])
    if unreachable is not None:
        server = UNREACHABLE_SERVER.search(" ".join(messages))
        return UserError(f"a file system {'at ' + server.group(1) + ' ' if server else ''}cannot be reached "
                         f"({unreachable.group(1)}: {causes[-1][1]}); check the host and port of --input, --root "
                         "and train.warm_start_from, and that the file system is up")
    if any(DISK_FULL in message for message in messages) or any(
            isinstance(cause, OSError) and cause.errno == errno.ENOSPC for cause in python_causes(error)):
        return UserError("a disk filled up (No space left on device); free space under the run root "
                         "and spark.local.dir, or choose another --root")
    return None
