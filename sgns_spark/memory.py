"""Peak memory of the current process, for run reports (driver and Python workers alike)."""

import resource
from pathlib import Path

KIB_PER_MIB = 1024  # VmHWM and ru_maxrss are in KiB on Linux
PROCESS_STATUS = Path("/proc/self/status")
PEAK_FIELD = "VmHWM:"


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
