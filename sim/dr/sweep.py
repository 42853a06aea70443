"""Many seeds at once: one worker process per core, a progress bar, the runs' records.

Every run is independent and deterministic, so the seeds are spread over a process pool in
any order and the records are sorted back by (scenario, seed). A worker that finds a
violation writes that run's event log and chart under `out/<scenario>-<seed>/` at once, so
a long sweep leaves the evidence even if it is interrupted.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import runner
from .report import write_run

_OUT: Path | None = None


def _initialize(scratch: str, out: str | None) -> None:
    global _OUT
    runner.use_scratch(Path(scratch) / str(os.getpid()))
    _OUT = Path(out) if out else None


def _work(item: tuple[str, int, float | None, tuple[str, ...]]) -> dict[str, Any]:
    scenario, seed, minutes, bugs = item
    result = runner.run(scenario, seed, minutes=minutes, bugs=bugs)
    if not result.ok and _OUT is not None:
        write_run(result, _OUT / f"{scenario}-{seed}")
    return result.as_json()


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def sweep(scenarios: Sequence[str], seeds: Sequence[int], *, minutes: float | None = None, jobs: int | None = None,
          bugs: Sequence[str] = (), out: Path | None = None, progress: bool = True) -> tuple[list[dict[str, Any]], float]:
    """Run every (scenario, seed); the runs' JSON records in order, and the wall time."""
    items = [(scenario, seed, minutes, tuple(bugs)) for scenario in scenarios for seed in seeds]
    jobs = max(1, min(jobs or default_jobs(), len(items) or 1))
    started = time.perf_counter()
    records: list[dict[str, Any]] = []
    bar = _progress(len(items), progress)
    shm = Path("/dev/shm")
    scratch = Path(tempfile.mkdtemp(prefix="acd-dr-sweep-", dir=shm if shm.is_dir() and os.access(shm, os.W_OK) else None))
    try:
        if jobs == 1:
            _initialize(str(scratch), str(out) if out else None)
            for item in items:
                records.append(_work(item))
                _tick(bar, records)
        else:
            context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
            with context.Pool(jobs, initializer=_initialize, initargs=(str(scratch), str(out) if out else None)) as pool:
                for record in pool.imap_unordered(_work, items, chunksize=1):
                    records.append(record)
                    _tick(bar, records)
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(scratch, ignore_errors=True)
    records.sort(key=lambda record: (record["scenario"], record["seed"]))
    return records, time.perf_counter() - started


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="seed", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def _tick(bar: Any, records: list[dict[str, Any]]) -> None:
    if bar is None:
        return
    failed = sum(1 for record in records if not record["ok"])
    bar.set_postfix_str(f"violations {failed}", refresh=False)
    bar.update(1)
