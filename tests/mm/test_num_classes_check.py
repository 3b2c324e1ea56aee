"""NumClassesCheckHook: heads whose num_classes differ from the dataset's classes are refused
before training / testing, with the config fields named (mmdet's CocoMetric otherwise raised
``IndexError: list index out of range`` after the first epoch)."""
from types import SimpleNamespace

import pytest
from torch import nn

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from conftest import REPO, shared_data  # noqa: E402
from densekit.mm.hooks import NumClassesCheckHook  # noqa: E402


class _Head(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes


def _runner(model, train=None, val=None, test=None):
    def loop(classes):
        if classes is None:
            return None
        return SimpleNamespace(dataloader=SimpleNamespace(
            dataset=SimpleNamespace(metainfo=dict(classes=classes))))
    return SimpleNamespace(model=model, train_loop=loop(train), _val_loop=loop(val),
                           val_loop=loop(val), test_loop=loop(test))


def _detector(n: int) -> nn.Module:
    m = nn.Module()
    m.rpn_head = _Head(1)  # class-agnostic proposals: not compared
    m.roi_head = nn.Module()
    m.roi_head.bbox_head = _Head(n)
    m.roi_head.mask_head = _Head(n)
    return m


def test_matching_heads_pass():
    hook = NumClassesCheckHook()
    runner = _runner(_detector(1), train=('balloon',), val=('balloon',), test=('balloon',))
    hook.before_train(runner)
    hook.before_val(runner)
    hook.before_test(runner)


def test_mismatch_names_every_head_and_the_dataset():
    hook = NumClassesCheckHook()
    with pytest.raises(ValueError, match=r"^model\.roi_head\.bbox_head\.num_classes=80, "
                                         r"model\.roi_head\.mask_head\.num_classes=80 but "
                                         r"test_dataloader\.dataset has 1 class \('balloon',\); "
                                         r"set num_classes=1 in every head of the config$"):
        hook.before_test(_runner(_detector(80), test=('balloon',)))
    # before training, the validation set is checked too (no epoch is wasted)
    seg = nn.Module()
    seg.decode_head, seg.auxiliary_head = _Head(150), _Head(150)
    classes = tuple(f'c{i}' for i in range(19))
    with pytest.raises(ValueError, match=r"^model\.decode_head\.num_classes=150, model\.auxiliary_"
                                         r"head\.num_classes=150 but val_dataloader\.dataset has "
                                         r"19 classes \('c0', 'c1', 'c2', 'c3', \.\.\.\)"):
        NumClassesCheckHook().before_train(_runner(seg, train=None, val=classes))


def test_classes_given_as_a_string():
    with pytest.raises(ValueError, match=r"classes is the string 'balloon'; .*classes=\('balloon',\)"):
        NumClassesCheckHook().before_test(_runner(_detector(1), test='balloon'))


def test_runtime_configs_install_the_hook():
    from mmengine.config import Config
    for name in ('default_runtime_det.py', 'default_runtime_seg.py'):
        hooks = Config.fromfile(REPO / 'configs' / '_base_' / name).custom_hooks
        assert [h['type'] for h in hooks] == ['RNGStateHook', 'NumClassesCheckHook',
                                              'BackboneCheckpointHook']


def test_configs_own_custom_hooks_keep_densekit_hooks():
    """mmengine replaces lists: a config with its own custom_hooks used to drop densekit's."""
    from mmengine.config import Config

    from densekit.mm.runner import DENSEKIT_HOOKS, add_densekit_hooks
    cfg = Config(dict(custom_hooks=[dict(type='EMAHook'), dict(type='RNGStateHook')]))
    assert add_densekit_hooks(cfg) == ['NumClassesCheckHook', 'BackboneCheckpointHook']
    assert [h['type'] for h in cfg.custom_hooks] == ['EMAHook', 'RNGStateHook', 'NumClassesCheckHook',
                                                     'BackboneCheckpointHook']
    assert add_densekit_hooks(cfg) == []  # idempotent
    cfg = Config(dict(custom_hooks=[dict(type=NumClassesCheckHook)]))  # a class as the type
    assert add_densekit_hooks(cfg) == ['RNGStateHook', 'BackboneCheckpointHook']
    cfg = Config(dict(custom_hooks=[NumClassesCheckHook(), dict(type='mmengine.RNGStateHook')]))
    assert add_densekit_hooks(cfg) == ['BackboneCheckpointHook']
    cfg = Config(dict())
    assert add_densekit_hooks(cfg) == list(DENSEKIT_HOOKS)
    cfg = Config(dict(custom_hooks=[dict(type='EMAHook')], densekit_hooks=False))  # opt-out
    assert add_densekit_hooks(cfg) == [] and [h['type'] for h in cfg.custom_hooks] == ['EMAHook']


@pytest.mark.parametrize('own_hooks', [False, True])
def test_train_cli_refuses_80_class_heads_on_balloon(tmp_path, own_hooks):
    """The user path: a Mask R-CNN config pointed at the one-class balloon set, num_classes not
    changed, is refused before training (without the check, training runs and mmdet's CocoMetric
    fails with an IndexError), also when the config has its own custom_hooks (an EMA hook), which
    replace the hook list in mmengine."""
    root = shared_data('balloon')
    from densekit.mm.runner import train
    ann = 'annotations/instances_val_512.json'
    opts = ['model.backbone.type=swin_test', 'model.backbone.init_cfg=None',
            'model.neck.in_channels=[16,32,64,128]', f'val_evaluator.ann_file={root}/{ann}']
    for split in ('train', 'val'):
        opts += [f'{split}_dataloader.dataset.data_root={root}/',
                 f'{split}_dataloader.dataset.ann_file={ann}',
                 f'{split}_dataloader.dataset.data_prefix.img=val_512/',
                 f"{split}_dataloader.dataset.metainfo.classes=('balloon',)",
                 f'{split}_dataloader.num_workers=0', f'{split}_dataloader.persistent_workers=False']
    config = REPO / 'configs' / 'mask_rcnn' / 'mask-rcnn_swin-t_fpn_1x_coco.py'
    if own_hooks:  # a user's config on top of ours, with its own hook list
        own = tmp_path / 'own_hooks.py'
        own.write_text(f"_base_ = '{config}'\ncustom_hooks = [dict(type='EMAHook')]\n")
        config = own
    with pytest.raises(ValueError, match=r"^model\.roi_head\.bbox_head\.num_classes=80, model\."
                                         r"roi_head\.mask_head\.num_classes=80 but train_dataloader"
                                         r"\.dataset has 1 class \('balloon',\)"):
        train([str(config), '--work-dir', str(tmp_path), '--cfg-options', *opts])
