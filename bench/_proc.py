"""This process's memory as Linux reports it in /proc/self/status, for the bench scripts.

Read VmHWM (peak) rather than ``ru_maxrss``: a child started from a large parent begins with the
parent's ``ru_maxrss`` on Linux, which hid most of a load's peak once (docs/benchmarks.md).
"""

from __future__ import annotations


def status_kib(key: str) -> int:
    """The ``key:`` line of /proc/self/status in KiB (``VmHWM`` peak, ``VmRSS`` now)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (VmHWM; ``ru_maxrss`` where there is no /proc)."""
    try:
        return status_kib("VmHWM") / 1024
    except (OSError, KeyError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
