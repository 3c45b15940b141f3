"""Named, versioned split protocols: which items are queries, which the database, which the training set.

Each protocol is a rule over a dataset's item order (and, for ``djsrh``, its labels), with sizes
and, where it draws at random, a seed (numpy's PCG64: ``np.random.default_rng(seed)``). Every
result records the protocol's name, version, sizes, seed and a checksum of the three index lists
(:meth:`~cmhbench.data.dataset.Splits.checksum`), and results of different protocols are stored
apart and never compared. The file:line references are to the official repositories at the
commits named (their newest); "MIRFlickr" means the 20015 filtered items in the order of the
released ``mirflickr25k-lall.mat`` / ``FLICKR-25K.mat``.

======== =================================================================================================
``dcmh``  DCMH (jiangqy/DCMH-CVPR2017 @67d0e84, ``DCMH_matlab/DCMH_matlab/DCMH_demo.m:49-57``, called at
          l.13; also SSAH): ``R = randperm(numData)`` (l.50); the first ``query`` (2000, l.51-53) items
          are the queries, the rest the database in permuted order (l.54-55; 18015 on MIRFlickr);
          training set = the first ``train`` (10000, l.56) items of the database. The TensorFlow port
          (``DCMH_tensorflow/DCMH_tensorflow/DCMH_demo.py:20-22,76-93``) does not shuffle: first 2000
          queries, training = items 2000..11999, database = items 2000..20014 (DADH's old rule).
``djsrh`` DJSRH (zs-zhong/DJSRH @6041c2d, ``datasets.py:101-139`` MIRFlickr, ``:197-229`` NUS-WIDE; also
          JDSH): class-stratified. For each class in order, the items having it that are not yet chosen
          are permuted; a quota of them becomes queries, the next quota training items (l.109-123). The
          quotas: ``query / c`` and ``train / c`` rounded down to a multiple of 10, the first class taking
          the remainder; this reproduces the official hand-set numbers (MIRFlickr: 160 + 23 x 80 queries,
          400 + 23 x 200 training, l.117-123; NUS-WIDE TC10: 200 and 500 per class, l.216-222). Database
          = every item that is not a query (l.126, l.225). Training is topped up at random from the
          database to ``train`` (5000) items (MIRFlickr l.128-134; on the real MIRFlickr labels class 1
          has only about 175 unchosen items, so about 100 items are topped up; the NUS-WIDE code has no
          top-up, and cmhbench's happens only when a class falls short, which is not checked on NUS-WIDE
          for want of its label file). MIRFlickr: 2000 / 18015 / 5000.
``ukd``   UKD (huhengtong/UKD_CVPR2020 @a96a9f7, ``teacher_model/KNN/read_data.py:90-92``): a random
          permutation of the 20015 items; the first ``query`` (2000) items are queries, the rest the
          database (18015, in permuted order); training set = the first ``train`` (15000) items of the
          database (``student_model/setting.py:45-46,51``, ``teacher_model/utils.py:81-89``). Only the
          KNN teacher (``teacher_model/KNN/knn_mir_cross5.py:8-13``) uses the whole database (18015
          items; ``--protocol ukd:train=18015``). NUS-WIDE TC10 (``teacher_model/KNN/read_feats_nus.py:196-200``):
          the first 1865 items of a permutation of the 186577 are queries, the other 184712 the database;
          training set = its first 15000 items (the KNN teacher's, ``knn_nus_cross5.py:8``).
``ucch``  UCCH (penghu-cs/UCCH @0c20e62, ``src/cmdataset.py:160-172``, feature files): no shuffling (the
          public feature files are pre-shuffled); the last ``query`` items are queries (2000, l.166-168;
          2100 on NUS-WIDE, l.204-206; 5000 on MS-COCO, l.219-221; 2000 on IAPR TC-12, database part
          then test part, l.187-191), all the others are both the database and the training set (l.170;
          the ``train`` and ``retrieval`` partitions are the same, ``UCCH.py:53-68``). MIRFlickr:
          queries = items 18015..20014, database = training = items 0..18014. (The raw-image loaders,
          l.124-158, shuffle with numpy's legacy RNG, separately for each partition; not followed.)
``dadh``  DADH (Zjut-MultimediaPlus/DADH @5869b81, ``datasets/dataset.py:7-15``, ``config.py:38-54``): no
          shuffling; where the query block lies depends on the dataset (``query_at``). MIRFlickr
          (``query_at=end``, l.8-11): the *last* ``query`` items are queries (``all_index[db_size:]``,
          2000), the database the first 18015 items (``all_index[:db_size]``), training set = the first
          ``train`` (10000) items (``all_index[:training_size]``), i.e. of the database. Every other
          dataset (``query_at=start``, l.12-15; NUS-WIDE TC21): the *first* ``query`` items are queries
          (2100), the database all the rest (193734 on TC21; ``db_size`` only sizes code buffers),
          training set = the first ``train`` (10000) items of the database. Sizes: ``config.py:42-46``
          (MIRFlickr 18015 / 2000 / 10000) and ``:50-54`` (TC21 193734 / 2100 / 10000). Version 1 of this
          protocol used ``start`` everywhere, the rule of DADH's first upload (before commit 4381250,
          2020-11-30); its MIRFlickr splits (query block = items 0..1999) are not the official ones.
======== =================================================================================================

Where the official code draws at random, the exact permutation cannot be reproduced: DCMH uses
MATLAB's ``randperm`` on the session's global stream (no seed set), UKD numpy's legacy ``np.random.permutation``
unseeded, and DJSRH numpy's legacy global RNG unseeded at import (``train.py:6``; ``train.py:16-17``
seeds torch only), so even the official splits differ from run to run. For these protocols the rule
is reproduced (the same permutation gives the same split), not the draw; the tests check sizes,
which sets are disjoint or contained in which, the class structure (``djsrh``) and that a seed
always gives the same split. ``ucch`` and ``dadh`` follow file order and are reproduced exactly.

A protocol is selected as ``NAME`` or ``NAME:key=value,...`` with integer keys ``query``,
``database``, ``train`` and ``seed`` (e.g. ``dcmh:query=100,train=400`` for a small dataset) and,
for ``dadh``, ``query_at=start|end``. The values a dataset uses by default come from its spec
(:attr:`DatasetSpec.protocol_params`); a selection that changes them is recorded under a longer
name, e.g. ``dcmh-query100-train400`` or ``dadh-query-at-start``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import numpy as np

from cmhbench.data.dataset import Splits
from cmhbench.errors import ConfigError, DataError, UnknownNameError

PARAM_ORDER = ("query", "database", "train", "query_at", "seed")
CHOICES: dict[str, tuple[str, ...]] = {"query_at": ("start", "end")}
"""Keys that take one of a few words instead of an integer, with the words."""
DEFAULT_SEED = 0

Maker = Callable[[int, np.ndarray, dict], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Protocol:
    """A split rule: ``make(n_items, labels, params)`` returns ``(query, database, train)`` int64
    index lists; ``defaults`` are its sizes (None: "all the rest"), rule options (:data:`CHOICES`)
    and seed (absent when the rule draws nothing at random); ``rule`` says it in one line and
    ``source`` where it comes from."""

    name: str
    version: int
    rule: str
    source: str
    defaults: Mapping[str, Optional[int | str]]
    make: Maker

    @property
    def random(self) -> bool:
        """True when the rule draws at random (and so takes a seed)."""
        return "seed" in self.defaults


@dataclass(frozen=True)
class ResolvedProtocol:
    """A protocol with its sizes fixed for one dataset; ``id`` is the name results record."""

    protocol: Protocol
    params: dict
    id: str

    @property
    def needed_items(self) -> int:
        """The fewest items the sizes fit in."""
        p = self.params
        return p["query"] + max(p.get("train") or 0, p.get("database") or 0, 1)

    def splits(self, labels: np.ndarray) -> Splits:
        """Apply the rule to a dataset with multi-hot ``labels`` ``(n, c)``; checks the sizes fit."""
        n = int(labels.shape[0])
        p = self.params
        needed = self.needed_items
        if n < needed:
            parts = [f"{p['query']} queries"] + [f"{p[k]} {k}" for k in ("database", "train") if p.get(k)]
            raise DataError(
                f"protocol {self.id!r} needs at least {needed} items ({' + '.join(parts)}) but the dataset has {n}; "
                f"choose smaller sizes, e.g. --protocol {self.protocol.name}:query={max(1, n // 10)},train={max(1, n // 2)}"
            )
        query, database, train = self.protocol.make(n, labels, dict(p))
        return Splits(
            query=np.asarray(query, dtype=np.int64),
            database=np.asarray(database, dtype=np.int64),
            train=np.asarray(train, dtype=np.int64),
            protocol=self.id,
            seed=p.get("seed"),
            version=self.protocol.version,
            rule=self.protocol.rule,
            params={k: v for k, v in p.items() if k != "seed"},
        )


def _rest(order: np.ndarray, n_query: int, n_database: Optional[int]) -> np.ndarray:
    rest = order[n_query:]
    return rest if n_database is None else rest[:n_database]


def _dcmh(n: int, labels: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    perm = np.random.default_rng(p["seed"]).permutation(n)
    database = _rest(perm, p["query"], p["database"])
    return perm[: p["query"]], database, database[: p["train"]]


def _dadh(n: int, labels: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.arange(n)
    if p["query_at"] == "end":  # DADH datasets/dataset.py:8-11 (MIRFlickr)
        query, rest = order[n - p["query"] :], order[: n - p["query"]]
    else:  # datasets/dataset.py:12-15 (every other dataset)
        query, rest = order[: p["query"]], order[p["query"] :]
    database = rest if p["database"] is None else rest[: p["database"]]
    return query, database, database[: p["train"]]


def _ucch(n: int, labels: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.arange(n)
    rest = order[: n - p["query"]]
    return order[n - p["query"] :], rest, rest


def quotas(total: int, n_classes: int) -> list[int]:
    """Per-class quotas of the ``djsrh`` rule: ``total / n_classes`` rounded down to a multiple of 10
    (unrounded when below 10), the first class taking what is left; they sum to ``total``."""
    base = total // n_classes
    if base >= 10:
        base -= base % 10
    return [total - base * (n_classes - 1)] + [base] * (n_classes - 1)


def _djsrh(n: int, labels: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(p["seed"])
    n_classes = labels.shape[1]
    q_quota, t_quota = quotas(p["query"], n_classes), quotas(p["train"], n_classes)
    taken = np.zeros(n, dtype=bool)
    query: list[int] = []
    train: list[int] = []
    for c in range(n_classes):
        members = np.flatnonzero((labels[:, c] > 0) & ~taken)
        members = members[rng.permutation(members.size)]
        q, t = members[: q_quota[c]], members[q_quota[c] : q_quota[c] + t_quota[c]]
        query.extend(q.tolist())
        train.extend(t.tolist())
        taken[q] = True
        taken[t] = True
    is_query = np.zeros(n, dtype=bool)
    is_query[query] = True
    database = np.flatnonzero(~is_query)
    if len(train) < p["train"]:
        in_train = np.zeros(n, dtype=bool)
        in_train[train] = True
        pool = database[~in_train[database]]
        pool = pool[rng.permutation(pool.size)]
        train.extend(pool[: p["train"] - len(train)].tolist())
    return np.array(query, dtype=np.int64), database, np.array(train, dtype=np.int64)


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            "dcmh", 1,
            "random permutation; first `query` items are queries, the rest the database (permuted order); "
            "training = first `train` items of the database",
            "jiangqy/DCMH-CVPR2017 DCMH_matlab/DCMH_matlab/DCMH_demo.m:49-57",
            {"query": 2000, "database": None, "train": 10000, "seed": DEFAULT_SEED},
            _dcmh,
        ),
        Protocol(
            "djsrh", 1,
            "class-stratified: per class, a quota of its unchosen items become queries and the next quota training "
            "items; training topped up at random to `train`; database = all non-queries",
            "zs-zhong/DJSRH datasets.py:101-139,197-229",
            {"query": 2000, "train": 5000, "seed": DEFAULT_SEED},
            _djsrh,
        ),
        Protocol(
            "ukd", 1,
            "random permutation; first `query` items are queries, the rest the database; training = first `train` "
            "items of the database",
            "huhengtong/UKD_CVPR2020 teacher_model/KNN/read_data.py:90-92, student_model/setting.py:45-51",
            {"query": 2000, "database": None, "train": 15000, "seed": DEFAULT_SEED},
            _dcmh,
        ),
        Protocol(
            "ucch", 1,
            "file order; last `query` items are queries, all others are the database and the training set",
            "penghu-cs/UCCH src/cmdataset.py:160-225",
            {"query": 2000},
            _ucch,
        ),
        Protocol(
            "dadh", 2,
            "file order; the last (`query_at=end`, MIRFlickr) or first (`query_at=start`, other datasets) `query` "
            "items are queries, the first `database` of the others the database (default: all of them); "
            "training = first `train` items of the database",
            "Zjut-MultimediaPlus/DADH datasets/dataset.py:7-15, config.py:38-54",
            {"query": 2000, "database": None, "train": 10000, "query_at": "start"},
            _dadh,
        ),
    )
}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name``; unknown names raise :class:`UnknownNameError` with close matches."""
    if name in PROTOCOLS:
        return PROTOCOLS[name]
    close = difflib.get_close_matches(name, list(PROTOCOLS), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownNameError(f"unknown protocol {name!r}{hint} (known: {', '.join(sorted(PROTOCOLS))})")


def parse_selection(text: str) -> tuple[str, dict[str, int | str]]:
    """``"dcmh:query=100,train=400"`` -> ``("dcmh", {"query": 100, "train": 400})``; keys in
    :data:`CHOICES` take one of their words (``"dadh:query_at=end"``)."""
    name, _, rest = text.strip().partition(":")
    values: dict[str, int | str] = {}
    for part in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"--protocol {text}: expected key=value after ':', got {part!r}")
        if key not in PARAM_ORDER:
            raise ConfigError(f"--protocol {text}: unknown size {key!r} (known: {', '.join(PARAM_ORDER)})")
        if key in CHOICES:
            if value.strip() not in CHOICES[key]:
                raise ConfigError(f"--protocol {text}: {key} must be one of {', '.join(CHOICES[key])}, got {value.strip()!r}")
            values[key] = value.strip()
            continue
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"--protocol {text}: {key}={value.strip()!r} is not an integer") from None
        if number < (0 if key == "seed" else 1):
            raise ConfigError(f"--protocol {text}: {key} must be {'>= 0' if key == 'seed' else 'positive'}, got {number}")
        values[key] = number
    return name.strip(), values


def _id_part(key: str, value: int | str) -> str:
    """``query100``; ``query-at-end`` for a word-valued key."""
    return f"{key.replace('_', '-')}-{value}" if key in CHOICES else f"{key}{value}"


def resolve(selection: str, dataset_params: Mapping[str, Mapping[str, int | str]] | None = None) -> ResolvedProtocol:
    """The protocol ``selection`` (``NAME[:key=value,...]``) with the sizes a dataset uses with it.

    ``dataset_params`` maps protocol names to the dataset's own sizes (its spec's
    ``protocol_params``). Keys the protocol does not take raise :class:`ConfigError`.
    """
    name, overrides = parse_selection(selection)
    protocol = get_protocol(name)
    for key in overrides:
        if key not in protocol.defaults:
            raise ConfigError(
                f"--protocol {selection}: protocol {name!r} takes no {key!r} (it takes {', '.join(protocol.defaults)})"
            )
    base = {**protocol.defaults, **dict((dataset_params or {}).get(name, {}))}
    params = {**base, **overrides}
    changed = [k for k in PARAM_ORDER if k in overrides and overrides[k] != base.get(k)]
    pid = "-".join([name, *(_id_part(k, params[k]) for k in changed)])
    return ResolvedProtocol(protocol=protocol, params=params, id=pid)
