"""Backbone families, one file each (see ``docs/adding_a_backbone.md``).

Importing this package imports every family, which registers its builders in
:mod:`densekit.models.registry` and its ``checkpoint_filter_fn`` in :mod:`densekit.models.convert`.
Neither of those imports a family back.
"""
from densekit.models.backbones import timm_backbone  # noqa: F401
from densekit.models.backbones import convnext  # noqa: F401
from densekit.models.backbones import swin  # noqa: F401
from densekit.models.backbones import nat  # noqa: F401
from densekit.models.backbones import halonet  # noqa: F401
from densekit.models.backbones import cswin  # noqa: F401
from densekit.models.backbones import van  # noqa: F401
from densekit.models.backbones import hornet  # noqa: F401
from densekit.models.backbones import transnext  # noqa: F401
from densekit.models.backbones import biformer  # noqa: F401
from densekit.models.backbones import dat_pp  # noqa: F401
from densekit.models.backbones import unireplknet  # noqa: F401
from densekit.models.backbones import replknet  # noqa: F401
from densekit.models.backbones import crossformer  # noqa: F401
from densekit.models.backbones import litv2  # noqa: F401
from densekit.models.backbones import fastervit  # noqa: F401
from densekit.models.backbones import flatten  # noqa: F401
from densekit.models.backbones import slab  # noqa: F401
from densekit.models.backbones import timm_seed  # noqa: F401
