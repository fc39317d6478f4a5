"""Memory: the peak of the current process, for run reports (driver and Python workers alike), and
the heap of a local driver JVM sized to this machine (``spark.driver_memory = ""``)."""

import os
import resource
from pathlib import Path

KIB_PER_MIB = 1024  # VmHWM and ru_maxrss are in KiB on Linux
BYTES_PER_MIB = 1 << 20
PROCESS_STATUS = Path("/proc/self/status")
PEAK_FIELD = "VmHWM:"
# a container's memory limit, cgroup v2 then v1 (v2 writes "max" and v1 a huge number for none)
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
# The automatic local heap is the JVM's own default share of memory (MaxRAMPercentage, 25%), which
# Spark overrides with a fixed 1g; the rest is for the Python workers, which hold the model's rows
# and pairs outside the heap. It is at least 2g (this project's fixed default until 2026-12-08)
# and below 32g, where the JVM loses its compressed object pointers.
LOCAL_HEAP_SHARE = 0.25
LOCAL_HEAP_LEAST_MIB = 2 * 1024
LOCAL_HEAP_MOST_MIB = 31 * 1024


def peak_rss_mib() -> float:
    """Peak resident set size of this process since it started its program, in MiB.

    Linux's ``VmHWM`` belongs to the current program image. ``ru_maxrss`` (the fallback off
    Linux) also keeps the peak the parent had when it forked this process, so a small job
    started by a large parent would report the parent's size.
    """
    if PROCESS_STATUS.exists():
        for line in PROCESS_STATUS.read_text().splitlines():
            if line.startswith(PEAK_FIELD):
                return int(line.split()[1]) / KIB_PER_MIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MIB


def machine_memory_mib() -> float:
    """This machine's memory in MiB, or its container's limit where that is lower."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limits = [int(text) for path in CGROUP_LIMITS if path.exists() and (text := path.read_text().strip()).isdigit()]
    return min([physical, *limits]) / BYTES_PER_MIB


def local_driver_memory() -> str:
    """The heap of a local driver JVM, as a JVM memory size: `LOCAL_HEAP_SHARE` of this machine's
    memory (`machine_memory_mib`), from `LOCAL_HEAP_LEAST_MIB` to `LOCAL_HEAP_MOST_MIB`.

    In local mode the executors' tasks run in the driver's JVM and keep the corpus's records there
    (spilling to disk), so a fixed 2g ran out of heap training a 1 GB corpus that a quarter of a
    24 GiB machine trained."""
    share = machine_memory_mib() * LOCAL_HEAP_SHARE
    return f"{int(min(max(share, LOCAL_HEAP_LEAST_MIB), LOCAL_HEAP_MOST_MIB))}m"
