"""Running a sweep: resumable, failure-tolerant, on this machine or a Ray cluster.

- Runs whose result already exists (same config hash) are skipped, so a killed sweep resumes
  and loses at most the runs in flight. Each result is written atomically as soon as its run
  finishes: by the worker process that ran it (local engine with ``jobs`` > 1), else by the driver.
- Runs that train the same teacher (dataset, teacher config, teacher code length, seed) form one task, so the
  teacher is fitted once for all its strategies and students (a fitted teacher is deterministic,
  so this changes no result).
- A failing run is recorded next to where its result would be (``*.error.json``) and in the
  sweep's summary; the sweep goes on. Every execution keeps its own summary,
  ``<results>/.sweeps/<name>/<UTC time>.json``, and ``<results>/.sweeps/<name>.json`` is a copy
  of the latest.
- Ctrl-C stops the sweep: workers are terminated, the summary is written (``"interrupted":
  true``, counting every run whose end the driver was told of, so a result written just before
  the Ctrl-C is counted) and rerunning the same sweep resumes it. Worker processes also end when their driver
  dies (``kill -9``), after writing nothing partial.
- Engines: ``local`` (in this process, or ``jobs`` worker processes with the cores shared out)
  and ``ray`` (one Ray task per teacher group with its CPU/GPU request; ``address`` joins an
  existing cluster; the driver writes the results).
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import queue
import signal
import threading
import time
import uuid
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from cmhbench.config import config_to_dict
from cmhbench.errors import CmhbenchError, ConfigError
from cmhbench.evaluation.crossmodal import CodeSet
from cmhbench.progress import PlainProgress, run_label
from cmhbench.registry import Registry
from cmhbench.results.store import SCHEMA_VERSION, ResultStore, RunKey, atomic_write_text
from cmhbench.runner import RunRequest, Runner, teacher_code_length
from cmhbench.sweep.spec import Sweep

PASSED_ENV = ("CMHBENCH_PLUGINS", "CMHBENCH_DISABLE_PLUGIN_AUTOLOAD", "CMHBENCH_DATA", "HF_HUB_OFFLINE", "PYTHONPATH")
WATCHDOG_INTERVAL_S = 0.2


@dataclass
class RunOutcome:
    """What a worker reports for one run: a result and its codes, or an error line."""

    request: RunRequest
    key: Optional[RunKey]
    result: Optional[dict[str, Any]] = None
    codes: Optional[dict[str, Any]] = None
    error: Optional[str] = None
    seconds: float = 0.0


@dataclass
class RunEvent:
    """A run ``started``, ``finished`` or ``failed``: what a progress display shows."""

    kind: str
    request: RunRequest
    seconds: float = 0.0
    error: Optional[str] = None


@dataclass
class SweepPlan:
    """What a sweep has left: teacher groups of runs to do, runs already stored, runs that cannot
    even start (their failures)."""

    groups: list[list[RunRequest]]
    stored: list[RunRequest]
    failures: list[RunOutcome]

    @property
    def todo(self) -> int:
        """How many runs the groups hold."""
        return sum(len(group) for group in self.groups)


@dataclass
class SweepReport:
    """Counts and failures of one sweep execution."""

    name: str
    total: int
    skipped: int = 0
    done: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "name": self.name, "total": self.total, "skipped": self.skipped, "done": self.done,
            "failed": self.failed, "seconds": round(self.seconds, 2), "interrupted": self.interrupted,
        }


def _error_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, CmhbenchError) else f"{type(exc).__name__}: {text}"


def iter_group(
    runner: Runner, requests: Iterable[RunRequest], on_start: Callable[[RunRequest], None] = lambda request: None
) -> Iterator[RunOutcome]:
    """Compute the runs of one group in order, yielding each outcome as it is ready
    (``on_start`` is called as each run begins)."""
    for request in requests:
        on_start(request)
        if isinstance(runner.progress, PlainProgress):
            runner.progress.prefix = f"{run_label(request)}: "
        key = None
        started = time.perf_counter()
        try:
            key = runner.key_for(request, request.bits[0])
            key, result, codes = runner.compute(request, request.bits[0])
            yield RunOutcome(request, key, result, codes.arrays(), seconds=time.perf_counter() - started)
        except (KeyboardInterrupt, SystemExit, GeneratorExit):  # GeneratorExit: the consumer closed us
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure is recorded, the sweep goes on
            yield RunOutcome(request, key, error=_error_line(exc), seconds=time.perf_counter() - started)


def write_outcome(store: ResultStore, outcome: RunOutcome) -> None:
    """Store a run's result (codes, then JSON, each atomically; an earlier failure record goes),
    or its failure record ``*.error.json`` where its key is known."""
    if outcome.error is None:
        store.write(outcome.key, outcome.result, CodeSet(**_codeset_kwargs(outcome.codes)))
        _error_path(store, outcome.key).unlink(missing_ok=True)
    elif outcome.key is not None:
        record = {"schema": SCHEMA_VERSION, "key": outcome.key.__dict__, "error": outcome.error,
                  "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        atomic_write_text(_error_path(store, outcome.key), json.dumps(record, indent=2) + "\n")


def run_group_task(requests: list[RunRequest], threads: Optional[int] = None) -> list[RunOutcome]:
    """Ray task: run one group with a fresh registry; the driver writes the outcomes."""
    if threads:
        _limit_threads(threads)
    from cmhbench.plugins import get_registry

    return list(iter_group(Runner(get_registry()), requests))


_WORKER: dict[str, Any] = {}


def init_worker(driver: int, events: Any, threads: int, plain: bool) -> None:
    """Pool initializer: end this worker when its ``driver`` process dies, leave Ctrl-C to the
    driver, share out the cores, and keep the queue that run events go to (``plain``: write
    plain progress lines to stderr)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_driver, args=(driver,), name="cmhbench-watchdog", daemon=True).start()
    _WORKER.update(events=events, plain=plain)
    _limit_threads(threads)


def _watch_driver(driver: int) -> None:
    """Exit at once when the parent is no longer ``driver`` (it died and this process was
    re-parented); results already written are complete, the run in flight is lost."""
    while os.getppid() == driver:
        time.sleep(WATCHDOG_INTERVAL_S)
    os._exit(1)


def run_group_in_worker(items: list[tuple[int, RunRequest]], results_dir: Path) -> list[tuple[int, Optional[str], float]]:
    """Pool task: run one group of numbered runs, writing each result (or failure record) as
    soon as it is ready and putting ``("started", id)`` and ``("finished", id, error, seconds)``
    on the event queue; returns the same ``(id, error, seconds)`` ends."""
    events = _WORKER["events"]
    ids = {request: run_id for run_id, request in items}
    store = ResultStore(results_dir)
    ends = []
    for outcome in iter_group(_worker_runner(), list(ids), on_start=lambda request: events.put(("started", ids[request]))):
        write_outcome(store, outcome)
        end = (ids[outcome.request], outcome.error, outcome.seconds)
        events.put(("finished", *end))
        ends.append(end)
    return ends


def _worker_runner() -> Runner:
    """This worker's runner (its datasets stay loaded from one group to the next)."""
    if "runner" not in _WORKER:
        from cmhbench.plugins import get_registry

        _WORKER["runner"] = Runner(get_registry(), progress=PlainProgress() if _WORKER["plain"] else None)
    return _WORKER["runner"]


def _limit_threads(threads: int) -> None:
    import numba
    import torch

    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def plan(sweep: Sweep, runner: Runner, force: bool) -> SweepPlan:
    """Split the sweep into teacher groups of runs still to do; list the runs already stored.

    Runs that cannot even be planned (a dataset that does not load) come back as failures.
    """
    groups: dict[str, list[RunRequest]] = {}
    stored: list[RunRequest] = []
    failures: list[RunOutcome] = []
    for request in sweep.runs:
        try:
            key = runner.key_for(request, request.bits[0])
            pipeline, data, _ = runner.prepare(request)
        except CmhbenchError as exc:
            failures.append(RunOutcome(request, None, error=_error_line(exc)))
            continue
        if not force and ResultStore(sweep.results_dir).exists(key):
            stored.append(request)
            continue
        teacher_config = config_to_dict(pipeline.configs["teacher"]) if pipeline.teacher else None
        teacher_bits = teacher_code_length(request, pipeline, request.bits[0])
        group_key = json.dumps(
            [request.dataset, str(request.data_dir), request.teacher, teacher_config, teacher_bits, request.seed, request.device],
            sort_keys=True, default=str,
        )
        groups.setdefault(group_key, []).append(request)
    return SweepPlan(list(groups.values()), stored, failures)


def results_outside(sweep: Sweep, runner: Runner) -> list[Path]:
    """Stored results under the sweep's results folder that no run of the sweep names (other settings,
    another sweep's runs, or rows of settings since changed), in path order. Runs that cannot be planned
    (a dataset that does not load) name nothing, so their stored results are listed too."""
    store = ResultStore(sweep.results_dir)
    named = set()
    for request in sweep.runs:
        try:
            named.add(store.json_path(runner.key_for(request, request.bits[0])))
        except CmhbenchError:
            continue
    return [path for path, _ in store.iter_results() if path not in named]


def write_summary(results_dir: Path, name: str, summary: dict[str, Any], when: _dt.datetime) -> Path:
    """Keep ``summary`` as a new file ``<results>/.sweeps/<name>/<UTC time>.json`` (``_2``,
    ``_3``... after the time if that name is taken) and as the latest,
    ``<results>/.sweeps/<name>.json``; returns the new file."""
    text = json.dumps(summary, indent=2) + "\n"
    folder = results_dir / ".sweeps" / name
    stamp = when.astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    pending = folder / f".{stamp}.{uuid.uuid4().hex}.pending"
    atomic_write_text(pending, text)
    try:
        for number in itertools.count(1):
            path = folder / (f"{stamp}.json" if number == 1 else f"{stamp}_{number}.json")
            try:
                os.link(pending, path)  # fails if the name is taken: no earlier summary is replaced
                break
            except FileExistsError:
                continue
    finally:
        pending.unlink(missing_ok=True)
    atomic_write_text(results_dir / ".sweeps" / f"{name}.json", text)
    return path


@contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """Ignore further Ctrl-C while cleaning up after one (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class SweepExecutor:
    """Executes a :class:`Sweep` with one engine, writing results and failures as they arrive.

    ``on_update(report, running)`` follows the counts; ``on_event`` gets each run's start and
    end (a Ray task's runs only end); ``plain_progress`` writes training progress as plain lines
    to stderr, each starting with its run.
    """

    def __init__(
        self,
        registry: Registry,
        engine: str = "local",
        jobs: int = 1,
        address: Optional[str] = None,
        cpus_per_run: float = 1.0,
        gpus_per_run: float = 0.0,
        on_update: Callable[[SweepReport, int], None] = lambda report, running: None,
        on_event: Callable[[RunEvent], None] = lambda event: None,
        plain_progress: bool = False,
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
        self.on_event = on_event
        self.plain_progress = plain_progress
        self._ctrl_c = False
        self._holding = False

    def run(self, sweep: Sweep, force: bool = False) -> SweepReport:
        """Execute every run not yet stored; returns the report (also kept under ``.sweeps/``).

        Ctrl-C ends the execution early: the report says ``interrupted``."""
        started, started_at = time.perf_counter(), _dt.datetime.now(_dt.timezone.utc)
        runner = Runner(self.registry, progress=PlainProgress() if self.plain_progress else None)
        report = SweepReport(name=sweep.name, total=len(sweep.runs))
        store = ResultStore(sweep.results_dir)
        self._ctrl_c = False
        try:
            with self._noting_ctrl_c():
                todo = plan(sweep, runner, force)
                report.skipped = len(todo.stored)
                for outcome in todo.failures:
                    write_outcome(store, outcome)
                    self._count(report, outcome)
                self.on_update(report, 0)
                if todo.groups:  # nothing left to do: no pool, no Ray
                    self._execute(todo.groups, runner, store, report)
        except KeyboardInterrupt:
            report.interrupted = True
        report.interrupted = report.interrupted or self._ctrl_c
        with _ctrl_c_ignored():
            report.seconds = time.perf_counter() - started
            self.on_update(report, 0)
            finished_at = _dt.datetime.now(_dt.timezone.utc)
            summary = {**report.as_dict(), "engine": self.engine, "jobs": self.jobs,
                       "started": started_at.isoformat(timespec="seconds"), "finished": finished_at.isoformat(timespec="seconds")}
            write_summary(sweep.results_dir, sweep.name, summary, finished_at)
        return report

    def _execute(self, groups: list[list[RunRequest]], runner: Runner, store: ResultStore, report: SweepReport) -> None:
        if self.engine == "ray":
            self._run_ray(groups, store, report)
        elif self.jobs == 1:
            for group in groups:
                for outcome in iter_group(runner, group, on_start=lambda request: self._started(report, request)):
                    with self._ctrl_c_deferred():
                        write_outcome(store, outcome)
                        self._count(report, outcome)
                    self.on_update(report, 0)
        else:
            self._run_pool(groups, store, report)

    @contextmanager
    def _noting_ctrl_c(self) -> Iterator[None]:
        """Note a Ctrl-C besides raising KeyboardInterrupt, so that the sweep still stops (at the
        next run) if library code swallows the exception; while a run is being written
        (:meth:`_ctrl_c_deferred`) only note it. Only where Ctrl-C interrupts at all: the main
        thread, SIGINT not ignored (a background job of a script)."""
        main = threading.current_thread() is threading.main_thread()
        if not main or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            yield
            return

        def noted(signum: int, frame: Any) -> None:
            self._ctrl_c = True
            if not self._holding:
                raise KeyboardInterrupt

        previous = signal.signal(signal.SIGINT, noted)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextmanager
    def _ctrl_c_deferred(self) -> Iterator[None]:
        """While a finished run is written and counted, a Ctrl-C is only noted (the sweep stops right
        after), so that a result on disk is never missing from the summary's count."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        self._stop_if_interrupted()

    def _stop_if_interrupted(self) -> None:
        if self._ctrl_c:
            raise KeyboardInterrupt

    def _started(self, report: SweepReport, request: RunRequest) -> None:
        self._stop_if_interrupted()
        self.on_event(RunEvent("started", request))
        self.on_update(report, 1)

    def _count(self, report: SweepReport, outcome: RunOutcome) -> None:
        """Count an outcome (already written) in the report and announce it."""
        if outcome.error is None:
            report.done += 1
            self.on_event(RunEvent("finished", outcome.request, outcome.seconds))
            return
        request = outcome.request
        label = f"{request.dataset} {request.teacher}+{request.strategy}+{request.student} {request.bits[0]}b seed {request.seed}"
        report.failed.append({"run": label, "error": outcome.error})
        self.on_event(RunEvent("failed", request, outcome.seconds, outcome.error))

    def _run_pool(self, groups: list[list[RunRequest]], store: ResultStore, report: SweepReport) -> None:
        """Run the groups in ``jobs`` spawned workers that write their own results; count them here."""
        numbered, first = [], 0
        for group in groups:
            numbered.append(list(enumerate(group, first)))
            first += len(group)
        tally = _PoolTally(self, report, [request for group in groups for request in group])
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        context = get_context("spawn")
        with _ctrl_c_ignored():  # processes started now ignore Ctrl-C from their first instruction
            events = context.Queue()
            pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=context, initializer=init_worker,
                                       initargs=(os.getpid(), events, threads, self.plain_progress))
            pending = {pool.submit(run_group_in_worker, items, store.root): items for items in numbered}
        try:
            while pending:
                self._stop_if_interrupted()
                tally.drain(events, timeout=0.5)
                for future in [f for f in pending if f.done()]:
                    tally.settle(future, pending.pop(future))
            pool.shutdown(wait=True)
            tally.drain(events, timeout=0)
        except BaseException:
            with _ctrl_c_ignored():
                _terminate(pool)
                # A run can end (result written, its end queued) just before the interrupt reaches the
                # driver: count the ends the workers had queued, so the summary agrees with the disk.
                tally.drain(events, timeout=0)
            raise
        finally:
            events.close()

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
                self._stop_if_interrupted()
                self.on_update(report, sum(len(g) for g in pending.values()))
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    group = pending.pop(ref)
                    try:
                        outcomes = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - a task or worker that died
                        outcomes = [RunOutcome(r, None, error=f"ray task failed: {_error_line(exc)}") for r in group]
                    with self._ctrl_c_deferred():
                        for outcome in outcomes:
                            write_outcome(store, outcome)
                            self._count(report, outcome)
        finally:
            if started_here:
                ray.shutdown()


class _PoolTally:
    """The driver's view of a pool's numbered runs: which are running, each end counted once,
    whether it comes from the event queue or from the finished task (whichever arrives first)."""

    def __init__(self, executor: SweepExecutor, report: SweepReport, requests: list[RunRequest]) -> None:
        self.executor = executor
        self.report = report
        self.requests = requests
        self.running: set[int] = set()
        self.counted: set[int] = set()

    def drain(self, events: Any, timeout: float) -> None:
        """Handle the queued events, waiting up to ``timeout`` seconds for the first."""
        try:
            message = events.get(timeout=timeout) if timeout else events.get_nowait()
            while True:
                self.handle(message)
                message = events.get_nowait()
        except queue.Empty:
            pass
        self.executor.on_update(self.report, len(self.running))

    def handle(self, message: tuple) -> None:
        """One event from a worker: ``("started", id)`` or ``("finished", id, error, seconds)``."""
        kind, run_id, *end = message
        if run_id in self.counted:
            return
        if kind == "started":
            self.running.add(run_id)
            self.executor.on_event(RunEvent("started", self.requests[run_id]))
        else:
            self.finish(run_id, *end)

    def finish(self, run_id: int, error: Optional[str], seconds: float) -> None:
        """Count one run's end, unless it already was."""
        if run_id in self.counted:
            return
        self.counted.add(run_id)
        self.running.discard(run_id)
        self.executor._count(self.report, RunOutcome(self.requests[run_id], None, error=error, seconds=seconds))

    def settle(self, future: Future, items: list[tuple[int, RunRequest]]) -> None:
        """Count the ends a finished task returns; a task whose worker died fails its uncounted runs."""
        try:
            ends = future.result()
        except Exception as exc:  # noqa: BLE001 - a worker that died
            ends = [(run_id, f"worker failed: {_error_line(exc)}", 0.0) for run_id, _ in items]
        for end in ends:
            self.finish(*end)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop a pool's workers now, runs in flight included, and wait until they are gone."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)
    pool.shutdown(wait=True, cancel_futures=True)


def _codeset_kwargs(arrays: dict[str, Any]) -> dict[str, Any]:
    return {
        "query_image": arrays["query_image_codes"], "query_text": arrays["query_text_codes"],
        "db_image": arrays["db_image_codes"], "db_text": arrays["db_text_codes"],
        "query_labels": arrays["query_labels"], "db_labels": arrays["db_labels"],
    }


def _error_path(store: ResultStore, key: RunKey) -> Path:
    return store.json_path(key).with_suffix(".error.json")
