"""Benchmark: simulated SWEI push sequence, fast image-domain mode vs channel-data mode.

Times one push + plane-wave sequence of ``drivers.ultrasound.sim_system.SimUltrasound`` on the
paper's grid (35 frames after the push + the reference, 250 x 600 pixels, 7.5 % gelatin block
with a 15 % inclusion) in both fidelity modes, on one core (BLAS threads pinned to 1 before numpy
loads). The channel mode (int16 channel RF of 128 elements from point scatterers, demodulated and
delay-and-sum beamformed) is the reference the fast mode is compared to, as a ratio measured in
the same run. The beamformer itself is also compared with pymust's ``dasmtx`` on the same IQ.

Prints the figures and writes ``bench/results/us_sim.json``. ``--quick`` uses a small grid and
few frames (smoke run).

Usage::

    .venv/bin/python bench/us_sim.py [--quick]
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core, as the target is stated

import numpy as np  # noqa: E402  (after pinning BLAS threads)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.beamforming import das_plane_wave, rf_to_iq  # noqa: E402
from bench._common import parser, write_results  # noqa: E402
from drivers.sim.phantom import BlockPhantom, Inclusion  # noqa: E402
from drivers.sim.world import ProbeContact  # noqa: E402
from drivers.ultrasound.sequences import PlaneWaveSequence, PushSequence  # noqa: E402
from drivers.ultrasound.sim_shear import FIELD_CACHE  # noqa: E402
from drivers.ultrasound.sim_system import SimUltrasound  # noqa: E402
from lab.clock import SimClock  # noqa: E402

PHANTOM = BlockPhantom("bench", 7.5, inclusions=(Inclusion(x_mm=3.0, z_mm=11.0, radius_mm=5.0,
                                                           gelatin_percent=15.0),),
                       speckle_seed=1)
TARGET_FAST_S = 2.0


class _World:
    def probe_contact(self) -> ProbeContact:
        return ProbeContact(phantom=PHANTOM, lateral_offset_mm=0.0, elevation_offset_mm=0.0,
                            indentation_mm=0.5, force_n=0.2, in_contact=True)


def _time_sequence(fidelity: str, imaging: PlaneWaveSequence, repeats: int) -> dict[str, float]:
    clock = SimClock()
    system = SimUltrasound(_World(), clock, np.random.default_rng(0), fidelity=fidelity,
                           snr_db=30.0)
    system.connect()
    push = PushSequence(center_element=48)
    wall, cpu = [], []
    for _ in range(repeats):
        clock.advance(system.push_ready_in_s())
        FIELD_CACHE.clear()  # the same push again would be a memo hit: time the solve
        t0, c0 = time.perf_counter(), time.process_time()
        system.acquire_swei(push, imaging)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall_s": float(np.median(wall)), "cpu_s": float(np.median(cpu)),
            "repeats": repeats}


def _time_beamformers(imaging: PlaneWaveSequence) -> dict[str, float]:
    """Our sparse DAS vs pymust dasmtx on one frame of random channel IQ (same data)."""
    import pymust
    from pymust import utils as pymust_utils

    from drivers.ultrasound.sequences import ProbeModel

    probe = ProbeModel()
    fs, fc, c = imaging.channel_sampling_frequency_hz, probe.center_frequency_hz, 1540.0
    n_samples = int(2 * (imaging.depth_start_mm + imaging.fov_depth_mm + 5) * 1e-3 / c * fs)
    rf = np.random.default_rng(0).standard_normal((n_samples, probe.n_elements))
    iq = rf_to_iq(rf, sampling_frequency=fs, modulation_frequency=fc, t0=0.0)
    t0 = time.perf_counter()
    das_plane_wave(iq, element_positions_m=probe.element_positions_m, depth_m=imaging.depth_m,
                   lateral_m=imaging.lateral_m, channel_sampling_frequency=fs, sound_speed=c,
                   t0=0.0,
                   modulation_frequency=fc)
    ours = time.perf_counter() - t0
    param = pymust_utils.Param()
    param.fs, param.pitch, param.fc, param.c = fs, probe.pitch_mm * 1e-3, fc, c
    param.fnumber, param.Nelements, param.t0 = imaging.f_number, probe.n_elements, np.zeros(1)
    xx, zz = np.meshgrid(imaging.lateral_m, imaging.depth_m)
    t0 = time.perf_counter()
    matrix = pymust.dasmtx(1j * np.array(iq.shape), xx, zz, np.zeros(probe.n_elements), param)
    (matrix @ iq.flatten(order="F")).reshape(xx.shape, order="F")
    theirs = time.perf_counter() - t0
    return {"ours_s": ours, "pymust_dasmtx_s": theirs, "speedup_vs_pymust": theirs / ours}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    if args.quick:
        imaging = PlaneWaveSequence(n_frames=5, n_depth=60, n_lateral=100, fov_depth_mm=5.0,
                                    fov_lateral_mm=8.0, depth_start_mm=8.0)
        repeats_fast, repeats_channel = 2, 1
    else:
        imaging = PlaneWaveSequence()  # 35 frames, 250 x 600 pixels, 20 x 33 mm
        repeats_fast, repeats_channel = 5, 1
    shape = [imaging.n_frames + 1, imaging.n_depth, imaging.n_lateral]
    print(f"sequence {shape[0]} frames x {shape[1]} x {shape[2]} pixels, one core")
    fast = _time_sequence("image", imaging, repeats_fast)
    print(f"fast image-domain mode: {fast['wall_s']:.3f} s wall, {fast['cpu_s']:.3f} s CPU "
          f"(target <= {TARGET_FAST_S} s for the paper grid)")
    channel = _time_sequence("channel", imaging, repeats_channel)
    print(f"channel-data mode:      {channel['wall_s']:.3f} s wall, {channel['cpu_s']:.3f} s CPU")
    ratio = channel["cpu_s"] / fast["cpu_s"]
    print(f"fast mode is {ratio:.1f}x faster than the channel-data reference (CPU time)")
    beam = _time_beamformers(imaging)
    print(f"DAS one frame: ours {beam['ours_s']:.3f} s, pymust dasmtx {beam['pymust_dasmtx_s']:.3f}"
          f" s ({beam['speedup_vs_pymust']:.1f}x)")
    write_results("us_sim", {
        "quick": bool(args.quick),
        "sequence_shape": shape,
        "fast_image_mode": fast,
        "channel_mode": channel,
        "fast_vs_channel_cpu_ratio": ratio,
        "fast_target_s": TARGET_FAST_S,
        "fast_meets_target": bool(args.quick or fast["cpu_s"] <= TARGET_FAST_S),
        "beamforming_one_frame": beam,
    }, args.out)


if __name__ == "__main__":
    main()
