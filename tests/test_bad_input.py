"""Bad input: one line naming the problem and the setting, exit code 2, nothing half-written."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_config

from sgns_spark.errors import UserError
from sgns_spark.stages import run_vocab_stage

JOBS = Path(__file__).resolve().parents[1] / "jobs"


def assert_nothing_published(storage):
    for name in ("vocab", "corpus", "reports", "model", "export"):
        assert not storage.exists(name), name
    assert storage.list_names("_staging") == []


@pytest.mark.parametrize("content,message", [
    (b"", r"input corpus .* is empty; point CORPUS= \(--input\) at text"),
    (np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes(),
     r"is not UTF-8 text: .*% of its bytes are invalid; .* raise corpus.max_invalid_utf8_fraction"),
    (b"rare words appear once each here\n",
     r"every word of .* occurs fewer than vocab.min_count = 5 times; lower vocab.min_count"),
    (b"... --- !!! ???\n", r"has no tokens under corpus.split_pattern"),
])
def test_bad_corpus_is_refused_with_the_setting_named(spark, storage, tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        run_vocab_stage(spark, make_config(), str(path), storage)
    assert_nothing_published(storage)


def test_missing_input_path(spark, storage, tmp_path):
    with pytest.raises(UserError, match=r"input corpus .*absent.txt does not exist; set CORPUS="):
        run_vocab_stage(spark, make_config(), str(tmp_path / "absent.txt"), storage)
    assert_nothing_published(storage)


def test_a_little_invalid_utf8_is_tolerated_and_reported(spark, storage, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_bytes((b"the cat sat on the mat " * 10 + b"\xff ") * 20)  # 0.4% invalid
    report = run_vocab_stage(spark, make_config("vocab.min_count=1"), str(path), storage)
    assert report["counts"]["invalid_utf8_bytes"] == 20
    assert report["counts"]["vocab_size"] == 5


def run_job(*arguments):
    return subprocess.run([sys.executable, str(JOBS / "vocab.py"), *arguments],
                          capture_output=True, text=True, timeout=300)


def test_job_exits_2_with_one_line_for_invalid_config(tmp_path):
    result = run_job("--root", str(tmp_path / "root"), "--input", "x.txt", "--set", "vocab.min_cont=3")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sgns-spark vocab: error: unknown config key vocab.min_cont; known keys of [vocab]: "
        "min_count, max_vocab_size, noise_exponent, sample"
    ]
    assert not (tmp_path / "root").exists()


def test_job_exits_2_with_one_line_for_a_missing_corpus(tmp_path):
    result = run_job("--root", str(tmp_path / "root"), "--input", str(tmp_path / "nope.txt"),
                     "--set", "spark.master=local[1]")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("sgns-spark")]
    assert errors == [f"sgns-spark vocab: error: input corpus {tmp_path / 'nope.txt'} does not exist; "
                      "set CORPUS= (make) or --input"]
    assert not (tmp_path / "root" / "vocab").exists()
