"""Training windows, augmentation, splits and reading a store."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
from threadpoolctl import threadpool_info

import analysis.swei_cnn.data as data_module
from analysis.swei_cnn.data import (
    Augmentation,
    SweiTrainingSet,
    WindowCache,
    WindowDraw,
    concentration_split,
    position_fold_split,
)
from analysis.swei_cnn.runners import load_swei_training_set, write_synthetic_store
from analysis.swei_cnn.synthetic import homogeneous_data_set

PERCENTS = (5.0, 7.5, 10.0, 12.5, 15.0, 17.5)


def _index_only_set(positions: int = 80, pushes: int = 7) -> SweiTrainingSet:
    grid = np.array([(p, pos, k) for p in range(len(PERCENTS)) for pos in range(positions)
                     for k in range(pushes)])
    n = len(grid)
    return SweiTrainingSet(
        displacement=np.broadcast_to(np.float32(0), (n, 35, 3, 3)),
        youngs_modulus_kpa=np.asarray([20.0 + 10 * p for p in grid[:, 0]]),
        push_index=grid[:, 2], position_index=grid[:, 1], phantom_index=grid[:, 0],
        gelatin_percent=np.asarray(PERCENTS)[grid[:, 0]],
    )


def _positions(data: SweiTrainingSet, seqs: np.ndarray, pct: float) -> set[int]:
    return {int(data.position_index[s]) for s in seqs if data.gelatin_percent[s] == pct}


def test_position_folds_are_60_10_10_and_cover_everything() -> None:
    data = _index_only_set()
    held_out: list[set[int]] = []
    for fold in range(4):
        split = position_fold_split(data, fold=fold, seed=1)
        for pct in PERCENTS:
            tr, va, te = (_positions(data, s, pct) for s in (split.train, split.validation,
                                                             split.test))
            assert (len(tr), len(va), len(te)) == (60, 10, 10)
            assert not (tr & va or tr & te or va & te)
            if pct == 10.0:
                held_out.append(va | te)
        assert not set(data.push_index[split.train]) & {0, 6}
        assert set(data.push_index[split.test]) == set(range(7))
    assert set().union(*held_out) == set(range(80))  # each position is held out once
    again = position_fold_split(data, fold=2, seed=1)
    np.testing.assert_array_equal(again.test, position_fold_split(data, fold=2, seed=1).test)


def test_concentration_split_leaves_one_out() -> None:
    data = _index_only_set(positions=10)
    split = concentration_split(data, held_out_percent=10.0)
    assert 10.0 not in set(data.gelatin_percent[split.train])
    assert set(data.gelatin_percent[split.validation]) == {10.0}
    assert set(data.gelatin_percent[split.test]) == {10.0}
    assert len(_positions(data, split.validation, 10.0)) == 5
    assert not _positions(data, split.validation, 10.0) & _positions(data, split.test, 10.0)
    with pytest.raises(ValueError, match="boundary concentration"):
        concentration_split(data, held_out_percent=5.0)
    with pytest.raises(ValueError, match=r"no homogeneous sequences at 9\.0"):
        concentration_split(data, held_out_percent=9.0)


def _small_set() -> SweiTrainingSet:
    a = homogeneous_data_set(gelatin_percents=(5.0, 15.0), positions=2, pushes=2,
                             shape=(35, 20, 24), seed=3)
    return SweiTrainingSet(a["displacement"], a["youngs_modulus_kpa"], a["push_index"],
                           a["position_index"], a["phantom_index"], a["gelatin_percent"])


def test_cache_windows_match_the_source() -> None:
    data = _small_set()
    cache = WindowCache(data, [1, 5], window_px=9, roi_px=(6, 8))
    r0, r1, c0, c1 = cache.roi
    assert (r1 - r0, c1 - c0) == (6, 8)
    draw = cache.draw(np.random.default_rng(0), windows_per_sequence=3)
    x, y = cache.batch(draw)
    assert x.shape == (6, 1, 35, 9, 9) and y.shape == (6,)
    for i in range(len(draw)):
        s = cache.indices[draw.seq[i]]
        ci, cj = r0 + draw.row[i], c0 + draw.col[i]
        raw = data.displacement[s, :, ci - 4 : ci + 5, cj - 4 : cj + 5].astype(np.float64)
        expected = (raw - raw.mean()) / raw.std()
        np.testing.assert_allclose(x[i, 0].numpy(), expected, atol=1e-5)
        assert y[i] == data.youngs_modulus_kpa[s]


def test_augmentation_is_seeded_and_does_what_it_says() -> None:
    data = _small_set()
    cache = WindowCache(data, [0, 1, 2], window_px=9, roi_px=(4, 4))
    aug = Augmentation(flip_probability=0.5, rotate=True, blur_probability=0.5,
                       erase_probability=0.5)
    d1 = cache.draw(np.random.default_rng(7), windows_per_sequence=20, augmentation=aug)
    d2 = cache.draw(np.random.default_rng(7), windows_per_sequence=20, augmentation=aug)
    x1, _ = cache.batch(d1)
    x2, _ = cache.batch(d2)
    assert np.array_equal(x1.numpy(), x2.numpy())
    assert d1.flip_depth.any() and d1.quarter_turns.any() and (d1.blur_sigma_px > 0).any()
    erased = np.flatnonzero(d1.erase[:, 2] > 0)
    assert erased.size
    top, left, eh, ew = d1.erase[erased[0]]
    assert (x1[erased[0], 0, :, top : top + eh, left : left + ew] == 0).all()
    # a pure lateral flip equals the flipped plain window
    plain = cache.draw(np.random.default_rng(7), windows_per_sequence=20)
    flipped = plain.subset(slice(0, 1))
    flipped = type(flipped)(**{**flipped.__dict__, "flip_lateral": np.array([True])})
    a, _ = cache.batch(plain.subset(slice(0, 1)))
    b, _ = cache.batch(flipped)
    # equal to float32 rounding: the window mean is summed in another order
    np.testing.assert_allclose(b.numpy(), a.numpy()[..., ::-1], atol=1e-6, rtol=0)


def _reference_batch(cache: WindowCache, draw: WindowDraw) -> np.ndarray:
    """The loader's windows one at a time, in float64, with NumPy and SciPy's own operations:
    slice, flips, np.rot90, scipy.ndimage.gaussian_filter (4 sigma, edges repeated), z-score,
    erase."""
    k = cache.window_px
    out = []
    for i in range(len(draw)):
        r, c = draw.row[i], draw.col[i]
        w = cache.windows_source[draw.seq[i], :, r : r + k, c : c + k].astype(np.float64)
        if draw.flip_depth[i]:
            w = np.flip(w, axis=1)
        if draw.flip_lateral[i]:
            w = np.flip(w, axis=2)
        w = np.rot90(w, draw.quarter_turns[i], axes=(1, 2))
        if draw.blur_sigma_px[i] > 0:
            s = draw.blur_sigma_px[i]
            w = scipy.ndimage.gaussian_filter(w, (0, s, s), mode="nearest", truncate=4.0)
        w = (w - w.mean()) / w.std()
        top, left, eh, ew = draw.erase[i]
        w[:, top : top + eh, left : left + ew] = 0.0
        out.append(w)
    return np.stack(out)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_batch_equals_a_per_window_reference_with_every_augmentation(
        threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every flip / quarter-turn combination, blur sigmas over the whole range and erasing,
    against :func:`_reference_batch` to float32 tolerance (normalised windows are O(1)); chunks
    of 7 windows over ``threads`` threads give the same batch, bit for bit, as one thread."""
    data = _small_set()
    cache = WindowCache(data, [0, 3, 6], window_px=9, roi_px=(10, 14), threads=threads)
    aug = Augmentation(flip_probability=0.5, rotate=True, blur_probability=0.4,
                       blur_sigma_px=(0.3, 2.4), erase_probability=0.3)
    draw = cache.draw(np.random.default_rng(11), windows_per_sequence=60, augmentation=aug)
    combos = set(zip(draw.flip_depth.tolist(), draw.flip_lateral.tolist(),
                     draw.quarter_turns.tolist(), strict=True))
    assert len(combos) == 16  # the draw covers the whole augmentation group
    sigmas = draw.blur_sigma_px[draw.blur_sigma_px > 0]
    assert sigmas.min() < 0.5 and sigmas.max() > 2.0  # kernel radii 1 .. 10 px (> window)
    assert (draw.erase[:, 2] > 0).sum() > 10
    whole, _ = cache.batch(draw)  # one chunk
    monkeypatch.setattr(data_module, "_CHUNK_BYTES", 7 * 35 * 9 * 9 * 4)
    x, y = cache.batch(draw)
    assert x.dtype == torch.float32 and x.shape == (len(draw), 1, 35, 9, 9)
    np.testing.assert_allclose(x[:, 0].numpy(), _reference_batch(cache, draw), atol=2e-5,
                               rtol=0)
    np.testing.assert_array_equal(x.numpy(), whole.numpy())
    np.testing.assert_array_equal(y.numpy(), cache.targets[draw.seq, draw.row, draw.col])


def test_batch_leaves_the_blas_thread_count_as_it_was() -> None:
    data = _small_set()
    cache = WindowCache(data, [0, 1], window_px=9, roi_px=(4, 4))
    before = [(i["filepath"], i["num_threads"]) for i in threadpool_info()]
    cache.batch(cache.draw(np.random.default_rng(0), windows_per_sequence=8,
                           augmentation=Augmentation(blur_probability=1.0)))
    assert [(i["filepath"], i["num_threads"]) for i in threadpool_info()] == before


def test_load_from_store(tmp_path) -> None:
    path = tmp_path / "s.zarr"
    write_synthetic_store(path, gelatin_percents=(7.5, 12.5), positions=2, pushes=2,
                          shape=(35, 12, 14))
    data = load_swei_training_set(path)
    assert len(data) == 8 and data.image_shape == (12, 14)
    assert data.keys[0] == "block0/pos000/push0"
    np.testing.assert_allclose(sorted(set(data.youngs_modulus_kpa.tolist())), [37.55, 72.64],
                               rtol=1e-6)
    from lab.store import SessionStore

    store = SessionStore.open(path, "a")
    store.root.require_group("labels").attrs["labels"] = [
        {"gelatin_percent": 7.5, "youngs_modulus_kpa": 40.0},
        {"gelatin_percent": 12.5, "youngs_modulus_kpa": 70.0}]
    data = load_swei_training_set(path)
    assert sorted(set(data.youngs_modulus_kpa.tolist())) == [40.0, 70.0]  # labels win


def test_roi_too_small_for_window_is_an_error() -> None:
    with pytest.raises(ValueError, match="no window centre fits"):
        WindowCache(_small_set(), [0], window_px=33)


def _inclusion_set() -> SweiTrainingSet:
    """One homogeneous and two inclusion sequences (40 kPa, a 100 kPa disc of 8 % of the
    centre range), 30 x 40 px."""
    n, h, w = 3, 30, 40
    maps = np.full((n, h, w), 40.0, np.float32)
    rr, cc = np.mgrid[:h, :w]
    maps[1][(rr - 15) ** 2 + (cc - 12) ** 2 <= 16] = 100.0
    maps[2][(rr - 10) ** 2 + (cc - 28) ** 2 <= 25] = 20.0  # a softer one
    return SweiTrainingSet(
        displacement=np.zeros((n, 35, h, w), np.float32), youngs_modulus_kpa=np.full(n, 40.0),
        push_index=np.ones(n, int), position_index=np.arange(n), phantom_index=np.arange(n),
        gelatin_percent=np.full(n, 7.5), uses_map=np.array([False, True, True]),
        modulus_maps_kpa=maps)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.5, 1.0])
def test_stratified_centres_fall_inside_inclusions_as_often_as_asked(fraction: float) -> None:
    data = _inclusion_set()
    cache = WindowCache(data, [0, 1, 2], window_px=5, roi_px=(30, 40))
    r0, r1, c0, c1 = cache.roi
    draw = cache.draw(np.random.default_rng(4), windows_per_sequence=4000,
                      inside_fraction=fraction)
    _, targets = cache.batch(draw.subset(np.arange(len(draw))))
    targets = targets.numpy()
    for s in (1, 2):
        mine = draw.seq == s
        inside = targets[mine] != 40.0
        assert inside.mean() == pytest.approx(fraction, abs=0.025)
        # background centres are spread over the whole centre range, not one spot
        assert len(set(zip(draw.row[mine & (targets == 40.0)].tolist(),
                           draw.col[mine & (targets == 40.0)].tolist(), strict=True))) > (
                               100 if fraction < 1 else -1)
    # the homogeneous sequence draws uniformly over the centre range
    homo = draw.seq == 0
    assert draw.row[homo].mean() == pytest.approx((r1 - r0 - 1) / 2, abs=0.6)
    assert draw.col[homo].mean() == pytest.approx((c1 - c0 - 1) / 2, abs=0.8)


def test_unstratified_centres_follow_the_inclusion_area() -> None:
    data = _inclusion_set()
    cache = WindowCache(data, [1], window_px=5, roi_px=(30, 40))
    area = float((cache.targets[0] != 40.0).mean())
    draw = cache.draw(np.random.default_rng(5), windows_per_sequence=8000)
    inside = cache.targets[0][draw.row, draw.col] != 40.0
    assert inside.mean() == pytest.approx(area, abs=0.01)
    with pytest.raises(ValueError, match="inside_fraction"):
        cache.draw(np.random.default_rng(5), inside_fraction=1.5)


def test_border_centres_straddle_an_interface_as_often_as_asked() -> None:
    """Border windows: background centres within half a window of an inclusion pixel, the
    share asked for; the rest as without the border stratum."""
    import scipy.ndimage

    data = _inclusion_set()
    cache = WindowCache(data, [0, 1, 2], window_px=5, roi_px=(30, 40))
    draw = cache.draw(np.random.default_rng(6), windows_per_sequence=6000, inside_fraction=0.4,
                      border_fraction=0.3)
    half = cache.window_px // 2
    for k in (1, 2):
        background = cache.targets[k] == 40.0
        distance = scipy.ndimage.distance_transform_edt(background)
        band = background & (distance <= half)
        assert 0 < band.sum() < 0.5 * background.sum()  # a thin band, not the background
        mine = draw.seq == k
        rows, cols = draw.row[mine], draw.col[mine]
        inside = ~background[rows, cols]
        in_band = band[rows, cols]
        assert inside.mean() == pytest.approx(0.4, abs=0.025)
        # 0.3 from the band, plus the band's share of the uniform background draws
        expected = 0.3 + 0.3 * band.sum() / background.sum()
        assert in_band.mean() == pytest.approx(expected, abs=0.025)
    # without a border stratum nothing changes: the same draw as before
    plain = cache.draw(np.random.default_rng(6), windows_per_sequence=50, inside_fraction=0.4)
    same = cache.draw(np.random.default_rng(6), windows_per_sequence=50, inside_fraction=0.4,
                      border_fraction=None)
    np.testing.assert_array_equal(plain.row, same.row)
    with pytest.raises(ValueError, match="border_fraction must be in"):
        cache.draw(np.random.default_rng(6), inside_fraction=0.6, border_fraction=0.5)
    with pytest.raises(ValueError, match="needs inside_fraction"):
        cache.draw(np.random.default_rng(6), border_fraction=0.2)
