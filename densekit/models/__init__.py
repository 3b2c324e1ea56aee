"""Models: backbones (one file per family), their registry and checkpoint converters."""
from densekit.models.convert import convert_checkpoint, list_converters, register_converter
from densekit.models.registry import build_backbone, list_backbones, register_backbone

__all__ = ['build_backbone', 'list_backbones', 'register_backbone', 'convert_checkpoint',
           'list_converters', 'register_converter']
