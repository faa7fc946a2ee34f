"""Deployment: ONNX export of a config's backbone (+ neck), checked with ONNX
Runtime (:mod:`mmcrossformer.deployment.onnx`; command line
``tools/deployment/pytorch2onnx.py``). Needs the ``deploy`` extra
(``pip install "mmcrossformer[deploy]"``: onnx, onnxscript, onnxruntime),
imported only when an export or a check runs."""
from .onnx import (DeploymentError, ExportedFeatures, OutputDifference,
                   build_feature_extractor, compare_with_onnxruntime,
                   export_checked, export_onnx)

__all__ = [
    'DeploymentError', 'ExportedFeatures', 'OutputDifference',
    'build_feature_extractor', 'compare_with_onnxruntime', 'export_checked',
    'export_onnx'
]
