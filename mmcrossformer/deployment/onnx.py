"""ONNX export of a config's backbone (+ neck), checked against PyTorch with
ONNX Runtime.

:func:`build_feature_extractor` builds an mmdet / mmseg / mmpretrain config's
model (by its ``default_scope``, as ``tools/train.py``) and keeps its
backbone and neck (:class:`ExportedFeatures`); :func:`export_onnx` exports
a module with ``torch.onnx.export``'s default (``dynamo=True``) exporter;
:func:`compare_with_onnxruntime` runs the file and the module on the same
input and measures the difference per output; :func:`export_checked` does
all of it through a temporary file that becomes the output only once it
reproduces PyTorch. ``tools/deployment/pytorch2onnx.py`` is the command line
(:mod:`mmcrossformer.cli.pytorch2onnx`).

Input sizes. CrossFormer decides each block's grouping from its map size
(the padding, the long-distance group shape, the SDA fallback of maps whose
short side is at most the group size: see
:func:`~mmcrossformer.models.grouping.group_layout`), in Python, per call.
An exported graph holds the layouts of its example's size and is valid for
that size only, which is why the export takes the size and the graph's
input has a fixed shape (ONNX Runtime refuses any other). A dynamic-H/W
graph is not offered: ``torch.export`` with symbolic H and W turns each of
those decisions into a guard on the size (``-W % 4 != 0`` at the stem's
padding first), which no range of sizes satisfies (see
``docs/deployment.md``). Export once per input size you serve (e.g. the
padded sizes of a fixed-scale test pipeline).

onnx, onnxscript and onnxruntime (the ``deploy`` extra) are imported only
when an export or a check runs, so that this module imports without them.
"""
import importlib
import importlib.util
import time
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..fileio import atomic_path, load_checkpoint_file
from ..models.checkpoint import CheckpointError, unwrap_state_dict

DEPLOY_EXTRA = ('pip install "mmcrossformer[deploy]" (or, in the '
                'repository, pip install -r requirements/deploy.txt)')
# What each optional package is needed for.
DEPLOY_PACKAGES = dict(
    onnx='torch.onnx.export writes ONNX files with it',
    onnxscript="torch.onnx.export's default (dynamo) exporter needs it",
    onnxruntime='the exported file is checked with ONNX Runtime')
# Outputs may differ from PyTorch's by this much relative to their largest
# magnitude: float32 rounding of a different operation order; 1e-4 of
# outputs that reach tens is 1e-3.
DEFAULT_TOLERANCE = 1e-4


class DeploymentError(RuntimeError):
    """An export that cannot run or whose result is wrong; the message says
    what to do."""


def require_packages(*names: str) -> None:
    """Raise a :class:`DeploymentError` naming the extra to install if any
    of ``names`` (keys of :data:`DEPLOY_PACKAGES`) is not installed."""
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        why = '; '.join(f'{n}: {DEPLOY_PACKAGES[n]}' for n in missing)
        raise DeploymentError(
            f'{", ".join(missing)} not installed ({why}): {DEPLOY_EXTRA}')


class ExportedFeatures(nn.Module):
    """A model's backbone followed by its neck, if it has one: the part of a
    detector, segmentor or classifier that this package defines (heads are
    the task packages' own, see ``docs/deployment.md``).

    ``forward`` takes the preprocessed batch ``(B, C, H, W)`` (normalised
    and padded by the model's data preprocessor) and returns the neck's
    outputs (the backbone's without a neck) as a tuple of tensors.
    """

    def __init__(self, backbone: nn.Module, neck: Optional[nn.Module] = None):
        super().__init__()
        self.backbone = backbone
        self.neck = neck

    @property
    def in_channels(self) -> int:
        return getattr(self.backbone, 'in_channels', 3)

    def forward(self, inputs: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        feats = self.backbone(inputs)
        if self.neck is not None:
            feats = self.neck(feats)
        if isinstance(feats, torch.Tensor):
            feats = (feats, )
        return tuple(feats)


def build_feature_extractor(config: str,
                            checkpoint: Optional[str] = None,
                            cfg_options: Optional[dict] = None
                            ) -> ExportedFeatures:
    """The backbone and neck of ``config``'s model, in eval mode on the CPU.

    Args:
        config (str): An mmdet, mmseg or mmpretrain config (its
            ``default_scope`` picks the package).
        checkpoint (str, optional): Weights of that model (a ``mim train``
            checkpoint, or a converted official COCO / ADE20K / ImageNet
            one); every backbone and neck tensor must be in it. None keeps
            the initialisation (the config's pretrained weights are not
            loaded): the graph is the same, the values are random.
        cfg_options (dict, optional): Overrides merged into the config.
    """
    from mmengine.config import Config

    import mmcrossformer  # noqa: F401  registers CrossFormer
    from ..engine.launch import check_default_scope
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = check_default_scope(cfg, config)
    importlib.import_module(f'{scope}.utils').register_all_modules(
        init_default_scope=True)
    model = importlib.import_module(f'{scope}.registry').MODELS.build(
        cfg.model)
    if getattr(model, 'backbone', None) is None:
        raise DeploymentError(f'{config}: its model '
                              f'({type(model).__name__}) has no backbone')
    features = ExportedFeatures(model.backbone, getattr(model, 'neck', None))
    if checkpoint is not None:
        _load_weights(features, checkpoint)
    return features.eval()


def _load_weights(features: ExportedFeatures, checkpoint: str) -> None:
    try:
        state_dict = unwrap_state_dict(
            load_checkpoint_file(
                checkpoint,
                advice=dict(
                    pickled='If you trust it, load it with torch.load('
                    'weights_only=False) and save its state_dict.')))
    except CheckpointError as e:
        raise DeploymentError(str(e)) from None
    state_dict = {
        k: v
        for k, v in state_dict.items() if k.startswith(('backbone.', 'neck.'))
    }
    wanted = features.state_dict()
    missing = sorted(set(wanted) - set(state_dict))
    if missing:
        raise DeploymentError(
            f'{checkpoint} lacks {len(missing)} of the {len(wanted)} backbone '
            f'and neck tensors of this model (e.g. {missing[0]}): pass a '
            'checkpoint of this config\'s model (from mim train, or an '
            'official COCO / ADE20K model converted with crossformer2mm)')
    try:
        features.load_state_dict(state_dict, strict=False)
    except (RuntimeError, CheckpointError) as e:
        raise DeploymentError(f'{checkpoint} does not fit this model: '
                              f'{str(e).splitlines()[0]}') from None


class OutputDifference(NamedTuple):
    """How far one output of the ONNX file is from PyTorch's."""
    name: str
    shape: Tuple[int, ...]
    max_abs_diff: float
    max_abs_ref: float  # the largest magnitude of PyTorch's output

    @property
    def relative(self) -> float:
        """``max_abs_diff / max_abs_ref``."""
        return self.max_abs_diff / max(self.max_abs_ref, 1e-30)

    def __str__(self) -> str:
        return (f'{self.name} {tuple(self.shape)}: max abs diff '
                f'{self.max_abs_diff:.2e} (outputs up to '
                f'{self.max_abs_ref:.3g}, relative {self.relative:.2e})')


def random_input(module: nn.Module, shape: Sequence[int],
                 seed: int = 0) -> torch.Tensor:
    """A reproducible ``(1, in_channels, H, W)`` standard-normal input (what
    a normalised image looks like)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(1, getattr(module, 'in_channels', 3), *shape,
                       generator=generator)


def export_onnx(module: nn.Module,
                inputs: torch.Tensor,
                path: str,
                opset_version: Optional[int] = None) -> None:
    """``torch.onnx.export`` (its default, ``dynamo=True`` exporter) of
    ``module`` in eval mode at ``inputs``' size into ``path``, weights
    inside the file, with input ``'inputs'`` and outputs ``'out0'``,
    ``'out1'``, ... The graph is valid for that input size only (see the
    module docstring)."""
    require_packages('onnx', 'onnxscript')
    module.eval()
    with torch.no_grad():
        num_outputs = len(module(inputs))
        program = torch.onnx.export(
            module, (inputs, ),
            dynamo=True,
            input_names=['inputs'],
            output_names=[f'out{i}' for i in range(num_outputs)],
            opset_version=opset_version,
            external_data=False)
    program.save(path, external_data=False)


def compare_with_onnxruntime(path: str, module: nn.Module,
                             inputs: torch.Tensor) -> List[OutputDifference]:
    """Run the ONNX file ``path`` with ONNX Runtime (CPU) and ``module`` on
    ``inputs``; the difference of each output."""
    require_packages('onnxruntime')
    import onnxruntime as ort
    session = ort.InferenceSession(
        path, providers=['CPUExecutionProvider'])
    feed = {session.get_inputs()[0].name: inputs.numpy()}
    names = [o.name for o in session.get_outputs()]
    onnx_outs = session.run(names, feed)
    module.eval()
    with torch.no_grad():
        torch_outs = module(inputs)
    if len(onnx_outs) != len(torch_outs):
        raise DeploymentError(f'{path} has {len(onnx_outs)} outputs, the '
                              f'model {len(torch_outs)}')
    diffs = []
    for name, got, ref in zip(names, onnx_outs, torch_outs):
        got = torch.from_numpy(got)
        if got.shape != ref.shape:
            raise DeploymentError(
                f'{path}: output {name} has shape {tuple(got.shape)}, '
                f'PyTorch {tuple(ref.shape)} (input {tuple(inputs.shape)})')
        diffs.append(
            OutputDifference(name, tuple(ref.shape),
                             (got - ref).abs().max().item(),
                             ref.abs().max().item()))
    return diffs


def export_checked(module: nn.Module,
                   shape: Sequence[int],
                   path: str,
                   tolerance: float = DEFAULT_TOLERANCE,
                   overwrite: bool = False,
                   opset_version: Optional[int] = None) -> Dict:
    """Export ``module`` at ``shape`` (H, W) to ``path`` and check the file
    with ONNX Runtime on a random input of that size. ``path`` is written
    only if every output is within ``tolerance`` of PyTorch's (relative to
    its largest magnitude); otherwise a :class:`DeploymentError` reports the
    differences and nothing is written.

    Returns:
        dict: ``path``, ``export_seconds`` and ``diffs``, one
        :class:`OutputDifference` per output.
    """
    require_packages('onnx', 'onnxscript', 'onnxruntime')
    inputs = random_input(module, shape)
    with atomic_path(path, overwrite, error=DeploymentError) as tmp:
        start = time.perf_counter()
        export_onnx(module, inputs, tmp, opset_version)
        seconds = time.perf_counter() - start
        diffs = compare_with_onnxruntime(tmp, module, inputs)
        bad = [
            d for d in diffs
            if not d.max_abs_diff <= tolerance * max(d.max_abs_ref, 1.)
        ]
        if bad:
            raise DeploymentError(
                f'the ONNX graph does not reproduce PyTorch at '
                f'{shape[0]}x{shape[1]} (tolerance {tolerance:g} of the '
                f'outputs\' magnitude), so {path} was not written: ' +
                '; '.join(map(str, bad)))
    return dict(path=path, export_seconds=seconds, diffs=diffs)
