"""Dataset loading: the real Wiki files, MAT variants, validation errors, the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from cmhbench.data.synthetic import load_synthetic
from cmhbench.data.wiki import load_wiki
from cmhbench.errors import DataError


def test_wiki_v5_and_v73_files_load_to_the_same_numbers(shared_data):
    v5 = load_wiki(shared_data / "wiki")
    v73 = load_wiki(shared_data / "wiki-v73")
    for data in (v5, v73):
        assert data.image.shape == (2866, 128) and data.text.shape == (2866, 10)
        assert data.labels.shape == (2866, 10) and data.labels.sum(1).tolist() == [1] * 2866
        assert data.splits.sizes() == {"query": 693, "database": 2173, "train": 2173}
        assert data.image.dtype == np.float32 and data.labels.dtype == np.uint8
    np.testing.assert_array_equal(v5.image, v73.image)
    np.testing.assert_array_equal(v5.text, v73.text)
    np.testing.assert_array_equal(v5.labels, v73.labels)
    assert v5.revision == v73.revision
    # Class ids 1..10 of the v5 file map to the v73 one-hot columns in order.
    raw = scipy.io.loadmat(str(shared_data / "wiki" / "wikiData.mat"))
    np.testing.assert_array_equal(v5.labels[:2173].argmax(1) + 1, raw["L_tr"].ravel())


def test_wiki_found_through_env(shared_data, monkeypatch):
    monkeypatch.setenv("CMHBENCH_DATA", str(shared_data))
    assert load_wiki(None).origin.endswith("wiki/wikiData.mat")


def test_wiki_missing_file_names_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=r"wikiData.mat or wiki_data.mat not found in .*" + tmp_path.name):
        load_wiki(tmp_path)


def test_no_data_dir_at_all(monkeypatch):
    monkeypatch.delenv("CMHBENCH_DATA", raising=False)
    with pytest.raises(DataError, match="pass --data-dir or set CMHBENCH_DATA"):
        load_wiki(None)


def wiki_arrays(rng, n_tr=40, n_te=10):
    return {
        "I_tr": rng.random((n_tr, 16)), "I_te": rng.random((n_te, 16)),
        "T_tr": rng.random((n_tr, 5)), "T_te": rng.random((n_te, 5)),
        "L_tr": rng.integers(1, 4, (n_tr, 1)).astype(np.uint8), "L_te": rng.integers(1, 4, (n_te, 1)).astype(np.uint8),
    }


def write_v73(path: Path, arrays: dict) -> None:
    """Write like MATLAB -v7.3: HDF5 with axes reversed (h5py shows d x n for an n x d matrix)."""
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = np.asarray(v).T


@pytest.mark.parametrize("layout", ["v5-rows", "v5-columns", "v73-rows", "v73-columns"])
def test_wiki_layouts(tmp_path, layout):
    arrays = wiki_arrays(np.random.default_rng(0))
    stored = {k: (v.T if layout.endswith("columns") else v) for k, v in arrays.items()}
    if layout.startswith("v5"):
        scipy.io.savemat(tmp_path / "wikiData.mat", stored)
    else:
        write_v73(tmp_path / "wiki_data.mat", stored)
    data = load_wiki(tmp_path)
    np.testing.assert_allclose(data.image[:40], arrays["I_tr"].astype(np.float32))
    np.testing.assert_array_equal(data.labels[:40].argmax(1) + 1, arrays["L_tr"].ravel())


def test_nan_feature_is_named(tmp_path):
    arrays = wiki_arrays(np.random.default_rng(1))
    arrays["T_te"][3, 2] = np.nan
    scipy.io.savemat(tmp_path / "wikiData.mat", arrays)
    with pytest.raises(DataError, match=r"T_te: 1 NaN or infinite value\(s\), first at item 3, dimension 2"):
        load_wiki(tmp_path)


def test_missing_variable_is_named(tmp_path):
    arrays = wiki_arrays(np.random.default_rng(2))
    del arrays["I_te"]
    scipy.io.savemat(tmp_path / "wikiData.mat", arrays)
    with pytest.raises(DataError, match=r"variable\(s\) I_te not found"):
        load_wiki(tmp_path)


def test_mismatched_item_counts_are_reported(tmp_path):
    arrays = wiki_arrays(np.random.default_rng(3))
    arrays["T_tr"] = arrays["T_tr"][:-1]
    scipy.io.savemat(tmp_path / "wikiData.mat", arrays)
    with pytest.raises(DataError, match="do not agree on a number of items"):
        load_wiki(tmp_path)


def test_wrong_feature_width_between_parts(tmp_path):
    arrays = wiki_arrays(np.random.default_rng(4))
    arrays["I_te"] = arrays["I_te"][:, :8]
    scipy.io.savemat(tmp_path / "wikiData.mat", arrays)
    with pytest.raises(DataError, match="I_tr and I_te have different widths"):
        load_wiki(tmp_path)


def test_non_binary_label_matrix(tmp_path):
    arrays = wiki_arrays(np.random.default_rng(5))
    arrays["L_tr"] = np.full((40, 3), 0.5)
    arrays["L_te"] = np.eye(3)[np.arange(10) % 3]
    scipy.io.savemat(tmp_path / "wikiData.mat", arrays)
    with pytest.raises(DataError, match="L_tr: a label matrix must hold only 0 and 1"):
        load_wiki(tmp_path)


def test_corrupt_file(tmp_path):
    (tmp_path / "wikiData.mat").write_bytes(b"MATLAB 5.0 MAT-file garbage" + bytes(range(256)) * 4)
    with pytest.raises(DataError, match="not a readable MAT file"):
        load_wiki(tmp_path)


def test_truncated_hdf5(tmp_path, shared_data):
    blob = (shared_data / "wiki-v73" / "wiki_data.mat").read_bytes()
    (tmp_path / "wiki_data.mat").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(DataError, match="wiki_data.mat"):
        load_wiki(tmp_path)


def test_synthetic_is_deterministic_and_shaped_like_mirflickr():
    a, b = load_synthetic(), load_synthetic()
    assert a.synthetic and "generated" in a.origin
    assert a.labels.shape[1] == 24 and a.image.shape[1] != a.text.shape[1]
    assert a.revision == b.revision == "b6b38536e85e2952"  # pinned: the data must not drift
    np.testing.assert_array_equal(a.splits.query, b.splits.query)
    assert a.labels.sum(1).min() >= 1
    assert set(np.unique(a.text)) == {0.0, 1.0}
    assert np.intersect1d(a.splits.query, a.splits.train).size == 0
    assert np.isin(a.splits.train, a.splits.database).all()
