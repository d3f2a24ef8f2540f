"""Names, units and dimension meanings of everything a session store holds (one table, one place).

The store writes ``units`` and ``long_name`` on every array it creates (CF-style attributes that
xarray, ncview and MATLAB users read), and :func:`lab.xr.open_dataset` adds them on read to stores
written before they existed. Units follow UDUNITS spellings (``m``, ``s``, ``N``, ``kPa``,
``m s-1``, ``1`` for dimensionless).

Dimension names (one meaning each, see ``docs/dataset.md``):

``seq``            one SWEI push sequence (a record of ``swei``)
``acquired_frame`` every frame a sequence acquired: 0 is the pre-push reference, 1..F follow the
                   push (F + 1 in all); ``swei/iq`` and ``swei/rf``
``frame``          the F tracked frames after the push, frame k of a displacement array is acquired
                   frame k (so ``frame`` runs 1..F as a coordinate); displacement and its truth
``depth``, ``lateral``  image pixels; ``sample``, ``element`` channel RF samples and elements
``pose``           the six tool-pose components ``x, y, z, rx, ry, rz``
``step``           one quasi-static compression RF frame (a record of ``compression``); stores
                   written so far call it ``frame`` on disk, :func:`lab.xr.open_dataset` renames it
``pair``, ``line`` pre/post pairs of strain imaging, RF lines
``sample``         also the row of a force or indentation stream (a time sample)

``frames`` (a count, in config and function arguments) is always F, the tracked frames.
"""

from __future__ import annotations

import re

#: Dimension names as stored by earlier versions -> today's name, per array (group, array).
LEGACY_DIMS: dict[tuple[str, str], dict[str, str]] = {
    ("swei", "iq"): {"frame": "acquired_frame"},
    ("swei", "rf"): {"frame": "acquired_frame"},
    ("compression", "*"): {"frame": "step"},
    ("truth/compression", "*"): {"frame": "step"},
}

POSE_COMPONENTS = ("x", "y", "z", "rx", "ry", "rz")
POSE_UNITS = ("m", "m", "m", "rad", "rad", "rad")

#: (units, long_name) of known arrays; keys are array names (the same in every group).
VARIABLES: dict[str, tuple[str, str]] = {
    "iq": ("1", "beamformed baseband IQ (complex, arbitrary amplitude)"),
    "rf": ("1", "channel RF (ADC counts)"),
    "push_index": ("1", "push location index (0..6)"),
    "push_element": ("1", "probe element at the push centre (0-based)"),
    "phantom_index": ("1", "index into the phantoms table"),
    "position_index": ("1", "probe position index"),
    "probe_pose": ("m or rad", "tool pose in the robot base frame (x, y, z in m; rx, ry, rz in "
                               "rad)"),
    "contact_force_n": ("N", "mean probe contact force during the sequence"),
    "t_start_s": ("s", "session clock at the push"),
    "displacement_m": ("m", "axial displacement, positive away from the probe"),
    "quality": ("1", "correlation coefficient of the displacement estimate (0-1)"),
    "youngs_modulus_kpa": ("kPa", "Young's modulus"),
    "time_s": ("s", "clock time of the sample"),
    "t_s": ("s", "clock time of the sample"),
    "position_mm": ("mm", "plate travel from the start height, positive compressing"),
    "force_n": ("N", "force, compression positive"),
    "run": ("1", "indentation run index"),
    "sensor": ("1", "force sensor code (0 probe Nano43, 1 indenter Nano17)"),
    "applied_strain": ("1", "commanded applied strain relative to contact"),
    "axial_displacement_m": ("m", "axial displacement relative to the uncompressed block"),
    "lateral_displacement_m": ("m", "lateral displacement relative to the uncompressed block"),
    "axial_strain": ("1", "axial strain (negative under compression)"),
    "axial_displacement": ("samples", "axial displacement of the post frame in RF samples"),
    "lateral_displacement": ("lines", "lateral displacement of the post frame in RF lines"),
    "tof_kpa": ("kPa", "Young's modulus, time-of-flight estimate"),
    "cnn_kpa": ("kPa", "Young's modulus, SWEI CNN estimate"),
    "tof_speed_m_s": ("m s-1", "shear-wave speed, time-of-flight estimate"),
}

#: Name suffix -> units, for arrays the table above does not list (longest suffix first).
_SUFFIX_UNITS = (("_m_s", "m s-1"), ("_kpa", "kPa"), ("_mm", "mm"), ("_pa", "Pa"),
                 ("_n", "N"), ("_s", "s"), ("_m", "m"), ("_hz", "Hz"), ("_rad", "rad"))


def variable_attrs(name: str) -> dict[str, str]:
    """``{"units", "long_name"}`` of array `name` (a store array's base name).

    Known names come from :data:`VARIABLES`; others get units from their suffix (``_kpa``,
    ``_m``, ...; dimensionless ``"1"`` without one) and their name as the long name.
    """
    if name in VARIABLES:
        units, long_name = VARIABLES[name]
        return {"units": units, "long_name": long_name}
    for suffix, units in _SUFFIX_UNITS:
        if name.endswith(suffix):
            return {"units": units, "long_name": re.sub("_", " ", name[: -len(suffix)])}
    return {"units": "1", "long_name": name.replace("_", " ")}


def current_dims(group: str, name: str, dims: tuple[str, ...]) -> tuple[str, ...]:
    """Today's dimension names for array `name` of `group` stored with `dims` (see LEGACY_DIMS)."""
    mapping = LEGACY_DIMS.get((group, name)) or LEGACY_DIMS.get((group, "*")) or {}
    return tuple(mapping.get(d, d) for d in dims)
