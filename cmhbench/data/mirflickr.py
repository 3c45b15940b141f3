"""MIRFlickr-25K (Huiskes & Lew, MIR 2008) in the forms public cross-modal hashing code ships.

25,000 Flickr images with their tags and 24 concept labels. As in DCMH and every later paper,
pairs without a label or without a tag among the 1386 frequent ones are dropped, which leaves
20,015 pairs (the public files below are already filtered; a file of all 25,000 is filtered on
load). Features: 1386-d binary tag bag-of-words; images as pixels or as 4096-d CNN features.

Layouts, in order of preference (``FileLayout`` names in brackets):

- [vgg] ``mirflickr25k-iall-vgg.mat`` (``XAll``, N x 4096 VGG features), ``mirflickr25k-yall.mat``
  (``YAll``, N x 1386), ``mirflickr25k-lall.mat`` (``LAll``, N x 24): the UCCH feature release.
- [ugach] ``<part>_img.txt``, ``<part>_txt.txt``, ``<part>_label.txt``: the UGACH/UKD text format
  (:mod:`cmhbench.data.textformat`); ``database`` + ``test`` parts when present, else every part.
- [flickr25k] ``FLICKR-25K.mat`` (``images`` 224 x 224 x 3 x N uint8 pixels, or N x 4096
  features in the DADH variant; ``YAll``; ``LAll``): the DCMH/SSAH release (MAT v7.3).
- [iall] ``mirflickr25k-iall.mat`` (``IAll``, 224 x 224 x 3 x N pixels, MAT v7.3) with the
  ``-yall`` and ``-lall`` files: the DJSRH/UCCH raw-image release.

Any file may be MAT v5 or v7.3/HDF5 and store items as rows or columns. Default protocol ``dcmh``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from cmhbench.data.assemble import from_files, labelled_items
from cmhbench.data.dataset import DatasetSpec, Loaded
from cmhbench.data.fetch import RemoteFile, Source
from cmhbench.data.locate import FileLayout, find_layout
from cmhbench.data.matfile import (
    as_features,
    as_multi_hot,
    check_classes,
    check_nonnegative,
    common_item_count,
    read_features,
    read_mat,
    variable_shape,
)
from cmhbench.data.textformat import parts_present, read_part
from cmhbench.errors import DataError

NAME = "mirflickr25k"
SUBDIR = "mirflickr25k"
N_CLASSES = 24
PROTOCOL = "dcmh"
# DADH puts MIRFlickr's queries at the end (Zjut-MultimediaPlus/DADH datasets/dataset.py:8-11), every other
# dataset's at the start; see cmhbench.data.protocols.
PROTOCOL_PARAMS: dict[str, dict[str, int | str]] = {"dadh": {"query_at": "end"}}
FILTER = "items with no label or no tag are dropped (DCMH)"
PAPER = "Huiskes, Lew. The MIR Flickr Retrieval Evaluation. ACM MIR 2008."

VGG = FileLayout(
    "vgg",
    ("mirflickr25k-iall-vgg.mat", "mirflickr25k-yall.mat", "mirflickr25k-lall.mat"),
    "XAll N x 4096 VGG features; YAll N x 1386 tags; LAll N x 24 labels",
)
UGACH = FileLayout("ugach", ("*_img.txt", "*_txt.txt", "*_label.txt"), "text matrices: N x 4096 features, N x 1386 tags, N x 24 labels")
FLICKR25K = FileLayout(
    "flickr25k", ("FLICKR-25K.mat",), "images 224 x 224 x 3 x N uint8 (or N x 4096 features); YAll N x 1386; LAll N x 24"
)
IALL = FileLayout(
    "iall",
    ("mirflickr25k-iall.mat", "mirflickr25k-yall.mat", "mirflickr25k-lall.mat"),
    "IAll 224 x 224 x 3 x N uint8 pixels (HDF5); YAll N x 1386 tags; LAll N x 24 labels",
    raw_images=True,
)
LAYOUTS = (VGG, UGACH, FLICKR25K, IALL)

UGACH_SAMPLE_COMMIT = "0f927047216f07c57f2c208c4b305ead2a818b4e"
UGACH_SAMPLE_URL = (
    "https://raw.githubusercontent.com/BMC-SDNU/Cross-Modal-Retrieval/"
    f"{UGACH_SAMPLE_COMMIT}/Unsupervised%20cross-modal%20hashing/UGACH/samples/"
)
SOURCES = (
    Source(
        "dcmh",
        (RemoteFile("http://lamda.nju.edu.cn/jiangqy/data/DCMH_data/data.zip", "FLICKR-25K.mat", member="FLICKR-25K.mat"),),
        "FLICKR-25K.mat from the DCMH authors' data.zip (address in jiangqy/DCMH-CVPR2017 "
        "DCMH_matlab/DCMH_release/preprocessing.m); no checksum is published",
    ),
    Source(
        "ugach-sample",
        (
            RemoteFile(UGACH_SAMPLE_URL + "train_img.txt", "train_img.txt",
                       "e999accb7193d8aa5bc6fbea859997d521bc921da079000c9e2cc346fc53814d"),
            RemoteFile(UGACH_SAMPLE_URL + "train_txt.txt", "train_txt.txt",
                       "e3e6e87faa2c4ebd7f9be7a60596fef85ecbb1d39db33398b280e92ec39054c9"),
            RemoteFile(UGACH_SAMPLE_URL + "train_label.txt", "train_label.txt",
                       "787b68303e66a043861b9babae780e691e023d6154a0e53fc7a2a409e49d6d82"),
        ),
        "10 real items in the UGACH text format (PKU-ICST-MIPL UGACH samples, copied in BMC-SDNU/Cross-Modal-Retrieval)",
    ),
)


def _tags_and_labels(yall: Path, lall: Path) -> tuple[np.ndarray, np.ndarray, int]:
    y = read_mat(yall, ["YAll"])["YAll"]
    lab = read_mat(lall, ["LAll"])["LAll"]
    n = common_item_count({"YAll": y, "LAll": lab})
    text = check_nonnegative("YAll", as_features("YAll", y, n))
    labels = check_classes("LAll", as_multi_hot("LAll", lab, n), N_CLASSES)
    return text, labels, n


def _finish(layout: FileLayout, files: dict[str, Path], labels: np.ndarray, text: np.ndarray, protocol: str,
            **kwargs: object) -> Loaded:
    keep = labelled_items(labels, text)
    return from_files(NAME, layout.name, files, protocol, PROTOCOL_PARAMS, labels, text, keep, FILTER, **kwargs)


def _load_vgg(files: dict[str, Path], protocol: str) -> Loaded:
    text, labels, n = _tags_and_labels(files["mirflickr25k-yall.mat"], files["mirflickr25k-lall.mat"])
    image = read_features(files["mirflickr25k-iall-vgg.mat"], "XAll", n)
    return _finish(VGG, files, labels, text, protocol, image=image)


def _load_ugach(files: dict[str, Path], protocol: str) -> Loaded:
    folder = files["*_img.txt"].parent
    parts = parts_present(folder)
    if not parts:
        raise DataError(f"{folder}: no part has all of <part>_img.txt, <part>_txt.txt, <part>_label.txt")
    if "database" in parts and "test" in parts:
        parts = ["database", "test"]
    arrays = [read_part(folder, p) for p in parts]
    image, text, labels = (np.concatenate([a[k] for a in arrays]) for k in range(3))
    for p, (i, t, _) in zip(parts, arrays):
        if i.shape[1] != image.shape[1] or t.shape[1] != text.shape[1]:
            raise DataError(f"{folder}: the parts {', '.join(parts)} have different feature widths")
    n = labels.shape[0]
    labels = check_classes(f"{parts[0]}_label.txt", as_multi_hot(f"{parts[0]}_label.txt", labels, n), N_CLASSES)
    check_nonnegative(f"{parts[0]}_txt.txt", text)
    image = as_features(f"{parts[0]}_img.txt", image, n)
    found = {f"{p}_{m}.txt": folder / f"{p}_{m}.txt" for p in parts for m in ("img", "txt", "label")}
    return _finish(UGACH, found, labels, text, protocol, image=image, parts=parts)


def _load_flickr25k(files: dict[str, Path], protocol: str) -> Loaded:
    path = files["FLICKR-25K.mat"]
    text, labels, n = _tags_and_labels(path, path)
    if len(variable_shape(path, "images")) == 4:
        return _finish(FLICKR25K, files, labels, text, protocol, images_from=(path, "images"))
    image = read_features(path, "images", n)
    return _finish(FLICKR25K, files, labels, text, protocol, image=image)


def _load_iall(files: dict[str, Path], protocol: str) -> Loaded:
    text, labels, _ = _tags_and_labels(files["mirflickr25k-yall.mat"], files["mirflickr25k-lall.mat"])
    return _finish(IALL, files, labels, text, protocol, images_from=(files["mirflickr25k-iall.mat"], "IAll"))


LOADERS = {"vgg": _load_vgg, "ugach": _load_ugach, "flickr25k": _load_flickr25k, "iall": _load_iall}


def load_mirflickr(data_dir: Optional[Path] = None, protocol: str = PROTOCOL) -> Loaded:
    """MIRFlickr-25K from the first complete layout in ``data_dir`` (or ``$CMHBENCH_DATA/mirflickr25k``):
    features when the files hold them, else raw images (:class:`RawData`); split by ``protocol``."""
    layout, files = find_layout(data_dir, SUBDIR, LAYOUTS)
    return LOADERS[layout.name](files, protocol)


def load_mirflickr_raw(data_dir: Optional[Path] = None, protocol: str = PROTOCOL) -> Loaded:
    """MIRFlickr-25K preferring the layouts with pixels (``iall``, then ``flickr25k``)."""
    layout, files = find_layout(data_dir, SUBDIR, (IALL, FLICKR25K))
    return LOADERS[layout.name](files, protocol)


MIRFLICKR = DatasetSpec(
    name=NAME,
    load=load_mirflickr,
    load_raw=load_mirflickr_raw,
    description="MIRFlickr-25K: 20015 image-tag pairs after filtering, 24 labels, 1386-d tag bag-of-words; "
    "4096-d VGG features or raw images",
    paper=PAPER,
    files=tuple(f for layout in LAYOUTS for f in layout.files),
    subdir=SUBDIR,
    layouts=LAYOUTS,
    default_protocol=PROTOCOL,
    protocol_params=PROTOCOL_PARAMS,
    sources=SOURCES,
    items=20015,
    classes=N_CLASSES,
    protocol_aware=True,
)
