"""Predict images with a config and a checkpoint, writing pictures and machine-readable results.

    python tools/infer.py CONFIG CKPT INPUT [--out-dir DIR] [--score-thr 0.3] [--device cpu]

INPUT is an image file or a folder (all images under it, with a progress bar). CKPT is a file,
an http(s) URL, or ``none`` for the config's initial weights. Written under ``--out-dir``:

* ``vis/<name>.jpg``: the prediction drawn over the image (depth: image | colour-mapped depth);
* detection / instance segmentation: ``detections.json``, one COCO file (``images``,
  ``categories``, ``annotations`` with ``score``; masks as RLE) of the instances scoring at
  least ``--score-thr``;
* semantic segmentation: ``pred/<name>_sem.png``, the class index per pixel;
* panoptic segmentation: ``pred/<name>_panoptic.png`` (COCO panoptic encoding) and
  ``panoptic.json`` (``segments_info`` per image);
* depth: ``pred/<name>_depth.png`` (16-bit, depth x the dataset's ``depth_scale``) and
  ``pred/<name>_depth.npy`` (float32 metres).
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # run from a source checkout


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('config', help='config file')
    p.add_argument('checkpoint', help="checkpoint file or http(s) URL; 'none' for initial weights")
    p.add_argument('input', help='image file or folder')
    p.add_argument('--out-dir', default='outputs/infer', help='output folder')
    p.add_argument('--score-thr', type=float, default=0.3,
                   help='minimum score of drawn and saved instances (detection)')
    p.add_argument('--device', default='cpu', help="'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument('--no-vis', action='store_true', help='skip the pictures')
    p.add_argument('--cfg-options', nargs='+', default=[], metavar='KEY=VALUE',
                   help='config overrides, as in tools/train.py')
    return p.parse_args(argv)


def _cfg_options(pairs):
    from mmengine.config import DictAction
    ns = argparse.Namespace()
    DictAction(option_strings=[], dest='opts')(None, ns, pairs)
    return ns.opts if pairs else None


def _names(items, root):
    """Output names: the path under the input folder with '/' as '__', unique."""
    names, seen = [], {}
    for item in items:
        rel = osp.relpath(item, root) if root else osp.basename(item)
        name = osp.splitext(rel)[0].replace(os.sep, '__')
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f'{name}_{seen[name]}')
    return names


def main(argv=None):
    args = parse_args(argv)
    import cv2

    from densekit.apis import inference, init_model, list_images
    from densekit.mm.inference import draw_prediction, save_predictions, write_coco_json

    checkpoint = None if args.checkpoint.lower() == 'none' else args.checkpoint
    model = init_model(args.config, checkpoint, device=args.device,
                       cfg_options=_cfg_options(args.cfg_options))
    items = list_images(args.input)
    names = _names(items, args.input if osp.isdir(args.input) else None)
    meta = model.dataset_meta
    classes = meta.get('classes')
    depth_scale = float(meta.get('depth_scale') or 1000.0)
    os.makedirs(args.out_dir, exist_ok=True)

    bar = None
    if len(items) > 1:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(len(items))
    images, annotations, panoptic, tasks = [], [], [], set()
    for image_id, (path, name) in enumerate(zip(items, names)):
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f'cannot read image {path}')
        sample = inference(model, path)
        info = save_predictions(sample, osp.join(args.out_dir, 'pred'), name, image_id,
                                score_thr=args.score_thr, classes=classes,
                                depth_scale=depth_scale)
        tasks.add(info['task'])
        images.append(dict(id=image_id, file_name=path, height=img.shape[0], width=img.shape[1]))
        annotations.extend(info.get('annotations', []))
        if info['task'] == 'panoptic':
            panoptic.append(dict(image_id=image_id, file_name=osp.basename(info['files'][0]),
                                 segments_info=info['segments_info']))
        if not args.no_vis:
            draw_prediction(model, img, sample, osp.join(args.out_dir, 'vis', f'{name}.jpg'),
                            score_thr=args.score_thr)
        if bar is not None:
            bar.update()
    if bar is not None:
        print()
    written = []
    if tasks & {'detection', 'instance'}:
        path = osp.join(args.out_dir, 'detections.json')
        write_coco_json(path, images, annotations, classes)
        written.append(path)
    if panoptic:
        path = osp.join(args.out_dir, 'panoptic.json')
        with open(path, 'w') as f:
            json.dump(dict(images=images, annotations=panoptic,
                           categories=[dict(id=i, name=n) for i, n in enumerate(classes or [])]), f)
        written.append(path)
    print(f"{len(items)} image(s), task: {', '.join(sorted(tasks))}; results in {args.out_dir}"
          + (f" ({', '.join(osp.basename(w) for w in written)})" if written else ''))


if __name__ == '__main__':
    main()
