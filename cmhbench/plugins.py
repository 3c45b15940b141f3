"""Plugin discovery: entry points of the group ``cmhbench``, plus modules named in an env var.

- Every installed distribution that declares ``[project.entry-points.cmhbench]`` is loaded;
  cmhbench's own methods come in exactly this way.
- ``CMHBENCH_DISABLE_PLUGIN_AUTOLOAD=1`` turns entry-point loading off (as pytest's switch does);
  ``CMHBENCH_PLUGINS=pkg.mod,other.mod`` registers the named modules in any case.
- The harness's own datasets (``cmhbench.data.builtin``) are always registered.

A plugin that fails to import, registers a name twice or raises while registering is reported as a
:class:`~cmhbench.errors.PluginError` naming the plugin.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from functools import lru_cache
from typing import Any, Callable

import pluggy

from cmhbench import hookspecs
from cmhbench.errors import CmhbenchError, PluginError
from cmhbench.registry import Registry

AUTOLOAD_DISABLE_ENV = "CMHBENCH_DISABLE_PLUGIN_AUTOLOAD"
EXTRA_PLUGINS_ENV = "CMHBENCH_PLUGINS"
ENTRY_POINT_GROUP = "cmhbench"
CORE_PLUGINS = ("cmhbench.data.builtin",)


def autoload_enabled() -> bool:
    """False when ``CMHBENCH_DISABLE_PLUGIN_AUTOLOAD`` is set to a true value."""
    return os.environ.get(AUTOLOAD_DISABLE_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


@lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return md.packages_distributions()


def _module_version(module_name: str) -> tuple[str, str]:
    top = module_name.split(".")[0]
    dists = _packages_distributions().get(top, [])
    if dists:
        name = dists[0]
        try:
            return name, md.version(name)
        except md.PackageNotFoundError:
            pass
    return top, ""


def _import_plugin(module_name: str, label: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported by name
        raise PluginError(f"plugin {label!r} failed to load ({module_name}): {type(exc).__name__}: {exc}") from exc


def create_plugin_manager(autoload: bool | None = None, extra: tuple[str, ...] | None = None) -> pluggy.PluginManager:
    """A plugin manager with cmhbench's hookspecs and the discovered plugins registered.

    Each registered plugin's name is its entry-point name (or module name); the distribution name
    and version that provide it are stored in ``pm.cmhbench_sources[plugin_name]``.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    sources: dict[str, tuple[str, str]] = {}

    def add(plugin: Any, name: str, dist: tuple[str, str]) -> None:
        if pm.has_plugin(name) or pm.is_registered(plugin):
            raise PluginError(f"plugin {name!r} is registered twice ({dist[0]}); remove the duplicate entry point")
        try:
            pm.register(plugin, name=name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            raise PluginError(f"plugin {name!r} is invalid: {exc}") from exc
        sources[name] = dist

    for module_name in CORE_PLUGINS:
        add(_import_plugin(module_name, module_name), module_name, _module_version(module_name))

    if autoload if autoload is not None else autoload_enabled():
        eps = sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.name, ep.value))
        for ep in eps:
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001
                raise PluginError(f"plugin {ep.name!r} failed to load ({ep.value}): {type(exc).__name__}: {exc}") from exc
            dist = (ep.dist.name, ep.dist.version) if ep.dist is not None else _module_version(ep.value)
            add(plugin, ep.name, dist)

    names = extra if extra is not None else tuple(
        m.strip() for m in os.environ.get(EXTRA_PLUGINS_ENV, "").split(",") if m.strip()
    )
    for module_name in names:
        module = _import_plugin(module_name, module_name)
        if pm.is_registered(module):
            continue
        add(module, module_name, _module_version(module_name))

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(f"plugin {name!r} implements an unknown hook: {exc}") from exc
    pm.cmhbench_sources = sources  # type: ignore[attr-defined]
    return pm


def _call_each(pm: pluggy.PluginManager, hook_name: str, make_register: Callable[[str, str], Callable]) -> None:
    """Call one registration hook per plugin, so that every spec knows which plugin gave it."""
    sources = pm.cmhbench_sources  # type: ignore[attr-defined]
    hook = getattr(pm.hook, hook_name)
    for impl in sorted(hook.get_hookimpls(), key=lambda i: i.plugin_name):
        dist, version = sources.get(impl.plugin_name, (impl.plugin_name, ""))
        source = impl.plugin_name if dist == impl.plugin_name else f"{dist}:{impl.plugin_name}"
        try:
            impl.function(register=make_register(source, version))
        except CmhbenchError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise PluginError(
                f"plugin {impl.plugin_name!r} raised while registering: {type(exc).__name__}: {exc}"
            ) from exc


def build_registry(pm: pluggy.PluginManager) -> Registry:
    """Ask every plugin to register its methods and datasets."""
    registry = Registry()
    registry.plugins = {name: f"{d} {v}".strip() for name, (d, v) in pm.cmhbench_sources.items()}  # type: ignore[attr-defined]
    _call_each(pm, "cmhbench_register_methods", lambda src, ver: lambda spec: registry.add_method(spec, src, ver))
    _call_each(pm, "cmhbench_register_datasets", lambda src, ver: lambda spec: registry.add_dataset(spec, src, ver))
    return registry


@lru_cache(maxsize=1)
def _cached_registry(autoload: bool, extra: tuple[str, ...]) -> Registry:
    return build_registry(create_plugin_manager(autoload, extra))


def get_registry() -> Registry:
    """The registry for the current environment (cached per autoload switch and extra plugins)."""
    extra = tuple(m.strip() for m in os.environ.get(EXTRA_PLUGINS_ENV, "").split(",") if m.strip())
    return _cached_registry(autoload_enabled(), extra)


def clear_cache() -> None:
    """Forget the cached registry (after installing plugins or changing the env switches)."""
    _cached_registry.cache_clear()
