"""Pluggy hook specifications: the only way methods and datasets enter cmhbench.

A plugin is a module (or object) with functions marked ``@cmhbench.hookimpl`` named after the
hooks below. Installed packages expose plugins through the entry-point group ``cmhbench``::

    [project.entry-points.cmhbench]
    mymethod = "my_pkg.plugin"

Each hook receives a ``register`` callable; the plugin calls it once per thing it provides.
Registration order never matters: a name registered twice is an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    from cmhbench.data.dataset import DatasetSpec
    from cmhbench.registry import MethodSpec

PROJECT = "cmhbench"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cmhbench_register_methods(register: "Callable[[MethodSpec], None]") -> None:
    """Call ``register(spec)`` once per teacher, strategy or student this plugin provides."""


@hookspec
def cmhbench_register_datasets(register: "Callable[[DatasetSpec], None]") -> None:
    """Call ``register(spec)`` once per dataset this plugin provides."""
