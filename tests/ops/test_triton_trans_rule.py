"""A source rule for the Triton kernels: ``tl.trans`` only of tiles loaded from memory.

On sm_90, triton >= 3.4 miscompiles ``tl.dot(tl.trans(x), ...)`` for some configurations when
``x`` is computed from another dot (its registers are in the MMA layout): the H200 run of
2026-11-26 gave a garbage neighborhood-attention dK in fp32 at one shape through exactly that,
and flash-linear-attention issue 640 reports the same for its dK. Neither the CPU interpreter nor
an ahead-of-time compile shows it, so the kernels keep to a rule this test checks statically:
the argument of every ``tl.trans`` is a name bound to ``tl.load(...)`` (optionally ``.to(...)``)
in the same kernel, or a parameter of a ``@triton.jit`` helper (whose call sites pass loaded
tiles: the helpers are checked the same way where they call ``tl.trans`` themselves).
"""
from __future__ import annotations

import ast
import pathlib

import pytest

OPS = pathlib.Path(__file__).resolve().parents[2] / 'densekit' / 'ops'
KERNEL_FILES = sorted(OPS.glob('*/triton.py')) + [OPS / '_triton_utils.py']


def _is_jit(fn: ast.FunctionDef) -> bool:
    return any('jit' in ast.unparse(d) for d in fn.decorator_list)


def _is_load(value: ast.expr) -> bool:
    """``tl.load(...)``, possibly followed by ``.to(...)`` casts."""
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == 'to':
        value = value.func.value
    return isinstance(value, ast.Call) and ast.unparse(value.func) == 'tl.load'


def trans_violations(source: str, filename: str = '<src>'):
    """``(file:line, text)`` of every ``tl.trans`` whose argument is not a loaded tile or a parameter."""
    bad = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef) or not _is_jit(fn):
            continue
        params = {a.arg for a in fn.args.args}
        loaded, computed = set(), set()
        for node in ast.walk(fn):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for name in (n.id for n in ast.walk(t) if isinstance(n, ast.Name)):
                        if isinstance(node, ast.Assign) and isinstance(t, ast.Name) and _is_load(node.value):
                            loaded.add(name)
                        else:
                            computed.add(name)
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == 'tl.trans':
                arg = node.args[0] if node.args else None
                ok = isinstance(arg, ast.Name) and (
                    (arg.id in loaded and arg.id not in computed) or (arg.id in params and arg.id not in computed))
                if not ok:
                    bad.append((f'{filename}:{node.lineno}', ast.unparse(node)))
    return bad


@pytest.mark.parametrize('path', KERNEL_FILES, ids=lambda p: p.parent.name + '/' + p.name)
def test_trans_only_of_loaded_tiles(path):
    assert trans_violations(path.read_text(), str(path.relative_to(OPS.parents[1]))) == []


def test_rule_catches_the_h200_pattern():
    # the dK update the H200 miscompiled, and its fixed form
    bad = '''
import triton
import triton.language as tl
@triton.jit
def k(Q, DO, V):
    q = tl.load(Q)
    do = tl.load(DO)
    v = tl.load(V).to(tl.float32)
    s = tl.dot(q, tl.trans(v))
    ds = s * 2
    dk = tl.dot(tl.trans(ds).to(q.dtype), q)
    dv = tl.dot(tl.trans(s * 1), do)
    v = v * 2
    w = tl.dot(q, tl.trans(v))
'''
    found = [text for _, text in trans_violations(bad)]
    # v is re-bound to a computed value, so both of its transposes count
    assert sorted(found) == ['tl.trans(ds)', 'tl.trans(s * 1)', 'tl.trans(v)', 'tl.trans(v)']
    good = '''
import triton
import triton.language as tl
@triton.jit
def k(Q, K, q_t_param):
    k = tl.load(K)
    q_t = tl.load(Q).to(tl.float32)
    s_t = tl.dot(k, q_t)
    dk = tl.dot(s_t, tl.trans(q_t))
    x = tl.dot(k, tl.trans(q_t_param))
'''
    assert trans_violations(good) == []
