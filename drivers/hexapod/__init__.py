"""PI hexapod: the ``Hexapod`` role and its GCS backend (pipython or plain socket)."""

from drivers.hexapod.base import Hexapod
from drivers.hexapod.connection import (
    GcsControllerError,
    PipythonGcsConnection,
    SocketGcsConnection,
)
from drivers.hexapod.gcs import H820, GcsHexapod, HexapodSpec

__all__ = [
    "H820",
    "GcsControllerError",
    "GcsHexapod",
    "Hexapod",
    "HexapodSpec",
    "PipythonGcsConnection",
    "SocketGcsConnection",
]
