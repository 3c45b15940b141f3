"""Result files: schema, atomic store and loading into a long DataFrame."""

from cmhbench.results.store import SCHEMA_VERSION, ResultStore, RunKey, load_result

__all__ = ["SCHEMA_VERSION", "ResultStore", "RunKey", "load_result"]
