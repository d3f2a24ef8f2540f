"""ATI force/torque sensors: the ``ForceSensor`` role, Net F/T (RDT, UDP) and serial backends."""

from drivers.force.base import ForceSensor
from drivers.force.netft import NetFtSensor
from drivers.force.serial_ft import SerialFtSensor
from drivers.force.spec import NANO17, NANO43, SensorSpec

__all__ = ["NANO17", "NANO43", "ForceSensor", "NetFtSensor", "SensorSpec", "SerialFtSensor"]
