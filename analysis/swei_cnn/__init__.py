"""Spatio-temporal 3-D DenseNet for shear-wave elasticity imaging ([SWEI], issue 7).

Modules: ``model`` (the network), ``dense`` (full maps, fully convolutional), ``data`` (windows,
augmentation, splits), ``train`` (profiles, training, fine-tuning), ``io`` (safetensors + JSON
card), ``evaluate`` (metrics), ``synthetic`` (test and benchmark data), ``runners`` (the only
store readers and writers: ``load_swei_training_set``, ``run_train``, ``run_predict``; not
re-exported here, so the pure modules never pull in :mod:`lab.store`) and ``ddp`` (``torchrun``
entry point).
Progress callbacks are driven by ``lab.progress.progress_callback`` in the CLI.
"""

from analysis.swei_cnn.data import (
    Augmentation,
    Split,
    SweiTrainingSet,
    WindowCache,
    concentration_split,
    position_fold_split,
)
from analysis.swei_cnn.dense import predict_map
from analysis.swei_cnn.evaluate import compare_with_tof, map_metrics
from analysis.swei_cnn.io import ModelCard, ModelFileError, load_model, save_model
from analysis.swei_cnn.model import SpatioTemporalDenseNet, swei_cnn
from analysis.swei_cnn.train import PROFILES, EpochMetrics, TrainingProfile, finetune, train

__all__ = [
    "PROFILES",
    "Augmentation",
    "EpochMetrics",
    "ModelCard",
    "ModelFileError",
    "SpatioTemporalDenseNet",
    "Split",
    "SweiTrainingSet",
    "TrainingProfile",
    "WindowCache",
    "compare_with_tof",
    "concentration_split",
    "finetune",
    "load_model",
    "map_metrics",
    "position_fold_split",
    "predict_map",
    "save_model",
    "swei_cnn",
    "train",
]
