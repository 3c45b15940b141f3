"""Named, versioned split protocols: which items are queries, which the database, which the training set.

Each protocol is a rule over a dataset's item order (and, for ``djsrh``, its labels), with sizes
and, where it draws at random, a seed (numpy's PCG64: ``np.random.default_rng(seed)``). Every
result records the protocol's name, version, sizes, seed and a checksum of the three index lists
(:meth:`~cmhbench.data.dataset.Splits.checksum`), and results of different protocols are stored
apart and never compared.

======== ===============================================================================================
``dcmh``  DCMH (jiangqy/DCMH-CVPR2017, ``DCMH_demo.m``; also SSAH): a random permutation; its first
          ``query`` (2000) items are the queries, the rest the database in permuted order; training
          set = the first ``train`` (10000) items of the database.
``djsrh`` DJSRH (zs-zhong/DJSRH, ``datasets.py``; also JDSH): class-stratified. For each class in
          order, the items having it that are not yet chosen are permuted; a quota of them becomes
          queries, the next quota training items. The quotas: ``query / c`` and ``train / c``
          rounded down to a multiple of 10, the first class taking the remainder; this reproduces
          the official hand-set numbers (MIRFlickr: 160 + 23 x 80 queries, 400 + 23 x 200 training;
          NUS-WIDE TC10: 200 and 500 per class). Training is topped up at random from the database
          to ``train`` (5000) items; database = every item that is not a query.
``ukd``   UKD (huhengtong/UKD_CVPR2020, ``teacher_model/KNN/read_data.py``): a random permutation;
          first ``query`` (2000) items are queries, the rest the database (18015 on MIRFlickr);
          training set = the first ``train`` (15000) items of the database. The released UKD code
          itself trains on the whole database (18015 items; ``--protocol ukd:train=18015``).
``ucch``  UCCH (penghu-cs/UCCH, ``src/cmdataset.py``): no shuffling (the public feature files are
          pre-shuffled); the last ``query`` items are queries (2000; 2100 on NUS-WIDE, 5000 on
          MS-COCO), all the others are both the database and the training set.
``dadh``  DADH (Zjut-MultimediaPlus/DADH, ``dataset.py``, ``config.py``): no shuffling; the first
          ``query`` items are queries (2000; 2100 on NUS-WIDE TC21), the next ``database`` items
          the database (default: all the rest; 18015 on MIRFlickr, 193734 on TC21), training set =
          the first ``train`` (10000) items of the database.
======== ===============================================================================================

A protocol is selected as ``NAME`` or ``NAME:key=value,...`` with keys ``query``, ``database``,
``train`` and ``seed`` (e.g. ``dcmh:query=100,train=400`` for a small dataset). The sizes a
dataset uses by default come from its spec (:attr:`DatasetSpec.protocol_params`); a selection
that changes them is recorded under a longer name, e.g. ``dcmh-query100-train400``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import numpy as np

from cmhbench.data.dataset import Splits
from cmhbench.errors import ConfigError, DataError, UnknownNameError

PARAM_ORDER = ("query", "database", "train", "seed")
DEFAULT_SEED = 0

Maker = Callable[[int, np.ndarray, dict], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Protocol:
    """A split rule: ``make(n_items, labels, params)`` returns ``(query, database, train)`` int64
    index lists; ``defaults`` are its sizes (None: "all the rest") and seed (absent when the rule
    draws nothing at random); ``rule`` says it in one line and ``source`` where it comes from."""

    name: str
    version: int
    rule: str
    source: str
    defaults: Mapping[str, Optional[int]]
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


def _first_database(n: int, labels: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.arange(n)
    database = _rest(order, p["query"], p["database"])
    return order[: p["query"]], database, database[: p["train"]]


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
            "jiangqy/DCMH-CVPR2017 DCMH_matlab/DCMH_release/DCMH_demo.m",
            {"query": 2000, "database": None, "train": 10000, "seed": DEFAULT_SEED},
            _dcmh,
        ),
        Protocol(
            "djsrh", 1,
            "class-stratified: per class, a quota of its unchosen items become queries and the next quota training "
            "items; training topped up at random to `train`; database = all non-queries",
            "zs-zhong/DJSRH datasets.py",
            {"query": 2000, "train": 5000, "seed": DEFAULT_SEED},
            _djsrh,
        ),
        Protocol(
            "ukd", 1,
            "random permutation; first `query` items are queries, the rest the database; training = first `train` "
            "items of the database",
            "huhengtong/UKD_CVPR2020 teacher_model/KNN/read_data.py",
            {"query": 2000, "database": None, "train": 15000, "seed": DEFAULT_SEED},
            _dcmh,
        ),
        Protocol(
            "ucch", 1,
            "file order; last `query` items are queries, all others are the database and the training set",
            "penghu-cs/UCCH src/cmdataset.py",
            {"query": 2000},
            _ucch,
        ),
        Protocol(
            "dadh", 1,
            "file order; first `query` items are queries, the next `database` items the database (default: all "
            "the rest); training = first `train` items of the database",
            "Zjut-MultimediaPlus/DADH dataset.py, config.py",
            {"query": 2000, "database": None, "train": 10000},
            _first_database,
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


def parse_selection(text: str) -> tuple[str, dict[str, int]]:
    """``"dcmh:query=100,train=400"`` -> ``("dcmh", {"query": 100, "train": 400})``."""
    name, _, rest = text.strip().partition(":")
    values: dict[str, int] = {}
    for part in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"--protocol {text}: expected key=value after ':', got {part!r}")
        if key not in PARAM_ORDER:
            raise ConfigError(f"--protocol {text}: unknown size {key!r} (known: {', '.join(PARAM_ORDER)})")
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"--protocol {text}: {key}={value.strip()!r} is not an integer") from None
        if number < (0 if key == "seed" else 1):
            raise ConfigError(f"--protocol {text}: {key} must be {'>= 0' if key == 'seed' else 'positive'}, got {number}")
        values[key] = number
    return name.strip(), values


def resolve(selection: str, dataset_params: Mapping[str, Mapping[str, int]] | None = None) -> ResolvedProtocol:
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
    pid = "-".join([name, *(f"{k}{params[k]}" for k in changed)])
    return ResolvedProtocol(protocol=protocol, params=params, id=pid)
