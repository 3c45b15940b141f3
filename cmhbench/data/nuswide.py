"""NUS-WIDE (Chua et al., CIVR 2009) restricted to its most frequent concepts, as public CMH code ships it.

Two variants, two datasets:

``nus-wide-tc10`` (186,577 pairs, 10 concepts, 1000-d tag bag-of-words; DCMH-lineage files used by
DJSRH, JDSH and UCCH):

- [vgg] ``nus-wide-tc10-xall-vgg.mat`` (``XAll``, N x 4096), ``nus-wide-tc10-yall.mat``
  (``YAll``, N x 1000), ``nus-wide-tc10-lall.mat`` (``LAll``, N x 10);
- [iall] ``nus-wide-tc10-iall.mat`` (``IAll``, 224 x 224 x 3 x N pixels, HDF5) with the same
  ``-yall``/``-lall`` files.

``nus-wide-tc21`` (195,834 pairs, 21 concepts): [tc21] ``NUS-WIDE-TC21.mat`` with ``image``
(N x 4096 features), ``text`` (N x 1000) and ``label`` (N x 21) (DADH's release).

Items with no label among the kept concepts are dropped, as in the code that derives these files
(huhengtong/UKD_CVPR2020 ``teacher_model/KNN/read_nuswide.py``); the public files are already
filtered. Default protocols: ``djsrh`` on TC10 (the DJSRH/JDSH lineage), ``dadh`` on TC21; the
UCCH and DADH rules use 2100 queries on NUS-WIDE, UKD's 1865 on TC10.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from cmhbench.data.assemble import from_files, labelled_items
from cmhbench.data.dataset import DatasetSpec, Loaded
from cmhbench.data.locate import FileLayout, find_layout
from cmhbench.data.matfile import (
    as_features,
    as_multi_hot,
    check_classes,
    check_nonnegative,
    common_item_count,
    read_features,
    read_mat,
)

PAPER = (
    "Chua, Tang, Hong, Li, Luo, Zheng. NUS-WIDE: A Real-World Web Image Database from National University "
    "of Singapore. CIVR 2009."
)
FILTER = "items with no label among the kept concepts are dropped"
NUS_PARAMS = {"ucch": {"query": 2100}, "dadh": {"query": 2100}}
# UKD's NUS-WIDE split (huhengtong/UKD_CVPR2020 teacher_model/KNN/read_feats_nus.py:196-200): 1865 queries
# of a permutation of the 186577 TC-10 pairs, the other 184712 the database; its KNN teacher trains on the
# first 15000 (teacher_model/KNN/knn_nus_cross5.py:8), the protocol's default training size.
TC10_PARAMS = {**NUS_PARAMS, "ukd": {"query": 1865}}

TC10 = "nus-wide-tc10"
TC10_CLASSES = 10
TC10_VGG = FileLayout(
    "vgg",
    ("nus-wide-tc10-xall-vgg.mat", "nus-wide-tc10-yall.mat", "nus-wide-tc10-lall.mat"),
    "XAll N x 4096 VGG features; YAll N x 1000 tags; LAll N x 10 labels",
)
TC10_IALL = FileLayout(
    "iall",
    ("nus-wide-tc10-iall.mat", "nus-wide-tc10-yall.mat", "nus-wide-tc10-lall.mat"),
    "IAll 224 x 224 x 3 x N uint8 pixels (HDF5); YAll N x 1000 tags; LAll N x 10 labels",
    raw_images=True,
)

TC21 = "nus-wide-tc21"
TC21_CLASSES = 21
TC21_FILE = FileLayout("tc21", ("NUS-WIDE-TC21.mat",), "image N x 4096 features; text N x 1000 tags; label N x 21")


def _tc10(files: dict[str, Path], protocol: str, image_file: Optional[str]) -> Loaded:
    y = read_mat(files["nus-wide-tc10-yall.mat"], ["YAll"])["YAll"]
    lab = read_mat(files["nus-wide-tc10-lall.mat"], ["LAll"])["LAll"]
    n = common_item_count({"YAll": y, "LAll": lab})
    text = check_nonnegative("YAll", as_features("YAll", y, n))
    labels = check_classes("LAll", as_multi_hot("LAll", lab, n), TC10_CLASSES)
    keep = labelled_items(labels)
    if image_file is None:
        return from_files(TC10, "iall", files, protocol, TC10_PARAMS, labels, text, keep, FILTER,
                          images_from=(files["nus-wide-tc10-iall.mat"], "IAll"))
    image = read_features(files[image_file], "XAll", n)  # v7.3: block by block, no whole-matrix copy
    return from_files(TC10, "vgg", files, protocol, TC10_PARAMS, labels, text, keep, FILTER, image=image)


def load_tc10(data_dir: Optional[Path] = None, protocol: str = "djsrh") -> Loaded:
    """NUS-WIDE TC10 from ``data_dir`` (or ``$CMHBENCH_DATA/nus-wide-tc10``): VGG features when
    present, else raw images (:class:`RawData`); split by ``protocol``."""
    layout, files = find_layout(data_dir, TC10, (TC10_VGG, TC10_IALL))
    return _tc10(files, protocol, "nus-wide-tc10-xall-vgg.mat" if layout is TC10_VGG else None)


def load_tc10_raw(data_dir: Optional[Path] = None, protocol: str = "djsrh") -> Loaded:
    """NUS-WIDE TC10 from its raw-image layout."""
    _, files = find_layout(data_dir, TC10, (TC10_IALL,))
    return _tc10(files, protocol, None)


def load_tc21(data_dir: Optional[Path] = None, protocol: str = "dadh") -> Loaded:
    """NUS-WIDE TC21 from ``NUS-WIDE-TC21.mat`` in ``data_dir`` (or ``$CMHBENCH_DATA/nus-wide-tc21``)."""
    _, files = find_layout(data_dir, TC21, (TC21_FILE,))
    path = files["NUS-WIDE-TC21.mat"]
    raw = read_mat(path, ["image", "text", "label"])
    n = common_item_count(raw)
    image = as_features("image", raw["image"], n)
    text = check_nonnegative("text", as_features("text", raw["text"], n))
    labels = check_classes("label", as_multi_hot("label", raw["label"], n), TC21_CLASSES)
    return from_files(TC21, "tc21", files, protocol, NUS_PARAMS, labels, text, labelled_items(labels), FILTER, image=image)


NUS_WIDE_TC10 = DatasetSpec(
    name=TC10,
    load=load_tc10,
    load_raw=load_tc10_raw,
    description="NUS-WIDE top-10 concepts: 186577 image-tag pairs, 10 labels, 1000-d tag bag-of-words; "
    "4096-d VGG features or raw images",
    paper=PAPER,
    files=TC10_VGG.files + TC10_IALL.files[:1],
    subdir=TC10,
    layouts=(TC10_VGG, TC10_IALL),
    default_protocol="djsrh",
    protocol_params=TC10_PARAMS,
    items=186577,
    classes=TC10_CLASSES,
    protocol_aware=True,
)

NUS_WIDE_TC21 = DatasetSpec(
    name=TC21,
    load=load_tc21,
    description="NUS-WIDE top-21 concepts: 195834 image-tag pairs, 21 labels, 1000-d tag bag-of-words, "
    "4096-d image features",
    paper=PAPER,
    files=TC21_FILE.files,
    subdir=TC21,
    layouts=(TC21_FILE,),
    default_protocol="dadh",
    protocol_params=NUS_PARAMS,
    items=195834,
    classes=TC21_CLASSES,
    protocol_aware=True,
)
