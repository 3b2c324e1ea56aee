"""densekit: dense prediction on current PyTorch.

Importing densekit installs the compatibility layer (portable ``mmcv._ext``, safe checkpoint
loading) and, when mmdet / mmseg are importable, registers densekit's models, datasets, metrics
and hooks into their registries. The core (``densekit.ops``, ``densekit.models``) needs no mm*.
"""
from densekit.compat import install as _install_compat

__version__ = '0.1.0'

_install_compat()

try:  # OpenMMLab registration happens at the edge and only when the stack is installed.
    from densekit.mm import register_all as _register_all
except ImportError:  # pragma: no cover - mm* not installed
    _register_all = None
if _register_all is not None:
    _register_all()
