"""Models: backbones (one file per family), their registry and checkpoint converters.

Import order (no cycle): :mod:`~densekit.models.registry` and :mod:`~densekit.models.convert` hold
the dicts and import no family; every family imports them; :mod:`densekit.models.backbones`
imports every family, and this package imports it last, so that the registry is complete as soon
as anything from ``densekit.models`` is imported.
"""
from densekit.models.convert import convert_checkpoint, list_converters, register_converter
from densekit.models.registry import build_backbone, list_backbones, register_backbone
from densekit.models import backbones  # noqa: F401,E402  (registers every family)

__all__ = ['build_backbone', 'list_backbones', 'register_backbone', 'convert_checkpoint',
           'list_converters', 'register_converter']
