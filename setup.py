import os
import os.path as osp
import re
import shutil
import sys
import warnings
from setuptools import find_packages, setup

REPO = osp.dirname(osp.abspath(__file__))
# What `mim` reads from an installed package's ``.mim`` folder (as mmdet and
# mmpretrain ship): the model index and metafiles (``mim search``), the
# configs and the tools.
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def get_version():
    scope = {}
    with open(osp.join(REPO, 'mmcrossformer', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def readme():
    with open(osp.join(REPO, 'README.md'), encoding='utf-8') as f:
        return f.read()


def parse_requirements(fname):
    """The requirements listed in ``fname`` (relative to the repository),
    one per line, without comments and blank lines."""
    requirements = []
    with open(osp.join(REPO, fname)) as f:
        for line in f:
            line = re.sub(r'\s*#.*', '', line).strip()
            if line:
                requirements.append(line)
    return requirements


def add_mim_extension():
    """Put the files ``mim`` needs (:data:`MIM_FILES`) into
    ``mmcrossformer/.mim``, as mmdet's and mmpretrain's setup.py do.

    An editable install (``pip install -e .``, run as ``develop`` or as the
    PEP 660 ``editable_wheel``) gets symlinks to the originals, so that edits
    show at once; building a wheel or an sdist gets copies, shipped as
    package data. Other commands leave ``.mim`` alone.
    """
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'symlink'
    elif {'sdist', 'bdist_wheel', 'build', 'install'} & set(sys.argv):
        mode = 'copy'
    else:
        return

    mim_path = osp.join(REPO, 'mmcrossformer', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for filename in MIM_FILES:
        src_path = osp.join(REPO, filename)
        if not osp.exists(src_path):
            continue
        tar_path = osp.join(mim_path, filename)
        if osp.isfile(tar_path) or osp.islink(tar_path):
            os.remove(tar_path)
        elif osp.isdir(tar_path):
            shutil.rmtree(tar_path)

        if mode == 'symlink':
            try:
                os.symlink(osp.relpath(src_path, mim_path), tar_path)
                continue
            except OSError:
                # e.g. Windows without the privilege to create symlinks
                warnings.warn(f'Failed to create a symbolic link for '
                              f'{src_path}; copying it to {tar_path}')
        if osp.isfile(src_path):
            shutil.copyfile(src_path, tar_path)
        else:
            shutil.copytree(src_path, tar_path,
                            ignore=shutil.ignore_patterns('__pycache__'))


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mmcrossformer',
        version=get_version(),
        description='CrossFormer (ICLR 2022) and CrossFormer++ (TPAMI 2023) '
        'backbones for OpenMMLab 3.x: mmdet, mmseg and mmpretrain',
        long_description=readme(),
        long_description_content_type='text/markdown',
        keywords='computer vision, vision transformer, object detection, '
        'semantic segmentation, image classification',
        packages=find_packages(include=['mmcrossformer', 'mmcrossformer.*']),
        package_data={
            'mmcrossformer': [
                # The CPU attention kernel, compiled on first use.
                'csrc/*.cpp',
                '.mim/model-index.yml',
                '.mim/configs/**/*.py',
                '.mim/configs/**/*.yml',
                '.mim/tools/**/*.py',
                '.mim/tools/**/*.sh',
            ]
        },
        python_requires='>=3.8',
        classifiers=[
            'Development Status :: 4 - Beta',
            'Operating System :: OS Independent',
            'Programming Language :: Python :: 3',
            'Topic :: Scientific/Engineering :: Artificial Intelligence',
        ],
        license='Apache-2.0',  # the SPDX expression of LICENSE's text
        license_files=['LICENSE'],
        # Loose requirements; requirements.txt pins the tested stack.
        install_requires=parse_requirements('requirements/runtime.txt'),
        extras_require={
            'tests': parse_requirements('requirements/tests.txt'),
            'deploy': parse_requirements('requirements/deploy.txt'),
        },
        entry_points={
            'console_scripts':
            [
                'crossformer2mm = mmcrossformer.cli.crossformer2mm:main',
                'crossformer2onnx = mmcrossformer.cli.pytorch2onnx:main',
            ],
        },
        zip_safe=False)
