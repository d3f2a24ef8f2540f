"""Exact memo of shear-wave solves: bit-identical hits, misses on a changed input, memory bound."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.phantom import BlockPhantom, Inclusion
from drivers.ultrasound.sequences import ProbeModel, PushSequence
from drivers.ultrasound.shear_cache import ShearFieldCache, digest
from drivers.ultrasound.sim_shear import simulate_shear_wave

PROBE = ProbeModel()
PUSH = PushSequence(center_element=40)
X_PUSH_MM = PROBE.element_lateral_mm(40)
TIMES_S = np.arange(0.0, 1.0e-3, 0.1e-3)
DEPTH_M = np.linspace(6e-3, 14e-3, 9)
LATERAL_M = X_PUSH_MM * 1e-3 + np.linspace(0.0, 6e-3, 13)


def _solve(modulus, cache: ShearFieldCache | None, **kw):
    return simulate_shear_wave(modulus, push=PUSH, probe=PROBE, times_s=TIMES_S, depth_m=DEPTH_M,
                               lateral_m=LATERAL_M, grid_step_mm=0.2, cache=cache, **kw)


def _inclusion_map(offset_mm: float):
    phantom = BlockPhantom("incl", 7.5, inclusions=(Inclusion(
        x_mm=X_PUSH_MM + offset_mm, z_mm=10.0, radius_mm=2.0, gelatin_percent=15.0),))

    def modulus(x_m, z_m):
        return phantom.modulus_map_kpa(x_m * 1e3, z_m * 1e3)
    return modulus


def test_hit_is_bit_identical_to_an_uncached_solve_and_a_copy() -> None:
    cache = ShearFieldCache()
    reference = _solve(37.55, None)
    first = _solve(37.55, cache)
    second = _solve(37.55, cache)
    assert (cache.misses, cache.hits, len(cache)) == (1, 1, 1)
    for field in (first, second):
        assert field.displacement_m.dtype == np.float32
        np.testing.assert_array_equal(field.displacement_m, reference.displacement_m)
        np.testing.assert_array_equal(field.youngs_modulus_kpa, reference.youngs_modulus_kpa)
        assert (field.grid_step_m, field.time_step_s) == (reference.grid_step_m,
                                                          reference.time_step_s)
    # the caller may write into its field without touching the stored one
    second.displacement_m[...] = 0.0
    np.testing.assert_array_equal(_solve(37.55, cache).displacement_m, reference.displacement_m)


def test_a_map_given_as_function_hits_the_same_entry_as_the_constant() -> None:
    cache = ShearFieldCache()
    _solve(37.55, cache)
    _solve(lambda x, z: np.full(np.broadcast_shapes(x.shape, z.shape), 37.55), cache)
    assert cache.hits == 1


@pytest.mark.parametrize("change", [
    {"modulus": 37.56}, {"viscosity_pa_s": 0.1}, {"density_kg_m3": 1050.0},
    {"push": PushSequence(center_element=40, voltage_v=100.0)}, {"elevation": None},
])
def test_any_changed_input_misses(change: dict) -> None:
    cache = ShearFieldCache()
    _solve(37.55, cache)
    kw = dict(change)
    modulus = kw.pop("modulus", 37.55)
    if "push" in kw:
        field = simulate_shear_wave(modulus, probe=PROBE, times_s=TIMES_S, depth_m=DEPTH_M,
                                    lateral_m=LATERAL_M, grid_step_mm=0.2, cache=cache, **kw)
    else:
        field = _solve(modulus, cache, **kw)
    assert (cache.hits, cache.misses, len(cache)) == (0, 2, 2)
    np.testing.assert_array_equal(field.displacement_m, simulate_shear_wave(
        modulus, **{"push": PUSH, **kw}, probe=PROBE, times_s=TIMES_S, depth_m=DEPTH_M,
        lateral_m=LATERAL_M, grid_step_mm=0.2, cache=None).displacement_m)


def test_inclusion_moved_by_the_probe_is_a_different_map_and_misses() -> None:
    cache = ShearFieldCache()
    a = _solve(_inclusion_map(3.0), cache)
    b = _solve(_inclusion_map(3.5), cache)
    assert (cache.hits, cache.misses) == (0, 2)
    assert not np.array_equal(a.displacement_m, b.displacement_m)
    np.testing.assert_array_equal(b.displacement_m,
                                  _solve(_inclusion_map(3.5), None).displacement_m)


def test_memory_bound_drops_least_recently_used() -> None:
    one = np.zeros(1000, dtype=np.float32)  # 4000 bytes
    cache = ShearFieldCache(max_bytes=10_000)
    cache.put("a", (one,))
    cache.put("b", (one,))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", (one,))
    assert cache.nbytes == 8000 <= cache.max_bytes
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    cache.put("huge", (np.zeros(3000, dtype=np.float32),))  # 12 000 bytes > bound: not stored
    assert cache.get("huge") is None and cache.nbytes == 8000
    with pytest.raises(ValueError, match="max_bytes"):
        ShearFieldCache(max_bytes=-1)


def test_digest_separates_dtype_shape_and_value() -> None:
    a = np.arange(4, dtype=np.float64)
    assert digest(a) == digest(a.copy())
    assert digest(a) != digest(a.astype(np.float32))
    assert digest(a) != digest(a.reshape(2, 2))
    assert digest(1.0) != digest(1.0 + 1e-15)
    assert digest(None, 1) != digest(1, None)
