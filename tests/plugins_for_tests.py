"""Test-only plugin: a tiny structured dataset and methods that misbehave on purpose."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from cmhbench.config import hp
from cmhbench.data.dataset import CrossModalData, DatasetSpec, Splits
from cmhbench.hookspecs import hookimpl
from cmhbench.registry import MethodSpec


def load_tiny(data_dir: Optional[Path] = None) -> CrossModalData:
    """300 items, 4 classes, two noisy views of the class: 60 queries, 240 database, 160 train."""
    rng = np.random.default_rng(7)
    n, c = 300, 4
    cls = rng.integers(0, c, n)
    labels = np.eye(c, dtype=np.uint8)[cls]
    protos_i, protos_t = rng.standard_normal((c, 20)), rng.standard_normal((c, 12))
    image = (protos_i[cls] + 0.5 * rng.standard_normal((n, 20))).astype(np.float32)
    text = (protos_t[cls] + 0.5 * rng.standard_normal((n, 12))).astype(np.float32)
    idx = np.arange(n)
    splits = Splits(query=idx[:60], database=idx[60:], train=idx[60:220], protocol="tiny", seed=7)
    return CrossModalData("tiny", image, text, labels, splits, synthetic=True, origin="generated (tests)")


@dataclass(frozen=True)
class NoConfig:
    steps: int = hp(1, "unused", ge=1)


class Raising:
    def __init__(self, config, ctx):
        pass

    def fit(self, train, bits):
        raise RuntimeError("boom in fit")

    def encode(self, x, modality):
        raise RuntimeError("unreachable")


class NaNCodes:
    def __init__(self, config, ctx):
        pass

    def fit(self, train, bits):
        self.bits = bits

    def encode(self, x, modality):
        return torch.full((x.shape[0], self.bits), float("nan"))


class WrongShape(NaNCodes):
    def encode(self, x, modality):
        return torch.ones(x.shape[0], self.bits + 1)


@hookimpl
def cmhbench_register_datasets(register):
    register(DatasetSpec(name="tiny", load=load_tiny, description="tiny test data", synthetic=True))


@hookimpl
def cmhbench_register_methods(register):
    for name, cls in (("raising", Raising), ("nancodes", NaNCodes), ("wrongshape", WrongShape)):
        register(MethodSpec(name=name, kind="teacher", build=cls, config=NoConfig, paper="(test plugin)"))
