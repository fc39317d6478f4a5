"""Peak RSS as the run reports give it, measured in fresh interpreters."""

import subprocess
import sys

import numpy as np

BLOCK_MIB = 300
ALLOCATE = f"""
import numpy as np
from sgns_spark.memory import peak_rss_mib
before = peak_rss_mib()
block = np.ones({BLOCK_MIB} * 2**20 // 8)  # float64, every page touched by the fill
print(before, peak_rss_mib())
"""
REPORT = "from sgns_spark.memory import peak_rss_mib; print(peak_rss_mib())"


def run_python(code: str) -> list[float]:
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [float(value) for value in output.split()]


def test_peak_rss_grows_with_an_allocation():
    before, after = run_python(ALLOCATE)
    assert after - before >= 0.9 * BLOCK_MIB


def test_a_child_does_not_report_its_large_parents_peak():
    block = np.ones(BLOCK_MIB * 2**20 // 8)
    (peak,) = run_python(REPORT)
    assert peak < BLOCK_MIB / 2
    del block
