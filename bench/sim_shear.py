"""Benchmark: SWEI simulator unit cost with the 2.5-D shear wave and developed speckle.

Times, on the default demo's grid (80 x 160 pixels over 20 x 33 mm, 35 frames after the push),
for blocks of the default demo's concentrations (each with its viscosity):

- ``simulate_shear_wave`` with the elevation lens (2.5-D, the default) against the 2-D line
  source (``elevation=None``, the reference, same kernel, same run), and the number of elevation
  wavenumbers;
- ``image_domain_iq`` at the default scatterer density against one scatterer per pixel (the
  reference).

CPU time (``time.process_time``) and wall time are medians over repeats; the shear kernel runs
its wavenumbers on two threads, so wall < CPU on an idle 2-core machine. Prints the figures and
writes ``bench/results/sim_shear.json``. ``--quick``: two concentrations, one repeat.

Usage::

    .venv/bin/python bench/sim_shear.py [--quick]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import parser, write_results
from drivers.sim.phantom import BlockPhantom
from drivers.ultrasound import sim_shear
from drivers.ultrasound.sequences import PlaneWaveSequence, ProbeModel, PushSequence
from drivers.ultrasound.sim_imaging import (
    SCATTERERS_PER_RESOLUTION_CELL,
    ImagingGeometry,
    image_domain_iq,
    tissue_scatterers,
)
from lab.gelatin import gelatin_viscosity_pa_s


def _median_times(fn: Any, repeats: int) -> dict[str, float]:
    fn()  # compile / warm caches
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall_s": float(np.median(wall)), "cpu_s": float(np.median(cpu))}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    concentrations = (7.5, 15.0) if args.quick else (7.5, 10.0, 12.5, 15.0)
    repeats = 1 if args.quick else 3
    imaging = PlaneWaveSequence(n_depth=80, n_lateral=160)
    probe = ProbeModel()
    geometry = ImagingGeometry(probe, imaging)
    depth = geometry.padded_depth_m[geometry.padded_depth_m >= 0]
    push = PushSequence(center_element=48)
    results: dict[str, Any] = {"grid": [imaging.n_depth, imaging.n_lateral], "shear": {}}
    nodes: list[int] = []
    original = sim_shear.elevation_quadrature

    def counting(*a: Any, **kw: Any) -> Any:
        k, w = original(*a, **kw)
        nodes.append(k.size)
        return k, w

    sim_shear.elevation_quadrature = counting
    try:
        for percent in concentrations:
            phantom = BlockPhantom("bench", percent, speckle_seed=1,
                                   viscosity_pa_s=gelatin_viscosity_pa_s(percent))

            def run(elevation: Any, phantom: BlockPhantom = phantom) -> Any:
                return sim_shear.simulate_shear_wave(
                    lambda x, z: phantom.modulus_map_kpa(x * 1e3, z * 1e3 + 0.5), push=push,
                    probe=probe, times_s=imaging.frame_times_s, depth_m=depth,
                    lateral_m=geometry.padded_lateral_m, viscosity_pa_s=phantom.viscosity_pa_s,
                    elevation=elevation)

            line = _median_times(lambda run=run: run(None), repeats)
            lens = _median_times(lambda run=run: run(sim_shear.ElevationLens()), repeats)
            entry = {"line_source": line, "elevation_lens": lens, "wavenumbers": nodes[-1],
                     "cpu_ratio": lens["cpu_s"] / line["cpu_s"]}
            results["shear"][f"{percent:g}%"] = entry
            print(f"{percent:4.1f} %: 2-D {line['cpu_s']:.3f} s CPU, 2.5-D {lens['cpu_s']:.3f} s "
                  f"CPU / {lens['wall_s']:.3f} s wall ({nodes[-1]} wavenumbers, "
                  f"{entry['cpu_ratio']:.1f}x)")
    finally:
        sim_shear.elevation_quadrature = original
    motion = np.zeros((imaging.n_frames + 1, *geometry.padded_depth_m.shape,
                       geometry.padded_lateral_m.size), dtype=np.float32)
    imaging_cost = {}
    for density in (1.0, SCATTERERS_PER_RESOLUTION_CELL):
        def image(density: float = density) -> Any:
            scatterers = tissue_scatterers(geometry, speckle_seed=1,
                                           scatterers_per_resolution_cell=density)
            return image_domain_iq(motion, scatterers, geometry, snr_db=30.0,
                                   rng=np.random.default_rng(0))

        imaging_cost[f"{density:g}"] = _median_times(image, repeats)
        print(f"imaging, {density:g} scatterers per resolution cell "
              f"({geometry.scatterers_per_cell(density)} per pixel): "
              f"{imaging_cost[f'{density:g}']['cpu_s']:.3f} s CPU")
    results["imaging_per_resolution_cell"] = imaging_cost
    write_results("sim_shear", {"quick": bool(args.quick), **results}, args.out)


if __name__ == "__main__":
    main()
