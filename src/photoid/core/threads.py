"""Threads on the CPU: how many cores this process may use, one shared pool, and BLAS held to one thread while
the pool's threads each run their own small products."""

from __future__ import annotations

import functools
import os


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and `taskset` narrow), not the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def pool():
    """One thread per available core, shared by the whole process (its threads are reused, never shut down)."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(available_cores(), thread_name_prefix="photoid")


@functools.lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread():
    """A context in which BLAS products run on one thread. Small products (a pair of photos' keypoints × keypoints ×
    128) spread over the cores each wait for every core to be free: 8 ms instead of 0.25 ms for 100 × 100 keypoints
    on 2 cores busy with other work. Matching loops, and work shared by `pool()`'s threads, run inside it.

    The limit is the process's, so it is entered by the thread that hands work to the pool, never by the workers:
    two overlapping contexts would restore each other's saved setting in the wrong order."""
    return _blas_controller().limit(limits=1, user_api="blas")
