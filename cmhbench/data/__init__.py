"""Datasets: specs, file loaders, split protocols and a synthetic generator."""

from cmhbench.data.dataset import CrossModalData, DatasetSpec, Splits

__all__ = ["CrossModalData", "DatasetSpec", "Splits"]
