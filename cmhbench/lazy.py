"""Heavy libraries imported on first use, so that commands which never train start fast.

``import torch`` alone takes about 1.7 s on a 2-core machine; ``cmhbench list``, ``show``,
``eval`` (on the CPU kernel) and ``leaderboard`` never touch a tensor. Modules that the plugin
registry imports (the harness's interfaces and training helpers, every method plugin) therefore
write::

    from cmhbench.lazy import F, nn, torch

and use ``torch.…`` inside functions as usual: the first attribute access imports the real
module, after which look-ups are ordinary attribute hits. Anything evaluated when a module is
imported (a base class, a decorator, a default argument) must not touch these names; an
``nn.Module`` subclass is defined inside a function decorated with :func:`torch_class`.
``tests/test_startup.py`` checks that building the registry imports none of torch, pandas,
numba or matplotlib.
"""

from __future__ import annotations

import functools
import importlib
import types
from typing import Any, Callable


class LazyModule(types.ModuleType):
    """A stand-in for the module ``name`` that imports it on the first attribute access."""

    def __getattr__(self, attr: str) -> Any:
        module = importlib.import_module(self.__name__)
        self.__dict__.update(module.__dict__)  # later look-ups no longer reach __getattr__
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.__name__!r}>"


def lazy_import(name: str) -> Any:
    """A :class:`LazyModule` for ``name`` (the module itself when it is imported already)."""
    import sys

    return sys.modules.get(name) or LazyModule(name)


def torch_class(define: Callable[[], type]) -> Callable[..., Any]:
    """Decorate a function that defines and returns an ``nn.Module`` subclass: calling the
    decorated name constructs an instance, defining the class (and importing torch) on the first
    call only. ``.cls()`` returns the class itself."""
    cls = functools.cache(define)

    @functools.wraps(define)
    def construct(*args: Any, **kwargs: Any) -> Any:
        return cls()(*args, **kwargs)

    construct.cls = cls  # type: ignore[attr-defined]
    return construct


def no_grad(func: Callable[..., Any]) -> Callable[..., Any]:
    """``@torch.no_grad()`` for a plain function, without importing torch at decoration time."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return func(*args, **kwargs)

    return wrapper


def is_tensor(x: Any) -> bool:
    """``isinstance(x, torch.Tensor)``, False without importing torch when it is not imported
    (nothing can be a tensor then)."""
    import sys

    module = sys.modules.get("torch")
    return module is not None and isinstance(x, module.Tensor)


torch = lazy_import("torch")
nn = lazy_import("torch.nn")
F = lazy_import("torch.nn.functional")
autograd = lazy_import("torch.autograd")
