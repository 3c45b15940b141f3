"""The Wikipedia cross-modal dataset (Rasiwasia et al., ACM MM 2010).

2866 image-text pairs from Wikipedia featured articles, 10 classes; 128-d SIFT bag-of-visual-words
image features and 10-d LDA topic text features as distributed with public CMH code. The standard
split, used here as protocol ``wiki``: the 2173 training pairs are the training set and the
retrieval database, the 693 test pairs are the queries.

Files: ``wikiData.mat`` (MAT v5, items as rows, class ids 1..10) or ``wiki_data.mat``
(MAT v7.3, items as columns, one-hot labels), with variables ``I_tr, T_tr, L_tr, I_te, T_te, L_te``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from cmhbench.data.dataset import CrossModalData, DatasetSpec, Splits
from cmhbench.data.fetch import RemoteFile, Source
from cmhbench.data.locate import FileLayout, find_file
from cmhbench.data.matfile import as_features, as_multi_hot, common_item_count, read_mat
from cmhbench.errors import DataError

FILE_NAMES = ("wikiData.mat", "wiki_data.mat")
VARIABLES = ("I_tr", "T_tr", "L_tr", "I_te", "T_te", "L_te")
CLASS_NAMES = ("art", "biology", "geography", "history", "literature", "media", "music", "royalty", "sport", "warfare")
PAPER = (
    "Rasiwasia, Costa Pereira, Coviello, Doyle, Lanckriet, Levy, Vasconcelos. "
    "A New Approach to Cross-Modal Multimedia Retrieval. ACM MM 2010."
)


LAYOUTS = (
    FileLayout("v5", ("wikiData.mat",), "I_tr 2173 x 128, T_tr 2173 x 10, L_tr class ids; I_te, T_te, L_te (693 items)"),
    FileLayout("v73", ("wiki_data.mat",), "the same variables, MAT v7.3, items as columns, one-hot labels"),
)
SOURCES = (
    Source(
        "bmc-sdnu",
        (
            RemoteFile(
                "https://raw.githubusercontent.com/BMC-SDNU/Cross-Modal-Retrieval/"
                "453b561d98557171dc40d19a265d122252e5051a/Unsupervised%20cross-modal%20hashing/RFDH/wikiData.mat",
                "wikiData.mat",
                "65eb91876cf7df0547165271336dd068f10d1df7bf433969622338baf410413c",
                1077135,
            ),
        ),
        "wikiData.mat as copied in BMC-SDNU/Cross-Modal-Retrieval (RFDH), pinned to a commit",
    ),
)


def _load_part(raw: dict[str, np.ndarray], suffix: str, class_ids: Optional[list[int]]) -> tuple[np.ndarray, ...]:
    names = {k: raw[f"{k}_{suffix}"] for k in ("I", "T", "L")}
    n = common_item_count({f"{k}_{suffix}": v for k, v in names.items()})
    image = as_features(f"I_{suffix}", names["I"], n)
    text = as_features(f"T_{suffix}", names["T"], n)
    labels = as_multi_hot(f"L_{suffix}", names["L"], n, class_ids)
    return image, text, labels


def _class_ids(raw: dict[str, np.ndarray]) -> Optional[list[int]]:
    tr, te = np.asarray(raw["L_tr"]), np.asarray(raw["L_te"])
    if min(tr.shape) == 1 and min(te.shape) == 1:
        return sorted(set(np.unique(tr).astype(int).tolist()) | set(np.unique(te).astype(int).tolist()))
    return None


def load_wiki(data_dir: Optional[Path] = None) -> CrossModalData:
    """Load Wiki from ``data_dir`` (or ``$CMHBENCH_DATA/wiki``): 2866 items, 10 classes, protocol ``wiki``."""
    path = find_file(data_dir, "wiki", FILE_NAMES)
    raw = read_mat(path, VARIABLES)
    class_ids = _class_ids(raw)
    img_tr, txt_tr, lab_tr = _load_part(raw, "tr", class_ids)
    img_te, txt_te, lab_te = _load_part(raw, "te", class_ids)
    for name, a, b in (("I", img_tr, img_te), ("T", txt_tr, txt_te), ("L", lab_tr, lab_te)):
        if a.shape[1] != b.shape[1]:
            raise DataError(f"{path}: {name}_tr and {name}_te have different widths ({a.shape[1]} vs {b.shape[1]})")
    n_tr, n_te = img_tr.shape[0], img_te.shape[0]
    train = np.arange(n_tr, dtype=np.int64)
    splits = Splits(
        query=np.arange(n_tr, n_tr + n_te, dtype=np.int64), database=train, train=train, protocol="wiki", seed=None
    )
    labels = np.concatenate([lab_tr, lab_te])
    return CrossModalData(
        name="wiki",
        image=np.concatenate([img_tr, img_te]),
        text=np.concatenate([txt_tr, txt_te]),
        labels=labels,
        splits=splits,
        origin=str(path),
        class_names=CLASS_NAMES if labels.shape[1] == len(CLASS_NAMES) else (),
    )


WIKI = DatasetSpec(
    name="wiki",
    load=load_wiki,
    description="Wikipedia featured articles: 2173 train/database + 693 query pairs, 10 classes, "
    "128-d SIFT BoVW images, 10-d LDA texts",
    paper=PAPER,
    files=FILE_NAMES,
    subdir="wiki",
    layouts=LAYOUTS,
    default_protocol="wiki",
    sources=SOURCES,
    items=2866,
    classes=10,
)
