"""Build the SparkSession every job runs in, from the [spark] settings, or say in one line why it
did not start; keep the JVM it starts through a stop signal sent to the whole process group;
leave its JVM connection usable after a signal interrupted a call on it; and keep PySpark's and
Py4J's own traces of a full disk or a lost JVM from standing above the job's one line."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from py4j.protocol import Py4JJavaError, Py4JNetworkError
from pyspark import Broadcast, SparkContext
from pyspark.errors import PySparkRuntimeError
from pyspark.sql import SparkSession

from sgns_spark.config import Config
from sgns_spark.errors import UserError, java_causes
from sgns_spark.memory import local_driver_memory

LOCAL_MASTER = "local[*]"
LOCAL_WITHOUT_FAILURES = re.compile(r"local(?:\[(\d+|\*)\])?")  # "local", "local[4]", "local[*]"
# attempts of a task before its job fails, in local mode as on a cluster (spark.task.maxFailures's
# default there); Spark's local mode otherwise fails the job on a task's first failure
LOCAL_TASK_ATTEMPTS = 4
QUIET_LOGGING = Path(__file__).with_name("log4j2.properties")  # messages without stack traces
DEBUG_LEVEL = "DEBUG"
# One BLAS thread per Python worker: Spark already runs one task per core, and more threads
# would oversubscribe the executor (and make a task's float sums depend on the thread count).
WORKER_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# bytes per Arrow batch handed to Python at most, whatever ``spark.arrow_batch_rows`` allows: the
# corpus's lines are records of up to 1 MiB (`sgns_spark.tokenize.MAX_LINE_BYTES`)
ARROW_BATCH_BYTES = 8 << 20
# the chunk of a block that Spark's storage memory keeps serialized (a round's pairs, a job's
# sources): its default, 1 MiB, plus the array's header is just over G1's 1 MiB region (heaps below
# 4g) and takes two; over a 2 MiB region's half (heaps below 8g) it takes a whole one. So the cached
# pairs filled twice their bytes of heap, and a 2g local driver training a 1 GB corpus ran out of
# heap, 1,217 of its 2,048 regions humongous after a full collection (measured). A chunk a little
# under 1 MiB fits one region.
STORAGE_CHUNK_BYTES = (1 << 20) - (1 << 10)
JVM_STOP_SIGNAL = "TERM"  # the stop signal the driver's own JVM ignores (PySpark makes it ignore INT)
YARN_MASTER = "yarn"
# where a YARN client finds the cluster's configuration; spark-submit refuses master "yarn" without one
YARN_CONFIGURATION = ("HADOOP_CONF_DIR", "YARN_CONF_DIR")
JVM_EXITED = "JAVA_GATEWAY_EXITED"  # PySpark's error class for a JVM that ended before it connected
# seconds to wait for the exit status of a driver JVM that ends under the job: its exit runs Spark's
# shutdown hooks (the context's stop), which a loaded machine slows; a JVM that has ended answers at once
JVM_EXIT_WAIT = 30.0
# the message of a SparkContext that its scheduler backend stopped as it started: a standalone
# master that never answered ("All masters are unresponsive"), or one that removed the application
STOPPED_CONTEXT = "stopped SparkContext"
START_REMEDY = {  # what to check when a session does not start, by kind of master
    "cluster": "check that the cluster manager is up and reachable from this host, or change spark.master",
    "local": "check this host's Spark settings (spark-defaults.conf, SPARK_LOCAL_IP)",
}


def build_session(config: Config, stage: str) -> SparkSession:
    """Return a SparkSession named after the job stage.

    Under spark-submit the master and resources come from spark-submit; run with plain
    ``python`` the session starts a local JVM, and its Python workers use this interpreter;
    unless ``spark.log_level`` is DEBUG, that JVM logs exceptions by their message only
    (`QUIET_LOGGING`), so a job's own one-line error is not buried under Java traces.

    Parameters
    ----------
    config : Config
    stage : str
        The job's stage name, appended to ``spark.app_name``.
    """
    settings = config.spark
    launched_by_spark_submit = "SPARK_SUBMIT" in os.environ or "PYSPARK_GATEWAY_PORT" in os.environ
    builder = SparkSession.builder.appName(f"{settings.app_name}-{stage}")
    master = settings.master or ("" if launched_by_spark_submit else LOCAL_MASTER)
    if master:
        builder = builder.master(with_task_retries(master))
    for name, value in WORKER_ENVIRONMENT.items():
        builder = builder.config(f"spark.executorEnv.{name}", value)
    if not launched_by_spark_submit:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        for name, value in WORKER_ENVIRONMENT.items():  # local mode's workers inherit the driver's
            os.environ.setdefault(name, value)
        builder = builder.config("spark.driver.memory", settings.driver_memory or local_driver_memory())
        if settings.log_level != DEBUG_LEVEL:
            builder = builder.config("spark.driver.extraJavaOptions",
                                     f"-Dlog4j2.configurationFile={QUIET_LOGGING.as_uri()}")
    builder = (
        builder.config("spark.sql.shuffle.partitions", str(settings.shuffle_partitions))
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(settings.arrow_batch_rows))
        .config("spark.sql.execution.arrow.maxBytesPerBatch", str(ARROW_BATCH_BYTES))
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.storage.unrollMemoryThreshold", str(STORAGE_CHUNK_BYTES))
        .config("spark.ui.showConsoleProgress", "false")
    )
    if not launched_by_spark_submit:
        check_yarn_configuration(master)
    named = f"spark.master = {master!r}" if master else "spark-submit's master"
    try:
        spark = builder.getOrCreate()
    except PySparkRuntimeError as error:
        if error.getCondition() != JVM_EXITED:
            raise
        raise UserError(f"Spark's JVM ended as it started, with {named} (its own lines above say why); check "
                        "spark.master, and JAVA_HOME or the java on PATH (Java 17 or later)") from error
    except Py4JJavaError as error:
        raise UserError(f"Spark could not start on {named} ({start_failure(error)}; Spark's lines above say "
                        f"more); {START_REMEDY['local' if master.startswith('local') else 'cluster']}") from error
    spark.sparkContext.setLogLevel(settings.log_level)
    keep_jvm_through_stop_signals(spark)
    quiet_jvm_loss(spark)
    return spark


def broadcast(context: SparkContext, value: object) -> Broadcast:
    """``context.broadcast(value)`` without PySpark's own print of a trace when the value cannot be
    written (a full disk under spark.local.dir): PySpark prints the trace to stderr, then raises,
    so it stood above the job's one-line error. The error it raises keeps its cause, an ``OSError``,
    so a failure that is not a user error still ends with the whole trace."""
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        shared = context.broadcast(value)
    sys.stderr.write(printed.getvalue())  # nothing, unless another thread wrote meanwhile
    return shared


class JvmLossFilter(logging.Filter):
    """Drops a log record of a broken connection to the JVM (Py4J logs one, trace and all, on the
    root logger as each call fails)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], Py4JNetworkError | ConnectionError))


def quiet_jvm_loss(spark: SparkSession) -> None:
    """Keep Py4J and PySpark's accumulator server from printing traces when the JVM ends under the
    job (killed, most often by the system for want of memory): the job's own line says so
    (`sgns_spark.cli.job_error`). Their other errors still print. The accumulator server, a
    ``socketserver``, prints every handler's error, here the end of the JVM's connection to it."""
    root_logger = logging.getLogger()
    if not any(isinstance(found, JvmLossFilter) for found in root_logger.filters):
        root_logger.addFilter(JvmLossFilter())
    server = spark.sparkContext._accumulatorServer
    print_error = server.handle_error

    def handle_error(request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], EOFError | ConnectionError):
            print_error(request, client_address)

    server.handle_error = handle_error


def driver_jvm_exit(spark: SparkSession, wait: float | None = None) -> int | None:
    """How the driver's JVM ended under the job: its exit code, or minus the signal that ended it (as
    `subprocess` gives it); None where this process did not start it (under spark-submit the JVM
    starts the job's Python) or it has not ended within `wait` seconds (`JVM_EXIT_WAIT` unless given)."""
    process = getattr(spark.sparkContext._gateway, "proc", None)
    if process is None:
        return None
    try:
        return process.wait(timeout=JVM_EXIT_WAIT if wait is None else wait)
    except subprocess.TimeoutExpired:
        return None


def check_yarn_configuration(master: str) -> None:
    """Refuse master "yarn" where no ``HADOOP_CONF_DIR`` or ``YARN_CONF_DIR`` says where the cluster
    is: spark-submit would end the JVM with a Java trace before the job could say why."""
    if master == YARN_MASTER and not any(os.environ.get(name) for name in YARN_CONFIGURATION):
        raise UserError("spark.master = 'yarn' needs HADOOP_CONF_DIR or YARN_CONF_DIR in the environment, naming "
                        "the directory of the cluster's client configuration (yarn-site.xml); set one, or submit "
                        "the job with spark-submit --master yarn")


def start_failure(error: Py4JJavaError) -> str:
    """Why a Spark session did not start: its innermost Java cause (an API server that refused the
    connection, say), or for a context that its scheduler stopped as it started, that."""
    causes = java_causes(error)
    name, message = causes[-1] if causes else ("", str(error))
    if STOPPED_CONTEXT in message:
        return "the cluster manager ended the application as it started"
    return f"{name.rsplit('.', 1)[-1]}: {message.splitlines()[0] if message else ''}".strip(": ")


def keep_jvm_through_stop_signals(spark: SparkSession) -> None:
    """Make the JVM ignore SIGTERM where the driver started it (plain ``python``), as PySpark
    makes it ignore SIGINT.

    systemd's stop, ``timeout`` and ``kill -- -PGID`` send SIGTERM to the whole process group at
    once. The JVM then died under the driver's cleanup, which printed Py4J's traces instead of the
    job's one line and left the lock behind. Ignoring it, the JVM is stopped by the driver, which
    catches the signal, and it still never outlives the driver: PySpark's gateway exits when its
    stdin, the driver's pipe, closes. Under spark-submit the JVM is the driver's parent and keeps
    its own handling.
    """
    gateway = spark.sparkContext._gateway
    if getattr(gateway, "proc", None) is None:  # the JVM was not started by this process
        return
    signals = gateway.jvm.sun.misc
    signals.Signal.handle(signals.Signal(JVM_STOP_SIGNAL), signals.SignalHandler.SIG_IGN)


def with_task_retries(master: str) -> str:
    """`master`, or where it is a local master without a failure count, the same with
    `LOCAL_TASK_ATTEMPTS` ("local[2]" becomes "local[2,4]"): a Python worker that dies once (the
    kernel's out-of-memory killer, say) costs a retried task, not the run, as on a cluster. A
    retried task gives identical rows (`sgns_spark.train.task`)."""
    local = LOCAL_WITHOUT_FAILURES.fullmatch(master)
    if local is None:
        return master
    return f"local[{local.group(1) or 1},{LOCAL_TASK_ATTEMPTS}]"


def drop_interrupted_call(spark: SparkSession) -> None:
    """Close this thread's connection to the driver's JVM, where a signal may have interrupted a
    call before its answer came: in PySpark's pinned-thread mode (its default) Py4J keeps one
    connection per thread, and the thread's next call would read that answer as its own. The next
    call opens a new connection. (Without pinning, an interrupted connection never returns to Py4J's
    pool, and there is nothing to close.)"""
    client = spark.sparkContext._gateway._gateway_client
    connection = client.get_thread_connection() if hasattr(client, "get_thread_connection") else None
    if connection is not None:
        connection.close()
