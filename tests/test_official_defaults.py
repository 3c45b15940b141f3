"""The per-dataset defaults of ``djsrh`` and ``jdsh`` are the official code's settings.

Every expected value cites the official file and line it comes from, at the newest commit of each
repository:

- DJSRH: github.com/zzs1994/DJSRH (same history as zs-zhong/DJSRH), commit 6041c2d, ``settings.py``.
- JDSH: github.com/KaiserLew/JDSH, commit caa8224, ``config/JDSH_MIRFlickr.json`` and
  ``config/JDSH_NUSWIDE.json`` (``args.py:14-22`` loads the file; nothing overrides these values).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmhbench.config import default_config
from cmhbench.plugins import get_registry

ROOT = Path(__file__).resolve().parent.parent

# DJSRH settings.py @ 6041c2d, shared by every dataset
DJSRH_SHARED = {
    "batch_size": 32,  # settings.py:56 BATCH_SIZE = 32
    "mu": 1.5,  # settings.py:58 MU = 1.5
    "eta": 0.4,  # settings.py:59 ETA = 0.4
    "momentum": 0.9,  # settings.py:62 MOMENTUM = 0.9
    "weight_decay": 5e-4,  # settings.py:63 WEIGHT_DECAY = 5e-4
}
DJSRH_MIRFLICKR = {
    **DJSRH_SHARED,
    "beta": 0.9,  # settings.py:33 BETA = 0.9
    "lambda1": 0.1,  # settings.py:34 LAMBDA1 = 0.1
    "lambda2": 0.1,  # settings.py:35 LAMBDA2 = 0.1
    "epochs": 80,  # settings.py:36 NUM_EPOCH = 80
    "lr_image": 0.001,  # settings.py:37 LR_IMG = 0.001
    "lr_text": 0.01,  # settings.py:38 LR_TXT = 0.01
}
DJSRH_NUSWIDE = {  # the official NUS-WIDE is TC10 (settings.py:43-45)
    **DJSRH_SHARED,
    "beta": 0.6,  # settings.py:47 BETA = 0.6
    "lambda1": 0.1,  # settings.py:48 LAMBDA1 = 0.1
    "lambda2": 0.1,  # settings.py:49 LAMBDA2 = 0.1
    "epochs": 80,  # settings.py:50 NUM_EPOCH = 80
    "lr_image": 0.001,  # settings.py:51 LR_IMG = 0.001
    "lr_text": 0.01,  # settings.py:52 LR_TXT = 0.01
}
DJSRH_WIKI = {
    **DJSRH_SHARED,
    "beta": 0.3,  # settings.py:18 BETA = 0.3
    "lambda1": 0.3,  # settings.py:19 LAMBDA1 = 0.3
    "lambda2": 0.3,  # settings.py:20 LAMBDA2 = 0.3
    "epochs": 200,  # settings.py:21 NUM_EPOCH = 200
    "lr_image": 0.01,  # settings.py:22 LR_IMG = 0.01
    "lr_text": 0.01,  # settings.py:23 LR_TXT = 0.01
}

# JDSH config/JDSH_MIRFlickr.json @ caa8224
JDSH_MIRFLICKR = {
    "alpha": 0.5,  # JDSH_MIRFlickr.json:2 "alpha" : 0.5
    "beta": 0.1,  # :3 "beta" : 0.1
    "lamb": 0.4,  # :4 "lamb" : 0.4
    "mu": 1.4,  # :5 "mu" : 1.4
    "intra": 0.1,  # :6 "INTRA" : 0.1
    "lr_image": 0.01,  # :7 "LR_IMG" : 0.01
    "lr_text": 0.01,  # :8 "LR_TXT" : 0.01
    "s_min": -0.52,  # :9 "MIN" : -0.52
    "s_max": 0.68,  # :10 "MAX" : 0.68
    "alpha_left": 2.0,  # :11 "ALPHA" : 2
    "loc_left": -0.49,  # :12 "LOC_LEFT" : -0.49
    "scale_left": 0.019,  # :13 "SCALE_LEFT" : 0.019
    "beta_right": 4.0,  # :14 "BETA" : 4
    "loc_right": -0.49,  # :15 "LOC_RIGHT" : -0.49
    "scale_right": 0.088,  # :16 "SCALE_RIGHT" : 0.088
    "l1": 0.1,  # :17 "L1" : 0.1
    "l2": 0.2,  # :18 "L2" : 0.2
    "batch_size": 32,  # :24 "BATCH_SIZE" : 32
    "momentum": 0.9,  # :25 "MOMENTUM" : 0.9
    "weight_decay": 5e-4,  # :26 "WEIGHT_DECAY" : 5e-4
    "epochs": 300,  # :30 "NUM_EPOCH" : 300
}
# JDSH config/JDSH_NUSWIDE.json @ caa8224 (TC10: lines 19-21)
JDSH_NUSWIDE = {
    "alpha": 0.4,  # JDSH_NUSWIDE.json:2 "alpha" : 0.4
    "beta": 0.3,  # :3 "beta" : 0.3
    "lamb": 0.3,  # :4 "lamb" : 0.3
    "mu": 1.4,  # :5 "mu" : 1.4 (1.33 before caa8224)
    "intra": 0.1,  # :6 "INTRA" : 0.1
    "lr_image": 0.01,  # :7 "LR_IMG" : 0.01
    "lr_text": 0.01,  # :8 "LR_TXT" : 0.01
    "s_max": 0.75,  # :9 "MAX" : 0.75
    "s_min": -0.64,  # :10 "MIN" : -0.64
    "alpha_left": 2.0,  # :11 "ALPHA" : 2
    "loc_left": -0.62,  # :12 "LOC_LEFT" : -0.62
    "scale_left": 0.0128,  # :13 "SCALE_LEFT" : 0.0128
    "beta_right": 4.0,  # :14 "BETA" : 4 (added in caa8224)
    "loc_right": -0.62,  # :15 "LOC_RIGHT" : -0.62 (added in caa8224)
    "scale_right": 0.086,  # :16 "SCALE_RIGHT" : 0.086 (added in caa8224)
    "l1": 0.2,  # :17 "L1" : 0.2
    "l2": 0.2,  # :18 "L2" : 0.2
    "batch_size": 32,  # :23 "BATCH_SIZE" : 32
    "momentum": 0.9,  # :24 "MOMENTUM" : 0.9
    "weight_decay": 5e-4,  # :25 "WEIGHT_DECAY" : 5e-4
    "epochs": 300,  # :29 "NUM_EPOCH" : 300
}
# JDSH has no Wiki setting: wiki uses MIRFlickr's.
JDSH_WIKI = JDSH_MIRFLICKR

EXPECTED = {
    "djsrh": {
        None: DJSRH_MIRFLICKR,  # the plugin's defaults are the official main (MIRFlickr) setting
        "mirflickr25k": DJSRH_MIRFLICKR,
        "synthetic": DJSRH_MIRFLICKR,  # MIRFlickr-shaped
        "nus-wide-tc10": DJSRH_NUSWIDE,
        "nus-wide-tc21": DJSRH_NUSWIDE,  # no official TC21 setting: the NUS-WIDE one
        "wiki": DJSRH_WIKI,
        "iapr-tc12": DJSRH_MIRFLICKR,  # no official setting
        "mscoco": DJSRH_MIRFLICKR,  # no official setting
    },
    "jdsh": {
        None: JDSH_MIRFLICKR,
        "mirflickr25k": JDSH_MIRFLICKR,
        "synthetic": JDSH_MIRFLICKR,
        "nus-wide-tc10": JDSH_NUSWIDE,
        "nus-wide-tc21": JDSH_NUSWIDE,
        "wiki": JDSH_WIKI,
        "iapr-tc12": JDSH_MIRFLICKR,
        "mscoco": JDSH_MIRFLICKR,
    },
}
CASES = [(method, dataset) for method, per in EXPECTED.items() for dataset in per]


@pytest.fixture(scope="module")
def registry():
    return get_registry()


@pytest.mark.parametrize("method,dataset", CASES, ids=[f"{m}-{d or 'defaults'}" for m, d in CASES])
def test_resolved_config_has_the_official_values(registry, method, dataset):
    config = default_config(registry.teachers.get(method), dataset)
    want = EXPECTED[method][dataset]
    got = {key: config[key] for key in want}
    assert got == pytest.approx(want, rel=0, abs=1e-12)


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_per_dataset_entries_name_registered_datasets(registry, method):
    # a misspelt dataset name in dataset_defaults would silently never apply
    names = {d.name for d in registry.datasets.list()}
    assert set(registry.teachers.get(method).dataset_defaults) <= names


@pytest.mark.parametrize("dataset,left,right", [
    # left = LOC_LEFT - ALPHA * SCALE_LEFT, right = LOC_RIGHT + BETA * SCALE_RIGHT (JDSH.py:135-136)
    ("mirflickr25k", -0.49 - 2 * 0.019, -0.49 + 4 * 0.088),  # -0.528, -0.138
    ("nus-wide-tc10", -0.62 - 2 * 0.0128, -0.62 + 4 * 0.086),  # -0.6456, -0.276
])
def test_jdsh_thresholds(registry, dataset, left, right):
    c = default_config(registry.teachers.get("jdsh"), dataset)
    assert c["loc_left"] - c["alpha_left"] * c["scale_left"] == pytest.approx(left)
    assert c["loc_right"] + c["beta_right"] * c["scale_right"] == pytest.approx(right)
    # the docstring's condition under which reading both DSDW masks off S~ matches the official
    # in-place code (JDSH.py:138-141)
    assert left <= min(0.0, right)


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_wiki_defaults_still_match_the_committed_wiki_leaderboard(method):
    folder = ROOT / "leaderboards" / "wiki" / "results"
    records = sorted(folder.rglob(f"{method}+*/*.json")) if folder.is_dir() else []
    if not records:
        pytest.skip("no committed wiki results for this teacher")
    want = default_config(get_registry().teachers.get(method), "wiki")
    for path in records:
        assert json.loads(path.read_text())["config"]["teacher"] == want, path
