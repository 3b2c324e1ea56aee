"""The family-file convention of ``docs/adding_a_backbone.md``, checked on every family file, and
the parts of the contract that ``BackboneMixin`` adds (``norm_eval``, freezing of output norms)."""
import ast
import inspect
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from densekit.models import build_backbone, list_backbones, list_converters

BACKBONES = Path(__file__).resolve().parents[2] / 'densekit' / 'models' / 'backbones'
FAMILY_FILES = sorted(p for p in BACKBONES.glob('*.py') if p.name not in ('__init__.py', 'base.py'))
CONVERTED = [p for p in FAMILY_FILES if p.stem != 'timm_backbone']
TEST_VARIANTS = list_backbones('*_test')


def _tree(path):
    return ast.parse(path.read_text(), filename=str(path))


def _is_register_converter_call(node) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and getattr(node.value.func, 'id', None) == 'register_converter')


def _registered_names(node) -> list:
    names = []
    for dec in getattr(node, 'decorator_list', []):
        if isinstance(dec, ast.Call) and getattr(dec.func, 'id', None) == 'register_backbone':
            names += [kw.value.value for kw in dec.keywords if kw.arg == 'name']
    return names


@pytest.mark.parametrize('path', FAMILY_FILES, ids=lambda p: p.stem)
def test_imports_at_module_top(path):
    """No import inside a function or method (ops included)."""
    for node in ast.walk(_tree(path)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
            assert not inner, f'{path.name}: {node.name} imports inside its body (line {inner[0].lineno})'


@pytest.mark.parametrize('path', FAMILY_FILES, ids=lambda p: p.stem)
def test_module_docstring_cites_a_source(path):
    doc = ast.get_docstring(_tree(path))
    assert doc and ('arXiv' in doc or 'arxiv.org' in doc or 'github.com' in doc), path.name


@pytest.mark.parametrize('path', CONVERTED, ids=lambda p: p.stem)
def test_file_order(path):
    """blocks / stage / model -> checkpoint_filter_fn -> register_converter -> builder -> variants,
    with the tiny ``*_test`` variant last."""
    body = _tree(path).body
    index = {}
    for i, node in enumerate(body):
        if isinstance(node, ast.ClassDef) and any(getattr(b, 'id', None) == 'BackboneMixin' for b in node.bases):
            index['model'] = i
        elif isinstance(node, ast.FunctionDef) and node.name == 'checkpoint_filter_fn':
            index['filter'] = i
        elif _is_register_converter_call(node):
            index.setdefault('converter', i)
        elif isinstance(node, ast.FunctionDef) and node.name.startswith('_create_'):
            index['builder'] = i
        elif _registered_names(node):
            index.setdefault('first_variant', i)
            index['last_variant'] = i
    assert set(index) == {'model', 'filter', 'converter', 'builder', 'first_variant', 'last_variant'}, \
        (path.name, index)
    assert index['model'] < index['filter'] < index['converter'] < index['builder'] < index['first_variant'], \
        (path.name, index)
    last = _registered_names(body[index['last_variant']])
    assert last and last[0].endswith('_test'), (path.name, last)
    # No class (block, stage, model) after the checkpoint section.
    assert not [n.name for n in body[index['filter']:] if isinstance(n, ast.ClassDef)], path.name


@pytest.mark.parametrize('path', CONVERTED, ids=lambda p: p.stem)
def test_converter_registered_under_the_file_name(path):
    assert path.stem in list_converters()


@pytest.mark.parametrize('path', FAMILY_FILES, ids=lambda p: p.stem)
def test_constructors_are_keyword_only(path):
    """Every ``nn.Module`` of a family file takes at most two positional arguments."""
    import importlib
    module = importlib.import_module(f'densekit.models.backbones.{path.stem}')
    classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
               if issubclass(c, nn.Module) and c.__module__ == module.__name__]
    assert classes
    for cls in classes:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        positional = [p.name for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
        assert len(positional) <= 2, f'{cls.__name__}: positional arguments {positional}'
        if hasattr(cls, 'forward_stages'):
            assert not positional, f'{cls.__name__}: the model takes keyword arguments only'


def test_registry_and_converters_import_no_family():
    for name in ('registry.py', 'convert.py'):
        tree = _tree(BACKBONES.parent / name)
        imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m and m.startswith('densekit')], (name, imported)


@pytest.mark.parametrize('name', TEST_VARIANTS)
def test_norm_eval(name):
    model = build_backbone(name, norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(not m.training for m in bns)
    assert any(m.training for m in model.modules() if not isinstance(m, nn.modules.batchnorm._BatchNorm))
    plain = build_backbone(name).train()
    assert all(m.training for m in plain.modules())


@pytest.mark.parametrize('name', ['convnext_test', 'swin_test', 'nat_test', 'cswin_test'])
def test_frozen_stages_freeze_their_output_norms(name):
    model = build_backbone(name, frozen_stages=2).train()
    norms = model.out_norms
    assert sorted(norms) == ['0', '1', '2', '3']
    for key, norm in norms.items():
        frozen = int(key) < 2
        assert all(p.requires_grad != frozen for p in norm.parameters()), (name, key)
        assert norm.training != frozen


@pytest.mark.parametrize('name', TEST_VARIANTS)
def test_out_indices_must_increase(name):
    with pytest.raises(ValueError, match='out_indices'):
        build_backbone(name, out_indices=(2, 1))
    with pytest.raises(ValueError, match='frozen_stages'):
        build_backbone(name, frozen_stages=9)


def test_unreturned_stages_are_not_run():
    model = build_backbone('nat_test', out_indices=(1,)).eval()
    ran = []
    for i, stage in enumerate(model.stages):
        stage.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert ran == [0, 1]


def test_timm_backbone_uses_the_mixin():
    pytest.importorskip('timm')
    from densekit.models.backbones.base import BackboneMixin
    model = build_backbone('TimmBackbone', model_name='resnet18', out_indices=(1, 2), frozen_stages=1,
                           norm_eval=True).train()
    assert isinstance(model, BackboneMixin)
    frozen = list(model.frozen_modules())
    assert frozen and all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(not m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
