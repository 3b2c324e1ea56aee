"""Backbone families; importing this package registers each of them."""
from densekit.models.backbones import timm_backbone  # noqa: F401
from densekit.models.backbones import convnext  # noqa: F401
from densekit.models.backbones import swin  # noqa: F401
from densekit.models.backbones import nat  # noqa: F401
from densekit.models.backbones import halonet  # noqa: F401
from densekit.models.backbones import cswin  # noqa: F401
