"""``densekit.apis``: init_model / inference on tiny configs, and the result writers."""
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

import cv2  # noqa: E402

from densekit.apis import inference, init_model  # noqa: E402
from densekit.mm.inference import save_predictions  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DET_CFG = REPO / 'configs/quickstart/mask-rcnn_r18_synthetic.py'
SEG_CFG = REPO / 'configs/quickstart/fpn_r18_synthetic-ade.py'
DEPTH_CFG = REPO / 'configs/depth/dpt_resnet18_synthetic.py'


def _image(seed: int, h: int = 90, w: int = 124) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 40, np.uint8)
    x, y = rng.integers(5, w // 2), rng.integers(5, h // 2)
    cv2.rectangle(img, (int(x), int(y)), (int(x) + 30, int(y) + 25), (200, 90, 30), -1)
    return img


@pytest.fixture(scope='module')
def image_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp('images')
    (d / 'sub').mkdir()
    cv2.imwrite(str(d / 'a.png'), _image(0))
    cv2.imwrite(str(d / 'sub' / 'b.jpg'), _image(1, 70, 100))
    (d / 'notes.txt').write_text('not an image')
    return d


@pytest.fixture(scope='module')
def det_model():
    return init_model(DET_CFG)


def test_detection_array_path_and_folder_agree(det_model, image_dir):
    from mmdet.structures import DetDataSample
    arr = cv2.imread(str(image_dir / 'a.png'))
    from_array = inference(det_model, arr)
    from_path = inference(det_model, image_dir / 'a.png')
    from_folder = inference(det_model, str(image_dir))
    assert isinstance(from_array, DetDataSample) and isinstance(from_folder, list)
    assert [Path(s.img_path).name for s in from_folder] == ['a.png', 'b.jpg']
    assert from_folder[1].ori_shape == (70, 100)
    for other in (from_path, from_folder[0]):
        torch.testing.assert_close(other.pred_instances.bboxes, from_array.pred_instances.bboxes)
        torch.testing.assert_close(other.pred_instances.scores, from_array.pred_instances.scores)
    inst = from_array.pred_instances
    assert 'masks' in inst and inst.masks.shape[1:] == arr.shape[:2]
    assert (inst.bboxes[:, 2] <= arr.shape[1] + 1e-3).all() and (inst.bboxes[:, 3] <= arr.shape[0] + 1e-3).all()
    # class names come from the config's dataset, not mmdet's COCO default
    assert det_model.dataset_meta['classes'] == ['circle', 'square', 'triangle', 'star', 'ellipse']


def test_checkpoint_roundtrip_and_its_class_names(det_model, tmp_path):
    ckpt = tmp_path / 'det.pth'
    meta = dict(dataset_meta=dict(classes=['a', 'b', 'c', 'd', 'e']))
    torch.save(dict(state_dict=det_model.state_dict(), meta=meta), ckpt)
    reloaded = init_model(DET_CFG, ckpt)
    assert reloaded.dataset_meta['classes'] == ['a', 'b', 'c', 'd', 'e']
    img = _image(3)
    a, b = inference(det_model, img), inference(reloaded, img)
    torch.testing.assert_close(a.pred_instances.bboxes, b.pred_instances.bboxes, atol=0, rtol=0)


def test_shape_mismatched_checkpoint_is_refused(tmp_path):
    seg = init_model(SEG_CFG, cfg_options={'model.decode_head.num_classes': 3})
    ckpt = tmp_path / 'three_classes.pth'
    torch.save(dict(state_dict=seg.state_dict()), ckpt)
    with pytest.raises(ValueError, match=r'differ in shape.*decode_head'):
        init_model(SEG_CFG, ckpt)


def test_semantic_segmentation_and_label_png(tmp_path):
    model = init_model(SEG_CFG)
    img = _image(4)
    sample = inference(model, img)
    assert sample.pred_sem_seg.data.shape == (1, *img.shape[:2])
    info = save_predictions(sample, tmp_path, 'x', 0, classes=model.dataset_meta['classes'])
    png = cv2.imread(info['files'][0], cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(png, sample.pred_sem_seg.data[0].numpy())


def test_depth_and_16bit_png(tmp_path):
    model = init_model(DEPTH_CFG)
    img = _image(5)
    sample = inference(model, img)
    depth = sample.pred_depth_map.data[0].numpy()
    assert depth.shape == img.shape[:2] and np.isfinite(depth).all()
    assert model.dataset_meta['depth_scale'] == 1000.0
    save_predictions(sample, tmp_path, 'x', 0, depth_scale=1000.0)
    png = cv2.imread(str(tmp_path / 'x_depth.png'), cv2.IMREAD_UNCHANGED)
    assert png.dtype == np.uint16
    np.testing.assert_array_equal(png, np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16))
    np.testing.assert_array_equal(np.load(tmp_path / 'x_depth.npy'), depth.astype(np.float32))


def test_panoptic_png_in_coco_encoding(tmp_path):
    """mmdet's panoptic output (``label + instance * INSTANCE_OFFSET``, VOID = num_classes) is
    written as a COCO panoptic PNG whose segments match the prediction pixel for pixel."""
    from mmdet.evaluation import INSTANCE_OFFSET
    from mmdet.structures import DetDataSample
    from mmengine.structures import PixelData
    pan = np.full((20, 30), 3, np.int64)  # VOID (3 classes)
    pan[:10, :10] = 0 + 1 * INSTANCE_OFFSET  # thing 0, instance 1
    pan[:10, 10:20] = 0 + 2 * INSTANCE_OFFSET  # thing 0, instance 2
    pan[10:, :] = 2  # stuff 2
    sample = DetDataSample()
    sample.pred_panoptic_seg = PixelData(sem_seg=torch.from_numpy(pan)[None])
    info = save_predictions(sample, tmp_path, 'p', 0, classes=['person', 'car', 'grass'])
    rgb = cv2.imread(info['files'][0])[..., ::-1].astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]
    assert (ids[pan == 3] == 0).all()
    segs = {s['id']: s for s in info['segments_info']}
    assert sorted(s['category_id'] for s in segs.values()) == [0, 0, 2]
    for sid, seg in segs.items():
        assert seg['area'] == int((ids == sid).sum())
        values = np.unique(pan[ids == sid])
        assert len(values) == 1 and values[0] % INSTANCE_OFFSET == seg['category_id']
