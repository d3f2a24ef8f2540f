"""The flow CNN's correlation stage tracks known motion WITHOUT training.

Band-passed simulated speckle (noise-free) moved rigidly by known integer and sub-sample
amounts, and uniform compressions of a 2000-sample frame: the untrained network must already
behave as a coarse-to-fine block matcher. Also checks the range arithmetic of the default
pyramid, the decoder, the warp convention and the refusal of old weight cards.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from analysis.strain.bandpass import bandpass_rf
from analysis.strain.flownet import (
    FlowConfig,
    _decode,
    _warp,
    flow_cnn,
    flow_input,
    load_flow_cnn,
    predict_displacement,
    save_flow_cnn,
    zncc_cost_volume,
)
from drivers.sim.phantom import BlockPhantom
from drivers.ultrasound.sim_compression import simulate_compression_pair, simulate_rf_frame

FS, FC = 40e6, 6.67e6
PHANTOM = BlockPhantom("rigid", 10.0, size_mm=(40.0, 40.0, 40.0), speckle_seed=21)


@pytest.fixture(scope="module")
def speckle() -> np.ndarray:
    """Band-passed noise-free RF, 620 samples x 56 lines (12 mm x 8.5 mm)."""
    frame = simulate_rf_frame(PHANTOM, applied_strain=0.0, depth_mm=12.0, width_mm=56 * 0.152,
                              n_lines=56, element_mm=1.0)
    return bandpass_rf(frame.rf, sampling_frequency=FS, center_frequency=FC)


def _rigid_pair(rf: np.ndarray, axial: float, lateral: int) -> tuple[np.ndarray, np.ndarray]:
    """(pre, post) with ``pre(i, j) = post(i + axial, j + lateral)`` (the pipeline convention).

    The axial shift is exact for band-limited RF (Fourier shift along depth); the lateral one
    is a whole number of lines. A margin is cropped so wrap-around never enters.
    """
    n, m = rf.shape
    ramp = np.exp(-2j * np.pi * np.fft.fftfreq(n) * axial)[:, None]
    moved = np.real(np.fft.ifft(np.fft.fft(rf, axis=0) * ramp, axis=0))  # moved(i) = rf(i - axial)
    margin_a, margin_l = 80, 8
    pre = rf[margin_a:n - margin_a, margin_l:m - margin_l]
    post = moved[margin_a:n - margin_a, margin_l - lateral:m - margin_l - lateral]
    return pre, post


@pytest.mark.parametrize(("axial", "lateral"), [(8, 0), (-13, 2), (21, -1)])
def test_zncc_peak_at_the_true_integer_shift(speckle, axial: int, lateral: int) -> None:
    pre, post = _rigid_pair(speckle, axial, lateral)
    a = torch.from_numpy(flow_input(pre, axial_factor=1, lateral_factor=1))[None]
    b = torch.from_numpy(flow_input(post, axial_factor=1, lateral_factor=1))[None]
    ra, rl = 30, 3
    cost = zncc_cost_volume(a, b, search=(ra, rl), window=(41, 9))[0]
    core = cost[:, 30:-30, 5:-5]
    best = core.argmax(dim=0)
    da = best // (2 * rl + 1) - ra
    dl = best % (2 * rl + 1) - rl
    assert float(((da == axial) & (dl == lateral)).float().mean()) > 0.99
    # A sharp, normalised peak: ~1 at the truth, far lower one carrier period (6 samples) off.
    peak = core[(axial + ra) * (2 * rl + 1) + lateral + rl]
    off = core[(axial + 6 + ra) * (2 * rl + 1) + lateral + rl]
    assert float(peak.median()) > 0.95
    assert float(off.median()) < 0.7 * float(peak.median())
    assert float(cost.abs().max()) <= 1.0 + 1e-4


@pytest.mark.parametrize(("axial", "lateral"), [(8.0, 0), (8.5, 0), (-23.3, 2), (37.75, -3),
                                                (-61.4, 1)])
def test_untrained_network_recovers_rigid_shifts(speckle, axial: float, lateral: int) -> None:
    torch.manual_seed(0)
    model = flow_cnn()
    pre, post = _rigid_pair(speckle, axial, lateral)
    ax, lat = predict_displacement(model, pre, post)
    core = (slice(40, -40), slice(3, -3))
    err_a = np.abs(ax[core] - axial)
    err_l = np.abs(lat[core] - lateral)
    # Median ~0.1-0.2 samples; the tail (~0.4-0.5) comes from warping the carrier bilinearly.
    assert float(np.median(err_a)) < 0.25
    assert float(np.quantile(err_a, 0.95)) < 0.6
    assert float(np.quantile(err_l, 0.95)) < 0.5


def test_every_level_reports_the_shift_in_working_pixels(speckle) -> None:
    """A flow upsampled without its stride factor (or warped the wrong way) fails here."""
    torch.manual_seed(0)
    model = flow_cnn()
    pre, post = _rigid_pair(speckle, 30.0, 2)
    a = flow_input(pre, axial_factor=2, lateral_factor=1)
    b = flow_input(post, axial_factor=2, lateral_factor=1)
    ma, ml = model.config.multiple
    h, w = (a.shape[1] // ma) * ma, (a.shape[2] // ml) * ml
    with torch.no_grad():
        flows = model(torch.from_numpy(a[None, :, :h, :w]), torch.from_numpy(b[None, :, :h, :w]))
    assert len(flows) == model.config.levels + 1
    strides = [*model.config.cumulative_strides()[::-1], (1, 1)]  # coarsest first, then output
    for flow, (sa, sl) in zip(flows, strides, strict=True):
        inner = flow[0, :, 3:-3, 2:-2]
        # 30 samples = 15 working px; a level may be off by a fraction of its own cell.
        assert float(inner[0].median()) == pytest.approx(15.0, abs=0.3 + 0.15 * sa)
        assert float(inner[1].median()) == pytest.approx(2.0, abs=0.3 + 0.15 * sl)


@pytest.fixture(scope="module")
def compression_pairs():
    phantom = BlockPhantom("uniform", 10.0, size_mm=(60.0, 60.0, 60.0), speckle_seed=5)
    geom = dict(depth_mm=38.5, width_mm=40 * 0.152, n_lines=40, element_mm=1.0)
    return {s: simulate_compression_pair(phantom, applied_strain=s, **geom) for s in (0.02, 0.07)}


#: Bounds about 1.5x the measured errors: median axial 0.091 / 0.18 samples, median lateral
#: 0.046 / 0.096 lines, outliers 0 / 0.03 %, deepest rows 0.10 / 0.14 samples (2 % / 7 %).
@pytest.mark.parametrize(("strain", "axial", "lateral", "deep"),
                         [(0.02, 0.14, 0.07, 0.15), (0.07, 0.27, 0.14, 0.22)])
def test_untrained_network_tracks_uniform_compression(compression_pairs, strain: float,
                                                      axial: float, lateral: float,
                                                      deep: float) -> None:
    pair = compression_pairs[strain]
    truth_a = pair.axial_displacement_samples
    assert truth_a.shape[0] == 2000
    assert abs(float(truth_a[-1].mean())) == pytest.approx(2000 * strain, rel=0.03)
    kw = dict(sampling_frequency=FS, center_frequency=FC)
    pre, post = bandpass_rf(pair.rf_pre, **kw), bandpass_rf(pair.rf_post, **kw)
    torch.manual_seed(0)
    ax, lat = predict_displacement(flow_cnn(), pre, post)
    core = (slice(10, -10), slice(2, -2))
    err_a = np.abs(ax - truth_a)[core]
    err_l = np.abs(lat - pair.lateral_displacement_samples)[core]
    assert float(np.median(err_a)) < axial
    assert float(np.median(err_l)) < lateral
    assert float(np.mean((err_a > 3.0) | (err_l > 1.5))) < 0.002
    # The deepest rows, which move by ~40 / ~140 samples, are tracked too.
    assert float(np.median(np.abs(ax - truth_a)[-200:-10, 2:-2])) < deep


def test_default_ranges_cover_the_study_motion() -> None:
    """Coarsest search covers 7 % of 2000 samples and ~9 lines with margin; each finer level's
    residual search covers the error of the level below: a whole cell axially, half a cell
    laterally (sub-pixel estimates are off by well under half a cell)."""
    cfg = FlowConfig()
    strides = cfg.cumulative_strides()
    coarse_samples = cfg.coarse_search[0] * strides[-1][0] * cfg.axial_factor
    coarse_lines = cfg.coarse_search[1] * strides[-1][1] * cfg.lateral_factor
    assert coarse_samples >= 1.2 * 0.07 * 2000
    assert coarse_lines >= 11
    for k in range(cfg.levels - 1):
        reach = (cfg.search[0] * strides[k][0], cfg.search[1] * strides[k][1])
        assert reach[0] >= strides[k + 1][0] and reach[1] >= 0.5 * strides[k + 1][1]
    windows = cfg.level_windows()
    assert all(wa % 2 == 1 and wl % 2 == 1 for wa, wl in windows)
    assert cfg.carrier_level(0) and not cfg.carrier_level(cfg.levels - 1)


def test_decoder_argmax_and_parabolic_subpixel() -> None:
    ra, rl = 3, 1
    da_true, dl_true = 1.3, -0.2
    shifts = [(a, b) for a in range(-ra, ra + 1) for b in range(-rl, rl + 1)]
    scores = torch.tensor([-((a - da_true) ** 2) - (b - dl_true) ** 2 for a, b in shifts])
    flow = _decode(scores.view(1, -1, 1, 1).repeat(2, 1, 2, 3), (ra, rl))
    assert flow.shape == (2, 2, 2, 3)
    np.testing.assert_allclose(flow[:, 0].numpy(), da_true, atol=1e-5)
    np.testing.assert_allclose(flow[:, 1].numpy(), dl_true, atol=1e-5)
    # Many weak off-peak scores do not pull the estimate (a full-range soft-argmax would).
    flat = torch.zeros(1, (2 * ra + 1) * (2 * rl + 1), 1, 1)
    flat[0, (3 + ra) * (2 * rl + 1) + rl] = 1.0
    assert float(_decode(flat, (ra, rl))[0, 0]) == pytest.approx(3.0)


def test_warp_samples_at_row_plus_flow() -> None:
    x = torch.arange(20.0).view(1, 1, 20, 1).repeat(1, 1, 1, 4)
    flow = torch.zeros(1, 2, 20, 4)
    flow[:, 0] = 2.5
    out = _warp(x, flow)
    np.testing.assert_allclose(out[0, 0, :10, 0].numpy(), np.arange(10) + 2.5, atol=1e-5)


def test_old_cards_are_refused(tmp_path) -> None:
    model = flow_cnn(channels=(2, 2), strides=((1, 1), (2, 2)), coarse_search=(2, 1))
    path = save_flow_cnn(model, tmp_path / "m")
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    assert card["version"] == 3
    loaded, _ = load_flow_cnn(path)
    assert loaded.config == model.config
    card["version"] = 2
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"version-2 FlowCNN.*retrain"):
        load_flow_cnn(path)
