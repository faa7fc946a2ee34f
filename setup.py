import os.path as osp

from setuptools import find_packages, setup


def get_version():
    scope = {}
    with open(osp.join(osp.dirname(__file__), 'mmcrossformer', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


with open(osp.join(osp.dirname(__file__), 'README.md'), encoding='utf-8') as f:
    long_description = f.read()

setup(
    name='mmcrossformer',
    version=get_version(),
    description='CrossFormer (ICLR 2022) backbone for OpenMMLab 3.x: '
    'mmdet, mmseg and mmpretrain',
    long_description=long_description,
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mmcrossformer', 'mmcrossformer.*']),
    python_requires='>=3.8',
    # Loose runtime requirements; requirements.txt pins the tested stack.
    install_requires=[
        'mmengine>=0.10',
        'mmcv>=2.0.0rc4,<2.2.0',
        'mmdet>=3.0',
        'mmsegmentation>=1.0',
        'mmpretrain>=1.0',
        'numpy',
        'torch',
    ],
    license='Apache License 2.0',
    zip_safe=False,
)
