"""Installs anyup_neck. ``pip install -e .`` (see README for the pinned, tested stack)."""
from setuptools import find_packages, setup

setup(
    name='anyup_neck',
    version='0.1.0',
    description='AnyUp feature upsampling as an OpenMMLab neck, with its own window-attention op',
    packages=find_packages(include=['anyup_neck', 'anyup_neck.*']),
    python_requires='>=3.10',
    install_requires=['torch>=2.4', 'numpy', 'pillow', 'tqdm'],
    extras_require={
        'mm': ['mmengine>=0.10', 'mmsegmentation>=1.2', 'mmcv-lite>=2.0', 'timm>=1.0',
               'torchvision', 'ftfy', 'regex'],
        'test': ['pytest'],
    },
)
