"""The timing loop the kernel-level benchmarks share (kernels.py, gemm_split.py)."""
import statistics
import time

SETTLE_S = 0.3  # OpenBLAS's worker threads spin ~0.1 s after a call (torch's OpenMP threads too): let them sleep first


def median_time(fn, repeats: int, settle: float = SETTLE_S) -> float:
    """Median seconds of `repeats` calls of fn, after a pause of `settle` seconds and one warm-up
    call (which also compiles). Without the pause a Numba kernel timed right after the BLAS-backed
    NumPy reference shares its 2 cores with a spinning BLAS thread (measured: attention backward
    1.9 ms alone, 3.8 ms right after)."""
    time.sleep(settle)
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
