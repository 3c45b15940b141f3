"""Name -> spec lookup for methods and datasets, with wildcard listing and "did you mean" errors."""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Literal, Mapping, Optional, TypeVar

from cmhbench.errors import PluginError, UnknownNameError

MethodKind = Literal["teacher", "strategy", "student"]
METHOD_KINDS: tuple[MethodKind, ...] = ("teacher", "strategy", "student")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_\-]*$")
RESERVED_NAMES = frozenset({"none", "all"})


@dataclass(frozen=True)
class MethodSpec:
    """Everything cmhbench needs to know about one teacher, strategy or student.

    ``build(config, ctx)`` returns an object following the :mod:`cmhbench.interfaces` protocol of
    its ``kind``; ``config`` is a frozen dataclass type whose defaults follow the paper.
    ``paper`` is the citation, ``code`` the official code the implementation follows.
    Strategies declare whether they read a teacher (``uses_teacher``) and labels (``uses_labels``).
    ``dataset_defaults`` maps a dataset name to the hyperparameters the official code uses on it
    (applied before ``--set`` overrides and recorded in every result). ``source`` and ``version`` (the providing plugin and its distribution version) are filled in
    at registration.
    """

    name: str
    kind: MethodKind
    build: Callable[[Any, Any], Any]
    config: type
    paper: str
    code: str = ""
    summary: str = ""
    uses_teacher: bool = True
    uses_labels: bool = False
    dataset_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: str = ""
    version: str = ""

    def __post_init__(self) -> None:
        if self.kind not in METHOD_KINDS:
            raise ValueError(f"kind must be one of {METHOD_KINDS}, got {self.kind!r}")
        if not NAME_PATTERN.match(self.name) or self.name in RESERVED_NAMES:
            raise ValueError(f"invalid method name {self.name!r} (lowercase letters, digits, - and _)")
        if not dataclasses.is_dataclass(self.config):
            raise ValueError(f"{self.name}: config must be a dataclass type")
        if not self.paper:
            raise ValueError(f"{self.name}: a method must cite its paper")

    def metadata(self) -> dict[str, Any]:
        """A JSON-ready description (``cmhbench list --json``)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "paper": self.paper,
            "code": self.code,
            "summary": self.summary,
            "source": self.source,
            "version": self.version,
            "uses_teacher": self.uses_teacher,
            "uses_labels": self.uses_labels,
            "dataset_defaults": {k: dict(v) for k, v in self.dataset_defaults.items()},
            "hyperparameters": {
                f.name: {"default": _jsonable(f.default), "help": f.metadata.get("help", "")}
                for f in dataclasses.fields(self.config)
            },
        }


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


S = TypeVar("S")


@dataclass
class Table(Generic[S]):
    """Specs of one kind by name; a second registration of a name is an error."""

    kind: str
    items: dict[str, S] = field(default_factory=dict)

    def add(self, name: str, spec: S, source: str) -> None:
        """Register ``spec`` under ``name``; raises :class:`PluginError` on a duplicate name."""
        if name in self.items:
            other = getattr(self.items[name], "source", "?")
            raise PluginError(
                f"{self.kind} {name!r} is registered twice (by {other} and by {source}); "
                f"uninstall or disable one of them"
            )
        self.items[name] = spec

    def get(self, name: str) -> S:
        """The spec named ``name``; unknown names raise :class:`UnknownNameError` with close matches."""
        try:
            return self.items[name]
        except KeyError:
            pass
        close = difflib.get_close_matches(name, list(self.items), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        known = ", ".join(sorted(self.items)) or "(none registered)"
        raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} (known: {known})")

    def list(self, pattern: str = "*") -> list[S]:
        """Specs whose name matches the fnmatch ``pattern``, sorted by name."""
        return [self.items[n] for n in sorted(self.items) if fnmatch.fnmatchcase(n, pattern)]

    def __contains__(self, name: object) -> bool:
        return name in self.items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.items))


@dataclass
class Registry:
    """All registered teachers, strategies, students and datasets."""

    teachers: Table[MethodSpec] = field(default_factory=lambda: Table("teacher"))
    strategies: Table[MethodSpec] = field(default_factory=lambda: Table("strategy"))
    students: Table[MethodSpec] = field(default_factory=lambda: Table("student"))
    datasets: Table[Any] = field(default_factory=lambda: Table("dataset"))
    plugins: dict[str, str] = field(default_factory=dict)

    def table(self, kind: str) -> Table:
        """The table for ``kind`` (teacher, strategy, student, dataset; plural accepted)."""
        key = {"teacher": "teachers", "strategy": "strategies", "student": "students", "dataset": "datasets"}.get(
            kind, kind
        )
        if key not in ("teachers", "strategies", "students", "datasets"):
            raise UnknownNameError(f"unknown kind {kind!r}; expected teachers, strategies, students or datasets")
        return getattr(self, key)

    def add_method(self, spec: MethodSpec, source: str, version: str) -> None:
        """Register a method spec, stamping it with the plugin that provided it."""
        spec = dataclasses.replace(spec, source=source, version=version)
        self.table(spec.kind).add(spec.name, spec, source)

    def add_dataset(self, spec: Any, source: str, version: str) -> None:
        """Register a dataset spec, stamping it with the plugin that provided it."""
        spec = dataclasses.replace(spec, source=source, version=version)
        self.datasets.add(spec.name, spec, source)

    def method(self, kind: MethodKind, name: str) -> MethodSpec:
        """Look up a method by kind and name."""
        return self.table(kind).get(name)

    def find_any(self, name: str) -> Optional[MethodSpec]:
        """The first method of any kind called ``name``, or None."""
        for kind in METHOD_KINDS:
            if name in self.table(kind):
                return self.table(kind).get(name)
        return None
