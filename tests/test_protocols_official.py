"""The five split protocols against the official split code, on the real MIRFlickr-25K label file.

Each ``official_*`` function below transcribes one official split (file:line as in
:mod:`cmhbench.data.protocols`), 0-based, with the official random draw passed in. Where the rule
is file order (``ucch``, ``dadh``) cmhbench must give exactly the official indices. Where the
official code draws with its own unseeded RNG (DCMH: MATLAB ``randperm``; UKD, DJSRH: numpy's
legacy global RNG) its permutation cannot be reproduced, so the tests check the sizes the official
code gives on these labels, which sets are disjoint or contained in which, that cmhbench's split
is the official rule applied to cmhbench's own permutation (``dcmh``, ``ukd``), the class
structure (``djsrh``) and that a seed always gives the same split.

Needs ``$CMHBENCH_DATA`` (the shared data folder) with ``mirflickr25k-labels-tags/``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cmhbench.data.matfile import as_multi_hot, read_mat
from cmhbench.data.protocols import resolve
from cmhbench.plugins import get_registry
from conftest import DATA_ENV, data_root

LABEL_FILE = "mirflickr25k-labels-tags/mirflickr25k-lall.mat"
SHA256_HEAD, SHA256_TAIL = "173eec1f", "4e9fd07d"  # as /work/shared/data/README.md gives it
N = 20015

# (query, database, train) on MIRFlickr-25K as the official code makes them.
OFFICIAL_SIZES = {
    "dcmh": (2000, 18015, 10000),  # DCMH_demo.m:51-56
    "djsrh": (2000, 18015, 5000),  # datasets.py:117-134 (computed on these labels below)
    "ukd": (2000, 18015, 15000),  # read_data.py:91-92, student_model/setting.py:45
    "ucch": (2000, 18015, 18015),  # cmdataset.py:166-170
    "dadh": (2000, 18015, 10000),  # dataset.py:9-11, config.py:42-46
}


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    """``LAll`` of the released MIRFlickr-25K label file (20015 x 24, file order)."""
    root = data_root()
    if root is None:
        pytest.skip(f"real data not available: set {DATA_ENV} to the shared data folder (../shared/data)")
    path = root / LABEL_FILE
    if not path.is_file():
        pytest.skip(f"real MIRFlickr label file not available: {path} is missing")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest.startswith(SHA256_HEAD) and digest.endswith(SHA256_TAIL), f"{path} is not the released file ({digest})"
    lab = as_multi_hot("LAll", read_mat(path, ["LAll"])["LAll"], N)
    assert lab.shape == (N, 24) and (lab.sum(1) > 0).all()
    return lab


def mir_split(selection: str, labels: np.ndarray):
    """The split cmhbench makes on MIRFlickr-25K (the dataset's own protocol sizes, as its loader does)."""
    return resolve(selection, get_registry().datasets.get("mirflickr25k").protocol_params).splits(labels)


# --- transcriptions of the official split code (0-based) --------------------------------------------


def official_dcmh(R: np.ndarray):
    """jiangqy/DCMH-CVPR2017 DCMH_matlab/DCMH_matlab/DCMH_demo.m:49-57, ``R = randperm(numData)`` given."""
    num_query = 2000
    index_query = R[:num_query]
    index_retrieval = R[num_query:]
    index_train = index_retrieval[:10000]
    return index_query, index_retrieval, index_train


def official_ukd(index_all: np.ndarray):
    """huhengtong/UKD_CVPR2020 teacher_model/KNN/read_data.py:90-92 (``np.random.permutation(20015)`` given);
    training = the first 15000 of the retrieval set, student_model/setting.py:45-46,51."""
    ind_q = index_all[0:2000]
    ind_t = index_all[2000:20015]
    return ind_q, ind_t, ind_t[0:15000]


def official_ucch(n: int, test_size: int):
    """penghu-cs/UCCH src/cmdataset.py:166-170 (MIRFlickr25K_fea): ``test`` = last ``test_size``; the
    ``train`` and ``retrieval`` partitions (UCCH.py:53-68) are both ``[0:-test_size]``."""
    all_index = np.arange(n)
    rest = all_index[0:-test_size]
    return all_index[-test_size:], rest, rest


def official_dadh(n: int, flag: str):
    """Zjut-MultimediaPlus/DADH datasets/dataset.py:7-15 with config.py:38-54's sizes."""
    db_size, query_size, training_size = {"mir": (18015, 2000, 10000), "nus": (193734, 2100, 10000)}[flag]
    all_index = np.arange(n)
    if flag == "mir":
        query_index = all_index[db_size:]
        training_index = all_index[:training_size]
        db_index = all_index[:db_size]
    else:
        query_index = all_index[:query_size]
        training_index = all_index[query_size: query_size + training_size]
        db_index = all_index[query_size:]
    return query_index, db_index, training_index


def official_djsrh(label_set: np.ndarray, rs: np.random.RandomState):
    """zs-zhong/DJSRH datasets.py:103-139 with ``np.random`` replaced by ``rs``. Membership tests use sets
    instead of the official lists (same result, linear time); returns also the training items the
    per-class quotas gave, before the top-up."""
    first = True
    for label in range(label_set.shape[1]):
        index = np.where(label_set[:, label] == 1)[0]
        n = index.shape[0]
        perm = rs.permutation(n)
        index = index[perm]
        if first:
            test_index = index[:160]
            train_index = index[160:160 + 400]
            first = False
        else:
            chosen = set(train_index.tolist()) | set(test_index.tolist())
            ind = np.array([i for i in index.tolist() if i not in chosen], dtype=np.int64)
            test_index = np.concatenate((test_index, ind[:80]))
            train_index = np.concatenate((train_index, ind[80:80 + 200]))
    test_set = set(test_index.tolist())
    database_index = np.array([i for i in range(label_set.shape[0]) if i not in test_set])
    stratified = train_index.shape[0]
    if train_index.shape[0] < 5000:
        train_set = set(train_index.tolist())
        pick = np.array([i for i in database_index.tolist() if i not in train_set])
        perm = rs.permutation(pick.shape[0])
        pick = pick[perm]
        res = 5000 - train_index.shape[0]
        train_index = np.concatenate((train_index, pick[:res]))
    return test_index, database_index, train_index, stratified


# --- checks ---------------------------------------------------------------------------------------


def sizes(query, database, train) -> tuple[int, int, int]:
    return len(query), len(database), len(train)


def check_relations(query, database, train, n: int = N, train_in_database: bool = True) -> None:
    """No repeats; queries are in neither database nor training set; query + database = every item
    (all five official rules); training set within the database."""
    for part in (query, database, train):
        assert np.unique(part).size == len(part)
    assert not np.isin(query, database).any() and not np.isin(query, train).any()
    np.testing.assert_array_equal(np.union1d(query, database), np.arange(n))
    assert np.isin(train, database).all() == train_in_database


@pytest.mark.parametrize("name", list(OFFICIAL_SIZES))
def test_official_sizes_and_relations(labels, name):
    s = mir_split(name, labels)
    assert s.protocol == name
    assert sizes(s.query, s.database, s.train) == OFFICIAL_SIZES[name]
    s.validate(N)
    check_relations(s.query, s.database, s.train)


def test_ucch_is_the_official_file_order_split(labels):
    s = mir_split("ucch", labels)
    query, database, train = official_ucch(N, 2000)
    np.testing.assert_array_equal(s.query, np.arange(18015, 20015))
    np.testing.assert_array_equal(s.database, np.arange(18015))
    for ours, theirs in ((s.query, query), (s.database, database), (s.train, train)):
        np.testing.assert_array_equal(ours, theirs)
    assert s.seed is None


def test_dadh_is_the_official_file_order_split(labels):
    s = mir_split("dadh", labels)
    np.testing.assert_array_equal(s.query, np.arange(18015, 20015))  # the last 2000 items
    np.testing.assert_array_equal(s.database, np.arange(18015))
    np.testing.assert_array_equal(s.train, np.arange(10000))
    for ours, theirs in zip((s.query, s.database, s.train), official_dadh(N, "mir")):
        np.testing.assert_array_equal(ours, theirs)
    assert s.seed is None and s.version == 2 and s.params["query_at"] == "end"


def test_dadh_and_ucch_on_nus_wide_sizes():
    """The NUS-WIDE rules at full size (only the item count matters): DADH TC21 keeps its first-2100 query
    block, UCCH TC10 its last 2100."""
    registry = get_registry()
    n21 = 195834
    s = resolve("dadh", registry.datasets.get("nus-wide-tc21").protocol_params).splits(np.ones((n21, 21), np.uint8))
    for ours, theirs in zip((s.query, s.database, s.train), official_dadh(n21, "nus")):
        np.testing.assert_array_equal(ours, theirs)
    assert s.sizes() == {"query": 2100, "database": 193734, "train": 10000}
    n10 = 186577
    s = resolve("ucch", registry.datasets.get("nus-wide-tc10").protocol_params).splits(np.ones((n10, 10), np.uint8))
    for ours, theirs in zip((s.query, s.database, s.train), official_ucch(n10, 2100)):
        np.testing.assert_array_equal(ours, theirs)


def official_ukd_nus(index_all: np.ndarray):
    """huhengtong/UKD_CVPR2020 teacher_model/KNN/read_feats_nus.py:196-200 (the permutation of
    ``QUERY_SIZE + DATABASE_SIZE`` items given); training = the first 15000, knn_nus_cross5.py:8."""
    database_size, query_size = 184712, 1865
    ind_q = index_all[0:query_size]
    ind_r = index_all[query_size : database_size + query_size]
    return ind_q, ind_r, ind_r[0:15000]


def test_ukd_on_nus_wide_tc10_is_the_official_split_of_its_permutation():
    n10 = 186577
    s = resolve("ukd", get_registry().datasets.get("nus-wide-tc10").protocol_params).splits(np.ones((n10, 10), np.uint8))
    assert s.sizes() == {"query": 1865, "database": 184712, "train": 15000} and s.protocol == "ukd"
    perm = np.random.default_rng(s.seed).permutation(n10)
    for ours, theirs in zip((s.query, s.database, s.train), official_ukd_nus(perm)):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name, official", [("dcmh", official_dcmh), ("ukd", official_ukd)])
def test_permutation_rules_are_the_official_rule_on_their_own_permutation(labels, name, official):
    s = mir_split(name, labels)
    perm = np.random.default_rng(s.seed).permutation(N)  # cmhbench's draw in place of randperm / np.random
    for ours, theirs in zip((s.query, s.database, s.train), official(perm)):
        np.testing.assert_array_equal(ours, theirs)
    # The official code's own draw gives the same sizes and relations.
    q, d, t = official(np.random.RandomState(0).permutation(N))
    assert sizes(q, d, t) == OFFICIAL_SIZES[name]
    check_relations(q, d, t)
    np.testing.assert_array_equal(t, d[: len(t)])


@pytest.mark.parametrize("name", ["dcmh", "ukd", "djsrh"])
def test_random_protocols_same_seed_same_split(labels, name):
    a, b = mir_split(name, labels), mir_split(f"{name}:seed=0", labels)
    c = mir_split(f"{name}:seed=1", labels)
    assert a.seed == 0 and c.protocol == f"{name}-seed1"
    for part in ("query", "database", "train"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert a.checksum() == b.checksum() != c.checksum()
    assert not np.array_equal(a.query, c.query)


def class_blocks_hold(query: np.ndarray, labels: np.ndarray) -> bool:
    """Queries come class by class: the first 160 carry class 0, each next 80 the next class."""
    bounds = [0, 160] + [160 + 80 * k for k in range(1, 24)]
    return all(labels[query[bounds[c]:bounds[c + 1]], c].all() for c in range(24))


def test_djsrh_matches_the_official_structure(labels):
    s = mir_split("djsrh", labels)
    # The official code on these labels, with two legacy-RNG draws: same sizes, same class blocks.
    for seed in (0, 1):
        q, d, t, stratified = official_djsrh(labels, np.random.RandomState(seed))
        assert sizes(q, d, t) == OFFICIAL_SIZES["djsrh"]
        check_relations(q, d, t)
        assert class_blocks_hold(q, labels) and labels[t[:400], 0].all()
        np.testing.assert_array_equal(d, np.setdiff1d(np.arange(N), q))  # database: file order
        assert 4850 < stratified < 5000  # class 1 has too few unchosen items: the training set is topped up
    assert class_blocks_hold(s.query, labels) and labels[s.train[:400], 0].all()
    np.testing.assert_array_equal(s.database, np.setdiff1d(np.arange(N), s.query))
    # cmhbench's per-class quotas fall short on class 1 as the official ones do, and it tops up as well.
    class1 = s.train[400:600]
    assert not labels[class1, 1].all()
