"""The backbone contract, checked for every registered tiny variant (``*_test``).

Every family registers a ``<family>_test`` variant; this file picks them up from the registry, so a
new family is covered by adding that variant. Checks on an odd input (97x131): one NCHW map per
``out_indices`` entry with the channels and stride of ``feature_info``, backward, no NaN,
``frozen_stages``, ``with_cp`` equivalence, every attention backend giving the same features, and
building through mmdet's and mmseg's ``MODELS``.
"""
import contextlib
import os
import sys
from typing import Dict, Set, Tuple

import pytest
import torch

from densekit.models import build_backbone, list_backbones

TEST_VARIANTS = list_backbones('*_test')
H, W = 97, 131
# Families whose attention op another family's default-tier backend check already runs the same
# way (family -> that family): their whole-model backend check is in the slow tier, to keep the
# default run short. The ops' own parity tests cover every backend in both tiers.
BACKENDS_CHECKED_BY = {'dinat_test': 'nat_test', 'unireplknet_test': 'replknet_test',
                       'van_test': 'replknet_test', 'litv2_test': 'swin_test',
                       'flatten_swin_test': 'swin_test', 'slab_test': 'swin_test'}
BACKEND_CASES = [pytest.param(n, marks=pytest.mark.slow) if n in BACKENDS_CHECKED_BY else n
                 for n in TEST_VARIANTS]


def _build(name, **kwargs):
    torch.manual_seed(0)
    return build_backbone(name, **kwargs)


def _all_stages(name):
    return tuple(range(len(_build(name).feature_info)))


def test_every_family_has_a_test_variant():
    assert TEST_VARIANTS, 'no *_test backbone registered'


@pytest.mark.parametrize('name', TEST_VARIANTS)
def test_outputs_match_feature_info(name):
    stages = _all_stages(name)
    model = _build(name, out_indices=stages).train()
    info = model.feature_info
    assert len(info) == len(stages)
    assert all({'num_chs', 'reduction', 'module'} <= set(i) for i in info), info
    assert isinstance(model.size_divisibility, int) and model.size_divisibility >= 0
    modules = dict(model.named_modules())
    assert all(i['module'] in modules for i in info), [i['module'] for i in info]

    x = torch.randn(2, 3, H, W)
    outs = model(x)
    assert isinstance(outs, tuple) and len(outs) == len(stages)
    for out, i in zip(outs, info):
        assert out.dim() == 4 and out.shape[:2] == (2, i['num_chs']), (out.shape, i)
        # floor (no padding, e.g. ConvNeXt) or ceil (padding to the stride, e.g. Swin).
        r = i['reduction']
        assert abs(out.shape[2] - H / r) < 1 and abs(out.shape[3] - W / r) < 1, (out.shape, i)
        assert torch.isfinite(out).all()

    sum(o.float().square().mean() for o in outs).backward()
    grads = [(n, p.grad) for n, p in model.named_parameters() if p.requires_grad]
    assert grads and any(g is not None for _, g in grads)
    for n, g in grads:
        assert g is None or torch.isfinite(g).all(), n


@pytest.mark.parametrize('name', TEST_VARIANTS)
def test_out_indices_subset(name):
    last = len(_build(name).feature_info) - 1
    model = _build(name, out_indices=(1, last)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [model.feature_info[i]['num_chs'] for i in (1, last)]
    with pytest.raises(ValueError, match='out_indices'):
        _build(name, out_indices=(last + 1,))


@pytest.mark.parametrize('name', TEST_VARIANTS)
def test_frozen_stages(name):
    model = _build(name, frozen_stages=1).train()
    frozen = list(model.frozen_modules())
    frozen_params = {id(p) for m in frozen for p in m.parameters()}
    assert frozen_params, f'{name}: frozen_stages=1 froze no parameter'
    assert all(not m.training for f in frozen for m in f.modules())
    trainable = [p for p in model.parameters() if id(p) not in frozen_params]
    assert trainable and all(p.requires_grad for p in trainable)
    assert all(not p.requires_grad for p in model.parameters() if id(p) in frozen_params)

    outs = model(torch.randn(1, 3, 64, 64))
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is None for p in model.parameters() if id(p) in frozen_params)
    assert any(p.grad is not None for p in trainable)

    stem_only = _build(name, frozen_stages=0).train()
    assert 0 < sum(1 for p in stem_only.parameters() if not p.requires_grad) < len(frozen_params)


@pytest.mark.parametrize('frozen', [-1, 1])
@pytest.mark.parametrize('name', TEST_VARIANTS)
def test_with_cp_matches(name, frozen):
    # frozen=1: the first trained stage gets an input that needs no gradient; its blocks must
    # still be checkpointed correctly (their parameters do need gradients).
    stages = _all_stages(name)
    plain = _build(name, out_indices=stages, frozen_stages=frozen).train()
    ckpt = _build(name, out_indices=stages, with_cp=True, frozen_stages=frozen).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, H, W)
    results = []
    for model in (plain, ckpt):
        torch.manual_seed(1)
        outs = model(x)
        sum(o.square().mean() for o in outs).backward()
        results.append((outs, {n: p.grad for n, p in model.named_parameters()}))
    (o1, g1), (o2, g2) = results
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert g1.keys() == g2.keys()
    for n in g1:
        if g1[n] is None:
            assert g2[n] is None, n
        else:
            torch.testing.assert_close(g1[n], g2[n], atol=1e-6, rtol=0, msg=n)


@pytest.mark.parametrize('name', TEST_VARIANTS)
def test_with_cp_checkpoints_every_trained_block(name, monkeypatch):
    """``with_cp`` recomputes exactly the blocks autograd records: after frozen stages, the first
    trained stage (input without gradient) is checkpointed too; frozen blocks are not."""
    import densekit.layers.checkpoint as ckpt_mod
    stages = _all_stages(name)
    real = ckpt_mod.checkpoint

    def checkpointed(frozen):
        model = _build(name, out_indices=stages, with_cp=True, frozen_stages=frozen).train()
        names = {id(m): n for n, m in model.named_modules()}
        seen = []

        def spy(fn, *args, **kwargs):
            seen.append(names[id(fn)])
            return real(fn, *args, **kwargs)

        monkeypatch.setattr(ckpt_mod, 'checkpoint', spy)
        sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
        trained = {n for n, m in model.named_modules() if any(p.requires_grad for p in m.parameters())}
        return seen, trained

    every, _ = checkpointed(-1)
    after_freeze, trained = checkpointed(1)
    assert every, f'{name}: with_cp checkpointed no block'
    assert after_freeze == [n for n in every if n in trained]
    assert len(after_freeze) < len(every)


def _uses_attention_ops(model, x) -> bool:
    """True when the model dispatches through ``densekit.ops`` attention (an unknown backend
    requested through the environment is then an error)."""
    from densekit.ops._backend import ENV_VAR
    old = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = 'no-such-backend'
    try:
        with torch.no_grad():
            model(x)
        return False
    except ValueError as e:
        if 'no-such-backend' not in str(e):
            raise
        return True
    finally:
        if old is None:
            os.environ.pop(ENV_VAR)
        else:
            os.environ[ENV_VAR] = old


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
@pytest.mark.parametrize('name', TEST_VARIANTS)
def test_builds_through_openmmlab(name, scope):
    pytest.importorskip(scope)
    import densekit  # noqa: F401  (registers densekit's backbones into mmdet / mmseg)
    from densekit.mm import register_all
    register_all()
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    last = len(_build(name).feature_info) - 1
    model = registry.build(dict(type=name, out_indices=(last,), frozen_stages=0))
    with torch.no_grad():
        out = model.eval()(torch.randn(1, 3, 64, 64))
    assert len(out) == 1 and out[0].shape[1] == model.feature_info[last]['num_chs']


def _attn_tolerances() -> dict:
    """fp32 tolerances of the attention-op parity harness (``tests/ops/attn_parity.py``)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / 'ops' / 'attn_parity.py'
    if not path.exists():
        pytest.skip(f'attention parity harness {path} not present')
    spec = importlib.util.spec_from_file_location('densekit_attn_parity', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TOL[torch.float32]


def _run(model, x, backward: bool):
    """Features (and parameter gradients) of one forward (+ backward) pass."""
    model.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(backward):
        outs = model(x)
        if backward:
            sum(o.square().mean() for o in outs).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return [o.detach() for o in outs], grads


def _refusals(model, x, backward: bool) -> Tuple[list, list, Dict[str, Set[str]]]:
    """One reference pass of ``model`` (features and gradients) that also asks every attention
    call's backend probes, as for an explicit request, whether they can run it. Returns the
    features, the gradients and ``backend -> {reason}`` over all calls (empty: it runs them all)."""
    from densekit.ops import _backend
    from densekit.ops._backend import BACKEND_NAMES
    real = _backend.choose_backend
    refusals: Dict[str, Set[str]] = {name: set() for name in BACKEND_NAMES}

    def spy(op, probes, requested=None):
        for name, probe in probes.items():
            reason = probe(True)
            if reason is not None:
                refusals.setdefault(name, set()).add(reason)
        return real(op, probes, requested)

    # Each op package imported choose_backend by name; patch it where it is looked up.
    users = [m for n, m in list(sys.modules.items())
             if n.startswith('densekit.ops.') and getattr(m, 'choose_backend', None) is real]
    assert users, 'no densekit.ops package dispatches through choose_backend'
    for m in users:
        m.choose_backend = spy
    try:
        expected, grads = _run(model, x, backward)
    finally:
        for m in users:
            m.choose_backend = real
    return expected, grads, refusals


def _check_backends(name, model, x, monkeypatch, backward: bool) -> None:
    """Every attention backend that the ops' probes accept for all of the model's attention calls
    gives the reference backend's features (and gradients); every other one is refused up front
    with the probe's reason (no crash inside a compiler). The op tolerances assume O(1) values, so
    they are scaled by the magnitude of what is compared; gradients of parameters sum over many
    positions and use the bias-gradient entry."""
    from densekit.ops._backend import BACKEND_NAMES, ENV_VAR
    if not _uses_attention_ops(model, x):
        pytest.skip(f'{name} does not use densekit.ops attention')
    tol = _attn_tolerances()
    monkeypatch.setenv(ENV_VAR, 'reference')
    expected, expected_grads, refusals = _refusals(model, x, backward)
    ran, refused = [], {}
    for backend in BACKEND_NAMES:
        if backend == 'reference':
            continue
        monkeypatch.setenv(ENV_VAR, backend)
        if refusals[backend]:
            with pytest.raises(RuntimeError) as info:
                _run(model, x, backward)
            msg = str(info.value)
            assert f"backend '{backend}' (from {ENV_VAR} environment variable) cannot run this call: " in msg, msg
            assert any(r in msg for r in refusals[backend]), (msg, refusals[backend])
            refused[backend] = msg
            continue
        try:
            got, grads = _run(model, x, backward)
        except ModuleNotFoundError as e:  # backend not written yet for this op
            if not (e.name or '').startswith('densekit.ops.'):
                raise
            refused[backend] = str(e)
            continue
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, atol=tol['out'] * max(1.0, e.abs().max().item()), rtol=0,
                                       msg=lambda m, b=backend: f'{name}, backend {b}: {m}')
        assert grads.keys() == expected_grads.keys()
        for n, e in expected_grads.items():
            torch.testing.assert_close(grads[n], e, atol=tol['dbias'] * max(1.0, e.abs().max().item()),
                                       rtol=0, msg=lambda m, b=backend, n=n: f'{name}, backend {b}, {n}: {m}')
        ran.append(backend)
    if not ran:
        pytest.skip(f'no non-reference backend runs here (refusals checked): {refused}')


@pytest.mark.parametrize('name', BACKEND_CASES)
def test_attention_backends_agree(name, monkeypatch):
    """CPU: Triton (TRITON_INTERPRET=1) and FlexAttention's forward against the reference."""
    from conftest import triton_interpreter_unusable
    from triton_hazards import gpu_hazards
    hazards = contextlib.nullcontext()
    if not triton_interpreter_unusable():  # else Triton refuses on CPU and only flex is compared
        monkeypatch.setenv('TRITON_INTERPRET', '1')
        hazards = gpu_hazards()  # races, out-of-bounds accesses, uninitialised memory (see there)
    model = _build(name).eval()
    # Small (the Triton interpreter is slow) but odd, so that every op pads.
    with hazards:
        _check_backends(name, model, torch.randn(1, 3, 45, 37), monkeypatch, backward=False)


@pytest.mark.gpu
@pytest.mark.parametrize('name', TEST_VARIANTS)
def test_attention_backends_agree_cuda(name, requires_cuda, monkeypatch):
    """CUDA: every built backend against the reference, features and parameter gradients, fp32."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    torch.backends.cuda.matmul.allow_tf32 = False
    model = _build(name).cuda().eval()
    _check_backends(name, model, torch.randn(2, 3, H, W, device='cuda'), monkeypatch, backward=True)
