"""Start-up hook: serves ``mmcv._ext`` from densekit when no compiled mmcv extension exists.

Installed next to densekit with ``densekit_mmcv_ext.pth`` (one line: ``import
_densekit_mmcv_ext``), which the interpreter's ``site`` module runs at start-up. It only appends a
finder to the end of ``sys.meta_path``: it imports nothing else (no torch, no densekit) and
answers for exactly one module name. The standard finders come first, so a compiled
``mmcv/_ext*.so`` (a full mmcv build) is found by them and this finder is never asked.

When ``mmcv._ext`` is requested and nothing else provides it, densekit's stand-in
(``densekit/compat/mmcv_ext.py``) is returned, so mmdet's and mmseg's own APIs and tools work
without importing densekit first. The request nearly always comes from inside ``import
mmcv.ops``, itself inside an mmdet / mmseg import, so ``import densekit`` (which registers into
mmdet's and mmseg's registries) cannot run there: it would re-enter those half-imported
packages. The stand-in module is therefore loaded from its file under its own name
``densekit.compat.mmcv_ext`` without running ``densekit/__init__``; it needs only torch at import
and imports ``densekit.ops`` on the first op call, when every import has finished. The rest of
densekit's compatibility layer (safe checkpoint loading, densekit's models in the registries)
comes with ``import densekit``, which densekit's configs run through ``custom_imports``. Once
densekit itself is imported, its own installer (``densekit.compat.install``) serves the same
module object.
"""
import sys

_NAME = 'mmcv._ext'


class _DensekitMmcvExtFinder:
    """Meta-path finder and loader for ``mmcv._ext`` only: returns densekit's stand-in module."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _NAME:
            return None
        from importlib.machinery import ModuleSpec
        return ModuleSpec(fullname, self, origin='densekit.compat.mmcv_ext')

    def create_module(self, spec):
        import importlib
        import importlib.util
        stand_in = 'densekit.compat.mmcv_ext'
        try:
            if stand_in in sys.modules:
                return sys.modules[stand_in]
            if 'densekit.compat' in sys.modules:  # densekit is imported: the regular import
                return importlib.import_module(stand_in)
            pkg = importlib.util.find_spec('densekit')  # locates densekit without importing it
            if pkg is None or not pkg.submodule_search_locations:
                raise ModuleNotFoundError("densekit is not installed", name='densekit')
            path = None
            for root in pkg.submodule_search_locations:
                candidate = root.rstrip('/\\') + '/compat/mmcv_ext.py'
                try:
                    open(candidate, 'rb').close()
                except OSError:
                    continue
                path = candidate
                break
            if path is None:
                raise FileNotFoundError(f"no compat/mmcv_ext.py under {pkg.submodule_search_locations}")
            file_spec = importlib.util.spec_from_file_location(stand_in, path)
            module = importlib.util.module_from_spec(file_spec)
            sys.modules[stand_in] = module
            try:
                file_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[stand_in]
                raise
            return module
        except Exception as e:  # an ImportError that names densekit, with the cause chained
            raise ImportError(
                f"No module named '{_NAME}': mmcv-lite has no compiled ops and densekit's "
                f"portable stand-in could not be loaded ({type(e).__name__}: {e}). Check that "
                "densekit imports (`python -c \"import densekit\"`) or install a full mmcv "
                "2.1 build.", name=_NAME) from e

    def exec_module(self, module):
        return None


def install() -> None:
    """Append the finder once (idempotent; also safe when ``site`` runs the .pth twice)."""
    if not any(type(f).__name__ == '_DensekitMmcvExtFinder' for f in sys.meta_path):
        sys.meta_path.append(_DensekitMmcvExtFinder())


install()
