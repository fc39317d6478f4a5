"""Progress lines: a running Spark job's tasks and stages, read from Spark's status tracker."""

import re
import threading
import time
from types import SimpleNamespace

from sgns_spark.progress import Progress, elapsed_text

TASK_SECONDS = 1.5  # each of the job's tasks sleeps this long
TASKS = 4
INTERVAL = 0.4  # seconds between progress lines
LINE = re.compile(r"\[train\] working for (\d+)s: Spark job (\d+) has (\d) of 4 tasks done \((\d) of 1 stages\), "
                  r"(\d) running")


def test_elapsed_time_reads_in_seconds_minutes_or_hours():
    assert [elapsed_text(seconds) for seconds in (0, 45.9, 125, 3600 + 125)] == ["0s", "45s", "2m05s", "1h02m"]


def test_a_running_jobs_tasks_are_printed_while_it_runs(spark, capsys):
    with Progress(spark, "train", INTERVAL) as progress:
        spark.sparkContext.parallelize(range(TASKS), TASKS).foreach(lambda _: time.sleep(TASK_SECONDS))
        ran = spark.sparkContext.statusTracker().getJobIdsForGroup()
    assert not progress.thread.is_alive()  # its reporting ends with the context
    lines = capsys.readouterr().out.splitlines()
    found = [LINE.fullmatch(line) for line in lines]
    assert lines and all(found), lines
    assert {int(match.group(2)) for match in found} == {max(ran)}  # the job that ran
    # Spark's tracker is fed by its listener bus, a second or two behind the tasks (measured): the
    # counts only grow, and some line sees tasks running
    done = [int(match.group(3)) for match in found]
    assert done == sorted(done) and max(int(match.group(5)) for match in found) > 0, lines
    elapsed = [int(match.group(1)) for match in found]
    assert elapsed == sorted(elapsed) and elapsed[-1] >= TASK_SECONDS, lines


def test_no_line_when_progress_is_off(spark, capsys):
    with Progress(spark, "train", 0):
        spark.sparkContext.parallelize(range(2), 2).foreach(lambda _: time.sleep(2 * INTERVAL))
    assert capsys.readouterr().out == ""


def test_a_job_of_several_stages_labels_each_and_counts_its_time_from_its_start(spark, capsys):
    with Progress(spark, "vocab", INTERVAL) as progress:
        spark.sparkContext.parallelize(range(TASKS), TASKS).foreach(lambda _: time.sleep(TASK_SECONDS))
        progress.begin("train")
        spark.sparkContext.parallelize(range(TASKS), TASKS).foreach(lambda _: time.sleep(TASK_SECONDS))
    lines = capsys.readouterr().out.splitlines()
    labels = [line.split("]")[0] + "]" for line in lines]
    assert labels == sorted(labels, key=["[vocab]", "[train]"].index) and set(labels) == {"[vocab]", "[train]"}, lines
    found = [LINE.fullmatch(line) for line in lines if line.startswith("[train]")]
    assert all(found) and int(found[0].group(1)) < TASK_SECONDS, lines  # counted from the second stage's start


def test_a_jvm_that_ended_under_the_job_ends_the_reporting_silently(monkeypatch, capsys):
    """Py4J's new connection to a JVM killed under the job is refused with a ConnectionRefusedError,
    not a Py4JError: the reporter's thread once died of it, printing its trace above the job's line."""
    def refused():
        raise ConnectionRefusedError(111, "Connection refused")

    thread_errors = []
    monkeypatch.setattr(threading, "excepthook", thread_errors.append)
    session_of_an_ended_jvm = SimpleNamespace(sparkContext=SimpleNamespace(statusTracker=refused))
    with Progress(session_of_an_ended_jvm, "train", INTERVAL) as progress:
        progress.thread.join(4 * INTERVAL)
        assert not progress.thread.is_alive()  # it ended at its first call, before the job did
    assert thread_errors == [] and capsys.readouterr() == ("", "")
