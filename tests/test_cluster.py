"""local-cluster: separate executor processes. The README's spark-submit recipe with the packaged
environment (make package), through a run that survives the loss of an executor."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import JVM_TEMPORARY_DIRECTORY, PLANTED_ARGUMENTS, job_environment, read_round_files

REPOSITORY = Path(__file__).resolve().parents[1]
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(["make", "-C", str(REPOSITORY), "package", f"DIST={dist}", f"PYTHON={sys.executable}"],
                   check=True, capture_output=True, timeout=900)
    return dist / "sgns_spark_env.tar.gz"


def executor_processes() -> list[int]:
    """Process ids of the executor JVMs running on this machine."""
    found = subprocess.run(["pgrep", "-f", "CoarseGrainedExecutorBackend"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


@pytest.mark.skipif(not SPARK_SUBMIT.exists(), reason="spark-submit is not installed beside this Python")
def test_the_pipeline_through_spark_submit_with_the_packaged_environment_survives_losing_an_executor(
        packaged, planted_run, tmp_path):
    """The README's spark-submit recipe on local-cluster[2,1,1024] (two executor JVMs, whose
    Python is the packaged environment Spark unpacks); one executor is SIGKILLed after the third
    committed round. The run ends with exit 0, a published version, and the same rows, bit for
    bit, as the planted run with the same settings in local mode."""
    root = tmp_path / "root"
    environment = {key: value for key, value in job_environment().items()
                   if key not in ("PYSPARK_PYTHON", "PYTHONPATH")}
    environment["PYSPARK_DRIVER_PYTHON"] = sys.executable
    command = [str(SPARK_SUBMIT), "--master", "local-cluster[2,1,1024]",
               "--archives", f"{packaged}#environment",
               "--conf", "spark.pyspark.python=./environment/bin/python",
               # the executor JVMs get no SPARK_SUBMIT_OPTS; the one killed would leave its archive copy in /tmp
               "--conf", f"spark.executor.extraJavaOptions=-Djava.io.tmpdir={os.environ[JVM_TEMPORARY_DIRECTORY]}",
               "--conf", f"spark.pyspark.driver.python={sys.executable}",
               "--files", str(REPOSITORY / "conf" / "default.toml"),
               str(REPOSITORY / "jobs" / "pipeline.py"), "--root", str(root), "--input", str(planted_run["corpus"]),
               "--config", str(REPOSITORY / "conf" / "default.toml"), *PLANTED_ARGUMENTS,
               "--set", f"evaluate.analogy_path={planted_run['questions']}", "--set", "evaluate.neighbour_words=paris"]
    log = open(tmp_path / "stderr.txt", "w+")  # a pipe would fill up and stall the job
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=environment, cwd=tmp_path)
    killed = []
    output = []
    for line in process.stdout:
        output.append(line)
        if "committed round 3" in line and not killed:
            time.sleep(1.0)  # into the next job's stages
            victims = executor_processes()
            assert victims, "no executor process to kill"
            os.kill(victims[0], signal.SIGKILL)
            killed.append(victims[0])
    returncode = process.wait(timeout=900)
    log.seek(0)
    assert returncode == 0, log.read()[-3000:] + "".join(output)[-2000:]
    assert killed and "[export] published version 1" in "".join(output)
    assert "committed round 9" in "".join(output)
    reference = planted_run["storage"]
    ours = read_round_files(root / "model" / "round=000009")
    expected = read_round_files(Path(reference.path("model/round=000009").removeprefix("file:")))
    for side in ("input", "output"):
        np.testing.assert_array_equal(ours[side][0], expected[side][0])
        np.testing.assert_array_equal(ours[side][1], expected[side][1])
    train = json.loads((root / "reports" / "train.json").read_text())
    # the executors' own time by part came back through the accumulator, within Spark's task time
    parts = train["counts"]["task_seconds_by_part"]
    assert set(parts) == {"pairs", "receive", "kernel", "send"} and parts["kernel"] > 0 and parts["pairs"] > 0
    assert sum(parts.values()) <= train["counts"]["task_seconds"]
    # the executors ran the archive Spark unpacked into their application work directory
    worker_python = train["counts"]["worker_python"]
    assert worker_python.endswith("/environment/bin/python") and "/work/app-" in worker_python
    assert worker_python != sys.executable
    latest = json.loads((root / "export" / "_LATEST").read_text())
    manifest = json.loads((Path(latest["path"].removeprefix("file:")) / "manifest.json").read_text())
    # plumbing, not quality (test_training checks that): chance level is under 0.1% here
    assert manifest["evaluation"]["analogy"]["accuracy"] > 0.1
