"""The package's layering: the core runs without OpenMMLab, only the edge imports the edge, and
module-level imports form no cycle.

``densekit.mm`` is the one place densekit meets mmengine / mmdet / mmseg; the core packages
(``ops``, ``layers``, ``models``, ``datasets``, ``evaluation``) must import without them, and no
module outside ``densekit/mm`` may import ``densekit.mm`` (the package root, which wires the edge
in when the stack is installed, is the one exception). The import graph is read from the source
(the AST), so the checks see every module, also those no test imports.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / 'densekit'
CORE = ('densekit.ops', 'densekit.layers', 'densekit.models', 'densekit.datasets',
        'densekit.evaluation')
BLOCKED = ('mmengine', 'mmdet', 'mmseg', 'mmcv')


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


MODULES = _modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ''
    base = module.split('.')
    base = base if is_package else base[:-1]
    base = base[:len(base) - node.level + 1]
    return '.'.join(base + ([node.module] if node.module else []))


def _imports(module: str, top_level_only: bool) -> set[str]:
    """The densekit modules ``module`` imports: every import statement, or only those that run
    when the module is imported (not inside a function or class body)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == '__init__.py'
    nodes = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                nodes.append(child)
            elif top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.ClassDef, ast.Lambda)):
                continue
            else:
                visit(child)

    visit(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            target = _resolve(module, is_package, node)
            # ``from pkg import sub`` imports the module pkg.sub where there is one, else pkg
            names = [f'{target}.{a.name}' if f'{target}.{a.name}' in MODULES else target
                     for a in node.names]
        out.update(n for n in names if n == 'densekit' or n.startswith('densekit.'))
    return out


def test_core_imports_without_openmmlab():
    """The core packages import in a process where every mm* import fails."""
    script = textwrap.dedent(f"""
        import importlib, sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {BLOCKED!r}:
                    raise ImportError(f'{{name}} is blocked: the core must not need it')
                return None

        sys.meta_path.insert(0, Block())
        for name in {CORE!r}:
            importlib.import_module(name)
        leaked = sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r})
        assert not leaked, leaked
        assert 'densekit.mm' not in sys.modules
        print('ok')
    """)
    result = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert result.returncode == 0 and result.stdout.strip().endswith('ok'), result.stderr[-3000:]


EDGE_FACES = ('densekit', 'densekit.apis')


def test_nothing_below_the_edge_imports_it():
    """No module outside the edge imports ``densekit.mm`` (anywhere in its body). The edge is
    ``densekit/mm``, the package root (which wires it in) and ``densekit.apis`` (its public face)."""
    offenders = {}
    for module in MODULES:
        if module in EDGE_FACES or module == 'densekit.mm' or module.startswith('densekit.mm.'):
            continue
        bad = sorted(n for n in _imports(module, top_level_only=False)
                     if n == 'densekit.mm' or n.startswith('densekit.mm.'))
        if bad:
            offenders[module] = bad
    assert not offenders, f'modules below densekit.mm that import it: {offenders}'


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None`` (iterative DFS)."""
    color = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    for start in sorted(graph):
        if color[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        color[start] = 1
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in graph:
                    continue
                if color[child] == 1:
                    return path[path.index(child):] + [child]
                if color[child] == 0:
                    color[child] = 1
                    path.append(child)
                    stack.append((child, iter(sorted(graph[child]))))
                    break
            else:
                color[node] = 2
                stack.pop()
                path.pop()
    return None


def _top_level_graph() -> dict[str, set[str]]:
    return {m: {n for n in _imports(m, top_level_only=True) if n in MODULES and n != m}
            for m in MODULES}


def test_cycle_finder_reports_a_cycle():
    assert _find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == ['a', 'b', 'c', 'a']
    assert _find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None


def test_no_import_cycle_at_module_level():
    """Module-level imports among densekit modules form no cycle."""
    cycle = _find_cycle(_top_level_graph())
    assert cycle is None, 'module-level import cycle: ' + ' -> '.join(cycle)


@pytest.mark.parametrize('module', ['densekit.mm', 'densekit.mm.depth', *CORE])
def test_the_walk_sees_every_layer(module):
    """The walk covers the edge and the core (a moved folder would silently empty the checks)."""
    assert module in MODULES
