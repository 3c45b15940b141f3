"""Where a dataset's files are looked for, and which of its file layouts a folder holds.

A dataset is looked for in ``--data-dir`` (the folder itself, then its ``<subdir>``), or else in
``$CMHBENCH_DATA/<subdir>``. A dataset that public code ships in several forms declares one
:class:`FileLayout` per form; the first layout whose files are all present wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from cmhbench.errors import FilesNotFoundError

DATA_ENV = "CMHBENCH_DATA"


@dataclass(frozen=True)
class FileLayout:
    """One way a dataset is stored: the file names that must all be present (``files``; a
    ``*`` in a name matches any prefix, as in ``*_img.txt``), a short ``name`` for messages and
    ``holds``, a one-line description of the variables, shapes and dtypes inside.
    ``raw_images`` is True when the layout holds pixels, which need an image encoder to become
    features (see :mod:`cmhbench.features`).
    """

    name: str
    files: tuple[str, ...]
    holds: str
    raw_images: bool = False

    def match(self, folder: Path) -> Optional[dict[str, Path]]:
        """File name pattern -> path when every file of the layout is in ``folder``, else None."""
        found = {}
        for pattern in self.files:
            hits = sorted(folder.glob(pattern)) if "*" in pattern else [folder / pattern]
            hits = [h for h in hits if h.is_file()]
            if not hits:
                return None
            found[pattern] = hits[0]
        return found


def candidate_dirs(data_dir: Optional[Path], subdir: str) -> list[Path]:
    """Where a dataset's files are looked for: ``data_dir`` itself (and its ``subdir``), else
    ``$CMHBENCH_DATA/subdir``."""
    if data_dir is not None:
        return [Path(data_dir), Path(data_dir) / subdir]
    env = os.environ.get(DATA_ENV)
    return [Path(env) / subdir] if env else []


def find_file(data_dir: Optional[Path], subdir: str, names: tuple[str, ...]) -> Path:
    """The first of ``names`` found in :func:`candidate_dirs`; a :class:`DataError` lists where it looked."""
    dirs = candidate_dirs(data_dir, subdir)
    for d in dirs:
        for name in names:
            if (d / name).is_file():
                return d / name
    if not dirs:
        raise FilesNotFoundError(f"no data directory: pass --data-dir or set {DATA_ENV} (looking for {' or '.join(names)})")
    where = ", ".join(str(d) for d in dirs)
    raise FilesNotFoundError(f"{' or '.join(names)} not found in {where}")


def find_layout(
    data_dir: Optional[Path], subdir: str, layouts: Sequence[FileLayout]
) -> tuple[FileLayout, dict[str, Path]]:
    """The first of ``layouts`` (in order) complete in one of :func:`candidate_dirs`, with its files.

    Raises a :class:`FilesNotFoundError` that names every layout it tried and every folder it looked in.
    """
    dirs = candidate_dirs(data_dir, subdir)
    wanted = "; or ".join(" + ".join(layout.files) for layout in layouts)
    if not dirs:
        raise FilesNotFoundError(f"no data directory: pass --data-dir or set {DATA_ENV} (looking for {wanted})")
    for layout in layouts:
        for d in dirs:
            found = layout.match(d)
            if found is not None:
                return layout, found
    raise FilesNotFoundError(f"none of the file layouts found in {', '.join(str(d) for d in dirs)} (looking for {wanted})")
