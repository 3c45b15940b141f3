"""Sweep files: a grid of runs in TOML (or YAML), expanded to one :class:`RunRequest` per run.

    name = "wiki"
    results = "results"                 # relative to the sweep file; --results overrides

    [defaults]                          # inherited by every grid block
    datasets = ["wiki"]
    protocols = ["wiki"]                # optional: split protocols (default: each dataset's own)
    bits = [16, 32, 64]
    teacher_bits = [128]                # optional: the teacher's code length when distilled
                                        # (default: the strategy's, e.g. ukd 128; else bits)
    seeds = [0, 1, 2]

    [data_dirs]                         # per dataset; $VARS expand (relative to the working folder),
                                        # other relative paths are relative to the sweep file
    wiki = "$CMHBENCH_DATA/wiki"

    [[grid]]                            # the cartesian product of its lists
    teachers = ["djsrh"]
    strategies = ["ukd", "labels"]
    students = ["dcmh"]
    [grid.set]                          # hyperparameter grid: a list is one axis of the product
    "student.epochs" = [100, 150]

A block's ``teachers`` default to ``["none"]``, ``strategies`` to ``["ukd"]``, ``students`` to
``["dcmh"]``; a strategy that uses no teacher is paired with teacher ``none`` only, and with
``students = ["none"]`` the strategies are ignored. Identical runs from several blocks run once.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from cmhbench.config import value_text
from cmhbench.errors import ConfigError, DataError
from cmhbench.registry import Registry
from cmhbench.runner import NONE, RunRequest, resolve_pipeline

BLOCK_KEYS = ("datasets", "protocols", "teachers", "strategies", "students", "bits", "teacher_bits", "seeds", "set", "device")
TOP_KEYS = ("name", "results", "defaults", "data_dirs", "grid")


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep: its name, where results go, and the runs (one code length each)."""

    name: str
    results_dir: Path
    runs: tuple[RunRequest, ...]


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"sweep file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use TOML") from None
            data = yaml.safe_load(text)
        else:
            data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a valid sweep file ({type(exc).__name__}: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - yaml's own errors
        raise ConfigError(f"{path}: not a valid sweep file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a sweep file holds a table of settings")
    return data


def _check_keys(table: Any, known: Sequence[str], where: str, what: str = "key") -> None:
    """Refuse a table that is not one, or any key of ``table`` not in ``known``, naming close matches."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table ({what} = value)")
    for key in table:
        if key in known:
            continue
        close = difflib.get_close_matches(str(key), list(known), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(known)}"
        raise ConfigError(f"{where}: unknown {what} {key!r}{hint}")


def _list(block: dict, key: str, default: Any, where: str) -> list:
    value = block.get(key, default)
    if value is None:
        raise ConfigError(f"{where}: give {key}")
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{where}: {key} is empty")
    return values


def _set_grid(block: dict, where: str) -> list[tuple[tuple[str, str], ...]]:
    table = block.get("set", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: 'set' must be a table of hyperparameter = value or [values]")
    axes = []
    for key, value in table.items():
        values = value if isinstance(value, list) else [value]
        axes.append([(str(key), value_text(v)) for v in values])
    return [tuple(combo) for combo in itertools.product(*axes)] if axes else [()]


def load_sweep(path: Path, registry: Registry, results_dir: Optional[Path] = None, device: str = "auto") -> Sweep:
    """Parse and expand a sweep file; every name and override is validated before anything runs."""
    path = Path(path)
    data = _read(path)
    _check_keys(data, TOP_KEYS, str(path), "setting")
    defaults = data.get("defaults", {})
    _check_keys(defaults, BLOCK_KEYS, f"{path} [defaults]")
    blocks = data.get("grid", [])
    if not isinstance(blocks, list) or not blocks:
        raise ConfigError(f"{path}: give at least one [[grid]] block")
    for number, block in enumerate(blocks, start=1):
        _check_keys(block, BLOCK_KEYS, f"{path} [[grid]] #{number}")
    raw_dirs = data.get("data_dirs", {})
    _check_keys(raw_dirs, list(registry.datasets), f"{path} [data_dirs]", "dataset")
    data_dirs = {name: _resolve_dir(path, value) for name, value in raw_dirs.items() if name in _datasets_used(defaults, blocks)}
    results = Path(results_dir) if results_dir else _resolve_dir(path, data.get("results", "results"))

    runs: dict[RunRequest, None] = {}
    for number, block in enumerate(blocks, start=1):
        used_keys: set[str] = set()
        where = f"{path} [[grid]] #{number}"
        merged = {**defaults, **block}
        for dataset, protocol, teacher, strategy, student, bits, teacher_bits, seed, overrides in itertools.product(
            _list(merged, "datasets", None, where),
            _list(merged, "protocols", [None], where),
            _list(merged, "teachers", [NONE], where),
            _list(merged, "strategies", ["ukd"], where),
            _list(merged, "students", ["dcmh"], where),
            _list(merged, "bits", None, where),
            _list(merged, "teacher_bits", [None], where),
            _list(merged, "seeds", [0], where),
            _set_grid(merged, where),
        ):
            if student == NONE:
                strategy = "ukd"  # unused; keeps requests for the teacher alone identical across blocks
            if not isinstance(bits, int) or bits <= 0:
                raise ConfigError(f"{where}: bits must be positive integers, got {bits!r}")
            if teacher_bits is not None and (not isinstance(teacher_bits, int) or teacher_bits <= 0):
                raise ConfigError(f"{where}: teacher_bits must be positive integers, got {teacher_bits!r}")
            if student == NONE or teacher == NONE:
                teacher_bits = None  # only a distilled teacher has a length of its own
            if student != NONE and teacher != NONE and not registry.method("strategy", strategy).uses_teacher:
                continue  # e.g. labels with a teacher: the teacher-free run comes from teachers = ["none"]
            if student != NONE and teacher == NONE and registry.method("strategy", strategy).uses_teacher:
                continue
            methods = _chosen(registry, str(teacher), str(strategy), str(student))
            applicable = tuple((k, v) for k, v in overrides if _applies(k, methods))
            used_keys.update(k for k, _ in applicable)
            request = RunRequest(
                teacher=str(teacher), strategy=str(strategy), student=str(student), dataset=str(dataset),
                protocol=None if protocol is None else str(protocol),
                data_dir=data_dirs.get(str(dataset)), bits=(bits,), teacher_bits=teacher_bits, seed=int(seed),
                device=str(merged.get("device", device)), results_dir=results, overrides=applicable,
            )
            runs[request] = None
        for key, _ in _set_grid(merged, where)[0]:
            if key not in used_keys:
                raise ConfigError(f"{where}: --set {key} applies to no run of this block (check its role, method or name)")
    checked: set = set()
    for request in runs:
        marker = (request.teacher, request.strategy, request.student, request.dataset, request.overrides)
        if marker not in checked:
            registry.datasets.get(request.dataset)
            resolve_pipeline(request, registry)
            checked.add(marker)
    return Sweep(name=str(data.get("name", path.stem)), results_dir=results, runs=tuple(runs))


def _chosen(registry: Registry, teacher: str, strategy: str, student: str) -> dict[str, Any]:
    """Role -> MethodSpec of the methods a run uses."""
    chosen = {}
    if teacher != NONE:
        chosen["teacher"] = registry.method("teacher", teacher)
    if student != NONE:
        chosen["strategy"] = registry.method("strategy", strategy)
        chosen["student"] = registry.method("student", student)
    return chosen


def _applies(key: str, methods: dict[str, Any]) -> bool:
    """Whether a ``--set`` key addresses one of a run's methods (by role, method name or field)."""
    prefix, dot, _ = key.partition(".")
    if dot:
        return any(prefix in (role, spec.name) for role, spec in methods.items())
    return any(key in {f.name for f in dataclasses.fields(spec.config)} for spec in methods.values())


def _datasets_used(defaults: dict, blocks: list) -> set[str]:
    used = set()
    for block in blocks:
        value = block.get("datasets", defaults.get("datasets", []))
        used.update(value if isinstance(value, list) else [value])
    return used


def _resolve_dir(sweep_path: Path, value: str) -> Path:
    expanded = os.path.expandvars(str(value))
    if "$" in expanded:
        raise ConfigError(f"{sweep_path}: {value!r} names an environment variable that is not set")
    candidate = Path(expanded).expanduser()
    if candidate.is_absolute() or "$" in str(value):
        return candidate  # a path taken from the environment is relative to where the sweep runs
    return sweep_path.parent / candidate
