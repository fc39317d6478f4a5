"""The README's spark-submit recipe on local-cluster: separate executor processes that run
the packaged environment (make package), not the test's."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_planted_corpus

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


@pytest.mark.skipif(not SPARK_SUBMIT.exists(), reason="spark-submit is not installed beside this Python")
def test_pipeline_through_spark_submit_on_local_cluster_with_packaged_environment(packaged, tmp_path):
    corpus, questions = write_planted_corpus(tmp_path / "data")
    root = tmp_path / "root"
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("PYSPARK_PYTHON", "PYTHONPATH")}
    environment["PYSPARK_DRIVER_PYTHON"] = sys.executable
    result = subprocess.run(
        [str(SPARK_SUBMIT), "--master", "local-cluster[2,1,1024]",
         "--archives", f"{packaged}#environment",
         "--conf", "spark.pyspark.python=./environment/bin/python",
         "--conf", f"spark.pyspark.driver.python={sys.executable}",
         "--files", str(REPOSITORY / "conf" / "default.toml"),
         str(REPOSITORY / "jobs" / "pipeline.py"), "--root", str(root), "--input", str(corpus),
         "--config", str(REPOSITORY / "conf" / "default.toml"),
         "--set", "train.dim=24", "--set", "train.rounds_per_epoch=2",
         "--set", f"evaluate.analogy_path={questions}", "--set", "evaluate.neighbour_words=paris"],
        capture_output=True, text=True, env=environment, timeout=900, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[export] published version 1" in result.stdout
    train = json.loads((root / "reports" / "train.json").read_text())
    assert train["counts"]["rounds"] == 2 and train["counts"]["trained_words"] > 0
    # the executors ran the archive Spark unpacked into their application work directory
    worker_python = train["counts"]["worker_python"]
    assert worker_python.endswith("/environment/bin/python") and "/work/app-" in worker_python
    assert worker_python != sys.executable
    latest = json.loads((root / "export" / "_LATEST").read_text())
    manifest = json.loads((Path(latest["path"].removeprefix("file:")) / "manifest.json").read_text())
    # plumbing, not quality (test_training checks that): chance level is under 0.1% here
    assert manifest["evaluation"]["analogy"]["accuracy"] > 0.1
