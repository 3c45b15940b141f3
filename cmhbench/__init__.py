"""cmhbench: a benchmark harness for cross-modal hashing.

The harness knows no method by name: teachers, distillation strategies and students are pluggy
plugins registered through the entry-point group ``cmhbench`` (see :mod:`cmhbench.hookspecs`).
"""

__version__ = "0.1.0"
