"""`make demo`: train a CrossFormer Mask R-CNN on generated shapes, test it
on held-out images, and show what it learned. CPU only, no downloads.

1. make (or reuse) the dataset in ``--data-dir`` (``make_demo_data.py``);
2. ``mim train mmdet configs/demo/maskrcnn_crossformer_demo.py`` for
   ``--iters`` iterations (its log streams here);
3. ``mim test mmdet`` of the last checkpoint on the held-out split: COCO
   bbox and segm mAP;
4. ``<work-dir>/predictions/*.png``: test images with ground truth (left)
   and predicted boxes and masks (right), drawn by mmdet's
   ``DetLocalVisualizer``; ``<work-dir>/loss.png``: the training losses
   from mmengine's scalar log;
5. a summary: metrics and where the checkpoint, logs and pictures are.

    python tools/demo/run_demo.py [--iters 350] [--data-dir data/demo]
        [--work-dir work_dirs/demo] [--num-train 400] [--num-test 50]
"""
import argparse
import glob
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
import warnings
from functools import lru_cache
from typing import Dict, List, Sequence

from make_demo_data import (add_data_arguments, data_kwargs, describe,
                            ensure_demo_data)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'configs', 'demo', 'maskrcnn_crossformer_demo.py')
MIM = osp.join(osp.dirname(sys.executable), 'mim')
# mmengine logs one INFO line per parameter for ``paramwise_cfg`` (~400
# here); they stay in the log file but are not echoed.
HIDDEN = 'paramwise_options --'
# The pictures: images enlarged to about this size.
PICTURE_SIZE = 384
# Known third-party warnings, hidden here and in the mim processes: with
# setuptools >= 80 every process that imports ``pkg_resources`` (mim,
# mmengine, mmcv) warns that it is deprecated; nothing a demo user can act
# on. (message prefix, category), as Python's ``-W`` option takes them.
KNOWN_WARNINGS = (('pkg_resources is deprecated as an API', UserWarning), )


@lru_cache(maxsize=None)
def demo_config():
    """The demo config, read once: its ``max_iters`` and ``warmup_iters``
    are the default schedule and its ``metainfo.palette`` colours the
    pictures, so that each lives in the config only."""
    from mmengine.config import Config
    return Config.fromfile(CONFIG, import_custom_modules=False)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train, test and show a CrossFormer Mask R-CNN on '
        'generated shapes (CPU).')
    parser.add_argument('--iters', type=int,
                        default=demo_config().max_iters,
                        help='training iterations of batch 4 '
                        '(default: %(default)s)')
    parser.add_argument('--data-dir', default='data/demo',
                        help='dataset directory (default: %(default)s)')
    parser.add_argument('--work-dir', default='work_dirs/demo',
                        help='outputs (default: %(default)s)')
    parser.add_argument('--num-pictures', type=int, default=8,
                        help='test images to draw (default: %(default)s)')
    parser.add_argument('--score-thr', type=float, default=0.5,
                        help='score of the predictions drawn '
                        '(default: %(default)s)')
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    if args.iters < 2:
        parser.error(f'--iters must be at least 2, got {args.iters}')
    return args


# ------------------------------------------------------------ the runs
def config_options(data: Dict, iters: int) -> List[str]:
    """``--cfg-options`` pointing the demo config at ``data`` (from
    ``ensure_demo_data``) and setting an ``iters``-long schedule: linear
    warm-up for ``min(warmup_iters, iters // 5)`` iterations (the config's
    ``warmup_iters``), then cosine to the end."""
    warmup = max(1, min(demo_config().warmup_iters, iters // 5))
    root = data['train']['data_root'].rstrip('/') + '/'
    return [
        f'train_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'test_evaluator.ann_file={data["test"]["ann_file"]}',
        f'train_cfg.max_iters={iters}',
        f'param_scheduler.0.end={warmup}',
        f'param_scheduler.1.begin={warmup}',
        f'param_scheduler.1.end={iters}',
    ]


def mim(args: Sequence[str], work_dir: str) -> str:
    """Run ``mim <args>`` on the CPU, echoing its output (but
    :data:`HIDDEN` lines); raise if it fails. Returns the log directory
    (``<work_dir>/<timestamp>``) it created."""
    # OpenMP's default (spinning) wait policy: on a quiet 2-core machine
    # OMP_WAIT_POLICY=PASSIVE makes a training step ~25% slower (1.6 against
    # 1.25 s); set it yourself if other jobs share the cores.
    # Ours first: a PYTHONWARNINGS the user sets still takes precedence.
    quiet = [f'ignore:{message}:{category.__name__}'
             for message, category in KNOWN_WARNINGS]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='-1', PYTHONWARNINGS=','.join(
        quiet + [os.environ.get('PYTHONWARNINGS', '')]).rstrip(','))
    before = set(os.listdir(work_dir)) if osp.isdir(work_dir) else set()
    print(f'\n$ mim {" ".join(args)}', flush=True)
    proc = subprocess.Popen([MIM, *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            bufsize=1)
    for line in proc.stdout:
        if HIDDEN not in line:
            sys.stdout.write(line)
            sys.stdout.flush()
    if proc.wait() != 0:
        raise SystemExit(f'mim {args[0]} failed (exit code {proc.returncode})'
                         '; see its output above')
    new = sorted(d for d in set(os.listdir(work_dir)) - before
                 if osp.isdir(osp.join(work_dir, d)))
    if not new:
        raise SystemExit(f'mim {args[0]} wrote no log directory in {work_dir}')
    return osp.join(work_dir, new[-1])


def read_json_lines(path: str) -> List[Dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------ the outputs
def plot_losses(scalars: List[Dict], out_file: str) -> None:
    """Plot the ``loss*`` entries and the learning rate of mmengine's
    training ``scalars.json`` records against the iteration."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    records = [r for r in scalars if 'loss' in r]
    steps = [r['step'] for r in records]
    names = ['loss'] + sorted(k for k in records[0]
                              if k.startswith('loss_'))
    fig, (ax, ax_lr) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True,
        gridspec_kw=dict(height_ratios=[3, 1]))
    for name in names:
        ax.plot(steps, [r[name] for r in records], label=name,
                linewidth=2.5 if name == 'loss' else 1.2)
    ax.set_ylabel('training loss')
    ax.set_title('CrossFormer Mask R-CNN demo: training losses')
    ax.grid(alpha=0.3)
    ax.legend()
    # mmengine logs ``base_lr`` (the optimiser's lr, the heads') and ``lr``
    # (the first parameter group's: here the backbone's, scaled by lr_mult).
    lr_key = 'base_lr' if 'base_lr' in records[0] else 'lr'
    ax_lr.plot(steps, [r[lr_key] for r in records], color='gray')
    ax_lr.set_ylabel(lr_key)
    ax_lr.set_xlabel('iteration')
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)


def draw_predictions(predictions_file: str, data: Dict, out_dir: str,
                     num: int, score_thr: float) -> List[str]:
    """Draw the first ``num`` test images with their ground truth (left)
    and the predictions dumped by ``mim test --out`` (right, scores above
    ``score_thr``) into ``out_dir/<image>.png``; returns the files.

    Small images are enlarged by an integer factor (to about
    :data:`PICTURE_SIZE` pixels) so that the labels stay readable. The
    ground truth is loaded by mmdet's own ``LoadAnnotations`` (masks
    rasterised at the image size); the dumped masks are RLE, decoded to
    ``(N, H, W)`` masks.
    """
    import mmcv
    import mmengine
    import numpy as np
    from mmdet.datasets.transforms import LoadAnnotations
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmdet.visualization import DetLocalVisualizer
    from mmengine.structures import InstanceData
    from pycocotools import mask as mask_utils

    results = {r['img_id']: r for r in mmengine.load(predictions_file)}
    with open(data['test']['ann_file']) as f:
        coco = json.load(f)
    label_of = {c['id']: i for i, c in enumerate(coco['categories'])}
    load = LoadAnnotations(with_bbox=True, with_mask=True, poly2mask=True)
    visualizer = DetLocalVisualizer(name='demo_predictions')
    visualizer.dataset_meta = dict(
        classes=[c['name'] for c in coco['categories']],
        palette=demo_config().metainfo.palette)
    os.makedirs(out_dir, exist_ok=True)
    for old in glob.glob(osp.join(out_dir, '*.png')):
        os.remove(old)
    by_image = {}
    for ann in coco['annotations']:
        by_image.setdefault(ann['image_id'], []).append(ann)
    files = []
    for image in sorted(coco['images'], key=lambda i: i['id'])[:num]:
        height, width = image['height'], image['width']
        scale = max(1, round(PICTURE_SIZE / max(height, width)))
        # LoadAnnotations reads CocoDataset.parse_data_info's instances.
        gt = load(dict(ori_shape=(height, width), instances=[
            dict(bbox=[x, y, x + w, y + h], bbox_label=label_of[
                a['category_id']], mask=a['segmentation'], ignore_flag=0)
            for a in by_image.get(image['id'], [])
            for x, y, w, h in [a['bbox']]]))
        pred = results[image['id']]['pred_instances']
        masks = mask_utils.decode(pred['masks']).transpose(2, 0, 1) if len(
            pred['masks']) else np.zeros((0, height, width), np.uint8)
        sample = DetDataSample(
            gt_instances=InstanceData(
                bboxes=gt['gt_bboxes'].tensor * scale,
                labels=gt['gt_bboxes_labels'],
                masks=gt['gt_masks'].rescale(scale)),
            pred_instances=InstanceData(
                bboxes=pred['bboxes'] * scale, scores=pred['scores'],
                labels=pred['labels'],
                masks=BitmapMasks(masks, height, width).rescale(scale)))
        img = mmcv.imread(osp.join(data['test']['img_dir'],
                                   image['file_name']), channel_order='rgb')
        out_file = osp.join(
            out_dir, osp.splitext(image['file_name'])[0] + '.png')
        visualizer.add_datasample(
            image['file_name'], mmcv.imrescale(img, scale), sample,
            draw_gt=True, draw_pred=True, pred_score_thr=score_thr,
            out_file=out_file)
        files.append(out_file)
    return files


def rel(path: str) -> str:
    """``path`` relative to the current directory when inside it."""
    path = osp.abspath(path)
    here = os.getcwd()
    return osp.relpath(path, here) if path.startswith(here + os.sep) \
        else path


def main(argv=None) -> int:
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings('ignore', message=message, category=category)
    args = parse_args(argv)
    start = time.time()
    work_dir = osp.abspath(args.work_dir)
    os.makedirs(work_dir, exist_ok=True)

    print('== 1/4 data', flush=True)
    data = ensure_demo_data(args.data_dir, **data_kwargs(args))
    print(describe(data), flush=True)
    options = config_options(data, args.iters)

    print(f'\n== 2/4 training {args.iters} iterations on the CPU', flush=True)
    train_log_dir = mim(['train', 'mmdet', CONFIG, '--work-dir', work_dir,
                         '--cfg-options', *options], work_dir)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    scalars = read_json_lines(
        osp.join(train_log_dir, 'vis_data', 'scalars.json'))
    train_time = time.time() - start

    print('\n== 3/4 testing on the held-out split', flush=True)
    predictions_file = osp.join(work_dir, 'test_predictions.pkl')
    test_log_dir = mim(['test', 'mmdet', CONFIG, '--checkpoint', checkpoint,
                        '--work-dir', work_dir, '--out', predictions_file,
                        '--cfg-options', *options], work_dir)
    name = osp.basename(test_log_dir)
    metrics = read_json_lines(osp.join(test_log_dir, f'{name}.json'))[-1]

    print('\n== 4/4 drawing predictions and the loss curve', flush=True)
    loss_png = osp.join(work_dir, 'loss.png')
    plot_losses(scalars, loss_png)
    pictures = draw_predictions(
        predictions_file, data, osp.join(work_dir, 'predictions'),
        args.num_pictures, args.score_thr)

    times = [r['time'] for r in scalars if 'time' in r]
    seconds = time.time() - start
    num_test = data['test']['num_images']
    train_log = osp.join(train_log_dir, f'{osp.basename(train_log_dir)}.log')
    print(f"""
== CrossFormer Mask R-CNN demo: done in {seconds / 60:.1f} min \
(training {train_time / 60:.1f} min, {statistics.median(times):.2f} s/iter)
held-out test split ({num_test} images):
  bbox mAP {metrics['coco/bbox_mAP']:.3f} \
(AP50 {metrics['coco/bbox_mAP_50']:.3f}, \
AP75 {metrics['coco/bbox_mAP_75']:.3f})
  segm mAP {metrics['coco/segm_mAP']:.3f} \
(AP50 {metrics['coco/segm_mAP_50']:.3f}, \
AP75 {metrics['coco/segm_mAP_75']:.3f})
checkpoint:   {rel(checkpoint)}
logs:         {rel(train_log)} (training), {rel(test_log_dir)}/ (test)
loss curve:   {rel(loss_png)}
pictures:     {rel(osp.dirname(pictures[0]))}/*.png ({len(pictures)} \
test images: ground truth left, predictions with score > \
{args.score_thr} right)
predictions:  {rel(predictions_file)} (all {num_test} test images)
data:         {rel(data['train']['data_root'])} \
({'reused' if data['reused'] else 'generated'})""", flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
