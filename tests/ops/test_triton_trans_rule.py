"""A source rule for the Triton kernels: ``tl.trans`` only of tiles loaded from memory.

On sm_90, triton >= 3.4 miscompiles ``tl.dot(tl.trans(x), ...)`` for some configurations when
``x`` is computed from another dot (its registers are in the MMA layout): a neighborhood-attention
dK written that way comes out as garbage in fp32 at some shapes on Hopper, and
flash-linear-attention issue #640 reports the same for its dK. Neither the CPU interpreter nor
an ahead-of-time compile shows it, so the kernels keep to a rule this test checks statically:
the argument of every ``tl.trans`` is a name bound to ``tl.load(...)`` (optionally ``.to(...)``)
in the same kernel, or unpacked from a ``@triton.jit`` helper of the file that returns a loaded
tile there, or a parameter of a helper (whose call sites pass loaded tiles: the helpers are
checked the same way where they call ``tl.trans`` themselves).
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


def _bindings(fn: ast.FunctionDef, loaded_returns):
    """Names of ``fn`` bound to loaded tiles, and names bound to anything else.

    A name counts as loaded when assigned ``tl.load(...)`` (optionally cast), or unpacked from a
    call to a ``@triton.jit`` helper of the same file at a position where that helper returns a
    loaded tile (``loaded_returns``: helper name -> tuple of booleans)."""
    loaded, computed = set(), set()
    for node in ast.walk(fn):
        if not isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
            helper = (node.value.func.id if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                      and isinstance(node.value.func, ast.Name) else None)
            if isinstance(node, ast.Assign) and isinstance(t, ast.Tuple) and helper in loaded_returns:
                flags = loaded_returns[helper]
                for elt, is_loaded in zip(t.elts, flags):
                    if isinstance(elt, ast.Name):
                        (loaded if is_loaded else computed).add(elt.id)
                continue
            for name in (n.id for n in ast.walk(t) if isinstance(n, ast.Name)):
                if isinstance(node, ast.Assign) and isinstance(t, ast.Name) and _is_load(node.value):
                    loaded.add(name)
                else:
                    computed.add(name)
    return loaded, computed


def trans_violations(source: str, filename: str = '<src>'):
    """``(file:line, text)`` of every ``tl.trans`` whose argument is not a loaded tile or a parameter."""
    kernels = [fn for fn in ast.walk(ast.parse(source)) if isinstance(fn, ast.FunctionDef) and _is_jit(fn)]
    loaded_returns = {}
    for fn in kernels:  # which return values of each helper are loaded tiles
        loaded, computed = _bindings(fn, {})
        for node in ast.walk(fn):
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
                loaded_returns[fn.name] = tuple(isinstance(e, ast.Name) and e.id in loaded and e.id not in computed
                                                for e in node.value.elts)
    bad = []
    for fn in kernels:
        params = {a.arg for a in fn.args.args}
        loaded, computed = _bindings(fn, loaded_returns)
        for node in ast.walk(fn):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == 'tl.trans':
                arg = node.args[0] if node.args else None
                ok = isinstance(arg, ast.Name) and arg.id not in computed and (arg.id in loaded or arg.id in params)
                if not ok:
                    bad.append((f'{filename}:{node.lineno}', ast.unparse(node)))
    return bad


@pytest.mark.parametrize('path', KERNEL_FILES, ids=lambda p: p.parent.name + '/' + p.name)
def test_trans_only_of_loaded_tiles(path):
    assert trans_violations(path.read_text(), str(path.relative_to(OPS.parents[1]))) == []


def test_rule_catches_the_miscompiled_pattern():
    # a dK update in the miscompiled form, and the transposed form the kernels use
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
@triton.jit
def helper(K):
    k = tl.load(K)
    s = tl.dot(k, tl.trans(k))
    return k, s
@triton.jit
def user(K, DO):
    do = tl.load(DO)
    k, s = helper(K)
    a = tl.dot(do, tl.trans(k))
'''
    assert trans_violations(good) == []
    assert [t for _, t in trans_violations(good + '''
@triton.jit
def user2(K):
    k, s = helper(K)
    b = tl.dot(k, tl.trans(s))
''')] == ['tl.trans(s)']
