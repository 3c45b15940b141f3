"""IAPR TC-12 (Grubinger et al., 2006) as released with UCCH.

[rand] ``iapr-tc12-rand.mat`` holds a pre-shuffled database part (``VDatabase`` image features,
``YDatabase`` tag bag-of-words, ``databaseL`` labels) and a test part (``VTest``, ``YTest``,
``testL``). As in penghu-cs/UCCH (``src/cmdataset.py``) the items are the database part followed
by the test part; the default protocol ``ucch`` then makes the last 2000 items (the test part of
the public file) the queries and all others the database and training set. No item is dropped
(UCCH keeps every item); the number of unlabelled items is recorded in the dataset details.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from cmhbench.data.assemble import from_files
from cmhbench.data.dataset import DatasetSpec, Loaded
from cmhbench.data.locate import FileLayout, find_layout
from cmhbench.data.matfile import as_features, as_multi_hot, common_item_count, read_mat
from cmhbench.errors import DataError

NAME = "iapr-tc12"
PAPER = (
    "Grubinger, Clough, Mueller, Deselaers. The IAPR TC-12 Benchmark: A New Evaluation Resource for "
    "Visual Information Systems. OntoImage 2006."
)
RAND = FileLayout(
    "rand",
    ("iapr-tc12-rand.mat",),
    "VDatabase / VTest image features, YDatabase / YTest tag bag-of-words, databaseL / testL labels (rows = items)",
)
PARTS = {"database": ("VDatabase", "YDatabase", "databaseL"), "test": ("VTest", "YTest", "testL")}


def load_iapr(data_dir: Optional[Path] = None, protocol: str = "ucch") -> Loaded:
    """IAPR TC-12 from ``iapr-tc12-rand.mat`` in ``data_dir`` (or ``$CMHBENCH_DATA/iapr-tc12``):
    database part then test part, split by ``protocol``."""
    _, files = find_layout(data_dir, NAME, (RAND,))
    path = files["iapr-tc12-rand.mat"]
    raw = read_mat(path, [v for part in PARTS.values() for v in part])
    parts = []
    for image_var, text_var, label_var in PARTS.values():
        n = common_item_count({image_var: raw[image_var], text_var: raw[text_var], label_var: raw[label_var]})
        parts.append((
            as_features(image_var, raw[image_var], n),
            as_features(text_var, raw[text_var], n),
            as_multi_hot(label_var, raw[label_var], n),
        ))
    for k, what in enumerate(("image features", "texts", "labels")):
        if parts[0][k].shape[1] != parts[1][k].shape[1]:
            names = [v[k] for v in PARTS.values()]
            raise DataError(f"{path}: {names[0]} and {names[1]} have different widths ({what}: "
                            f"{parts[0][k].shape[1]} vs {parts[1][k].shape[1]})")
    image, text, labels = (np.concatenate([p[k] for p in parts]) for k in range(3))
    keep = np.arange(labels.shape[0], dtype=np.int64)
    return from_files(NAME, "rand", files, protocol, {}, labels, text, keep, "none (UCCH keeps every item)",
                      image=image, unlabelled=int((labels.sum(1) == 0).sum()),
                      test_part_items=int(parts[1][2].shape[0]))


IAPR_TC12 = DatasetSpec(
    name=NAME,
    load=load_iapr,
    description="IAPR TC-12: image-text pairs with multi-labels, database + 2000 test items as released with UCCH; "
    "image features and tag bag-of-words",
    paper=PAPER,
    files=RAND.files,
    subdir=NAME,
    layouts=(RAND,),
    default_protocol="ucch",
    protocol_aware=True,
)
