"""The runner: determinism, label hygiene, override routing, resumability."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cmhbench.errors import ConfigError
from cmhbench.interfaces import PairedFeatures
from cmhbench.plugins import get_registry
from cmhbench.runner import RunRequest, Runner, parse_bits, resolve_pipeline, stage_seed

FAST = (("teacher.epochs", "2"), ("teacher.hidden", "32"), ("student.epochs", "2"),
        ("student.image_hidden", "32"), ("student.text_hidden", "32"))


def request(tmp_path: Path, **kw) -> RunRequest:
    base = dict(teacher="djsrh", dataset="tiny", bits=(8,), results_dir=tmp_path, overrides=FAST, device="cpu")
    base.update(kw)
    return RunRequest(**base)


def codes_of(outcome) -> dict[str, np.ndarray]:
    with np.load(outcome.path.with_name(outcome.result["codes_file"])) as z:
        return {k: z[k] for k in z.files}


def test_same_seed_same_codes_other_seed_other_codes(tmp_path, test_plugins):
    registry = get_registry()
    a = Runner(registry).run(request(tmp_path / "a", seed=3))[0]
    b = Runner(registry).run(request(tmp_path / "b", seed=3))[0]
    c = Runner(registry).run(request(tmp_path / "c", seed=4))[0]
    ca, cb, cc = codes_of(a), codes_of(b), codes_of(c)
    for key in ca:
        np.testing.assert_array_equal(ca[key], cb[key])
    assert a.result["metrics"] == b.result["metrics"]
    assert any(not np.array_equal(ca[k], cc[k]) for k in ("query_image_codes", "db_text_codes"))
    assert a.path.name != c.path.name


def test_existing_result_is_skipped_and_force_replaces_it(tmp_path, test_plugins):
    registry = get_registry()
    first = Runner(registry).run(request(tmp_path))[0]
    assert first.status == "done"
    stamp = first.path.read_text()
    again = Runner(registry).run(request(tmp_path))[0]
    assert again.status == "skipped" and again.path == first.path and first.path.read_text() == stamp
    forced = Runner(registry).run(request(tmp_path, force=True))[0]
    assert forced.status == "done" and forced.path == first.path
    other = Runner(registry).run(request(tmp_path, overrides=FAST + (("student.gamma", "0.5"),)))[0]
    assert other.status == "done" and other.path != first.path  # other settings never shadow a result


class Spy:
    """Records what fit/distill receive."""

    seen: list = []

    def __init__(self, config, ctx):
        pass

    def fit(self, train, *rest):
        Spy.seen.append(("fit", train))
        self.bits = rest[-1]

    def distill(self, teacher, train):
        from cmhbench.interfaces import Supervision

        Spy.seen.append(("distill", train))
        return Supervision(similarity=torch.eye(len(train)))

    def encode(self, x, modality):
        return torch.ones(x.shape[0], self.bits)


def test_labels_reach_only_strategies_that_declare_them(tmp_path, test_plugins, monkeypatch):
    from dataclasses import replace

    registry = get_registry()
    Spy.seen = []
    teacher = replace(registry.method("teacher", "djsrh"), build=Spy)
    student = replace(registry.method("student", "dcmh"), build=Spy)
    for spec in (teacher, student):
        monkeypatch.setitem(registry.table(spec.kind).items, spec.name, spec)
    for strategy_name in ("ukd", "labels"):
        spec = replace(registry.method("strategy", strategy_name), build=Spy)
        monkeypatch.setitem(registry.strategies.items, strategy_name, spec)
    Runner(registry).run(request(tmp_path, overrides=()))
    Runner(registry).run(request(tmp_path, teacher="none", strategy="labels", overrides=()))
    for stage, train in Spy.seen:
        assert isinstance(train, PairedFeatures) and len(train) == 160  # the training split only
        if stage == "fit":
            assert train.labels is None
    distills = [train for stage, train in Spy.seen if stage == "distill"]
    assert distills[0].labels is None  # ukd
    assert distills[1].labels is not None and distills[1].labels.shape == (160, 4)  # labels


def test_override_routing(test_plugins):
    registry = get_registry()
    req = RunRequest(teacher="djsrh", overrides=(("djsrh.epochs", "3"), ("dcmh.epochs", "4"), ("mode", "sim"), ("gamma", "2")))
    pipe = resolve_pipeline(req, registry)
    assert pipe.configs["teacher"].epochs == 3 and pipe.configs["student"].epochs == 4
    assert pipe.configs["strategy"].mode == "sim" and pipe.configs["student"].gamma == 2.0
    with pytest.raises(ConfigError, match="neither a role"):
        resolve_pipeline(RunRequest(teacher="djsrh", overrides=(("ssah.lr", "1"),)), registry)


def test_parse_bits_and_stage_seeds():
    assert parse_bits("16, 32,64,16") == (16, 32, 64)
    with pytest.raises(ConfigError):
        parse_bits("")
    assert len({stage_seed(0, s) for s in ("teacher", "strategy", "student")}) == 3
    assert stage_seed(1, "teacher") != stage_seed(0, "teacher")


def test_reused_teacher_gives_the_same_result_as_a_fresh_one(tmp_path, test_plugins):
    registry = get_registry()
    shared = Runner(registry)
    first = shared.run(request(tmp_path / "a"))[0]
    sim = request(tmp_path / "a", overrides=FAST + (("ukd.mode", "sim"),))
    reused = shared.run(sim)[0]
    fresh = Runner(registry).run(request(tmp_path / "b", overrides=FAST + (("ukd.mode", "sim"),)))[0]
    assert reused.result["teacher_reused"] is True and fresh.result["teacher_reused"] is False
    assert first.result["key"]["variant"] != reused.result["key"]["variant"]
    assert reused.result["metrics"] == fresh.result["metrics"]
    a, b = codes_of(reused), codes_of(fresh)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
