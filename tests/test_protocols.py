"""Split protocols: sizes and rules at full MIRFlickr / NUS-WIDE scale, seeds, names, bad selections."""

from __future__ import annotations

import numpy as np
import pytest

from cmhbench.data.protocols import quotas, resolve
from cmhbench.errors import ConfigError, DataError, UnknownNameError
from cmhbench.plugins import get_registry


@pytest.fixture(scope="module")
def mir_labels() -> np.ndarray:
    """20015 items, 24 classes, every item labelled (MIRFlickr's shape)."""
    rng = np.random.default_rng(0)
    labels = (rng.random((20015, 24)) < 0.12).astype(np.uint8)
    labels[np.arange(20015), rng.integers(0, 24, 20015)] = 1
    return labels


def check_disjoint(splits, n):
    splits.validate(n)
    assert np.isin(splits.train, splits.database).all()


def test_dcmh(mir_labels):
    s = resolve("dcmh").splits(mir_labels)
    check_disjoint(s, 20015)
    assert s.sizes() == {"query": 2000, "database": 18015, "train": 10000}
    np.testing.assert_array_equal(s.train, s.database[:10000])  # training = first 10000 of the database
    assert s.protocol == "dcmh" and s.seed == 0 and s.version == 1


def test_ukd_trains_on_the_first_15000_of_the_database(mir_labels):
    s = resolve("ukd").splits(mir_labels)
    check_disjoint(s, 20015)
    assert s.sizes() == {"query": 2000, "database": 18015, "train": 15000}
    np.testing.assert_array_equal(s.train, s.database[:15000])


def test_djsrh_is_class_stratified_with_the_official_quotas(mir_labels):
    assert quotas(2000, 24) == [160] + [80] * 23 and quotas(5000, 24) == [400] + [200] * 23
    assert quotas(2000, 10) == [200] * 10 and quotas(5000, 10) == [500] * 10
    s = resolve("djsrh").splits(mir_labels)
    check_disjoint(s, 20015)
    assert s.sizes() == {"query": 2000, "database": 18015, "train": 5000}
    # Queries come class by class: the first 160 carry class 0, the next 80 class 1, ...
    assert mir_labels[s.query[:160], 0].all() and mir_labels[s.query[160:240], 1].all()
    np.testing.assert_array_equal(s.database, np.setdiff1d(np.arange(20015), s.query))


def test_ucch_last_queries_and_dataset_sizes(mir_labels):
    s = resolve("ucch").splits(mir_labels)
    np.testing.assert_array_equal(s.query, np.arange(18015, 20015))
    np.testing.assert_array_equal(s.train, np.arange(18015))
    assert s.seed is None
    nus = get_registry().datasets.get("nus-wide-tc10").protocol_params
    assert resolve("ucch", nus).splits(mir_labels).sizes()["query"] == 2100
    coco = get_registry().datasets.get("mscoco").protocol_params
    assert resolve("ucch", coco).params["query"] == 5000


def test_dadh_queries_last_on_mirflickr_first_elsewhere(mir_labels):
    mir = get_registry().datasets.get("mirflickr25k").protocol_params
    s = resolve("dadh", mir).splits(mir_labels)  # DADH datasets/dataset.py:8-11
    np.testing.assert_array_equal(s.query, np.arange(18015, 20015))
    np.testing.assert_array_equal(s.database, np.arange(18015))
    np.testing.assert_array_equal(s.train, np.arange(10000))
    assert s.protocol == "dadh" and s.version == 2 and s.params["query_at"] == "end"
    s = resolve("dadh").splits(mir_labels)  # any other dataset: datasets/dataset.py:12-15
    np.testing.assert_array_equal(s.query, np.arange(2000))
    np.testing.assert_array_equal(s.database, np.arange(2000, 20015))
    np.testing.assert_array_equal(s.train, np.arange(2000, 12000))
    tc21 = get_registry().datasets.get("nus-wide-tc21").protocol_params
    assert resolve("dadh", tc21).params == {"query": 2100, "database": None, "train": 10000, "query_at": "start"}
    # The version-1 rule on MIRFlickr (first 2000 queries) is still selectable, under its own name.
    old = resolve("dadh:query_at=start", mir)
    assert old.id == "dadh-query-at-start" and old.splits(mir_labels).query[-1] == 1999
    assert resolve("dadh:query_at=end", mir).id == "dadh"
    assert resolve("dadh:query_at=end,database=15000", mir).splits(mir_labels).sizes() == {
        "query": 2000, "database": 15000, "train": 10000}


def test_seed_and_sizes_are_part_of_the_name_and_checksum(mir_labels):
    a, b = resolve("dcmh").splits(mir_labels), resolve("dcmh:seed=0").splits(mir_labels)
    c = resolve("dcmh:seed=1").splits(mir_labels)
    assert a.checksum() == b.checksum() != c.checksum()
    assert b.protocol == "dcmh" and c.protocol == "dcmh-seed1"
    assert resolve("djsrh:train=3000,query=500").id == "djsrh-query500-train3000"


@pytest.mark.parametrize(
    "selection, error, pattern",
    [
        ("dcmhh", UnknownNameError, "unknown protocol 'dcmhh'; did you mean dcmh?"),
        ("dcmh:queries=5", ConfigError, "unknown size 'queries'"),
        ("dcmh:query=five", ConfigError, "query='five' is not an integer"),
        ("dcmh:query=0", ConfigError, "query must be positive"),
        ("dcmh:query", ConfigError, "expected key=value"),
        ("ucch:train=5", ConfigError, "protocol 'ucch' takes no 'train'"),
        ("dadh:query_at=middle", ConfigError, "query_at must be one of start, end, got 'middle'"),
        ("dcmh:query_at=end", ConfigError, "protocol 'dcmh' takes no 'query_at'"),
    ],
)
def test_bad_selections(selection, error, pattern):
    with pytest.raises(error, match=pattern):
        resolve(selection)


def test_too_small_dataset_suggests_sizes():
    labels = np.eye(4, dtype=np.uint8)[np.arange(300) % 4]
    with pytest.raises(DataError, match=r"needs at least 12000 items .* has 300; choose smaller sizes, e.g. --protocol dcmh:query=30,train=150"):
        resolve("dcmh").splits(labels)


def test_any_protocol_applies_to_a_dataset_with_a_file_split(shared_data):
    spec = get_registry().datasets.get("wiki")
    data = spec.open(shared_data / "wiki", protocol="djsrh:query=200,train=1000")
    assert data.splits.protocol == "djsrh-query200-train1000" and data.splits.sizes()["query"] == 200
    assert spec.open(shared_data / "wiki").splits.protocol == "wiki"
    assert spec.open(shared_data / "wiki", protocol="wiki").splits.protocol == "wiki"  # its own split, by name
