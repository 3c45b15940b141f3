"""The result store: one JSON file (and one codes ``.npz``) per run, written atomically.

Layout: ``ROOT/<dataset>/<protocol>/<teacher>+<strategy>+<student>/<bits>bits-seed<seed>-<hash>.json``
with the codes beside it (``... .codes.npz``). ``hash`` digests everything that defines the run
(resolved hyperparameters, evaluation settings, data revision and split checksum), so a run with
other settings never overwrites or shadows another. The JSON is written last: its presence means
the run is complete, and an existing one is skipped unless forced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from cmhbench.errors import DataError
from cmhbench.files import atomic_open

if TYPE_CHECKING:
    from cmhbench.evaluation.crossmodal import CodeSet

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class RunKey:
    """What names a run: dataset, protocol, the three methods, code length, seed and config hash.

    ``variant`` digests the configuration without code length and seed: runs that differ only
    in those share it, and a leaderboard row is one (teacher, strategy, student, variant).
    """

    dataset: str
    protocol: str
    teacher: str
    strategy: str
    student: str
    bits: int
    seed: int
    config_hash: str
    variant: str = ""

    @property
    def pipeline(self) -> str:
        """``teacher+strategy+student`` (``none`` where a part is absent)."""
        return f"{self.teacher}+{self.strategy}+{self.student}"

    def relative_stem(self) -> Path:
        """The result's path below the store root, without suffix."""
        return Path(self.dataset, self.protocol, self.pipeline, f"{self.bits}bits-seed{self.seed}-{self.config_hash}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename
    (usual file mode: 0666 less the umask)."""
    with atomic_open(path) as fh:
        fh.write(text)


class ResultStore:
    """Reads and writes run results under one root folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise DataError(f"results path {self.root} exists and is not a folder")

    def json_path(self, key: RunKey) -> Path:
        """Where the run's JSON lives."""
        return self.root / key.relative_stem().with_suffix(".json")

    def codes_path(self, key: RunKey) -> Path:
        """Where the run's codes live."""
        return self.root / key.relative_stem().with_suffix(".codes.npz")

    def exists(self, key: RunKey) -> bool:
        """True when a complete result for ``key`` is stored."""
        return self.json_path(key).is_file()

    def read(self, key: RunKey) -> dict[str, Any]:
        """The stored result for ``key``."""
        return load_result(self.json_path(key))

    def write(self, key: RunKey, result: dict[str, Any], codes: Optional[CodeSet]) -> Path:
        """Store codes (if any), then the JSON, each atomically; returns the JSON path."""
        path = self.json_path(key)
        if codes is not None:
            codes.save(self.codes_path(key))
            result = {**result, "codes_file": self.codes_path(key).name}
        atomic_write_text(path, json.dumps(result, indent=2, sort_keys=False) + "\n")
        return path

    def iter_results(self) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Every stored result, in path order."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.rglob("*.json")):
            if any(part.startswith(".") for part in path.relative_to(self.root).parts) or path.name.endswith(".error.json"):
                continue
            yield path, load_result(path)


def load_result(path: Path) -> dict[str, Any]:
    """Read one result JSON, checking that it is a cmhbench result of a known schema."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable result file ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA_VERSION:
        raise DataError(f"{path}: not a cmhbench result of schema {SCHEMA_VERSION}")
    return data
