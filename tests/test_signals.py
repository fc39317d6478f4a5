"""A stop signal mid-training (Ctrl-C's SIGINT, a scheduler's SIGTERM): one line, exit code
128 + the signal's number, no trace, the lock released, the committed rounds kept, nothing
exported; and the same command resumes from the last committed round."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from conftest import PLANTED_SETTINGS, write_planted_corpus

from sgns_spark.cli import SIGNAL_EXIT_BASE

JOBS = Path(__file__).resolve().parents[1] / "jobs"
TRACE_MARKERS = ("Traceback", "Exception in thread", "\tat ")
COMMITTED = re.compile(r"\[train\] rounds \d+-\d+ of \d+ .*committed round (\d+)")


def stopped_run(command: list[str], stop_signal: signal.Signals, directory: Path) -> tuple[list[int], str, int]:
    """Run `command` and send it `stop_signal` once it has committed a round; return the rounds
    it committed, its stderr and its exit code."""
    log = open(directory / f"stderr-{stop_signal.name}.txt", "w+")  # a pipe would fill up and stall the job
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    committed_rounds = []
    for line in process.stdout:
        committed = COMMITTED.search(line)
        if committed:
            committed_rounds.append(int(committed.group(1)))
            if len(committed_rounds) == 1:
                os.kill(process.pid, stop_signal)  # lands in the next round's job
    returncode = process.wait(timeout=300)
    log.seek(0)
    return committed_rounds, log.read(), returncode


def test_a_stop_signal_ends_the_job_in_one_line_and_the_same_command_resumes(tmp_path):
    corpus, _ = write_planted_corpus(tmp_path / "data")
    root = tmp_path / "root"
    command = [sys.executable, str(JOBS / "pipeline.py"), "--root", str(root), "--input", str(corpus),
               *(argument for setting in PLANTED_SETTINGS for argument in ("--set", setting)),
               "--set", "spark.master=local[2]"]
    latest = 0
    for stop_signal in (signal.SIGINT, signal.SIGTERM):  # the second run resumes the first
        committed_rounds, stderr, returncode = stopped_run(command, stop_signal, tmp_path)
        assert returncode == SIGNAL_EXIT_BASE + stop_signal, stderr[-3000:]
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(f"sgns-spark pipeline: stopped by {stop_signal.name}; "), last
        assert not any(marker in stderr for marker in TRACE_MARKERS), stderr[-3000:]
        assert not (root / "_LOCK").exists()
        assert not (root / "export").exists()
        assert committed_rounds and committed_rounds[0] == latest + 1, committed_rounds  # resumed, not restarted
        latest = json.loads((root / "model" / "_LATEST").read_text())["round"]
        assert latest >= committed_rounds[-1]
