"""The one way densekit puts an object into an OpenMMLab registry, with the one shadow check.

Every module of :mod:`densekit.mm` registers through :func:`register` from its own ``register()``
function, which :func:`densekit.mm.register_all` calls once; no module registers at import time
and none uses ``@REGISTRY.register_module()`` directly. The naming rule the names follow is in the
docstring of :mod:`densekit.mm` (and ``docs/openmmlab.md``).
"""
from __future__ import annotations

import functools
import warnings
from typing import Any, Iterator

from mmengine.registry import Registry


def _related(registry: Registry) -> Iterator[Registry]:
    """``registry``, its parents (which a lookup in its scope falls back to) and its children
    (whose own entries win over it in their scope)."""
    yield registry
    parent = registry.parent
    while parent is not None:
        yield parent
        parent = parent.parent
    stack = list(registry.children.values())
    while stack:
        child = stack.pop()
        yield child
        stack.extend(child.children.values())


def _same(existing: Any, obj: Any) -> bool:
    return existing is obj or getattr(existing, '__wrapped__', None) is getattr(obj, '__wrapped__', obj)


def register(registry: Registry, obj: Any, name: str | None = None) -> None:
    """Registers ``obj`` as ``name`` (default: ``obj.__name__``) unless it is already there.

    The shadow check: a different object registered under ``name`` in ``registry``, a parent
    (what ``registry.get(name)`` falls back to) or a child scope would make a config resolve the
    name to one or the other depending on the scope, so it is an error naming both.

    Args:
        registry: an mmengine / mmdet / mmseg registry.
        obj: a class, or a callable that builds the object (a builder wrapped with
            ``functools.wraps`` counts as the object it wraps).
        name: the registered name.
    """
    name = name or obj.__name__
    for reg in _related(registry):
        existing = reg.module_dict.get(name)
        if existing is None:
            continue
        if reg is registry and _same(existing, obj):
            return  # already registered: register_all and the backbone listener may run again
        raise KeyError(f"densekit: registering {obj!r} as '{name}' in {registry.scope}'s "
                       f"{registry.name} would shadow {reg.scope}'s {existing!r}")
    registry.register_module(name=name, module=obj)


def deprecated_alias(cls: type, old_name: str, new_name: str | None = None,
                     module: str | None = None) -> type:
    """A subclass of ``cls`` named ``old_name`` that warns once per construction.

    The alias keeps configs written with a former name building the same object; as a subclass
    named after the config's ``type``, error messages that name the class still name what the
    config says. Assign it to a module attribute of the same name (pickling finds it there) and
    register it with :func:`register`.

    Args:
        cls: the class under its current name.
        old_name: the former registered name.
        new_name: the current registered name (default: ``cls.__name__``).
        module: the module that holds the alias (default: ``cls.__module__``).
    """
    new_name = new_name or cls.__name__
    message = (f"densekit: the registered name '{old_name}' is deprecated; use '{new_name}' "
               f"(same class, same arguments)")

    def __init__(self, *args, **kwargs):
        warnings.warn(message, FutureWarning, stacklevel=2)
        cls.__init__(self, *args, **kwargs)

    functools.update_wrapper(__init__, cls.__init__, updated=())
    __init__.__qualname__ = f'{old_name}.__init__'
    doc = f'Deprecated name of :class:`{new_name}`; building it warns.'
    return type(cls)(old_name, (cls,), dict(__init__=__init__, __doc__=doc, __module__=module or cls.__module__,
                                           __qualname__=old_name, deprecated_for=new_name))

