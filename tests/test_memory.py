"""Peak RSS as the run reports give it, measured in fresh interpreters, a local driver's heap, and
the chunks of Spark's cached blocks in it."""

import os
import subprocess
import sys

import numpy as np
import pytest

from sgns_spark import memory
from sgns_spark.config import memory_mib
from sgns_spark.session import STORAGE_CHUNK_BYTES

BLOCK_MIB = 300
ALLOCATE = f"""
import numpy as np
from sgns_spark.memory import peak_rss_mib
before = peak_rss_mib()
block = np.ones({BLOCK_MIB} * 2**20 // 8)  # float64, every page touched by the fill
print(before, peak_rss_mib())
"""
REPORT = "from sgns_spark.memory import peak_rss_mib; print(peak_rss_mib())"
HEAP_ROUNDING_MIB = 32  # the JVM rounds its heap to whole G1 regions, of at most 32 MiB


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


@pytest.mark.parametrize(("machine_gib", "heap"), [(24, "6144m"), (4, "2048m"), (512, "31744m")])
def test_a_local_drivers_heap_is_a_quarter_of_the_machine_from_2g_to_below_32g(monkeypatch, machine_gib, heap):
    monkeypatch.setattr(memory, "machine_memory_mib", lambda: machine_gib * 1024.0)
    assert memory.local_driver_memory() == heap


def test_the_machines_memory_is_its_containers_limit_where_that_is_lower(monkeypatch, tmp_path):
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    version_2, version_1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    version_2.write_text("max\n")  # cgroup v2 without a limit
    version_1.write_text(f"{1 << 62}\n")  # cgroup v1 without a limit
    monkeypatch.setattr(memory, "CGROUP_LIMITS", (version_2, version_1, tmp_path / "absent"))
    assert memory.machine_memory_mib() == physical
    version_2.write_text(f"{3 << 30}\n")
    assert memory.machine_memory_mib() == min(physical, 3 * 1024)


def test_a_session_started_with_the_default_gets_the_automatic_heap(spark):
    """The suite's session runs with ``spark.driver_memory = ""``: its JVM's heap is the automatic one."""
    expected = memory_mib(memory.local_driver_memory())
    largest = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() / 2**20
    assert abs(largest - expected) <= HEAP_ROUNDING_MIB


def test_spark_keeps_cached_blocks_in_chunks_that_fit_one_g1_region(spark):
    """Spark's storage memory keeps a serialized block in byte arrays of
    ``spark.storage.unrollMemoryThreshold`` bytes (its ``MemoryStore.putIteratorAsBytes``); with
    its 16-byte header each fits G1's smallest region (1 MiB), so none takes two regions of a heap
    under 4g."""
    smallest_region, array_header = 1 << 20, 16
    chunk = int(spark.sparkContext.getConf().get("spark.storage.unrollMemoryThreshold"))
    assert chunk == STORAGE_CHUNK_BYTES and smallest_region / 2 < chunk + array_header <= smallest_region
