"""Loaders of the file-based CMH datasets: every layout, MAT v5 and v7.3, rows and columns, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from cmh_files import mir_arrays, multi_labels, write_h5py, write_mat, write_mirflickr
from cmhbench.data.dataset import CrossModalData, RawData
from cmhbench.data.iapr import load_iapr
from cmhbench.data.mirflickr import load_mirflickr, load_mirflickr_raw
from cmhbench.data.mscoco import load_mscoco
from cmhbench.data.nuswide import load_tc10, load_tc10_raw, load_tc21
from cmhbench.errors import DataError

SMALL = "dcmh:query=10,train=40"
VERSIONS = [("v5", False), ("v5", True), ("v73", False), ("v73", True)]
IDS = ["v5-rows", "v5-columns", "v73-rows", "v73-columns"]


def kept(arrays: dict) -> np.ndarray:
    """Items that survive the DCMH filter (a label and a tag)."""
    return np.flatnonzero((arrays["LAll"].sum(1) > 0) & (arrays["YAll"].sum(1) > 0))


@pytest.mark.parametrize("version, columns", VERSIONS, ids=IDS)
@pytest.mark.parametrize("layout", ["vgg", "flickr25k-features"])
def test_mirflickr_feature_layouts(tmp_path, layout, version, columns):
    arrays = mir_arrays(np.random.default_rng(0))
    write_mirflickr(tmp_path, layout, version, arrays, columns)
    data = load_mirflickr(tmp_path, protocol=SMALL)
    keep = kept(arrays)
    assert isinstance(data, CrossModalData) and len(data) == keep.size == 113
    np.testing.assert_array_equal(data.image, arrays["XAll"][keep])
    np.testing.assert_array_equal(data.text, arrays["YAll"][keep].astype(np.float32))
    np.testing.assert_array_equal(data.labels, arrays["LAll"][keep].astype(np.uint8))
    assert data.details["layout"] == layout.split("-")[0] and data.details["filtered_out"] == 7
    assert data.splits.protocol == "dcmh-query10-train40" and data.splits.sizes()["train"] == 40


@pytest.mark.parametrize("version, columns", VERSIONS, ids=IDS)
@pytest.mark.parametrize("layout", ["iall", "flickr25k"])
def test_mirflickr_pixel_layouts_read_images_in_place(tmp_path, layout, version, columns):
    arrays = mir_arrays(np.random.default_rng(1), n=40, unlabelled=2, untagged=1, pixels=(12, 9))
    write_mirflickr(tmp_path, layout, version, arrays, columns)
    data = load_mirflickr(tmp_path, protocol="dcmh:query=5,train=20")
    keep = kept(arrays)
    assert isinstance(data, RawData) and len(data) == keep.size == 37
    assert data.details["filtered_out"] == 3
    pixels = data.images.pixels([0, 5, 36])
    want = np.transpose(arrays["IAll"], (3, 0, 1, 2))[keep[[0, 5, 36]]]  # N x H x W x 3
    np.testing.assert_array_equal(pixels, want)
    assert data.images.load([1])[0].size == (9, 12)  # PIL: (width, height)
    np.testing.assert_array_equal(data.text, arrays["YAll"][keep].astype(np.float32))


def test_features_preferred_unless_pixels_asked_for(tmp_path):
    arrays = mir_arrays(np.random.default_rng(2), n=30, unlabelled=0, untagged=0, pixels=(8, 8))
    write_mirflickr(tmp_path, "vgg", "v73", arrays)
    write_mirflickr(tmp_path, "iall", "v73", arrays)
    assert isinstance(load_mirflickr(tmp_path, protocol="dcmh:query=3,train=9"), CrossModalData)
    assert isinstance(load_mirflickr_raw(tmp_path, protocol="dcmh:query=3,train=9"), RawData)


def test_mirflickr_real_ugach_sample(shared_data):
    folder = shared_data / "mirflickr25k-sample"
    data = load_mirflickr(folder, protocol="dcmh:query=2,train=4")
    assert (len(data), data.image.shape[1], data.text.shape[1], data.labels.shape[1]) == (10, 4096, 1386, 24)
    np.testing.assert_allclose(data.image, np.loadtxt(folder / "train_img.txt"), rtol=1e-6)
    np.testing.assert_array_equal(data.labels, np.loadtxt(folder / "train_label.txt"))
    assert data.details["parts"] == ["train"] and data.details["filtered_out"] == 0
    with pytest.raises(DataError, match=r"protocol 'dcmh' needs at least 12000 items .* has 10"):
        load_mirflickr(folder)


def test_ugach_database_and_test_parts_are_the_items(tmp_path):
    rng = np.random.default_rng(3)
    parts = {p: mir_arrays(rng, n=n, unlabelled=0, untagged=0) for p, n in (("train", 20), ("database", 30), ("test", 8))}
    for part, arrays in parts.items():
        write_mirflickr(tmp_path / "x", "ugach", "", arrays)
        for m in ("img", "txt", "label"):
            (tmp_path / "x" / f"train_{m}.txt").rename(tmp_path / f"{part}_{m}.txt")
    data = load_mirflickr(tmp_path, protocol="ucch:query=8")
    assert data.details["parts"] == ["database", "test"] and len(data) == 38
    np.testing.assert_array_equal(data.labels[data.splits.query], parts["test"]["LAll"])


def test_a_full_25000_style_file_is_filtered_like_dcmh(tmp_path):
    arrays = mir_arrays(np.random.default_rng(4), n=200, unlabelled=15, untagged=10)
    write_mirflickr(tmp_path, "vgg", "v5", arrays)
    data = load_mirflickr(tmp_path, protocol="dcmh:query=20,train=100")
    assert len(data) == 175 and (data.labels.sum(1) > 0).all() and (data.text.sum(1) > 0).all()


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda a: a.update(LAll=a["LAll"][:, :23]), "LAll: expected 24 label columns, got 23"),
        (lambda a: a["YAll"].__setitem__((7, 3), -1.0), "YAll: a bag-of-words matrix must not hold negative values"),
        (lambda a: a["XAll"].__setitem__((9, 1), np.nan), r"XAll: 1 NaN or infinite value\(s\), first at item 9, dimension 1"),
        (lambda a: a.update(LAll=a["LAll"] * 2), "LAll: a label matrix must hold only 0 and 1"),
        (lambda a: a.update(XAll=a["XAll"][:-1]), r"XAll: shape \(119, 32\) has no axis of 120 items"),
    ],
    ids=["label-width", "negative-tags", "nan", "non-binary", "count"],
)
def test_bad_mirflickr_files_name_the_variable(tmp_path, change, pattern):
    arrays = mir_arrays(np.random.default_rng(5))
    change(arrays)
    write_mirflickr(tmp_path, "vgg", "v73", arrays)
    with pytest.raises(DataError, match=pattern):
        load_mirflickr(tmp_path, protocol=SMALL)


def test_wrong_variable_name_and_bad_pixels(tmp_path):
    arrays = mir_arrays(np.random.default_rng(6), n=20, unlabelled=0, untagged=0, pixels=(6, 6))
    write_mat(tmp_path / "FLICKR-25K.mat", {"imgs": arrays["IAll"], "YAll": arrays["YAll"], "LAll": arrays["LAll"]}, "v73")
    with pytest.raises(DataError, match=r"FLICKR-25K.mat: variable\(s\) images not found \(it holds LAll, YAll, imgs\)"):
        load_mirflickr(tmp_path, protocol="dcmh:query=2,train=5")
    bad = arrays["IAll"].astype(np.float64) * 2.0
    write_mat(tmp_path / "FLICKR-25K.mat", {"images": bad, "YAll": arrays["YAll"], "LAll": arrays["LAll"]}, "v5")
    data = load_mirflickr(tmp_path, protocol="dcmh:query=2,train=5")
    with pytest.raises(DataError, match=r"FLICKR-25K.mat:images: pixel values must lie in 0..255"):
        data.images.pixels(range(len(data)))


def test_no_layout_found_lists_what_was_looked_for(tmp_path):
    with pytest.raises(DataError, match=r"none of the file layouts found in .*mirflickr25k-iall-vgg.mat .*FLICKR-25K.mat"):
        load_mirflickr(tmp_path)


@pytest.mark.parametrize("version, columns", VERSIONS, ids=IDS)
def test_nus_wide_tc10(tmp_path, version, columns):
    rng = np.random.default_rng(7)
    labels = multi_labels(rng, 90, 10, unlabelled=5)
    tags = (rng.random((90, 40)) < 0.2).astype(np.float64)
    write_mat(tmp_path / "nus-wide-tc10-lall.mat", {"LAll": labels}, version, columns)
    write_mat(tmp_path / "nus-wide-tc10-yall.mat", {"YAll": tags}, version, columns)
    write_mat(tmp_path / "nus-wide-tc10-xall-vgg.mat", {"XAll": rng.random((90, 16)).astype(np.float32)}, version, columns)
    write_mat(tmp_path / "nus-wide-tc10-iall.mat", {"IAll": rng.integers(0, 256, (7, 5, 3, 90), dtype=np.uint8)}, "v73")
    data = load_tc10(tmp_path, protocol="djsrh:query=20,train=40")
    assert isinstance(data, CrossModalData) and len(data) == 85 and data.details["filtered_out"] == 5
    assert data.splits.protocol == "djsrh-query20-train40" and data.splits.sizes()["train"] == 40
    raw = load_tc10_raw(tmp_path, protocol="ucch:query=5")
    assert isinstance(raw, RawData) and raw.images.pixels([0]).shape == (1, 7, 5, 3)


@pytest.mark.parametrize("version, columns", VERSIONS, ids=IDS)
def test_nus_wide_tc21(tmp_path, version, columns):
    rng = np.random.default_rng(8)
    arrays = {"image": rng.random((60, 16)).astype(np.float32), "text": (rng.random((60, 30)) < 0.2).astype(np.float64),
              "label": multi_labels(rng, 60, 21, unlabelled=2)}
    write_mat(tmp_path / "NUS-WIDE-TC21.mat", arrays, version, columns)
    data = load_tc21(tmp_path, protocol="dadh:query=10,train=20")
    assert len(data) == 58 and data.labels.shape[1] == 21
    np.testing.assert_array_equal(data.labels[data.splits.query], arrays["label"][2:12].astype(np.uint8))
    with pytest.raises(DataError, match="label: expected 21 label columns"):
        write_mat(tmp_path / "NUS-WIDE-TC21.mat", {**arrays, "label": arrays["label"][:, :10]}, version, columns)
        load_tc21(tmp_path, protocol="dadh:query=10,train=20")


@pytest.mark.parametrize("version, columns", VERSIONS, ids=IDS)
def test_iapr_tc12_database_then_test(tmp_path, version, columns):
    rng = np.random.default_rng(9)
    arrays = {
        "VDatabase": rng.random((70, 16)).astype(np.float32), "YDatabase": (rng.random((70, 30)) < 0.2).astype(np.float64),
        "databaseL": multi_labels(rng, 70, 12, unlabelled=1),
        "VTest": rng.random((20, 16)).astype(np.float32), "YTest": (rng.random((20, 30)) < 0.2).astype(np.float64),
        "testL": multi_labels(rng, 20, 12),
    }
    write_mat(tmp_path / "iapr-tc12-rand.mat", arrays, version, columns)
    data = load_iapr(tmp_path, protocol="ucch:query=20")
    assert len(data) == 90 and data.details["unlabelled"] == 1 and data.details["filtered_out"] == 0
    np.testing.assert_array_equal(data.image[data.splits.query], arrays["VTest"])
    np.testing.assert_array_equal(data.splits.train, np.arange(70))


@pytest.mark.parametrize("writer", ["h5py-rows", "h5py-columns", "mat-v5", "mat-v73"])
def test_mscoco_h5py_and_mat(tmp_path, writer):
    rng = np.random.default_rng(10)
    arrays = {"XAll": rng.random((80, 16)).astype(np.float32), "YAll": rng.standard_normal((80, 12)).astype(np.float32),
              "LAll": multi_labels(rng, 80, 8)}
    path = tmp_path / "MSCOCO_deep_doc2vec_data_rand.h5py"
    if writer.startswith("h5py"):
        write_h5py(path, arrays, columns=writer.endswith("columns"))
    else:
        write_mat(path, arrays, writer[4:])
    data = load_mscoco(tmp_path, protocol="ucch:query=10")
    np.testing.assert_array_equal(data.text, arrays["YAll"])  # doc2vec values may be negative
    np.testing.assert_array_equal(data.splits.query, np.arange(70, 80))
