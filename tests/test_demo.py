"""`make demo`: its data (``tools/demo/make_demo_data.py`` over
:func:`mmcrossformer.datasets.ensure_coco_shapes`: deterministic, polygon
masks, reused when the settings match) and a short real run of
``tools/demo/run_demo.py`` (the real ``mim train`` / ``mim test`` of
``configs/demo/maskrcnn_crossformer_demo.py`` on a few images, then the
pictures, the loss curve and the summary). ``run_demo.py`` runs as ``make
demo`` runs it, a process of its own; the data tool and the argument checks
run through the tools' ``main(argv)`` in this process."""
import filecmp
import glob
import importlib
import json
import os
import os.path as osp
import re
import subprocess
import sys

import cv2
import pytest
from helpers.paths import REPO

from mmcrossformer.datasets import ensure_coco_shapes

DEMO_DIR = osp.join(REPO, 'tools', 'demo')
SIZE = 192  # the demo config's image scale
ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')


@pytest.fixture(scope='module')
def demo_tools():
    """``tools/demo/make_demo_data.py`` and ``run_demo.py`` as modules
    (``tools/demo`` on ``sys.path``, as when they run): their ``main(argv)``
    is the command line, run in this process where the test only needs
    what it prints; ``make demo``'s own command runs as a process below."""
    sys.path.insert(0, DEMO_DIR)
    try:
        yield {name: importlib.import_module(name)
               for name in ('make_demo_data', 'run_demo')}
    finally:
        sys.path.remove(DEMO_DIR)


def make_demo_data(tools, capsys, out_dir, *args):
    """``make_demo_data.py --out OUT_DIR ARGS``; its (stdout, stderr).
    Fails the test if it exits with an error."""
    capsys.readouterr()
    code = tools['make_demo_data'].main(
        ['--out', str(out_dir), *map(str, args)])
    out, err = capsys.readouterr()
    assert code == 0, out + err[-6000:]
    return out, err


def _small(out_dir, num_train=3, num_test=2, seed=1, force=False):
    """The demo's data (as ``make_demo_data.py`` makes it: polygon masks
    only) with 64x64 images."""
    return ensure_coco_shapes(
        str(out_dir), dict(train=num_train, test=num_test), image_size=64,
        seed=seed, rle_every=0, force=force)


def _annotations(data, split):
    with open(data[split]['ann_file']) as f:
        return json.load(f)


def test_demo_data_is_deterministic(tmp_path):
    first = _small(tmp_path / 'a')
    second = _small(tmp_path / 'b')
    assert not first['reused'] and not second['reused']
    for split, num in (('train', 3), ('test', 2)):
        coco = _annotations(first, split)
        assert coco == _annotations(second, split)
        assert len(coco['images']) == num == first[split]['num_images']
        assert [c['name'] for c in coco['categories']] == [
            'square', 'circle', 'triangle']
        assert coco['annotations']
        # Polygon masks only (the generator can also write RLE).
        assert all(isinstance(a['segmentation'], list)
                   for a in coco['annotations'])
        assert all(im['height'] == im['width'] == 64 for im in coco['images'])
        names = [im['file_name'] for im in coco['images']]
        _, mismatch, errors = filecmp.cmpfiles(
            first[split]['img_dir'], second[split]['img_dir'], names,
            shallow=False)
        assert not mismatch and not errors
    # The held-out split is other images than the training split.
    assert not filecmp.cmp(
        osp.join(first['train']['img_dir'], 'train_000000.jpg'),
        osp.join(first['test']['img_dir'], 'test_000000.jpg'), shallow=False)
    # Another seed, other data.
    other = _small(tmp_path / 'c', seed=2)
    assert (_annotations(other, 'train')['annotations'] !=
            _annotations(first, 'train')['annotations'])


def test_demo_data_is_reused_when_the_settings_match(tmp_path, demo_tools,
                                                     capsys):
    args = [tmp_path, '--num-train', '3', '--num-test', '2', '--size', '64']
    out, err = make_demo_data(demo_tools, capsys, *args)
    assert f'demo data: generated {tmp_path}' in out
    assert '3 images' in out and '2 images' in out
    assert 'coco shapes (train)' in err  # the tqdm progress bar
    ann_file = osp.join(tmp_path, 'annotations', 'instances_train.json')
    stamp = os.stat(ann_file).st_mtime_ns

    out, err = make_demo_data(demo_tools, capsys, *args)
    assert f'reusing the data in {tmp_path}' in out
    assert 'coco shapes' not in err
    assert os.stat(ann_file).st_mtime_ns == stamp

    # Other settings, a missing image or --force: generated again.
    assert not _small(tmp_path, num_train=4, num_test=2, seed=0)['reused']
    os.remove(osp.join(tmp_path, 'test', 'test_000001.jpg'))
    assert not _small(tmp_path, num_train=4, num_test=2, seed=0)['reused']
    assert _small(tmp_path, num_train=4, num_test=2, seed=0)['reused']
    assert not _small(tmp_path, num_train=4, num_test=2, seed=0,
                      force=True)['reused']


def test_run_demo(tmp_path, demo_tools, capsys):
    """A 10-iteration demo on 8 training and 2 test images, through
    ``python tools/demo/run_demo.py`` as ``make demo`` runs it."""
    data_dir, work_dir = tmp_path / 'data', tmp_path / 'work'
    sizes = ['--num-train', '8', '--num-test', '2', '--size', str(SIZE)]
    make_demo_data(demo_tools, capsys, data_dir, *sizes)
    proc = subprocess.run(
        [sys.executable, osp.join(DEMO_DIR, 'run_demo.py'), '--iters', '10',
         '--data-dir', str(data_dir), '--work-dir', str(work_dir),
         '--num-pictures', '2', *sizes],
        cwd=str(tmp_path), env=ENV, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, timeout=600)
    log = proc.stdout
    assert proc.returncode == 0, log[-6000:]

    # The data made above was reused, and said so.
    assert f'reusing the data in {data_dir}' in log
    # mmengine's training log streamed, without the per-parameter lines.
    assert 'Iter(train) [10/10]' in log
    assert 'paramwise_options --' not in log
    # The summary: held-out COCO metrics and where the outputs are.
    summary = log[log.index('CrossFormer Mask R-CNN demo: done'):]
    metrics = dict(re.findall(r'(bbox|segm) mAP (\d\.\d+)', summary))
    assert set(metrics) == {'bbox', 'segm'}
    assert all(0. <= float(v) <= 1. for v in metrics.values())
    for line in ('checkpoint:   work/iter_10.pth',
                 'loss curve:   work/loss.png',
                 'pictures:     work/predictions/*.png (2 test images',
                 'predictions:  work/test_predictions.pkl'):
        assert line in summary, summary

    assert osp.isfile(work_dir / 'iter_10.pth')
    train_logs = glob.glob(str(work_dir / '*' / '*.log'))
    assert any('paramwise_options --' in open(f).read() for f in train_logs)
    loss = cv2.imread(str(work_dir / 'loss.png'))
    assert loss is not None and loss.shape[0] > 100
    # Ground truth beside the predictions, enlarged by an integer factor
    # to about PICTURE_SIZE pixels.
    source = open(osp.join(DEMO_DIR, 'run_demo.py')).read()
    picture_size = int(re.search(r'^PICTURE_SIZE = (\d+)', source,
                                 re.M).group(1))
    side = SIZE * max(1, round(picture_size / SIZE))
    pictures = sorted(glob.glob(str(work_dir / 'predictions' / '*.png')))
    assert [osp.basename(p) for p in pictures] == [
        'test_000000.png', 'test_000001.png']
    for picture in pictures:
        drawn = cv2.imread(picture)
        assert drawn.shape == (side, 2 * side, 3)
        image = cv2.imread(str(data_dir / 'test' / (
            osp.splitext(osp.basename(picture))[0] + '.jpg')))
        image = cv2.resize(image, (side, side),
                           interpolation=cv2.INTER_NEAREST)
        # The ground truth (left) is drawn over the image.
        assert (cv2.absdiff(drawn[:, :side], image) > 40).mean() > 0.01


@pytest.mark.parametrize('iters', ['1', '0'])
def test_run_demo_rejects_too_few_iterations(iters, demo_tools, capsys):
    with pytest.raises(SystemExit) as exit_info:
        demo_tools['run_demo'].main(['--iters', iters])
    assert exit_info.value.code == 2  # argparse's error
    assert '--iters must be at least 2' in capsys.readouterr().err
