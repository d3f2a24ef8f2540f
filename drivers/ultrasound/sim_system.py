"""Simulated ultrasound system: the :class:`~drivers.ultrasound.base.UltrasoundSystem` role on
top of the simulated world.

What it models: the probe sits where the simulated world says (``world.probe_contact()``); the
image plane sees the phantom's modulus map at ``(lateral_offset_mm + lateral_mm,
depth_mm + indentation_mm)``; a push launches a shear wave (:mod:`sim_shear`) in that map with the
phantom's viscosity; the frames image the phantom's speckle moving with it (:mod:`sim_imaging`),
either directly as IQ (``fidelity="image"``) or as int16 channel RF beamformed by
:mod:`analysis.beamforming` (``fidelity="channel"``). Quasi-static RF frames come from
:func:`drivers.ultrasound.sim_compression.simulate_rf_frame` at applied strain = indentation /
block height. Every acquisition advances the shared clock by its duration; the duty cycle and
the sequence limits are enforced exactly as on the real system.

The shear wave is the 2.5-D one of :mod:`sim_shear` (the push beam finite in elevation, the
phantom invariant along it).

What it does not model: the probe's own motion or force during the 5 ms sequence, elevation
offsets in the modulus map (the inclusions are cylinders along elevation), the compression of
the tissue by the probe in the SWEI frames, scanner latency.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from analysis.beamforming import das_plane_wave, rf_to_iq
from drivers.base import DeviceError
from drivers.sim.phantom import BlockPhantom
from drivers.sim.world import ProbeContact
from drivers.ultrasound.base import (
    DEVICE_NAME,
    PushGuard,
    RfFrame,
    SweiAcquisition,
    SweiTruth,
    rf_frame_metadata,
    swei_metadata,
)
from drivers.ultrasound.sequences import (
    PlaneWaveSequence,
    ProbeModel,
    PushSequence,
    RfFrameSequence,
    UltrasoundLimits,
)
from drivers.ultrasound.sim_compression import simulate_rf_frame
from drivers.ultrasound.sim_imaging import (
    SCATTERERS_PER_RESOLUTION_CELL,
    ImagingGeometry,
    Scatterers,
    channel_rf,
    image_domain_iq,
    push_artefact_amplitude,
    tissue_scatterers,
)
from drivers.ultrasound.sim_shear import simulate_shear_wave
from lab.clock import Clock

__all__ = ["ContactSource", "SimUltrasound"]

#: int16 counts given to the largest channel sample of the pre-push frame.
ADC_REFERENCE_COUNTS = 8000.0


class ContactSource(Protocol):
    """Anything that says where the probe is: ``drivers.sim.world.SimWorld`` or a test fake."""

    def probe_contact(self) -> ProbeContact: ...


class SimUltrasound:
    """Simulated Cicada: push + plane-wave frames and quasi-static RF frames from the world.

    Parameters
    ----------
    world : ContactSource
        Gives the probe contact (phantom, offsets, indentation, force).
    clock : Clock
        Shared clock: duty cycle and acquisition time.
    rng : numpy.random.Generator
        Electronic noise (speckle comes from the phantom's seed).
    fidelity : {"image", "channel"}
        Fast image-domain IQ, or channel RF + delay-and-sum.
    snr_db : float or None
        Image SNR in ``image`` mode; per-channel SNR of the RF in ``channel`` mode; None =
        noise-free.
    rf_psnr_db : float or None
        PSNR of quasi-static RF frames (see ``simulate_rf_frame``); None = noise-free.
    probe : ProbeModel
        Probe model.
    limits : UltrasoundLimits
        Push and sequence limits.
    shear_grid_step_mm : float, optional
        FD grid of the shear-wave solver (default: automatic, see ``simulate_shear_wave``).
    scatterers_per_resolution_cell : float
        Scatterer density of the speckle (see ``sim_imaging.tissue_scatterers``).
    """

    name = DEVICE_NAME

    def __init__(
        self,
        world: ContactSource,
        clock: Clock,
        rng: np.random.Generator,
        *,
        fidelity: Literal["image", "channel"] = "image",
        snr_db: float | None = 30.0,
        rf_psnr_db: float | None = None,
        probe: ProbeModel | None = None,
        limits: UltrasoundLimits | None = None,
        shear_grid_step_mm: float | None = None,
        scatterers_per_resolution_cell: float = SCATTERERS_PER_RESOLUTION_CELL,
    ) -> None:
        if fidelity not in ("image", "channel"):
            raise ValueError(f"fidelity must be 'image' or 'channel', got {fidelity!r}")
        if snr_db is not None and not np.isfinite(snr_db):
            raise ValueError(f"snr_db must be finite or None, got {snr_db}")
        self.world = world
        self.clock = clock
        self.fidelity: Literal["image", "channel"] = fidelity
        self.snr_db = snr_db
        self.rf_psnr_db = rf_psnr_db
        self.probe = probe if probe is not None else ProbeModel()
        self.limits = limits if limits is not None else UltrasoundLimits()
        self.shear_grid_step_mm = shear_grid_step_mm
        self.scatterers_per_resolution_cell = scatterers_per_resolution_cell
        self._rng = rng
        self._guard = PushGuard(clock, self.limits)
        self._connected = False

    # -- role ---------------------------------------------------------------------------------
    def connect(self) -> None:
        self._connected = True

    def close(self) -> None:
        self._connected = False

    @property
    def connected(self) -> bool:
        """True between :meth:`connect` and :meth:`close`."""
        return self._connected

    def check(self, push: PushSequence, imaging: PlaneWaveSequence) -> None:
        """Raise LimitError if the sequence is impossible or the duty cycle forbids a push now."""
        self._guard.check(push, imaging, self.probe)

    def push_ready_in_s(self) -> float:
        """Seconds until the duty cycle allows the next push."""
        return self._guard.ready_in_s()

    def acquire_swei(self, push: PushSequence, imaging: PlaneWaveSequence) -> SweiAcquisition:
        """Reference frame, push, then ``imaging.n_frames`` frames; see :class:`SweiAcquisition`.

        Raises
        ------
        LimitError
            Sequence outside the limits, or the last push was too recent.
        DeviceError
            Not connected, or the probe is not in contact with a block phantom.
        """
        self._require_connected("acquire_swei")
        self.check(push, imaging)
        contact = self._contact("acquire_swei")
        phantom = contact.phantom
        assert phantom is not None  # _contact guarantees it

        def modulus(x_m: NDArray[np.float64], z_m: NDArray[np.float64]) -> NDArray[np.float64]:
            return phantom.modulus_map_kpa(contact.lateral_offset_mm + x_m * 1e3,
                                           z_m * 1e3 + contact.indentation_mm)

        geometry = ImagingGeometry(self.probe, imaging)
        scatterers = tissue_scatterers(
            geometry, speckle_seed=phantom.speckle_seed,
            lateral_offset_mm=contact.lateral_offset_mm,
            elevation_offset_mm=contact.elevation_offset_mm,
            indentation_mm=contact.indentation_mm,
            scatterers_per_resolution_cell=self.scatterers_per_resolution_cell,
        )
        t_push = self._guard.record_push()
        times = imaging.frame_times_s
        depth_pad = geometry.padded_depth_m
        in_tissue = depth_pad >= 0
        field = simulate_shear_wave(
            modulus, push=push, probe=self.probe, times_s=times,
            depth_m=depth_pad[in_tissue], lateral_m=geometry.padded_lateral_m,
            viscosity_pa_s=phantom.viscosity_pa_s, grid_step_mm=self.shear_grid_step_mm,
        )
        u_pad = np.zeros((times.size + 1, depth_pad.size, geometry.padded_lateral_m.size),
                         dtype=np.float32)
        u_pad[1:, in_tissue] = field.displacement_m
        t_after = np.concatenate([[-1.0 / imaging.prf_hz], times])
        metadata = swei_metadata(push, imaging, probe=self.probe, t_push_s=t_push,
                                 fidelity=self.fidelity)
        rf = None
        if self.fidelity == "image":
            iq = image_domain_iq(u_pad, scatterers, geometry, snr_db=self.snr_db, rng=self._rng,
                                 time_after_push_s=t_after)
        else:
            rf, iq, extra = self._channel_path(u_pad, scatterers, geometry, t_after)
            metadata.update(extra)
        truth = SweiTruth(
            displacement_m=geometry.crop(u_pad[1:]).copy(),
            youngs_modulus_kpa=modulus(imaging.lateral_m[None, :],
                                       imaging.depth_m[:, None]).astype(np.float32),
        )
        self.clock.sleep(push.duration_s + float(times[-1]))
        return SweiAcquisition(iq=iq, metadata=metadata, rf=rf, truth=truth)

    def acquire_rf_frame(self, seq: RfFrameSequence) -> RfFrame:
        """One quasi-static RF frame of the block under the probe at its current indentation.

        The applied strain is ``indentation_mm / block height``.

        Raises
        ------
        DeviceError
            Not connected, not in contact, or the compression simulator refuses the frame.
        """
        self._require_connected("acquire_rf_frame")
        contact = self._contact("acquire_rf_frame")
        phantom = contact.phantom
        assert phantom is not None

        strain = max(contact.indentation_mm, 0.0) / phantom.size_mm[2]
        try:
            frame = simulate_rf_frame(
                phantom, applied_strain=strain, depth_mm=seq.fov_depth_mm,
                width_mm=seq.fov_lateral_mm, n_lines=seq.n_lines,
                lateral_offset_mm=contact.lateral_offset_mm,
                sampling_frequency=seq.sampling_frequency_hz,
                center_frequency=seq.center_frequency_hz, sound_speed=seq.sound_speed_m_s,
                psnr_db=self.rf_psnr_db,
                rng_noise=self._rng if self.rf_psnr_db is not None else None,
                fractional_bandwidth=seq.fractional_bandwidth,
            )
        except ValueError as err:
            raise DeviceError(self.name, f"RF frame refused: {err}",
                              command="acquire_rf_frame") from err
        t_s = self.clock.now()
        self.clock.sleep(2 * seq.fov_depth_mm * 1e-3 / seq.sound_speed_m_s * seq.n_lines)
        metadata = rf_frame_metadata(
            sampling_frequency=frame.sampling_frequency, center_frequency=frame.center_frequency,
            sound_speed=frame.sound_speed, depth_m=frame.depth_m, lateral_m=frame.lateral_m,
            t_s=t_s)
        metadata["applied_strain"] = float(frame.applied_strain)
        truth = {
            "axial_displacement_m": frame.axial_displacement_m,
            "lateral_displacement_m": frame.lateral_displacement_m,
            "axial_strain": frame.axial_strain,
        }
        return RfFrame(rf=frame.rf, metadata=metadata, truth=truth)

    # -- internals ----------------------------------------------------------------------------
    def _require_connected(self, command: str) -> None:
        if not self._connected:
            raise DeviceError(self.name, "not connected; call connect() first", command=command)

    def _contact(self, command: str) -> ProbeContact:
        contact = self.world.probe_contact()
        if not contact.in_contact or contact.phantom is None:
            where = "no phantom under the probe" if contact.phantom is None else (
                f"indentation {contact.indentation_mm:.3f} mm, force {contact.force_n:.3f} N")
            raise DeviceError(
                self.name,
                f"probe is not in contact with a block phantom ({where}); place the probe on a "
                "phantom before acquiring",
                command=command,
            )
        if not isinstance(contact.phantom, BlockPhantom):
            raise DeviceError(self.name, f"probe rests on a {type(contact.phantom).__name__}, "
                              "not a block phantom", command=command)
        return contact

    def _channel_path(
        self, u_pad: NDArray[np.float32], scatterers: Scatterers, geometry: ImagingGeometry,
        t_after: NDArray[np.float64],
    ) -> tuple[NDArray[np.int16], NDArray[np.complex64], dict[str, Any]]:
        """Channel RF of every frame (int16), then demodulation and delay-and-sum."""
        imaging, probe = geometry.imaging, self.probe
        fs = imaging.channel_sampling_frequency_hz
        c = imaging.sound_speed_m_s
        z_max = float(geometry.padded_depth_m[-1])
        reach = imaging.fov_lateral_mm / 2 * 1e-3 + probe.aperture_mm / 2 * 1e-3
        t_max = (z_max + np.hypot(reach, z_max)) / c + 4 * geometry.pulse_sigma_s
        n_samples = int(np.ceil(t_max * fs)) + 1
        present = scatterers.amplitude != 0
        z_cell = geometry.padded_depth_m[:, None, None] + scatterers.offset * geometry.dz_m
        x_cell = np.broadcast_to(geometry.padded_lateral_m[None, :, None], z_cell.shape)
        frames = []
        for k in range(u_pad.shape[0]):
            frames.append(channel_rf(
                x_cell[present], (z_cell + u_pad[k][:, :, None])[present],
                scatterers.amplitude[present],
                probe=probe, imaging=imaging, n_samples=n_samples,
            ))
        rf = np.stack(frames)  # (frame, sample, element) float64
        signal_rms = float(np.sqrt(np.mean(rf[0] ** 2)))
        if self.snr_db is not None:
            rf += self._rng.standard_normal(rf.shape) * signal_rms / 10 ** (self.snr_db / 20)
        clutter = push_artefact_amplitude(np.where(t_after >= 0, t_after, np.inf))
        for k in np.nonzero(clutter > 0)[0]:
            rf[k] += self._rng.standard_normal(rf.shape[1:]) * signal_rms * clutter[k]
        gain = ADC_REFERENCE_COUNTS / max(float(np.abs(rf[0]).max()), 1e-30)
        counts = np.rint(rf * gain)
        saturated = int(np.count_nonzero(np.abs(counts) > 32767))
        rf16 = np.clip(counts, -32767, 32767).astype(np.int16)  # ADC saturation, counted below
        iq_channels = rf_to_iq(rf16, sampling_frequency=fs, t0=0.0,
                               modulation_frequency=probe.center_frequency_hz, axis=-2)
        iq = das_plane_wave(
            iq_channels, element_positions_m=probe.element_positions_m,
            depth_m=imaging.depth_m, lateral_m=imaging.lateral_m,
            channel_sampling_frequency=fs, sound_speed=c, t0=0.0,
            angle_rad=float(np.deg2rad(imaging.angle_deg)),
            f_number=imaging.f_number, modulation_frequency=probe.center_frequency_hz,
        )
        extra = {"channel_sampling_frequency": float(fs), "channel_t0": 0.0,
                 "adc_saturated_samples": saturated}
        return rf16, iq.astype(np.complex64), extra
