"""Running a sweep: resumable, failure-tolerant, on this machine or a Ray cluster.

- Runs whose result already exists (same config hash) are skipped, so a killed sweep resumes
  and loses at most the runs in flight. Results are written by the driver, atomically, as each
  run's outcome arrives.
- Runs that train the same teacher (dataset, teacher config, bits, seed) form one task, so the
  teacher is fitted once for all its strategies and students (a fitted teacher is deterministic,
  so this changes no result).
- A failing run is recorded next to where its result would be (``*.error.json``) and in the
  sweep's summary (``<results>/.sweeps/<name>.json``); the sweep goes on.
- Engines: ``local`` (in this process, or ``jobs`` worker processes with the cores shared out)
  and ``ray`` (one Ray task per teacher group with its CPU/GPU request; ``address`` joins an
  existing cluster).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from cmhbench.config import config_to_dict
from cmhbench.errors import CmhbenchError, ConfigError
from cmhbench.evaluation.crossmodal import CodeSet
from cmhbench.registry import Registry
from cmhbench.results.store import SCHEMA_VERSION, ResultStore, RunKey, atomic_write_text
from cmhbench.runner import RunRequest, Runner
from cmhbench.sweep.spec import Sweep

PASSED_ENV = ("CMHBENCH_PLUGINS", "CMHBENCH_DISABLE_PLUGIN_AUTOLOAD", "CMHBENCH_DATA", "HF_HUB_OFFLINE", "PYTHONPATH")


@dataclass
class RunOutcome:
    """What a worker reports for one run: a result and its codes, or an error line."""

    request: RunRequest
    key: Optional[RunKey]
    result: Optional[dict[str, Any]] = None
    codes: Optional[dict[str, Any]] = None
    error: Optional[str] = None


@dataclass
class SweepReport:
    """Counts and failures of one sweep execution."""

    name: str
    total: int
    skipped: int = 0
    done: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "name": self.name, "total": self.total, "skipped": self.skipped, "done": self.done,
            "failed": self.failed, "seconds": round(self.seconds, 2),
        }


def _error_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, CmhbenchError) else f"{type(exc).__name__}: {text}"


def iter_group(runner: Runner, requests: Iterable[RunRequest]) -> Iterator[RunOutcome]:
    """Compute the runs of one group in order, yielding each outcome as it is ready."""
    for request in requests:
        key = None
        try:
            key = runner.key_for(request, request.bits[0])
            key, result, codes = runner.compute(request, request.bits[0])
            yield RunOutcome(request, key, result, codes.arrays())
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure is recorded, the sweep goes on
            yield RunOutcome(request, key, error=_error_line(exc))


def run_group_task(requests: list[RunRequest], threads: Optional[int] = None) -> list[RunOutcome]:
    """Worker entry point (a process-pool or Ray task): run one group with a fresh registry."""
    if threads:
        _limit_threads(threads)
    from cmhbench.plugins import get_registry

    return list(iter_group(Runner(get_registry()), requests))


def _limit_threads(threads: int) -> None:
    import numba
    import torch

    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def plan(sweep: Sweep, runner: Runner, force: bool) -> tuple[list[list[RunRequest]], int, list[RunOutcome]]:
    """Split the sweep into teacher groups of runs still to do; count runs already stored.

    Runs that cannot even be planned (a dataset that does not load) come back as failures.
    """
    groups: dict[str, list[RunRequest]] = {}
    skipped = 0
    failures: list[RunOutcome] = []
    for request in sweep.runs:
        try:
            key = runner.key_for(request, request.bits[0])
            pipeline, data, _ = runner.prepare(request)
        except CmhbenchError as exc:
            failures.append(RunOutcome(request, None, error=_error_line(exc)))
            continue
        if not force and ResultStore(sweep.results_dir).exists(key):
            skipped += 1
            continue
        teacher_config = config_to_dict(pipeline.configs["teacher"]) if pipeline.teacher else None
        group_key = json.dumps(
            [request.dataset, str(request.data_dir), request.teacher, teacher_config, request.bits, request.seed, request.device],
            sort_keys=True, default=str,
        )
        groups.setdefault(group_key, []).append(request)
    return list(groups.values()), skipped, failures


class SweepExecutor:
    """Executes a :class:`Sweep` with one engine, writing results and failures as they arrive."""

    def __init__(
        self,
        registry: Registry,
        engine: str = "local",
        jobs: int = 1,
        address: Optional[str] = None,
        cpus_per_run: float = 1.0,
        gpus_per_run: float = 0.0,
        on_update: Callable[[SweepReport, int], None] = lambda report, running: None,
    ) -> None:
        if engine not in ("local", "ray"):
            raise ConfigError(f"--engine must be local or ray, got {engine!r}")
        if jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {jobs}")
        self.registry = registry
        self.engine = engine
        self.jobs = jobs
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.on_update = on_update

    def run(self, sweep: Sweep, force: bool = False) -> SweepReport:
        """Execute every run not yet stored; returns the report (also written under ``.sweeps/``)."""
        started = time.perf_counter()
        runner = Runner(self.registry)
        groups, skipped, failures = plan(sweep, runner, force)
        report = SweepReport(name=sweep.name, total=len(sweep.runs), skipped=skipped)
        store = ResultStore(sweep.results_dir)
        for outcome in failures:
            self._record(store, report, outcome)
        self.on_update(report, 0)
        if self.engine == "ray":
            self._run_ray(groups, store, report)
        elif self.jobs == 1:
            for group in groups:
                for outcome in iter_group(runner, group):
                    self._record(store, report, outcome)
                    self.on_update(report, 1)
        else:
            self._run_pool(groups, store, report)
        report.seconds = time.perf_counter() - started
        self.on_update(report, 0)
        summary = {**report.as_dict(), "engine": self.engine, "jobs": self.jobs,
                   "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        atomic_write_text(sweep.results_dir / ".sweeps" / f"{sweep.name}.json", json.dumps(summary, indent=2) + "\n")
        return report

    def _record(self, store: ResultStore, report: SweepReport, outcome: RunOutcome) -> None:
        if outcome.error is None:
            store.write(outcome.key, outcome.result, CodeSet(**_codeset_kwargs(outcome.codes)))
            error_path = _error_path(store, outcome.key)
            error_path.unlink(missing_ok=True)
            report.done += 1
            return
        request = outcome.request
        label = f"{request.dataset} {request.teacher}+{request.strategy}+{request.student} {request.bits[0]}b seed {request.seed}"
        report.failed.append({"run": label, "error": outcome.error})
        if outcome.key is not None:
            record = {"schema": SCHEMA_VERSION, "key": outcome.key.__dict__, "error": outcome.error,
                      "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            atomic_write_text(_error_path(store, outcome.key), json.dumps(record, indent=2) + "\n")

    def _run_pool(self, groups: list[list[RunRequest]], store: ResultStore, report: SweepReport) -> None:
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        with ProcessPoolExecutor(max_workers=self.jobs, mp_context=get_context("spawn")) as pool:
            pending = {pool.submit(run_group_task, group, threads): group for group in groups}
            while pending:
                running = sum(len(g) for f, g in pending.items() if f.running())
                self.on_update(report, running)
                done, _ = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    group = pending.pop(future)
                    try:
                        outcomes = future.result()
                    except Exception as exc:  # noqa: BLE001 - a worker that died
                        outcomes = [RunOutcome(r, None, error=f"worker failed: {_error_line(exc)}") for r in group]
                    for outcome in outcomes:
                        self._record(store, report, outcome)

    def _run_ray(self, groups: list[list[RunRequest]], store: ResultStore, report: SweepReport) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("the ray engine needs Ray: pip install 'cmhbench[ray]'") from None
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        started_here = not ray.is_initialized()
        if started_here:
            options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "runtime_env": {"env_vars": env}}
            if self.address:
                options["address"] = self.address
            else:
                options["num_cpus"] = max(self.jobs, int(self.cpus_per_run + 0.999))
            try:
                ray.init(**options)
            except Exception as exc:  # noqa: BLE001
                raise ConfigError(f"cannot start or join Ray ({_error_line(exc)})") from None
        try:
            threads = max(1, int(self.cpus_per_run))
            task = ray.remote(num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run, max_retries=0)(run_group_task)
            pending = {task.remote(group, threads): group for group in groups}
            while pending:
                self.on_update(report, sum(len(g) for g in pending.values()))
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    group = pending.pop(ref)
                    try:
                        outcomes = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a task or worker that died
                        outcomes = [RunOutcome(r, None, error=f"ray task failed: {_error_line(exc)}") for r in group]
                    for outcome in outcomes:
                        self._record(store, report, outcome)
        finally:
            if started_here:
                ray.shutdown()


def _codeset_kwargs(arrays: dict[str, Any]) -> dict[str, Any]:
    return {
        "query_image": arrays["query_image_codes"], "query_text": arrays["query_text_codes"],
        "db_image": arrays["db_image_codes"], "db_text": arrays["db_text_codes"],
        "query_labels": arrays["query_labels"], "db_labels": arrays["db_labels"],
    }


def _error_path(store: ResultStore, key: RunKey) -> Path:
    return store.json_path(key).with_suffix(".error.json")
