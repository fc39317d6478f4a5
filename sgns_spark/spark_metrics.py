"""What Spark itself measured of a stage's jobs, read from its status REST API (the UI's
``/api/v1``), never from our own counters.

Spark names a stage after the call that created its last RDD, ``partitionBy at <file>:<line>``;
the caller's module tells what a stage shuffles (`job_group_metrics`'s ``kinds``). The figures
of a job group are its stage count, shuffle bytes (by kind), summed task time, and the
critical path: the sum over stages of their slowest task, plus the time the driver ran no stage.
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.request
from collections import defaultdict
from datetime import datetime

from pyspark.sql import SparkSession

REQUEST_TIMEOUT_SECONDS = 30
MILLISECONDS = 1000.0  # in a second: Spark's durations and Hadoop's file times are in milliseconds
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%Z"


def _get(url: str):
    """The JSON at `url`."""
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_SECONDS) as response:  # noqa: S310 - the driver's own UI
        return json.loads(response.read())


def _application_url(spark: SparkSession) -> str | None:
    """The application's REST API, or None when the UI (spark.ui.enabled) is off."""
    context = spark.sparkContext
    return f"{context.uiWebUrl}/api/v1/applications/{context.applicationId}" if context.uiWebUrl else None


def _warm(url: str) -> None:
    try:
        _get(url)
    # the real request, later, reports any failure; a JVM that ends mid-answer cuts the answer short
    except (OSError, ValueError, http.client.HTTPException):
        pass


def warm_up(spark: SparkSession) -> None:
    """Start the UI's REST API in the background while jobs run: its first request takes about
    1.6 s (the API initializes lazily), the later ones 10 to 200 ms."""
    base = _application_url(spark)
    if base:
        threading.Thread(target=_warm, args=(f"{base}/jobs",), daemon=True).start()


def _time(text: str) -> float:
    return datetime.strptime(text.replace("GMT", "UTC"), TIME_FORMAT).timestamp()


def job_group_metrics(spark: SparkSession, group: str, kinds: dict[str, str]) -> dict | None:
    """Spark's figures for the jobs of `group`, or None when the UI (spark.ui.enabled) is off.

    Parameters
    ----------
    kinds : dict
        ``{kind: module file name}``: a stage whose name holds the file shuffles that kind.

    Returns
    -------
    dict
        ``spark_stages``, ``shuffle_bytes`` (written), ``shuffle_bytes_by_kind``,
        ``shuffle_remote_bytes_read``, ``task_seconds`` and ``critical_path_seconds``.
    """
    base = _application_url(spark)
    if base is None:
        return None
    jobs = [job for job in _get(f"{base}/jobs") if job.get("jobGroup") == group]
    stage_ids = {stage for job in jobs for stage in job["stageIds"]}
    # one request for every stage attempt with its slowest task
    stages = [stage for stage in _get(f"{base}/stages?withSummaries=true&quantiles=1.0")
              if stage["stageId"] in stage_ids and stage["status"] in ("COMPLETE", "FAILED")]
    by_kind: dict[str, int] = defaultdict(int)
    intervals, slowest = [], 0.0
    for stage in stages:
        if stage["shuffleWriteBytes"]:
            kind = next((kind for kind, module in kinds.items() if module in stage["name"]), "other")
            by_kind[kind] += stage["shuffleWriteBytes"]
        durations = stage.get("taskMetricsDistributions", {}).get("duration")
        slowest += durations[0] / MILLISECONDS if durations else 0.0
        intervals.append((_time(stage["submissionTime"]), _time(stage["completionTime"])))
    if jobs:
        start = min(_time(job["submissionTime"]) for job in jobs)
        end = max(_time(job["completionTime"]) for job in jobs if "completionTime" in job)
    else:
        start = end = 0.0
    return {
        "spark_stages": len(stages),
        "shuffle_bytes": sum(stage["shuffleWriteBytes"] for stage in stages),
        "shuffle_bytes_by_kind": dict(by_kind),
        "shuffle_remote_bytes_read": sum(stage.get("shuffleRemoteBytesRead", 0) for stage in stages),
        "task_seconds": sum(stage["executorRunTime"] for stage in stages) / MILLISECONDS,
        "critical_path_seconds": slowest + idle_seconds(intervals, start, end),
    }


def idle_seconds(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """The time within [start, end] that no interval covers."""
    covered, reach = 0.0, start
    for low, high in sorted(intervals):
        low, high = max(low, reach), min(high, end)
        if high > low:
            covered += high - low
            reach = high
    return max(0.0, end - start - covered)
