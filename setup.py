"""Installs the start-up hook that serves ``mmcv._ext`` from densekit (see ``_densekit_mmcv_ext``).

Everything else is declared in ``pyproject.toml``. A ``.pth`` file is not a package file, so
``build_py`` writes it next to the packages: into the wheel's root for a regular install and, for
an editable install (where ``build_py`` copies nothing), into the editable wheel's root, which
setuptools takes from the ``install`` command's ``install_lib``.
"""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = 'densekit_mmcv_ext.pth'
# Sorted after setuptools' ``__editable__.*.pth``, so the editable finder is in place first. The
# hook module is looked up before it is imported, so a .pth left behind by an uninstall (pip does
# not track the editable one) costs one failed lookup at start-up, never an error.
PTH_LINE = ("import importlib.util as _u; "
            "_u.find_spec('_densekit_mmcv_ext') is not None and __import__('_densekit_mmcv_ext')\n")


class BuildPyWithHook(build_py):

    def run(self):
        super().run()
        targets = [self.build_lib]
        if getattr(self, 'editable_mode', False):
            targets.append(self.get_finalized_command('install').install_lib)
        for d in targets:
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, PTH_NAME), 'w') as f:
                f.write(PTH_LINE)

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH_NAME)]


setup(cmdclass={'build_py': BuildPyWithHook})
