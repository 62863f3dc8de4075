"""This process's peak memory, on every platform graft runs on, for the ``peak_memory_mb`` of a fit."""

import ctypes
import sys
from pathlib import Path

PROC_STATUS = Path("/proc/self/status")


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MiB (0.0 where the platform does not say).

    Linux's ``VmHWM`` starts afresh in a newly executed process, which is what lets ``compare`` give each
    strategy its own figure; ``ru_maxrss`` would carry the parent's peak over into a spawned child.
    """
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    if sys.platform == "win32":
        return _windows_peak_mb()
    import resource  # Unix only: importing it at the top would stop graft importing on Windows

    # ru_maxrss is in KiB on Linux and the BSDs, in bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


class _ProcessMemoryCounters(ctypes.Structure):
    """PROCESS_MEMORY_COUNTERS of the Windows API (psapi.h)."""

    _fields_ = [
        ("cb", ctypes.c_ulong),
        ("PageFaultCount", ctypes.c_ulong),
        ("PeakWorkingSetSize", ctypes.c_size_t),
        ("WorkingSetSize", ctypes.c_size_t),
        ("QuotaPeakPagedPoolUsage", ctypes.c_size_t),
        ("QuotaPagedPoolUsage", ctypes.c_size_t),
        ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t),
        ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
        ("PagefileUsage", ctypes.c_size_t),
        ("PeakPagefileUsage", ctypes.c_size_t),
    ]


def _windows_peak_mb() -> float:
    """PeakWorkingSetSize from GetProcessMemoryInfo; 0.0 if the call is not available or fails."""
    counters = _ProcessMemoryCounters()
    counters.cb = ctypes.sizeof(counters)
    try:
        kernel32, psapi = ctypes.windll.kernel32, ctypes.windll.psapi  # type: ignore[attr-defined]  # Windows only
        kernel32.GetCurrentProcess.restype = ctypes.c_void_p  # a HANDLE: pointer-sized, not the default int
        ok = psapi.GetProcessMemoryInfo(ctypes.c_void_p(kernel32.GetCurrentProcess()), ctypes.byref(counters), counters.cb)
    except (AttributeError, OSError):
        return 0.0
    return counters.PeakWorkingSetSize / (1 << 20) if ok else 0.0
