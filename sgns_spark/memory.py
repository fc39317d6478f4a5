"""Peak memory of the current process, for run reports (driver and Python workers alike)."""

import resource

KIB_PER_MIB = 1024  # ru_maxrss is in KiB on Linux


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KIB_PER_MIB
