"""The raw layout: a folder of images plus ``items.jsonl``, one JSON object per image-text pair.

::

    my-dataset/
      items.jsonl
      images/0001.jpg ...

Each line of ``items.jsonl`` is an object with

- ``image``: the image file's path relative to the folder (any format Pillow reads);
- ``text``: a string (a caption) or a list of strings (tags, joined with ", ");
- ``labels``: a list of class names (strings) or class numbers (non-negative integers); may be
  empty (such an item is relevant to no query);
- ``split`` (optional): ``"query"`` or ``"database"``. When every line has one, protocol ``given``
  uses it (database items are also the training set). Without it the default protocol is
  ``dcmh`` with a tenth of the items (at least one) as queries and all others as database and
  training set; ``--protocol`` chooses any other.

Blank lines are skipped. Class names are sorted to fix the label columns; class numbers are the
columns themselves. The images become features through an image encoder and the texts through a
text encoder (:mod:`cmhbench.features`); ``cmhbench run --dataset raw --data-dir FOLDER``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cmhbench.data.dataset import DatasetSpec, Loaded, RawData, Splits
from cmhbench.data.images import FileImages
from cmhbench.data.locate import FileLayout, find_layout
from cmhbench.data.protocols import resolve
from cmhbench.errors import DataError

NAME = "raw"
INDEX = "items.jsonl"
SPLITS = ("query", "database")
GIVEN = "given"
LAYOUT = FileLayout(
    "jsonl", (INDEX,), 'one {"image": path, "text": str or [tags], "labels": [...], "split"?: "query"|"database"} per line',
    raw_images=True,
)


def _line_error(path: Path, number: int, message: str) -> DataError:
    return DataError(f"{path} line {number}: {message}")


def read_items(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for every non-blank line of a JSONL index, checked for the required keys."""
    items = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _line_error(path, number, f"not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise _line_error(path, number, "expected a JSON object")
        for key in ("image", "text", "labels"):
            if key not in obj:
                raise _line_error(path, number, f"missing key {key!r}")
        if not isinstance(obj["image"], str) or not obj["image"]:
            raise _line_error(path, number, "'image' must be a file path")
        text = obj["text"]
        if not (isinstance(text, str) or (isinstance(text, list) and all(isinstance(t, str) for t in text))):
            raise _line_error(path, number, "'text' must be a string or a list of strings")
        if not isinstance(obj["labels"], list):
            raise _line_error(path, number, "'labels' must be a list")
        if "split" in obj and obj["split"] not in SPLITS:
            raise _line_error(path, number, f"'split' must be one of {', '.join(SPLITS)}, got {obj['split']!r}")
        items.append((number, obj))
    if not items:
        raise DataError(f"{path}: holds no items")
    return items


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "name"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return "number"
    return "bad"


def _labels(path: Path, items: list[tuple[int, dict[str, Any]]]) -> tuple[np.ndarray, tuple[str, ...]]:
    first = None
    for number, obj in items:
        for value in obj["labels"]:
            kind = _kind(value)
            first = first or kind
            if kind == "bad" or kind != first:
                raise _line_error(path, number, "labels must be all class names (strings) or all class numbers (integers >= 0)")
    values = [v for _, obj in items for v in obj["labels"]]
    if first == "name":
        names = tuple(sorted(set(values)))
        column = {name: k for k, name in enumerate(names)}
    else:
        names = ()
        column = {v: v for v in values}
    n_classes = max(column.values(), default=-1) + 1
    if n_classes == 0:
        raise DataError(f"{path}: no item has a label")
    labels = np.zeros((len(items), n_classes), dtype=np.uint8)
    for row, (_, obj) in enumerate(items):
        labels[row, [column[v] for v in obj["labels"]]] = 1
    return labels, names


def _given_splits(path: Path, items: list[tuple[int, dict[str, Any]]]) -> Splits:
    marked = [obj.get("split") for _, obj in items]
    missing = [n for (n, _), s in zip(items, marked) if s is None]
    if missing:
        raise _line_error(path, missing[0], "protocol 'given' needs a 'split' on every line")
    query = np.array([k for k, s in enumerate(marked) if s == "query"], dtype=np.int64)
    database = np.array([k for k, s in enumerate(marked) if s == "database"], dtype=np.int64)
    return Splits(query=query, database=database, train=database, protocol=GIVEN, seed=None, version=1,
                  rule="the split named on each line of items.jsonl; database items are also the training set",
                  params={"query": int(query.size)})


def load_raw_folder(data_dir: Optional[Path] = None, protocol: Optional[str] = None) -> Loaded:
    """A raw dataset from ``data_dir`` (or ``$CMHBENCH_DATA/raw``): pixels and texts, not yet features."""
    _, files = find_layout(data_dir, NAME, (LAYOUT,))
    path = files[INDEX]
    items = read_items(path)
    labels, class_names = _labels(path, items)
    texts = tuple(obj["text"] if isinstance(obj["text"], str) else ", ".join(obj["text"]) for _, obj in items)
    images = FileImages(path.parent, [obj["image"] for _, obj in items])
    all_split = all("split" in obj for _, obj in items)
    if protocol == GIVEN or (protocol is None and all_split):
        splits = _given_splits(path, items)
    else:
        if protocol is None:
            n_query = max(1, len(items) // 10)
            protocol = f"dcmh:query={n_query},train={len(items) - n_query}"
        splits = resolve(protocol).splits(labels)
    return RawData(
        name=NAME,
        images=images,
        labels=labels,
        splits=splits,
        texts=texts,
        origin=str(path.parent),
        class_names=class_names,
        details={"layout": "jsonl", "unlabelled": int((labels.sum(1) == 0).sum())},
    )


RAW = DatasetSpec(
    name=NAME,
    load=load_raw_folder,
    description="Your own data: a folder of images plus items.jsonl ({image, text, labels[, split]} per line); "
    "features come from an image and a text encoder",
    paper="(your data)",
    files=(INDEX,),
    subdir=NAME,
    layouts=(LAYOUT,),
    default_protocol="given or dcmh (10% queries)",
    protocol_aware=True,
)
