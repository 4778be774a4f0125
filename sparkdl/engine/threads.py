"""The engine's compute-thread budget, and the thread count of the BLAS library under NumPy.

``set_num_threads(n)`` sets how many CPU threads one engine call may keep busy (default: the
CPUs this process may run on; a Spark task should set ``spark.task.cpus``). Convolution and
pooling split each batch over that many Python threads (NumPy releases the GIL in its copies,
ufuncs and matrix products), with BLAS single-threaded under them; Dense-only models leave
the threading to BLAS, which ``set_num_threads`` sets to the same budget. A model holding
layers that run their own threads pins BLAS to one thread for a whole fit / predict /
evaluate call (``blas_limit``) rather than around each layer: switching OpenBLAS's thread
count inside a step was measured to make the step 1.7-2.3x slower, because OpenBLAS's idle
workers keep spinning on the cores the Python threads need.

BLAS threads are set through threadpoolctl when it is importable, otherwise through
OpenBLAS's own ``*_set_num_threads`` entry point, looked up with ctypes in the OpenBLAS found
in ``/proc/self/maps`` (the one NumPy's wheels bundle). Where neither applies (another BLAS,
another OS) BLAS threads are left alone.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

from sparkdl.engine import checks

_budget: int | None = None          # None: the default, the CPUs this process may use
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0
_pool_lock = threading.Lock()
_blas_libs: list | None = None      # found on first use


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def get_num_threads() -> int:
    """The number of threads engine calls may use."""
    return _default_threads() if _budget is None else _budget


def set_num_threads(n: int | None) -> None:
    """Let engine calls use ``n`` threads (None: the default), for the conv/pool worker
    threads and for BLAS."""
    global _budget
    _budget = checks.optional_integer(n, None, "set_num_threads", at_least=1)
    set_blas_threads(get_num_threads())


# ---- the worker pool ---------------------------------------------------------------------------
def run_parts(fn, parts) -> list:
    """``[fn(part, i) for i, part in enumerate(parts)]``, part 0 in the calling thread and the
    others in the worker pool, concurrently; BLAS is single-threaded meanwhile."""
    if len(parts) == 1:
        return [fn(parts[0], 0)]
    pool = _workers(len(parts) - 1)
    with blas_limit(1):
        futures = [pool.submit(fn, part, i) for i, part in enumerate(parts) if i]
        try:
            first = fn(parts[0], 0)
        finally:
            # Even when part 0 fails, the workers still write into shared buffers: wait for them.
            wait(futures)
    return [first] + [f.result() for f in futures]


def _workers(n: int) -> ThreadPoolExecutor:
    """A pool with at least ``n`` threads (grown, never shrunk: idle threads cost nothing)."""
    global _pool, _pool_workers
    with _pool_lock:
        if _pool is None or _pool_workers < n:
            # The old pool's threads exit once it is garbage (another caller may still use it).
            _pool, _pool_workers = ThreadPoolExecutor(n, thread_name_prefix="sparkdl-compute"), n
        return _pool


def _forget_pool_after_fork() -> None:
    # A forked child inherits the pool object but not its threads.
    global _pool, _pool_workers, _pool_lock
    _pool, _pool_workers, _pool_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


# ---- BLAS threads --------------------------------------------------------------------------------
def get_blas_threads() -> int | None:
    """BLAS's current thread count (None when no controllable BLAS was found)."""
    libs = _blas()
    return libs[0].get() if libs else None


def set_blas_threads(n: int) -> None:
    for lib in _blas():
        lib.set(n)


@contextlib.contextmanager
def blas_limit(n: int):
    """BLAS at ``n`` threads inside the block, restored afterwards; free when already there."""
    changed = []
    for lib in _blas():
        old = lib.get()
        if old != n:
            lib.set(n)
            changed.append((lib, old))
    try:
        yield
    finally:
        for lib, old in changed:
            lib.set(old)


class _Lib:
    def __init__(self, get, set_):
        self.get, self.set = get, set_


def _blas() -> list[_Lib]:
    global _blas_libs
    if _blas_libs is None:
        try:
            _blas_libs = _threadpoolctl_blas()
        except ImportError:
            _blas_libs = _openblas_via_ctypes()
    return _blas_libs


def _threadpoolctl_blas() -> list[_Lib]:
    import threadpoolctl
    controllers = threadpoolctl.ThreadpoolController().select(user_api="blas").lib_controllers
    return [_Lib(lambda c=c: c.num_threads, c.set_num_threads) for c in controllers]


# (setter, getter) names: NumPy's bundled scipy-openblas (64- and 32-bit integer builds), then
# a plain OpenBLAS with and without the 64-bit-integer suffix.
_OPENBLAS_SYMBOLS = [("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                     ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
                     ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
                     ("openblas_set_num_threads", "openblas_get_num_threads")]


def _openblas_via_ctypes(maps: str = "/proc/self/maps") -> list[_Lib]:
    """Every OpenBLAS already loaded into this process, driven through its C API."""
    try:
        with open(maps) as f:
            fields = [line.split(None, 5) for line in f]
    except OSError:
        return []
    paths = sorted({p[5].strip() for p in fields
                    if len(p) == 6 and "openblas" in os.path.basename(p[5].strip()).lower()})
    libs = []
    for path in paths:
        try:
            # RTLD_NOLOAD: a handle on the copy already mapped, never a second load.
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        except (OSError, AttributeError):
            continue
        for setter, getter in _OPENBLAS_SYMBOLS:
            if hasattr(lib, setter) and hasattr(lib, getter):
                set_fn, get_fn = getattr(lib, setter), getattr(lib, getter)
                set_fn.argtypes, set_fn.restype = [ctypes.c_int], None
                get_fn.argtypes, get_fn.restype = [], ctypes.c_int
                libs.append(_Lib(get_fn, set_fn))
                break
    return libs
