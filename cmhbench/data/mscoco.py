"""MS-COCO (Lin et al., ECCV 2014) as released with UCCH.

[rand] ``MSCOCO_deep_doc2vec_data_rand.h5py``: an HDF5 file written from Python (h5py shows items
as rows) with ``XAll`` (deep image features), ``YAll`` (doc2vec text vectors; may be negative) and
``LAll`` (multi-hot labels), pre-shuffled. penghu-cs/UCCH (``src/cmdataset.py``) reads it in file
order; the default protocol ``ucch`` takes the last 5000 items as queries and all others as the
database and training set. No item is dropped (UCCH keeps every item); the number of unlabelled
items is recorded in the dataset details. A MAT v5 or v7.3 file of the same name and variables,
items as rows or columns, loads too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from cmhbench.data.assemble import from_files
from cmhbench.data.dataset import DatasetSpec, Loaded
from cmhbench.data.locate import FileLayout, find_layout
from cmhbench.data.matfile import as_features, as_multi_hot, common_item_count, read_mat

NAME = "mscoco"
PAPER = "Lin, Maire, Belongie, Hays, Perona, Ramanan, Dollar, Zitnick. Microsoft COCO: Common Objects in Context. ECCV 2014."
FILE = "MSCOCO_deep_doc2vec_data_rand.h5py"
RAND = FileLayout("rand", (FILE,), "XAll N x d image features; YAll N x d doc2vec text vectors; LAll N x c labels")
PROTOCOL_PARAMS = {"ucch": {"query": 5000}}


def load_mscoco(data_dir: Optional[Path] = None, protocol: str = "ucch") -> Loaded:
    """MS-COCO from ``MSCOCO_deep_doc2vec_data_rand.h5py`` in ``data_dir`` (or ``$CMHBENCH_DATA/mscoco``)."""
    _, files = find_layout(data_dir, NAME, (RAND,))
    raw = read_mat(files[FILE], ["XAll", "YAll", "LAll"])
    n = common_item_count(raw)
    image = as_features("XAll", raw["XAll"], n)
    text = as_features("YAll", raw["YAll"], n)
    labels = as_multi_hot("LAll", raw["LAll"], n)
    keep = np.arange(n, dtype=np.int64)
    return from_files(NAME, "rand", files, protocol, PROTOCOL_PARAMS, labels, text, keep, "none (UCCH keeps every item)",
                      image=image, unlabelled=int((labels.sum(1) == 0).sum()))


MSCOCO = DatasetSpec(
    name=NAME,
    load=load_mscoco,
    description="MS-COCO: image-text pairs with multi-labels as released with UCCH (deep image "
    "features, doc2vec texts); 5000 queries under protocol ucch",
    paper=PAPER,
    files=RAND.files,
    subdir=NAME,
    layouts=(RAND,),
    default_protocol="ucch",
    protocol_params=PROTOCOL_PARAMS,
    protocol_aware=True,
)
