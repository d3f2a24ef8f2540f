"""Choices of the ``elastolab`` options as enums, so ``--help`` lists them and typos are refused."""

from __future__ import annotations

from enum import StrEnum


class DisplacementMethod(StrEnum):
    loupas = "loupas"
    kasai = "kasai"


class DisplacementReference(StrEnum):
    fixed = "fixed"
    progressive = "progressive"


class TrainProfile(StrEnum):
    quick = "quick"
    paper = "paper"


class TrainSplit(StrEnum):
    positions = "positions"
    concentration = "concentration"


class Device(StrEnum):
    cpu = "cpu"
    cuda = "cuda"


class Window(StrEnum):
    w65 = "65"
    w33 = "33"
    w17 = "17"
    w9 = "9"
    w5 = "5"


class DemoProfile(StrEnum):
    default = "default"
    study = "study"
    paper = "paper"
    smoke = "smoke"


class CoarseEstimator(StrEnum):
    dp = "dp"
    cnn = "cnn"


class Simulator(StrEnum):
    hexapod = "hexapod"
    netft = "netft"
