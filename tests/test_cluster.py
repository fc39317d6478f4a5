"""The whole pipeline through spark-submit on local-cluster: separate executor processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_planted_corpus

REPOSITORY = Path(__file__).resolve().parents[1]
SPARK_SUBMIT = Path(sys.executable).parent / "spark-submit"


@pytest.mark.skipif(not SPARK_SUBMIT.exists(), reason="spark-submit is not installed beside this Python")
def test_pipeline_through_spark_submit_on_local_cluster(tmp_path):
    corpus, questions = write_planted_corpus(tmp_path / "data")
    root = tmp_path / "root"
    environment = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
                   "PYTHONPATH": str(REPOSITORY)}
    result = subprocess.run(
        [str(SPARK_SUBMIT), "--master", "local-cluster[2,1,1024]",
         "--conf", "spark.executorEnv.PYTHONPATH=" + str(REPOSITORY),
         "--py-files", str(REPOSITORY / "sgns_spark"),
         str(REPOSITORY / "jobs" / "pipeline.py"), "--root", str(root), "--input", str(corpus),
         "--config", str(REPOSITORY / "conf" / "default.toml"),
         "--set", "train.dim=24", "--set", "train.rounds_per_epoch=2",
         "--set", f"evaluate.analogy_path={questions}", "--set", "evaluate.neighbour_words=paris"],
        capture_output=True, text=True, env=environment, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[export] published version 1" in result.stdout
    train = json.loads((root / "reports" / "train.json").read_text())
    assert train["counts"]["rounds"] == 2 and train["counts"]["trained_words"] > 0
    latest = json.loads((root / "export" / "_LATEST").read_text())
    manifest = json.loads((Path(latest["path"].removeprefix("file:")) / "manifest.json").read_text())
    # plumbing, not quality (test_training checks that): chance level is under 0.1% here
    assert manifest["evaluation"]["analogy"]["accuracy"] > 0.1
