"""Import data acquired elsewhere into a store that ``analyze``, ``strain`` and ``predict`` read.

Three kinds of input (``elastolab import channel|beamformed|rf-pair``):

* **channel RF of a plane-wave sequence** (:func:`import_channel`): a MATLAB file (v5 or v7.3,
  Verasonics-style: an RF array plus parameters anywhere in structs) or a UFF
  ``uff.channel_data`` file. The frames are demodulated (:func:`analysis.beamforming.rf_to_iq`)
  and beamformed on the pixel grid you give (:func:`analysis.beamforming.das_plane_wave`) into
  one SWEI sequence: acquired frame 0 is the reference, the others the tracked frames.
* **beamformed IQ** (:func:`import_beamformed`): a UFF ``uff.beamformed_data`` on a
  ``uff.linear_scan`` or a MATLAB file with an IQ array and its grid. You state whether the IQ
  keeps the carrier phase (``carrier``: PyMUST, most beamformers) or is baseband in depth
  (``baseband``: what Loupas needs); carrier-phase IQ is converted
  (:func:`analysis.beamforming.carrier_to_baseband`).
* **a pair of RF frames** (:func:`import_rf_pair`): pre- and post-compression RF, ``.npy`` or
  MATLAB variables, into the ``compression`` table (steps 0 and 1 of one phantom) for strain.

Every physical parameter the analysis needs (sampling and centre frequency, sound speed, t0, the
element positions, the steering angle, the PRF) must come from the file or from an option; a
missing one raises :class:`ImportDataError` naming the option, nothing is assumed. Variable
names are mapped with ``names`` (``--var KEY=PATH``): ``PATH`` is a dotted path into the file
(``Receive.decimSampleRate``) optionally scaled (``Trans.frequency*1e6`` for MHz). Keys:
``rf``, ``iq``, ``channel_sampling_frequency``, ``center_frequency``, ``sound_speed``, ``t0``,
``element_positions``, ``pitch``, ``angle``, ``prf``, ``depth``, ``lateral``, ``pre``, ``post``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import scipy.io
from numpy.typing import NDArray

from analysis.beamforming import carrier_to_baseband, das_plane_wave, rf_to_iq
from lab.store import ArraySpec, SessionStore, StoreError
from protocols.swei import swei_table_arrays

__all__ = ["ImportDataError", "Parameters", "import_beamformed", "import_channel",
           "import_rf_pair", "parse_names"]

IqConvention = Literal["baseband", "carrier"]

#: Default variable names (MATLAB files) per key.
DEFAULT_NAMES: dict[str, str] = {
    "rf": "rf", "iq": "iq", "channel_sampling_frequency": "fs", "center_frequency": "fc",
    "sound_speed": "c", "t0": "t0", "element_positions": "element_positions", "pitch": "pitch",
    "angle": "angle", "prf": "PRF", "initial_time": "initial_time", "depth": "depth",
    "lateral": "lateral", "pre": "pre", "post": "post",
}
#: The command-line option that supplies each parameter.
OPTION: dict[str, str] = {
    "channel_sampling_frequency": "--sampling-frequency (channel RF rate, Hz)",
    "center_frequency": "--center-frequency (Hz)", "sound_speed": "--sound-speed (m/s)",
    "t0": "--t0 (s, time of the first sample after the transmit)",
    "element_positions": "--pitch-mm (or --var element_positions=PATH)",
    "angle": "--angle-deg", "prf": "--prf (Hz)", "line_pitch": "--line-pitch-mm",
    "initial_time": "--initial-time (s, first tracked frame after the push)",
}


#: Per-sequence SWEI arrays an import cannot know (stored as NaN).
_UNKNOWN_PER_SEQUENCE = ("probe_pose", "contact_force_n")


class ImportDataError(ValueError):
    """An input file cannot be imported as asked (missing variable or parameter, bad shape)."""


@dataclass(frozen=True)
class Parameters:
    """Acquisition parameters of imported data, SI units; None = not known yet.

    ``channel_sampling_frequency`` is the RF rate (Hz); ``element_positions_m`` the lateral
    element centres (m); ``angle_rad`` the plane-wave steering angle; ``prf`` the frame rate
    (Hz); ``t0`` the time of sample 0 after the transmit event (s); ``initial_time`` the time of
    the first tracked frame after the push (s).
    """

    channel_sampling_frequency: float | None = None
    center_frequency: float | None = None
    sound_speed: float | None = None
    t0: float | None = None
    element_positions_m: tuple[float, ...] | None = None
    angle_rad: float | None = None
    prf: float | None = None
    initial_time: float | None = None

    def merged(self, override: Parameters) -> Parameters:
        """These values, replaced by every value `override` gives (command-line options win)."""
        return replace(self, **{k: v for k, v in vars(override).items() if v is not None})

    def require(self, *names: str) -> None:
        """Raise ImportDataError naming every missing parameter and the option that sets it."""
        keys = {"element_positions": "element_positions_m", "angle": "angle_rad"}
        missing = [n for n in names if getattr(self, keys.get(n, n)) is None]
        if missing:
            raise ImportDataError(
                "missing acquisition parameter(s), not in the file and not given: "
                + "; ".join(f"{n} -> {OPTION.get(n, n)}" for n in missing)
                + " (elastolab never assumes a physical parameter)")


def parse_names(pairs: Sequence[str]) -> dict[str, str]:
    """``["rf=RcvData", "center_frequency=Trans.frequency*1e6"]`` -> the names mapping."""
    out = {}
    for pair in pairs:
        key, sep, path = pair.partition("=")
        if not sep or not key.strip() or not path.strip():
            raise ImportDataError(f"--var expects KEY=PATH, got {pair!r}")
        if key.strip() not in DEFAULT_NAMES:
            raise ImportDataError(f"--var: unknown key {key.strip()!r}; keys are "
                                  f"{', '.join(DEFAULT_NAMES)}")
        out[key.strip()] = path.strip()
    return out


# -- reading MATLAB and NumPy files ------------------------------------------------------------
class _MatFile:
    """Variables of a MAT file (v5 through scipy, v7.3 through hdf5storage), MATLAB axis order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            if h5py.is_hdf5(path):
                import hdf5storage

                self.vars: dict[str, Any] = dict(hdf5storage.loadmat(str(path)))
            else:
                self.vars = dict(scipy.io.loadmat(str(path), squeeze_me=True,
                                                  struct_as_record=False))
        except (OSError, ValueError, NotImplementedError) as exc:
            raise ImportDataError(f"{path}: cannot read as a MATLAB file: {exc}") from exc

    def get(self, path: str) -> Any | None:
        """Value at a dotted path, times an optional ``*scale``; None if absent."""
        expr, _, scale = path.partition("*")
        node: Any = self.vars
        for part in expr.strip().split("."):
            node = _child(node, part)
            if node is None:
                return None
        if scale:
            try:
                return np.asarray(node, dtype=np.float64) * float(scale)
            except ValueError as exc:
                raise ImportDataError(f"{self.path}: bad scale in {path!r}") from exc
        return node


def _child(node: Any, name: str) -> Any | None:
    if isinstance(node, Mapping):
        return node.get(name)
    if isinstance(node, np.ndarray) and node.dtype.names:
        if name not in node.dtype.names:
            return None
        value = node[name]
        return value.reshape(-1)[0] if value.dtype == object or value.size == 1 else value[0]
    if isinstance(node, np.ndarray) and node.dtype == object and node.size == 1:
        return _child(node.reshape(-1)[0], name)
    return getattr(node, name, None)


def _scalar(value: Any, what: str) -> float | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64).ravel()
    if arr.size != 1 or not np.isfinite(arr[0]):
        raise ImportDataError(f"{what} must be one finite number, got shape {arr.shape}")
    return float(arr[0])


def _names(names: Mapping[str, str] | None) -> dict[str, str]:
    return {**DEFAULT_NAMES, **dict(names or {})}


def _mat_parameters(mat: _MatFile, names: Mapping[str, str]) -> Parameters:
    positions = mat.get(names["element_positions"])
    return Parameters(
        channel_sampling_frequency=_scalar(mat.get(names["channel_sampling_frequency"]),
                                           "channel_sampling_frequency"),
        center_frequency=_scalar(mat.get(names["center_frequency"]), "center_frequency"),
        sound_speed=_scalar(mat.get(names["sound_speed"]), "sound_speed"),
        t0=_scalar(mat.get(names["t0"]), "t0"),
        element_positions_m=None if positions is None else tuple(
            np.asarray(positions, np.float64).ravel().tolist()),
        angle_rad=_scalar(mat.get(names["angle"]), "angle"),
        prf=_scalar(mat.get(names["prf"]), "prf"),
        initial_time=_scalar(mat.get(names["initial_time"]), "initial_time"),
    )


def _array(mat: _MatFile, names: Mapping[str, str], key: str) -> np.ndarray:
    value = mat.get(names[key])
    if value is None:
        raise ImportDataError(f"{mat.path}: no variable {names[key]!r} for {key} (map it with "
                              f"--var {key}=NAME); variables: {sorted(mat.vars)}")
    return np.asarray(value)


# -- channel RF -> SWEI sequence ---------------------------------------------------------------
def _frames_first(rf: np.ndarray, axes: Sequence[str]) -> np.ndarray:
    """RF reordered to (frame, sample, element) from the named axes of the stored array."""
    axes = [a.strip() for a in axes]
    if sorted(axes) != sorted(set(axes)) or not set(axes) <= {"sample", "element", "frame"}:
        raise ImportDataError(f"--rf-axes must name sample, element and optionally frame, got "
                              f"{axes}")
    if rf.ndim != len(axes):
        raise ImportDataError(f"the RF array has {rf.ndim} axes ({rf.shape}) but --rf-axes "
                              f"names {len(axes)} ({','.join(axes)})")
    if "frame" not in axes:
        rf, axes = rf[None], ["frame", *axes]
    return np.transpose(rf, [axes.index(a) for a in ("frame", "sample", "element")])


def _uff_channel(path: Path) -> tuple[np.ndarray, Parameters]:
    import pyuff_ustb as uff

    f = uff.Uff(str(path))
    locations = [k for k in f._reader.keys() if f._reader[k].attrs.get("class") in
                 (b"uff.channel_data", "uff.channel_data")]
    if len(locations) != 1:
        raise ImportDataError(f"{path}: expected one uff.channel_data, found {locations}")
    cd = f.read(locations[0])
    data = np.asarray(cd.data)  # (sample, channel, wave, frame), the UFF/MATLAB order
    if data.ndim == 2:
        data = data[:, :, None, None]
    elif data.ndim == 3:
        data = data[:, :, :, None]
    if data.shape[2] != 1:
        raise ImportDataError(f"{path}: {data.shape[2]} transmit waves per frame; import one "
                              "plane wave per frame (compounding is not supported)")
    rf = np.moveaxis(data[:, :, 0, :], -1, 0)  # (frame, sample, element)
    modulation = _scalar(getattr(cd, "modulation_frequency", None), "modulation_frequency")
    if modulation:
        raise ImportDataError(f"{path}: channel data are demodulated (modulation_frequency "
                              f"{modulation} Hz); import RF channel data")
    angle = None
    seq = cd.sequence
    waves = seq if isinstance(seq, list) else [seq] if seq is not None else []
    if waves and waves[0].source is not None:
        angle = _scalar(waves[0].source.azimuth, "source azimuth")
    probe = cd.probe
    x = None if probe is None or getattr(probe, "x", None) is None else tuple(
        np.asarray(probe.x, np.float64).ravel().tolist())
    return rf, Parameters(
        channel_sampling_frequency=_scalar(cd.sampling_frequency, "sampling_frequency"),
        center_frequency=_scalar(getattr(cd.pulse, "center_frequency", None)
                                 if cd.pulse is not None else None, "center_frequency"),
        sound_speed=_scalar(cd.sound_speed, "sound_speed"),
        t0=_scalar(cd.initial_time, "initial_time"), element_positions_m=x, angle_rad=angle,
        prf=_scalar(cd.PRF, "PRF"))


def import_channel(
    source: str | os.PathLike[str],
    store_path: str | os.PathLike[str],
    *,
    depth_m: NDArray[np.floating],
    lateral_m: NDArray[np.floating] | None = None,
    parameters: Parameters | None = None,
    names: Mapping[str, str] | None = None,
    rf_axes: Sequence[str] = ("sample", "element", "frame"),
    pitch_m: float | None = None,
    f_number: float = 1.5,
    phantom_id: str | None = None,
    gelatin_percent: float | None = None,
    youngs_modulus_kpa: float | None = None,
    push_lateral_m: float | None = None,
) -> Path:
    """Channel RF of plane-wave frames -> a new store with one SWEI sequence (``swei/iq``).

    Parameters
    ----------
    source : path
        ``.mat`` (v5 or v7.3) or UFF (``.uff``/``.h5``) with channel RF.
    store_path : path
        Store to create (refuses an existing path).
    depth_m, lateral_m : ndarray, 1-D
        Pixel grid (m); lateral defaults to the element positions.
    parameters : Parameters, optional
        Values given on the command line; they override the file's.
    names : mapping, optional
        Variable names in a MATLAB file (module docstring).
    rf_axes : sequence of str
        Axes of the stored RF array in MATLAB order; default ``sample, element, frame``
        (Verasonics ``RcvData``). Frame 0 must be the pre-push reference.
    pitch_m : float, optional
        Element pitch (m) of a linear array centred on x = 0, when neither the parameters nor
        the file give the element positions.
    f_number : float
        Receive f-number of the beamformer (0 = full aperture).
    phantom_id, gelatin_percent, youngs_modulus_kpa : optional
        What was imaged (the phantom table); the id defaults to the file name.
    push_lateral_m : float, optional
        Lateral position of the push (m), which time-of-flight maps need.

    Returns
    -------
    Path
        The store.
    """
    src = Path(source)
    given = parameters or Parameters()
    if src.suffix.lower() == ".mat":
        mat = _MatFile(src)
        n = _names(names)
        rf = _frames_first(_array(mat, n, "rf"), rf_axes)
        found = _mat_parameters(mat, n)
        pitch = _scalar(mat.get(n["pitch"]), "pitch")
        if found.element_positions_m is None and pitch is not None:
            found = replace(found, element_positions_m=_positions(pitch, rf.shape[2]))
    else:
        rf, found = _uff_channel(src)
    if pitch_m is not None and given.element_positions_m is None:
        given = replace(given, element_positions_m=_positions(pitch_m, rf.shape[2]))
    p = found.merged(given)
    p.require("channel_sampling_frequency", "center_frequency", "sound_speed", "t0",
              "element_positions", "angle", "prf", "initial_time")
    assert p.element_positions_m is not None  # for the type checker (required above)
    if rf.shape[0] < 2:
        raise ImportDataError(f"{src}: {rf.shape[0]} frame; an SWEI sequence needs the "
                              "reference and at least one tracked frame")
    positions = np.asarray(p.element_positions_m)
    if positions.size != rf.shape[2]:
        raise ImportDataError(f"{src}: {rf.shape[2]} channels but {positions.size} element "
                              "positions")
    lateral = positions if lateral_m is None else np.asarray(lateral_m, np.float64)
    iq_channels = rf_to_iq(rf.astype(np.float32), sampling_frequency=p.channel_sampling_frequency,
                           modulation_frequency=p.center_frequency, t0=p.t0, axis=-2)
    iq = das_plane_wave(iq_channels, element_positions_m=positions, depth_m=depth_m,
                        lateral_m=lateral, channel_sampling_frequency=p.channel_sampling_frequency,
                        sound_speed=p.sound_speed, t0=p.t0, angle_rad=p.angle_rad,
                        f_number=f_number, modulation_frequency=p.center_frequency)
    extra = {"channel_sampling_frequency": p.channel_sampling_frequency, "channel_t0": p.t0,
             "angle_rad": p.angle_rad, "f_number": f_number}
    return _write_swei(store_path, iq.astype(np.complex64), src, p, np.asarray(depth_m), lateral,
                       extra, phantom_id=phantom_id, gelatin_percent=gelatin_percent,
                       youngs_modulus_kpa=youngs_modulus_kpa, push_lateral_m=push_lateral_m)


def _positions(pitch_m: float, n: int) -> tuple[float, ...]:
    if not pitch_m > 0:
        raise ImportDataError(f"pitch must be > 0 m, got {pitch_m}")
    return tuple(((np.arange(n) - (n - 1) / 2) * pitch_m).tolist())


def _uniform_step(values: np.ndarray, what: str) -> float:
    steps = np.diff(values)
    if values.ndim != 1 or values.size < 2 or not np.allclose(steps, steps[0], rtol=1e-6) \
            or steps[0] <= 0:
        raise ImportDataError(f"{what} must be a uniform increasing 1-D grid")
    return float(steps[0])


def _write_swei(
    store_path: str | os.PathLike[str], iq: np.ndarray, source: Path, p: Parameters,
    depth_m: np.ndarray, lateral_m: np.ndarray, extra: Mapping[str, Any], *,
    phantom_id: str | None, gelatin_percent: float | None, youngs_modulus_kpa: float | None,
    push_lateral_m: float | None,
) -> Path:
    dz = _uniform_step(depth_m, "the depth grid")
    assert p.sound_speed is not None and p.center_frequency is not None
    acquired, depth, lateral = iq.shape
    pid = phantom_id or source.stem
    store = SessionStore.create(store_path, kind="imported", config={
        "source": str(source.resolve()), "parameters": vars(p) | dict(extra)})
    store.root.require_group("phantoms").attrs["phantoms"] = [
        {"phantom_id": pid, "kind": "imported", "gelatin_percent": gelatin_percent,
         "youngs_modulus_kpa": youngs_modulus_kpa, "inclusions": []}]
    attrs = {"sampling_frequency": p.sound_speed / (2.0 * dz),
             "modulation_frequency": p.center_frequency, "center_frequency": p.center_frequency,
             "sound_speed": p.sound_speed, "PRF": p.prf, "initial_time": p.initial_time,
             "depth_m": depth_m.tolist(), "lateral_m": lateral_m.tolist(),
             "fidelity": "imported", **dict(extra)}
    # pose and contact force are unknown for imported data: NaN, marked as allowed
    arrays = [replace(a, attrs={"allow_nan": True}) if a.name in _UNKNOWN_PER_SEQUENCE else a
              for a in swei_table_arrays(acquired - 1, depth, lateral)]
    table = store.require_table("swei", row_dim="seq", attrs=attrs, arrays=arrays)
    table.append(f"{pid}/pos000/push0", {
        "iq": iq[None], "push_index": np.array([0], np.int16),
        "push_element": np.array([-1], np.int16), "phantom_index": np.array([0], np.int32),
        "position_index": np.array([0], np.int32), "probe_pose": np.full((1, 6), np.nan),
        "contact_force_n": np.array([np.nan], np.float32), "t_start_s": np.array([0.0]),
    }, {"phantom_id": pid, "push_lateral_m": push_lateral_m, "source": str(source)})
    return Path(store_path)


# -- beamformed IQ -----------------------------------------------------------------------------
def import_beamformed(
    source: str | os.PathLike[str],
    store_path: str | os.PathLike[str],
    *,
    iq_convention: IqConvention,
    parameters: Parameters | None = None,
    names: Mapping[str, str] | None = None,
    iq_axes: Sequence[str] = ("depth", "lateral", "frame"),
    phantom_id: str | None = None,
    gelatin_percent: float | None = None,
    youngs_modulus_kpa: float | None = None,
    push_lateral_m: float | None = None,
) -> Path:
    """Beamformed IQ frames (frame 0 = reference) -> a new store with one SWEI sequence.

    ``iq_convention`` is required: ``"carrier"`` IQ (phase turning with ``2 z / c`` at the
    modulation frequency) is converted to baseband in depth, ``"baseband"`` stored as is. From
    a MATLAB file the IQ array (``iq_axes`` in MATLAB order) and its ``depth``/``lateral``
    vectors (m) are read; from UFF the ``uff.beamformed_data`` on a linear scan. Needs the
    centre (modulation) frequency, the sound speed and the PRF.
    """
    if iq_convention not in ("baseband", "carrier"):
        raise ImportDataError(f"--iq-convention must be baseband or carrier, got "
                              f"{iq_convention!r}")
    src = Path(source)
    given = parameters or Parameters()
    if src.suffix.lower() == ".mat":
        mat = _MatFile(src)
        n = _names(names)
        raw = _array(mat, n, "iq")
        axes = [a.strip() for a in iq_axes]
        if sorted(axes) != ["depth", "frame", "lateral"] or raw.ndim != 3:
            raise ImportDataError(f"--iq-axes must order depth, lateral, frame for a 3-D IQ "
                                  f"array; got {axes} for shape {raw.shape}")
        iq = np.transpose(raw, [axes.index(a) for a in ("frame", "depth", "lateral")])
        depth_m = np.asarray(_array(mat, n, "depth"), np.float64).ravel()
        lateral_m = np.asarray(_array(mat, n, "lateral"), np.float64).ravel()
        found = _mat_parameters(mat, n)
    else:
        iq, depth_m, lateral_m, found = _uff_beamformed(src)
    p = found.merged(given)
    p.require("center_frequency", "sound_speed", "prf", "initial_time")
    assert p.center_frequency is not None and p.sound_speed is not None
    if not np.iscomplexobj(iq):
        raise ImportDataError(f"{src}: the IQ array is real ({iq.dtype}); import complex IQ")
    if iq.shape[1:] != (depth_m.size, lateral_m.size):
        raise ImportDataError(f"{src}: IQ frames {iq.shape[1:]} do not match the grid "
                              f"({depth_m.size} depths, {lateral_m.size} laterals)")
    if iq_convention == "carrier":
        iq = carrier_to_baseband(iq, depth_m=depth_m, sound_speed=p.sound_speed,
                                 modulation_frequency=p.center_frequency)
    return _write_swei(store_path, np.asarray(iq, np.complex64), src, p, depth_m, lateral_m,
                       {"iq_convention_imported": iq_convention}, phantom_id=phantom_id,
                       gelatin_percent=gelatin_percent, youngs_modulus_kpa=youngs_modulus_kpa,
                       push_lateral_m=push_lateral_m)


def _uff_beamformed(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, Parameters]:
    import pyuff_ustb as uff

    f = uff.Uff(str(path))
    locations = [k for k in f._reader.keys() if f._reader[k].attrs.get("class") in
                 (b"uff.beamformed_data", "uff.beamformed_data")]
    if len(locations) != 1:
        raise ImportDataError(f"{path}: expected one uff.beamformed_data, found {locations}; "
                              "import one sequence per file")
    bf = f.read(locations[0])
    scan = bf.scan
    if not isinstance(scan, uff.LinearScan):
        raise ImportDataError(f"{path}: scan is {type(scan).__name__}; only linear scans")
    z = np.asarray(scan.z_axis, np.float64).ravel()
    x = np.asarray(scan.x_axis, np.float64).ravel()
    data = np.asarray(bf.data)  # HDF5 order (frame, wave, channel, pixel), pixels z-fastest
    if data.ndim != 4 or data.shape[1:3] != (1, 1) or data.shape[3] != z.size * x.size:
        raise ImportDataError(f"{path}: beamformed data shaped {data.shape}; expected (frame, 1, "
                              f"1, {z.size * x.size}) for the {z.size} x {x.size} scan")
    iq = data[:, 0, 0, :].reshape(data.shape[0], x.size, z.size).transpose(0, 2, 1)
    frame_rate = getattr(bf, "frame_rate", None)
    return iq, z, x, Parameters(
        center_frequency=_scalar(bf.modulation_frequency, "modulation_frequency"),
        prf=None if frame_rate is None else float(frame_rate))


# -- pre/post RF pair -> compression -----------------------------------------------------------
def import_rf_pair(
    pre: str | os.PathLike[str],
    post: str | os.PathLike[str] | None,
    store_path: str | os.PathLike[str],
    *,
    line_pitch_m: float | None,
    parameters: Parameters | None = None,
    names: Mapping[str, str] | None = None,
    phantom_id: str | None = None,
) -> Path:
    """Pre- and post-compression RF frames (depth_sample, line) -> a store with ``compression``.

    ``pre``/``post`` are ``.npy`` files, or one ``.mat`` (``post`` None) holding both
    (variables ``pre`` and ``post``, mappable). Needs the RF sampling rate, the centre frequency,
    the sound speed, ``t0`` (depth of sample n is ``c (t0 + n / fs) / 2``) and the line pitch.
    """
    given = parameters or Parameters()
    src = Path(pre)
    if src.suffix.lower() == ".mat":
        mat = _MatFile(src)
        n = _names(names)
        frames = [_array(mat, n, "pre"), _array(mat, n, "post")]
        found = _mat_parameters(mat, n)
    else:
        if post is None:
            raise ImportDataError("give the post-compression frame (a second .npy file)")
        frames = [np.load(src), np.load(Path(post))]
        found = Parameters()
    p = found.merged(given)
    p.require("channel_sampling_frequency", "center_frequency", "sound_speed", "t0")
    if line_pitch_m is None:
        raise ImportDataError(f"missing acquisition parameter: line_pitch -> "
                              f"{OPTION['line_pitch']}")
    rf = [np.asarray(f, np.float32) for f in frames]
    if rf[0].ndim != 2 or rf[0].shape != rf[1].shape:
        raise ImportDataError(f"pre and post must be 2-D frames of one shape, got "
                              f"{rf[0].shape} and {rf[1].shape}")
    assert p.channel_sampling_frequency is not None and p.sound_speed is not None
    assert p.t0 is not None
    depth, lines = rf[0].shape
    depth_m = p.sound_speed * (p.t0 + np.arange(depth) / p.channel_sampling_frequency) / 2
    lateral_m = (np.arange(lines) - (lines - 1) / 2) * line_pitch_m
    pid = phantom_id or src.stem
    store = SessionStore.create(store_path, kind="imported", config={
        "source": [str(src.resolve()), None if post is None else str(Path(post).resolve())],
        "parameters": vars(p)})
    store.root.require_group("phantoms").attrs["phantoms"] = [
        {"phantom_id": pid, "kind": "imported", "gelatin_percent": None,
         "youngs_modulus_kpa": None, "inclusions": []}]
    table = store.require_table("compression", row_dim="frame", arrays=[
        ArraySpec("rf", (depth, lines), "float32", ("frame", "depth", "line")),
        ArraySpec("applied_strain", (), "float32", ("frame",), attrs={"allow_nan": True}),
    ], attrs={"sampling_frequency": p.channel_sampling_frequency,
              "center_frequency": p.center_frequency, "sound_speed": p.sound_speed,
              "depth_m": depth_m.tolist(), "lateral_m": lateral_m.tolist()})
    for step, frame in enumerate(rf):
        if not np.all(np.isfinite(frame)):
            raise StoreError(f"RF frame {step} contains NaN or inf")
        table.append(f"{pid}/step{step:02d}", {"rf": frame[None],
                                                "applied_strain": np.array([math.nan],
                                                                           np.float32)},
                     {"phantom_id": pid, "step": step})
    return Path(store_path)
