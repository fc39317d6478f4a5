"""Progress lines while Spark works: a stage prints its summary only when it ends, and a training
job only at each commit, so a large corpus would leave a job's log silent for many minutes.

While a Spark job runs, the driver prints one line every ``spark.progress_seconds``, read from
Spark's status tracker (what its UI shows, without the UI):

    [train] working for 2m00s: Spark job 12 has 14 of 24 tasks done (5 of 12 stages), 2 running
"""

from __future__ import annotations

import threading
import time

from pyspark.sql import SparkSession

from sgns_spark.errors import JVM_CALL_ENDED

SECONDS_PER_MINUTE = 60
STOP_WAIT_SECONDS = 5.0  # how long the end of a job waits for the reporter's last status call


def elapsed_text(seconds: float) -> str:
    """``45s``, ``2m05s`` or ``1h02m``."""
    minutes, whole_seconds = divmod(int(seconds), SECONDS_PER_MINUTE)
    hours, minutes = divmod(minutes, SECONDS_PER_MINUTE)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{whole_seconds:02d}s" if minutes else f"{whole_seconds}s"


def job_lines(spark: SparkSession, stage: str, elapsed: float) -> list[str]:
    """One line per running Spark job, `elapsed` seconds into the work of `stage`: the job's
    tasks and stages done."""
    tracker = spark.sparkContext.statusTracker()
    lines = []
    for job_id in sorted(tracker.getActiveJobsIds()):
        job = tracker.getJobInfo(job_id)  # None once the job has ended
        stages = [info for info in map(tracker.getStageInfo, job.stageIds if job else ()) if info is not None]
        if not stages:
            continue
        tasks = sum(info.numTasks for info in stages)
        done = sum(info.numCompletedTasks for info in stages)
        stages_done = sum(info.numCompletedTasks >= info.numTasks for info in stages)
        running = sum(info.numActiveTasks for info in stages)
        lines.append(f"[{stage}] working for {elapsed_text(elapsed)}: Spark job {job_id} has {done:,} of "
                     f"{tasks:,} tasks done ({stages_done} of {len(stages)} stages), {running} running")
    return lines


class Progress:
    """A context that prints `job_lines` every `interval` seconds from a daemon thread (none when
    `interval` is 0), labelled with the stage at work and the time counted from its start (the
    context's creation, then each `begin`). It adds nothing but the lines: a status call that
    fails because the JVM is gone ends the reporting, silently, and never the job."""

    def __init__(self, spark: SparkSession, stage: str, interval: float):
        self.spark, self.interval = spark, interval
        self.stopped = threading.Event()
        self.begin(stage)
        self.thread = threading.Thread(target=self._report, name="sgns-spark-progress", daemon=True)

    def begin(self, stage: str) -> None:
        """Label the lines from now on with `stage`, and count their time from now (a job of
        several stages, such as the pipeline, calls it as each one starts)."""
        self.current = (stage, time.monotonic())  # one assignment, so the reporter never sees half of it

    def __enter__(self) -> Progress:
        if self.interval > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(STOP_WAIT_SECONDS)

    def _report(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                stage, started = self.current
                lines = job_lines(self.spark, stage, time.monotonic() - started)
            # the JVM is gone: a job ends before the context does (`run_job`), or the JVM ended under
            # it, and Py4J's new connection to it is refused
            except JVM_CALL_ENDED:
                return
            if not self.stopped.is_set():
                for line in lines:
                    print(line, flush=True)
