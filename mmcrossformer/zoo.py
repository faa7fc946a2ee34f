"""The model zoo: ``model-index.yml`` and its metafiles, and the ImageNet
classifiers in mmpretrain's model hub.

After ``import mmcrossformer``, ``mmpretrain.list_models('*crossformer*')``
lists the classifiers of :data:`CLASSIFIER_METAFILE` and
``mmpretrain.get_model(name)`` builds them (random weights; the official
ones are not hosted here: convert them with
``tools/model_converters/crossformer2mm.py`` and pass
``pretrained='checkpoints/...'``). ``import mmcrossformer`` does not import
mmpretrain for this: :func:`install` registers the classifiers when
``mmpretrain.apis.model`` (where ``ModelHub`` lives) is imported, or at once
if it already is.

Example:
    >>> import mmcrossformer, mmpretrain
    >>> mmpretrain.list_models('crossformer-small*')
    ['crossformer-small_3rdparty_in1k']
    >>> model = mmpretrain.get_model('crossformer-small_3rdparty_in1k')
"""
import importlib.abc
import importlib.util
import os.path as osp
import sys
import warnings
from typing import Dict, List, Optional

PACKAGE_DIR = osp.dirname(osp.abspath(__file__))
MODEL_INDEX = 'model-index.yml'
# The metafile of the classifiers, relative to the model index; the other
# metafiles hold mmdet / mmseg models, which mmpretrain cannot build.
CLASSIFIER_METAFILE = 'configs/metafile_classification.yml'
MODEL_HUB_MODULE = 'mmpretrain.apis.model'

_registered = False


def zoo_root() -> str:
    """The folder holding ``model-index.yml`` and ``configs/``: the
    package's ``.mim`` folder where the install made one (as mmdet's
    ``setup.py`` does), otherwise the source checkout the package is in.

    Raises:
        FileNotFoundError: Neither holds ``model-index.yml``.
    """
    candidates = (osp.join(PACKAGE_DIR, '.mim'), osp.dirname(PACKAGE_DIR))
    for root in candidates:
        if osp.isfile(osp.join(root, MODEL_INDEX)):
            return root
    raise FileNotFoundError(
        f'no {MODEL_INDEX} in {" or ".join(candidates)}: install '
        'mmcrossformer from its repository (pip install -e .), which ships '
        'the model index and configs')


def load_models(root: Optional[str] = None) -> List[Dict]:
    """Every model entry of the metafiles that ``root/model-index.yml``
    imports (``root``: :func:`zoo_root` if None), in order, as the YAML
    dicts they are (``Name``, ``Config``, ``Metadata``, ``Results``,
    ...)."""
    import yaml
    root = zoo_root() if root is None else root
    with open(osp.join(root, MODEL_INDEX), encoding='utf-8') as f:
        index = yaml.safe_load(f)
    models = []
    for metafile in index['Import']:
        with open(osp.join(root, metafile), encoding='utf-8') as f:
            models.extend(yaml.safe_load(f)['Models'])
    return models


def models_by_config(root: Optional[str] = None) -> Dict[str, Dict]:
    """:func:`load_models` keyed by their ``Config`` (``configs/....py``,
    relative to the model index)."""
    return {model['Config']: model for model in load_models(root)}


def register_classifiers(model_hub=None) -> None:
    """Registers the classifiers of :data:`CLASSIFIER_METAFILE` in
    mmpretrain's ``ModelHub`` (``model_hub``, imported if None), once;
    their configs resolve under :func:`zoo_root`."""
    global _registered
    if _registered:
        return
    if model_hub is None:
        from mmpretrain.apis.model import ModelHub as model_hub
    root = zoo_root()
    model_hub.register_model_index(
        osp.join(root, CLASSIFIER_METAFILE), config_prefix=root)
    _registered = True


def _register_or_warn(model_hub) -> None:
    """:func:`register_classifiers`, warning instead of failing (it runs
    inside mmpretrain's import, which must not break)."""
    try:
        register_classifiers(model_hub)
    except FileNotFoundError as error:
        warnings.warn(f'CrossFormer classifiers not registered in '
                      f'mmpretrain: {error}')


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """An import hook that, once, lets :data:`MODEL_HUB_MODULE` load as
    usual and then registers the classifiers in its ``ModelHub``."""

    def find_spec(self, fullname, path, target=None):
        if fullname != MODEL_HUB_MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_register(module):
            exec_module(module)
            _register_or_warn(module.ModelHub)

        spec.loader.exec_module = exec_and_register
        return spec


def install() -> None:
    """Registers the classifiers now if mmpretrain's model hub is
    imported, otherwise when it is (``import mmcrossformer`` calls this)."""
    hub = sys.modules.get(MODEL_HUB_MODULE)
    if hub is not None:
        _register_or_warn(hub.ModelHub)
    elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
