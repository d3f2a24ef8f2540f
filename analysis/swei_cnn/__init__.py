"""Spatio-temporal 3-D DenseNet for shear-wave elasticity imaging ([SWEI], issue 7).

Modules: ``model`` (the network), ``dense`` (full maps, fully convolutional), ``data`` (windows,
augmentation, splits, reading a store), ``train`` (profiles, training, fine-tuning), ``io``
(safetensors + JSON card), ``evaluate`` (metrics and the store runners ``run_train`` /
``run_predict``), ``ddp`` (``torchrun`` entry point) and ``synthetic`` (test and benchmark data).
Progress callbacks are driven by ``lab.progress.progress_callback`` in the CLI.
"""

from analysis.swei_cnn.data import (
    Augmentation,
    Split,
    SweiTrainingSet,
    WindowCache,
    concentration_split,
    load_swei_training_set,
    position_fold_split,
)
from analysis.swei_cnn.dense import predict_map
from analysis.swei_cnn.evaluate import compare_with_tof, map_metrics, run_predict, run_train
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
    "load_swei_training_set",
    "map_metrics",
    "position_fold_split",
    "predict_map",
    "run_predict",
    "run_train",
    "save_model",
    "swei_cnn",
    "train",
]
