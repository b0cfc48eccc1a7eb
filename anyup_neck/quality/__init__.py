"""Upsampling quality evaluation: metrics, linear probes and the comparison benchmark."""
from .evaluation import Split, UpsamplingBenchmark, format_table, load_ade_split
from .metrics import confusion_matrix, feature_fidelity, segmentation_scores
from .probe import fit_linear_probe, predict_map

__all__ = ['UpsamplingBenchmark', 'Split', 'load_ade_split', 'format_table',
           'feature_fidelity', 'confusion_matrix', 'segmentation_scores', 'fit_linear_probe',
           'predict_map']
