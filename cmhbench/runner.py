"""One benchmark run: dataset -> teacher.fit -> strategy.distill -> student.fit -> encode -> evaluate -> store.

The runner is the only place that sees labels next to methods: teachers and students get
label-free :class:`~cmhbench.interfaces.PairedFeatures`; a strategy gets the training labels only
when its spec declares ``uses_labels``. Queries are never passed to any ``fit``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from cmhbench.config import config_hash, config_to_dict, default_config, non_default_settings, resolve_config
from cmhbench.data.dataset import CrossModalData, RawData
from cmhbench.environment import environment
from cmhbench.errors import CmhbenchError, ConfigError, PluginError
from cmhbench.evaluation.codes import sign_codes
from cmhbench.evaluation.crossmodal import CodeSet, evaluate_code_set
from cmhbench.evaluation.metrics import DEFAULT_PRECISION_AT, DEFAULT_TOPK, resolve_device
from cmhbench.features.extract import FeatureRequest, materialize
from cmhbench.interfaces import Modality, NullProgress, PairedFeatures, Progress, RunContext, Supervision
from cmhbench.registry import MethodSpec, Registry
from cmhbench.results.store import SCHEMA_VERSION, ResultStore, RunKey
from cmhbench.training import seed_everything

NONE = "none"
ROLES = ("teacher", "strategy", "student")


@dataclass(frozen=True)
class RunRequest:
    """What ``cmhbench run`` asks for. ``teacher``/``student`` may be ``"none"``.

    ``protocol`` selects a split protocol (``NAME[:key=value,...]``, see
    :mod:`cmhbench.data.protocols`; None: the dataset's default). ``features`` says how raw images
    and texts become features; an ``image_encoder`` there also makes datasets stored both ways
    use their pixels. ``teacher_bits`` is the code length the teacher is trained at when it is
    distilled into a student (None: the strategy's choice, see :func:`teacher_code_length`).
    """

    teacher: str
    strategy: str = "ukd"
    student: str = "dcmh"
    dataset: str = "synthetic"
    data_dir: Optional[Path] = None
    bits: tuple[int, ...] = (16, 32, 64)
    seed: int = 0
    device: str = "auto"
    results_dir: Path = Path("results")
    overrides: tuple[tuple[str, str], ...] = ()
    force: bool = False
    protocol: Optional[str] = None
    features: FeatureRequest = FeatureRequest()
    topk: tuple[int, ...] = DEFAULT_TOPK
    precision_at: tuple[int, ...] = DEFAULT_PRECISION_AT
    teacher_bits: Optional[int] = None


@dataclass
class RunOutcome:
    """One code length's result: ``status`` is ``done`` or ``skipped`` (already stored)."""

    bits: int
    status: str
    path: Path
    result: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True)
class Pipeline:
    """The resolved methods of a run (``None`` where absent) and their configs."""

    teacher: Optional[MethodSpec]
    strategy: Optional[MethodSpec]
    student: Optional[MethodSpec]
    configs: dict[str, Any]

    def names(self) -> dict[str, str]:
        """Role -> method name (``none`` where absent)."""
        return {role: getattr(self, role).name if getattr(self, role) else NONE for role in ROLES}


def stage_seed(seed: int, stage: str) -> int:
    """A seed per pipeline stage, so that one stage's random draws never shift another's."""
    return (seed * 1_000_003 + zlib.crc32(stage.encode())) % 2**31


def parse_bits(text: str) -> tuple[int, ...]:
    """``"16,32,64"`` -> ``(16, 32, 64)``; every length must be a positive integer."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part)
        except ValueError:
            raise ConfigError(f"--bits: {part!r} is not an integer") from None
        if value <= 0:
            raise ConfigError(f"--bits: code length must be positive, got {value}")
        out.append(value)
    if not out:
        raise ConfigError("--bits: give at least one code length, e.g. 16,32,64")
    return tuple(dict.fromkeys(out))


def teacher_code_length(request: RunRequest, pipeline: Pipeline, bits: int) -> Optional[int]:
    """The code length the teacher is trained at in a run of ``bits`` (the student's length).

    None without a teacher; ``bits`` for a teacher evaluated alone; otherwise ``request.teacher_bits``
    when given, else the strategy config's ``teacher_bits`` field when it has one and it is positive
    (``ukd``: UKD's 128-bit teacher), else ``bits``. The strategy ranks, thresholds or compares the
    teacher's outputs at that length; only the student's codes have ``bits`` bits.
    """
    if pipeline.teacher is None:
        return None
    if pipeline.student is None:
        return bits
    if request.teacher_bits is not None:
        return request.teacher_bits
    preferred = getattr(pipeline.configs.get("strategy"), "teacher_bits", 0)
    return int(preferred) if preferred and int(preferred) > 0 else bits


def resolve_pipeline(request: RunRequest, registry: Registry) -> Pipeline:
    """Look the methods up, check that they fit together, and apply ``--set`` overrides.

    An override ``role.key=value`` or ``method.key=value`` targets one method; a bare
    ``key=value`` targets the single selected method that has ``key`` and is an error when
    several or none have it.
    """
    student = None if request.student == NONE else registry.method("student", request.student)
    strategy = registry.method("strategy", request.strategy) if student else None
    needs_teacher = student is None or strategy.uses_teacher
    teacher = None
    if request.teacher and request.teacher != NONE:
        teacher = registry.method("teacher", request.teacher)
        if not needs_teacher:
            raise ConfigError(
                f"strategy {strategy.name!r} does not use a teacher; drop --teacher {teacher.name} (or use --teacher none)"
            )
    elif needs_teacher:
        what = "--student none evaluates a teacher" if student is None else f"strategy {strategy.name!r} distils a teacher"
        raise ConfigError(f"{what}: give --teacher NAME (see `cmhbench list teachers`)")

    specs = {"teacher": teacher, "strategy": strategy, "student": student}
    chosen = {role: spec for role, spec in specs.items() if spec is not None}
    per_role: dict[str, dict[str, str]] = {role: {} for role in chosen}
    for key, value in request.overrides:
        prefix, dot, name = key.partition(".")
        if dot:
            roles = [r for r, s in chosen.items() if prefix in (r, s.name)]
            if not roles:
                raise ConfigError(f"--set {key}: {prefix!r} is neither a role ({', '.join(chosen)}) nor a selected method")
            for role in roles:
                per_role[role][name] = value
            continue
        owners = [r for r, s in chosen.items() if key in {f.name for f in dataclasses.fields(s.config)}]
        if len(owners) > 1:
            options = " or ".join(f"{r}.{key}={value}" for r in owners)
            raise ConfigError(f"--set {key}: several methods have {key!r}; write {options}")
        if not owners:
            known = sorted({f"{r}.{f.name}" for r, s in chosen.items() for f in dataclasses.fields(s.config)})
            raise ConfigError(f"--set {key}: no selected method has a hyperparameter {key!r} (known: {', '.join(known)})")
        per_role[owners[0]][key] = value
    configs = {
        role: resolve_config(spec.config, per_role[role], owner=spec.name, base=spec.dataset_defaults.get(request.dataset))
        for role, spec in chosen.items()
    }
    return Pipeline(teacher=teacher, strategy=strategy, student=student, configs=configs)


@contextmanager
def plugin_guard(spec: MethodSpec, stage: str) -> Iterator[None]:
    """Turn any exception raised by plugin code into a one-line :class:`PluginError`."""
    try:
        yield
    except CmhbenchError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except torch.cuda.OutOfMemoryError as exc:
        raise PluginError(f"{spec.kind} {spec.name!r} ran out of GPU memory during {stage}: {exc}".splitlines()[0]) from exc
    except Exception as exc:  # noqa: BLE001 - third-party code
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise PluginError(f"{spec.kind} {spec.name!r} failed during {stage}: {type(exc).__name__}: {message}") from exc


@contextmanager
def deterministic_torch() -> Iterator[None]:
    """Ask torch for deterministic kernels for the duration of a run (restored afterwards)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


def _encode(model: Any, spec: MethodSpec, x: Any, modality: Modality, bits: int, batch: int = 8192) -> np.ndarray:
    """Codes of ``(n, d)`` features (a tensor or :class:`GatheredRows`, read by slices of ``batch``
    rows) as int8 ``{-1,+1}``, checking the plugin's output."""
    parts = []
    with plugin_guard(spec, f"encode({modality.value})"), torch.no_grad():
        for start in range(0, x.shape[0], batch):
            out = model.encode(x[start : start + batch], modality)
            if not isinstance(out, torch.Tensor) or out.shape != (min(batch, x.shape[0] - start), bits):
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise PluginError(f"{spec.kind} {spec.name!r} encode() returned {shape}, expected (n, {bits})")
            if not torch.isfinite(out).all():
                raise PluginError(f"{spec.kind} {spec.name!r} encode() returned NaN or infinite values")
            parts.append(sign_codes(out.float()).cpu())
    return torch.cat(parts).numpy()


class Runner:
    """Executes a :class:`RunRequest` against a registry, writing one result per code length."""

    def __init__(self, registry: Registry, progress: Optional[Progress] = None, log: Callable[[str], None] = lambda _: None):
        self.registry = registry
        self.progress = progress or NullProgress()
        self.log = log
        self._data_cache: dict[tuple, tuple[CrossModalData, dict[str, dict[str, PairedFeatures]]]] = {}
        self._load_seconds: dict[int, float] = {}  # id(data) -> seconds its load_data took (timings' load_s)
        # The last fitted teacher, reused when the next run trains the very same teacher (same data,
        # config, bits, seed, device): its fit is deterministic, so reuse changes no result.
        self._teacher_cache: Optional[tuple[str, Any, float]] = None

    def prepare(self, request: RunRequest) -> tuple[Pipeline, CrossModalData, torch.device]:
        """Resolve methods, load the dataset and pick the device; every user error surfaces here."""
        if request.device not in ("auto", "cpu", "cuda") and not str(request.device).startswith("cuda:"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got {request.device!r}")
        if str(request.device).startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available (use --device auto or cpu)")
        for bits in request.bits:
            if bits <= 0:
                raise ConfigError(f"--bits: code length must be positive, got {bits}")
        pipeline = resolve_pipeline(request, self.registry)
        if request.teacher_bits is not None:
            if request.teacher_bits <= 0:
                raise ConfigError(f"--teacher-bits: code length must be positive, got {request.teacher_bits}")
            if pipeline.teacher is None or pipeline.student is None:
                raise ConfigError(
                    "--teacher-bits sets the length a teacher is trained at before it is distilled into a student; "
                    "this run has " + ("no teacher" if pipeline.teacher is None else "no student (--bits sets the teacher's length)")
                )
        return pipeline, self.load_data(request), resolve_device(request.device)

    def load_data(self, request: RunRequest) -> CrossModalData:
        """The request's dataset under its protocol (features extracted when asked), loaded once
        per runner."""
        cache_key = (request.dataset, str(request.data_dir), request.protocol, request.features)
        if cache_key not in self._data_cache:
            t0 = time.perf_counter()
            dataset_spec = self.registry.datasets.get(request.dataset)
            loaded = dataset_spec.open(request.data_dir, request.protocol, raw=request.features.image_encoder is not None)
            if isinstance(loaded, RawData):
                features = dataclasses.replace(request.features, device=request.device)
                data, extractions = materialize(loaded, features, self.progress)
                for e in extractions:
                    self.log(f"{e.modality} features: {e.encoder}, {e.items} x {e.dim}, {e.status}")
            else:
                data = loaded
                if request.features.image_encoder is not None:
                    self.log(f"{data.name}: the files hold image features already; --image-encoder is not used")
            self._data_cache[cache_key] = (data, {})
            self._load_seconds[id(data)] = time.perf_counter() - t0
        return self._data_cache[cache_key][0]

    def _tensors(self, data: CrossModalData, device: torch.device) -> dict[str, PairedFeatures]:
        for cached, per_device in self._data_cache.values():
            if cached is data:
                if str(device) not in per_device:
                    per_device[str(device)] = _to_device(data, device)
                return per_device[str(device)]
        return _to_device(data, device)

    def key_for(self, request: RunRequest, bits: int) -> RunKey:
        """The key (and so the result path) a run would have, without running it."""
        pipeline, data, _ = self.prepare(request)
        return self._key(request, pipeline, data, bits)[0]

    def compute(self, request: RunRequest, bits: int) -> tuple[RunKey, dict[str, Any], CodeSet]:
        """Run one code length and return its key, result and codes, writing nothing."""
        pipeline, data, device = self.prepare(request)
        key, payload = self._key(request, pipeline, data, bits)
        with deterministic_torch():
            result, codes = self._run_one(request, pipeline, data, self._tensors(data, device), device, bits, key, payload)
        return key, result, codes

    def run(
        self, request: RunRequest, prepared: Optional[tuple[Pipeline, CrossModalData, torch.device]] = None
    ) -> list[RunOutcome]:
        """Run every code length of ``request`` (``prepared``: the result of :meth:`prepare`, if
        already called); returns one outcome per code length."""
        pipeline, data, device = prepared or self.prepare(request)
        store = ResultStore(request.results_dir)
        outcomes = []
        tensors = self._tensors(data, device)
        for bits in request.bits:
            key, payload = self._key(request, pipeline, data, bits)
            if store.exists(key) and not request.force:
                self.log(f"{bits} bits: result exists, skipped ({store.json_path(key)}); use --force to redo")
                outcomes.append(RunOutcome(bits, "skipped", store.json_path(key), store.read(key)))
                continue
            with deterministic_torch():
                result, codes = self._run_one(request, pipeline, data, tensors, device, bits, key, payload)
            path = store.write(key, result, codes)
            outcomes.append(RunOutcome(bits, "done", path, store.read(key)))
        return outcomes

    def _key(self, request: RunRequest, pipeline: Pipeline, data: CrossModalData, bits: int) -> tuple[RunKey, dict]:
        names = pipeline.names()
        payload = {
            "methods": names,
            "config": {role: config_to_dict(cfg) for role, cfg in pipeline.configs.items()},
            "evaluation": {"topk": list(request.topk), "precision_at": list(request.precision_at)},
            "dataset": {"name": data.name, "revision": data.revision, "split_checksum": data.splits.checksum()},
        }
        if request.teacher_bits is not None:  # only when asked for: the keys of every other run stay as they were
            payload["teacher_bits"] = request.teacher_bits
        variant = config_hash(payload)
        payload = {**payload, "bits": bits, "seed": request.seed}
        key = RunKey(
            dataset=data.name,
            protocol=data.splits.protocol,
            bits=bits,
            seed=request.seed,
            config_hash=config_hash(payload),
            variant=variant,
            **names,
        )
        return key, payload

    def _build(self, spec: MethodSpec, config: Any, device: torch.device, seed: int, role: str) -> Any:
        ctx = RunContext(device=device, seed=stage_seed(seed, role), progress=self.progress)
        seed_everything(ctx.seed)
        with plugin_guard(spec, "construction"):
            return spec.build(config, ctx)

    def _run_one(self, request, pipeline, data, tensors, device, bits, key, payload):
        timings: dict[str, float] = {}
        if id(data) in self._load_seconds:  # reading, checking and splitting the dataset (once per runner)
            timings["load_s"] = self._load_seconds[id(data)]
        started = time.perf_counter()
        train = tensors["train"]
        train_unlabelled = train.without_labels()
        supervision: Optional[Supervision] = None
        teacher = None

        teacher_reused = False
        teacher_bits = teacher_code_length(request, pipeline, bits)
        if pipeline.teacher is not None:
            teacher_key = config_hash(
                [payload["dataset"], pipeline.teacher.name, payload["config"]["teacher"], teacher_bits, request.seed, str(device)]
            )
            if self._teacher_cache is not None and self._teacher_cache[0] == teacher_key:
                _, teacher, timings["teacher_fit_s"] = self._teacher_cache
                teacher_reused = True
            else:
                self._teacher_cache = None
                teacher = self._build(pipeline.teacher, pipeline.configs["teacher"], device, request.seed, "teacher")
                t0 = time.perf_counter()
                with plugin_guard(pipeline.teacher, "fit"):
                    teacher.fit(train_unlabelled, teacher_bits)
                timings["teacher_fit_s"] = time.perf_counter() - t0
                self._teacher_cache = (teacher_key, teacher, timings["teacher_fit_s"])

        if pipeline.student is None:
            model, model_spec = teacher, pipeline.teacher
        else:
            strategy = self._build(pipeline.strategy, pipeline.configs["strategy"], device, request.seed, "strategy")
            t0 = time.perf_counter()
            with plugin_guard(pipeline.strategy, "distill"), torch.no_grad():
                supervision = strategy.distill(teacher, train if pipeline.strategy.uses_labels else train_unlabelled)
            # checked through the operator: n only, no n x n matrix (Supervision checked its values)
            if not isinstance(supervision, Supervision) or supervision.n != len(train):
                raise PluginError(
                    f"strategy {pipeline.strategy.name!r} must return a Supervision with an "
                    f"({len(train)}, {len(train)}) similarity (its n is the number of training pairs)"
                )
            timings["distill_s"] = time.perf_counter() - t0
            model = self._build(pipeline.student, pipeline.configs["student"], device, request.seed, "student")
            t0 = time.perf_counter()
            with plugin_guard(pipeline.student, "fit"):
                model.fit(train_unlabelled, supervision, bits)
            timings["student_fit_s"] = time.perf_counter() - t0
            model_spec = pipeline.student

        t0 = time.perf_counter()
        q, db = tensors["query"], tensors["database"]
        codes = CodeSet(
            query_image=_encode(model, model_spec, q.image, Modality.IMAGE, bits),
            query_text=_encode(model, model_spec, q.text, Modality.TEXT, bits),
            db_image=_encode(model, model_spec, db.image, Modality.IMAGE, bits),
            db_text=_encode(model, model_spec, db.text, Modality.TEXT, bits),
            query_labels=data.labels[data.splits.query],
            db_labels=data.labels[data.splits.database],
        )
        timings["encode_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        metrics = evaluate_code_set(codes, topk=request.topk, precision_at=request.precision_at, device=str(device))
        timings["evaluate_s"] = time.perf_counter() - t0
        for direction, values in metrics.items():
            timings[f"evaluate_{direction}_s"] = values.pop("seconds")
        timings["total_s"] = time.perf_counter() - started

        result = {
            "schema": SCHEMA_VERSION,
            "key": {
                "dataset": key.dataset, "protocol": key.protocol, "teacher": key.teacher, "strategy": key.strategy,
                "student": key.student, "bits": bits, "seed": request.seed, "config_hash": key.config_hash,
                "variant": key.variant,
                **({"teacher_bits": request.teacher_bits} if request.teacher_bits is not None else {}),
            },
            "teacher_reused": teacher_reused,
            "teacher_bits": teacher_bits,
            "config": payload["config"],
            "non_default": {
                **non_default_settings(
                    payload["config"],
                    {role: default_config(getattr(pipeline, role), request.dataset) for role in payload["config"]},
                ),
                **({"teacher_bits": request.teacher_bits} if request.teacher_bits is not None else {}),
            },
            "evaluation": payload["evaluation"],
            "methods": {
                role: {"name": spec.name, "paper": spec.paper, "code": spec.code, "source": spec.source, "version": spec.version}
                for role in ROLES
                if (spec := getattr(pipeline, role)) is not None
            },
            "dataset": data.describe(),
            "supervision": _jsonable(supervision.info) if supervision is not None else None,
            "metrics": metrics,
            "timings": timings,
            "environment": environment(device, self.registry.plugins),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        return result, codes


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in info.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (np.generic,)):
            v = v.item()
        out[str(k)] = v if isinstance(v, (int, float, str, bool, type(None), list, dict)) else str(v)
    return out


class GatheredRows:
    """``(n, d)`` rows ``arr[idx]`` of a host array, gathered only when sliced: ``rows[a:b]`` is the
    tensor ``arr[idx[a:b]]`` on ``device``. The runner holds the query and database splits this way
    on the CPU when they are scattered among the items: it only encodes them, a block at a time, so
    the file-order features are never copied whole for evaluation (under ``djsrh`` the database is
    nearly every item: a gathered copy would double the features' memory). Never handed to a plugin."""

    ndim = 2

    def __init__(self, arr: np.ndarray, idx: np.ndarray, device: torch.device) -> None:
        self.arr, self.idx, self.device = arr, np.asarray(idx), torch.device(device)

    @property
    def shape(self) -> torch.Size:
        """``(len(idx), d)``."""
        return torch.Size((len(self.idx), self.arr.shape[1]))

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, rows: slice) -> torch.Tensor:
        if not isinstance(rows, slice):
            raise TypeError("GatheredRows are read by slices of rows")
        return torch.from_numpy(self.arr[self.idx[rows]]).to(self.device)


EVALUATION_SPLITS = ("query", "database")


def _to_device(data: CrossModalData, device: torch.device) -> dict[str, PairedFeatures]:
    """The ``train``, ``query`` and ``database`` pairs of ``data`` as tensors on ``device`` (labels
    for ``train`` only), without needless copies (:func:`_split_tensors`): identical splits share one
    tensor, a split that is a contiguous block of a larger one (or of the items) is a view of it,
    on the CPU a contiguous block of the items is a view of the dataset's own array, and a scattered
    query or database split on the CPU is a :class:`GatheredRows`, read by blocks when encoded.
    Plugins must therefore never change these tensors in place (they never did: a split's features
    may be another's)."""
    splits = {name: np.asarray(getattr(data.splits, name)) for name in ("train", "query", "database")}
    image, text = _split_tensors(data.image, splits, device), _split_tensors(data.text, splits, device)
    return {
        name: PairedFeatures(
            image=image[name],
            text=text[name],
            labels=torch.from_numpy(data.labels[idx].astype(np.float32)).to(device) if name == "train" else None,
        )
        for name, idx in splits.items()
    }


def _split_tensors(arr: np.ndarray, splits: dict[str, np.ndarray], device: torch.device) -> dict[str, Any]:
    """``arr[idx]`` as a tensor on ``device`` for each split ``name -> idx`` (int64 row indices), with
    the values of that fancy index, made largest split first: a split equal to one already made is
    that very tensor; a contiguous block of one (``dcmh``/``ukd``/``dadh``: training = the first items
    of the database) is a view of it; a contiguous range of rows (``ucch``, ``dadh``) is
    ``arr[start:stop]``, a view of ``arr`` on the CPU (``torch.from_numpy``), one block moved to
    another device; a scattered split is gathered into new memory, except on the CPU a scattered
    query or database split, which stays a :class:`GatheredRows` (gathered a block at a time when
    encoded; the training split is then gathered on its own)."""
    made: dict[str, Any] = {}
    lazy = device.type == "cpu"
    for name in sorted(splits, key=lambda k: -len(splits[k])):  # stable: ties keep their order
        idx = splits[name]
        for other, tensor in made.items():
            if isinstance(tensor, GatheredRows):
                continue
            offset = _block_offset(idx, splits[other])
            if offset is not None:
                made[name] = tensor if len(idx) == len(splits[other]) else tensor[offset : offset + len(idx)]
                break
        else:
            start = _block_offset(idx, None, len(arr))
            if start is None and lazy and name in EVALUATION_SPLITS:
                made[name] = GatheredRows(arr, idx, device)
                continue
            part = arr[start : start + len(idx)] if start is not None else arr[idx]
            if not (part.flags.c_contiguous and part.flags.writeable):  # as the fancy index gave: C-ordered, writable
                part = np.array(part, order="C")
            made[name] = torch.from_numpy(part).to(device)
    return {name: made[name] for name in splits}


def _block_offset(idx: np.ndarray, within: Optional[np.ndarray], n: int = 0) -> Optional[int]:
    """Where the non-empty index list ``idx`` occurs as a contiguous block of ``within`` (None: of
    ``0 .. n-1``, i.e. ``idx`` is a range of rows); None when it does not."""
    if len(idx) == 0:
        return None
    if within is None:
        first = int(idx[0])
        ok = 0 <= first and first + len(idx) <= n and int(idx[-1]) == first + len(idx) - 1
        return first if ok and np.array_equal(idx, np.arange(first, first + len(idx))) else None
    if len(idx) > len(within):
        return None
    hits = np.flatnonzero(within[: len(within) - len(idx) + 1] == idx[0])
    for offset in hits[:1].tolist():  # split indices are distinct: at most one candidate
        if np.array_equal(within[offset : offset + len(idx)], idx):
            return offset
    return None
