"""What the demo's stages share: profiles, the session config they imply, state and context.

:mod:`lab.demo` runs the stages (:mod:`lab.demo_stages`), the last of which writes the report
(:mod:`lab.demo_report`); all three import this module and none imports the one that runs it, so
the demo has no import cycle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lab.config import SessionConfig, parse_config
from lab.gelatin import gelatin_viscosity_pa_s
from lab.store import json_default

ProfileName = Literal["smoke", "default", "study", "paper"]
STATE_FILE = "demo-state.json"

#: Physical size of the paper's training ROI: 121 x 181 px of its 250 x 600 px grid.
PAPER_ROI_MM = (121 * 20.0 / 249, 181 * 33.0 / 599)


class DemoError(RuntimeError):
    """The demo cannot start or continue (e.g. the output directory holds something else)."""


@dataclass(frozen=True)
class DemoProfile:
    """Sizes of a demo run. Physical scales follow the paper; counts are reduced."""

    name: str
    concentrations: tuple[float, ...]
    cylinders_per_concentration: int
    positions_per_block: int
    push_elements: tuple[int, ...]
    depth_px: int
    lateral_px: int
    inclusion_positions: int
    compression_strains: tuple[float, ...]
    compression_depth_samples: int
    compression_lines: int
    window_px: int
    cnn_profile: Literal["quick", "paper"]
    cnn_max_steps: int | None
    flow_training_pairs: int
    flow_epochs: int
    study_pairs: int
    study_shape: tuple[int, int]
    indentation_rate_hz: float = 200.0
    finetune_epochs: int = 10
    #: Probe positions on the inclusion block stay this far from its edges (40 mm on a 100 mm
    #: block: within +/-10 mm of the inclusion, so it appears at varied lateral positions).
    inclusion_margin_mm: float = 40.0
    #: Window centres of CNN training: the paper's ROI or the whole valid field of view.
    cnn_window_centres: Literal["roi", "field"] = "field"
    #: Training blocks with random inclusions (stiffer and softer, several radii and places),
    #: so that inhomogeneous windows are part of training, and probe positions on each.
    training_inclusion_blocks: int = 0
    training_inclusion_positions: int = 3
    #: Fine-tuning learning rates, each tried with each of ``finetune_inclusion_fractions``; the
    #: candidate (the untuned model included) with the best push-mean score on the validation
    #: inclusion position (the worse region's relative MAE) is kept.
    finetune_learning_rates: tuple[float, ...] = (1e-4, 3e-4, 1e-3)
    #: Share of the fine-tuning windows centred inside inclusions, tried with each learning
    #: rate (None: centres uniform over the field, so inclusion and background weigh by area as
    #: the background MAE does; 0.5: the training's stratification, which weighs the inclusion
    #: more and can pull the whole background up while it fits the inclusion's contrast).
    finetune_inclusion_fractions: tuple[float | None, ...] = (0.5, 0.25, None)
    #: Loss of the fine-tuning (training keeps its profile's, [SWEI]'s MSE): "l1" fits the
    #: median, so the inclusion's large early errors do not shift the whole background (MSE
    #: fine-tuning lifted the far background of study seed 0 by 5.7 kPa).
    finetune_loss: Literal["mse", "l1"] = "l1"
    #: Fine-tune on the training inclusion blocks too, not only the evaluation block's tune
    #: positions (more inclusion windows; keeps the other contrasts from being forgotten).
    finetune_with_training_inclusions: bool = False
    #: Also train with the leave-one-concentration-out split (this concentration held out).
    unseen_concentration: float | None = None
    #: Seeds everything random: the lab's noise, probe positions, speckle (phantom speckle seeds
    #: are offset by ``SPECKLE_SEEDS_PER_RUN * seed``), the training inclusion blocks, splits
    #: and network initialisation. ``elastolab demo --seed N`` repeats a profile on new data.
    seed: int = 0


PROFILES: dict[str, DemoProfile] = {
    "smoke": DemoProfile(
        name="smoke", concentrations=(7.5, 15.0), cylinders_per_concentration=1,
        positions_per_block=8, push_elements=(40, 64, 88), depth_px=40, lateral_px=80,
        inclusion_positions=3, compression_strains=(0.0, 0.01, 0.02),
        compression_depth_samples=400, compression_lines=48, window_px=9, cnn_profile="quick",
        cnn_max_steps=4, flow_training_pairs=6, flow_epochs=1, study_pairs=3,
        study_shape=(300, 40), indentation_rate_hz=20.0, finetune_epochs=1,
        training_inclusion_blocks=1, training_inclusion_positions=1,
        finetune_learning_rates=(1e-3,), finetune_inclusion_fractions=(0.5, None),
    ),
    "default": DemoProfile(
        name="default", concentrations=(7.5, 10.0, 12.5, 15.0), cylinders_per_concentration=2,
        positions_per_block=8, push_elements=(24, 36, 48, 64, 80, 92, 104), depth_px=80,
        lateral_px=160, inclusion_positions=8, compression_strains=(0.0, 0.005, 0.01, 0.02, 0.03),
        compression_depth_samples=1000, compression_lines=128, window_px=17,
        cnn_profile="quick", cnn_max_steps=None, flow_training_pairs=64, flow_epochs=6,
        study_pairs=12, study_shape=(600, 96), training_inclusion_blocks=4,
        unseen_concentration=10.0,
        # four fine-tunings (the 10 min budget: six took the demo to 9.5 min): two rates, the
        # training's strata or by area (with the L1 loss, 1e-3 with the 0.5 strata lifted this
        # background to 12.5 kPa; 3e-4 with 0.5 is what the validation position chose)
        finetune_learning_rates=(1e-4, 3e-4), finetune_inclusion_fractions=(0.5, None),
    ),
    # A larger CPU run (under an hour on a loaded 2-core machine): six concentrations (the
    # paper's 5-17.5 %), 1.25x the positions, twice the inclusion training blocks, 1.5x the
    # inclusion positions, the unseen-concentration split; the default's grid and 17 px window
    # (3.5 x 4.3 mm; [SWEI]'s 33 px of its finer grid are 1.8 x 2.6 mm, and 33 px here would be
    # 6.8 x 8.3 mm at 3.8x the cost per window).
    "study": DemoProfile(
        name="study", concentrations=(5.0, 7.5, 10.0, 12.5, 15.0, 17.5),
        cylinders_per_concentration=2, positions_per_block=10,
        push_elements=(24, 36, 48, 64, 80, 92, 104), depth_px=80, lateral_px=160,
        inclusion_positions=12, compression_strains=(0.0, 0.005, 0.01, 0.02, 0.03),
        compression_depth_samples=1000, compression_lines=128, window_px=17,
        cnn_profile="quick", cnn_max_steps=None, flow_training_pairs=64, flow_epochs=6,
        study_pairs=12, study_shape=(600, 96), training_inclusion_blocks=8,
        training_inclusion_positions=3, unseen_concentration=10.0,
        # six fine-tunings: two rates (1e-4 won on none of the validation positions measured)
        # with three strata
        finetune_learning_rates=(3e-4, 1e-3),
    ),
    "paper": DemoProfile(
        name="paper", concentrations=(5.0, 7.5, 10.0, 12.5, 15.0, 17.5),
        cylinders_per_concentration=8, positions_per_block=80,
        push_elements=(24, 36, 48, 64, 80, 92, 104), depth_px=250, lateral_px=600,
        inclusion_positions=10,
        # [GLUENet]'s 0.5-7 % strains are its Field II simulation (the failure-rate study below
        # keeps them); the block compressed here is watched by the Nano43 (9 N Fz range, 8 N
        # compression limit), and 7 % of the 7.5 % block needs about 8.1 N: up to 6 % (~7 N).
        compression_strains=(0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06),
        compression_depth_samples=2000, compression_lines=250, window_px=33,
        cnn_profile="paper", cnn_max_steps=None, flow_training_pairs=400, flow_epochs=40,
        study_pairs=60, study_shape=(2000, 250), cnn_window_centres="roi",
        training_inclusion_blocks=8, training_inclusion_positions=20,
        unseen_concentration=10.0,
    ),
}


#: Speckle seeds of one run's phantoms lie below this; run ``seed`` adds ``seed`` times it.
SPECKLE_SEEDS_PER_RUN = 1000


def _speckle_seed(profile: DemoProfile, base: int) -> int:
    return base + SPECKLE_SEEDS_PER_RUN * profile.seed


#: The inclusion phantom of the evaluation (the paper's 7.5 % block with a 15 % inclusion).
EVAL_INCLUSION_BLOCK = "block-inclusion"
#: Training blocks with random inclusions are called ``{prefix}{k}``.
TRAINING_INCLUSION_PREFIX = "block-train-inclusion-"


def training_inclusion_blocks(profile: DemoProfile) -> list[dict[str, Any]]:
    """Seeded training blocks with random cylindrical inclusions (config dicts).

    Each block has a background drawn from the profile's concentrations and two inclusions, one
    stiffer and one softer where the range allows (else two of the other kind), radii 2-5 mm,
    centres within +/-6 mm laterally of the block centre and 5-15 mm deep, not overlapping; the
    probe positions (``inclusion_margin_mm`` from the edges) keep them in the field of view.
    """
    rng = np.random.default_rng([profile.seed, 4242])
    concentrations = sorted(profile.concentrations)
    blocks = []
    for k in range(profile.training_inclusion_blocks):
        background = float(concentrations[k % len(concentrations)])
        stiffer = [c for c in concentrations if c > background]
        softer = [c for c in concentrations if c < background]
        kinds = [stiffer or softer, softer or stiffer]
        inclusions: list[dict[str, float]] = []
        while len(inclusions) < 2:
            radius = float(rng.choice([2.0, 3.0, 4.0, 5.0]))
            x, z = float(rng.uniform(-6.0, 6.0)), float(rng.uniform(5.0, 15.0))
            if any(np.hypot(x - i["x_mm"], z - i["z_mm"]) < radius + i["radius_mm"] + 0.5
                   for i in inclusions):
                continue
            pool = kinds[len(inclusions)]
            inclusions.append({"x_mm": round(x, 2), "z_mm": round(z, 2), "radius_mm": radius,
                               "gelatin_percent": float(rng.choice(pool))})
        blocks.append({"kind": "block", "id": f"{TRAINING_INCLUSION_PREFIX}{k}",
                       "gelatin_percent": background,
                       "speckle_seed": _speckle_seed(profile, 200 + k),
                       "viscosity_pa_s": gelatin_viscosity_pa_s(background),
                       "inclusions": inclusions})
    return blocks


#: Bench layout of the demo's blocks: rows of at most five 100 mm blocks, 140 mm apart, inside
#: the default robot workspace (x within +/-0.35 m, y in [-0.45, -0.15] m), top surface at 0.1 m.
BENCH_ROWS_Y_M = (-0.30, -0.18, -0.42)
BLOCKS_PER_ROW = 5
BLOCK_PITCH_M = 0.14


def bench_origins_m(n_blocks: int) -> list[list[float]]:
    """Top-surface centres (m) of ``n_blocks`` blocks laid out in rows (see the constants)."""
    if n_blocks > BLOCKS_PER_ROW * len(BENCH_ROWS_Y_M):
        raise DemoError(f"{n_blocks} blocks do not fit on the bench "
                        f"({BLOCKS_PER_ROW * len(BENCH_ROWS_Y_M)} at most)")
    origins = []
    for k in range(n_blocks):
        row, col = divmod(k, BLOCKS_PER_ROW)
        in_row = min(BLOCKS_PER_ROW, n_blocks - row * BLOCKS_PER_ROW)
        x = (col - (in_row - 1) / 2) * BLOCK_PITCH_M
        origins.append([round(x, 4), BENCH_ROWS_Y_M[row], 0.1])
    return origins


def demo_config(profile: DemoProfile) -> SessionConfig:
    """The simulated session of the demo: cylinders, blocks, an inclusion block, compression."""
    phantoms: list[dict[str, Any]] = []
    cylinders: list[str] = []
    blocks: list[str] = []
    for c in profile.concentrations:
        for k in range(profile.cylinders_per_concentration):
            cylinders.append(f"cyl-{c:g}-{k}")
            phantoms.append({"kind": "cylinder", "id": cylinders[-1], "gelatin_percent": c})
        blocks.append(f"block-{c:g}")
        phantoms.append({"kind": "block", "id": blocks[-1], "gelatin_percent": c,
                         "speckle_seed": _speckle_seed(profile, len(blocks))})
        phantoms[-1]["viscosity_pa_s"] = gelatin_viscosity_pa_s(c)
    # [SWEI] inclusion phantoms: 7.5 % background, 15 % cylindrical inclusions of ~5 and ~10 mm.
    phantoms.append({"kind": "block", "id": EVAL_INCLUSION_BLOCK, "gelatin_percent": 7.5,
                     "speckle_seed": _speckle_seed(profile, 99),
                     "viscosity_pa_s": gelatin_viscosity_pa_s(7.5),
                     "inclusions": [
                         {"x_mm": 0.0, "z_mm": 10.0, "radius_mm": 5.0, "gelatin_percent": 15.0}]})
    training_blocks = training_inclusion_blocks(profile)
    phantoms.extend(training_blocks)
    block_rows = [ph for ph in phantoms if ph["kind"] == "block"]
    for ph, origin in zip(block_rows, bench_origins_m(len(block_rows)), strict=True):
        ph["origin_m"] = origin
    swei_common = {"push_elements": list(profile.push_elements), "depth_px": profile.depth_px,
                   "lateral_px": profile.lateral_px, "seed": profile.seed}
    data = {
        "name": f"demo-{profile.name}",
        "lab": {"sim_seed": profile.seed},
        "phantoms": phantoms,
        "protocols": [
            {"kind": "indentation", "cylinders": cylinders, "approach_gap_mm": 0.3,
             "sample_rate_hz": profile.indentation_rate_hz},
            {"kind": "swei", "blocks": blocks,
             "positions_per_block": profile.positions_per_block, **swei_common},
            # The inclusion block: probe positions around the inclusion.
            {"kind": "swei", "blocks": [EVAL_INCLUSION_BLOCK],
             "positions_per_block": profile.inclusion_positions,
             "position_margin_mm": profile.inclusion_margin_mm, **swei_common},
            *([{"kind": "swei", "blocks": [b["id"] for b in training_blocks],
                "positions_per_block": profile.training_inclusion_positions,
                "position_margin_mm": profile.inclusion_margin_mm, **swei_common}]
              if training_blocks else []),
            {"kind": "compression", "blocks": [EVAL_INCLUSION_BLOCK],
             "strains": list(profile.compression_strains),
             "depth_samples": profile.compression_depth_samples,
             "lines": profile.compression_lines},
        ],
    }
    return parse_config(data, source=f"demo profile {profile.name!r}")


@dataclass
class DemoState:
    """What a demo directory holds: its profile and the stages done (with their results)."""

    profile: str
    profile_hash: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> DemoState:
        data = json.loads(path.read_text())
        return cls(profile=data["profile"], profile_hash=data["profile_hash"],
                   stages=data.get("stages", {}))

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=json_default))
        tmp.replace(path)  # atomic: a crash never leaves a half-written state file


def profile_hash(profile: DemoProfile) -> str:
    return hashlib.sha256(json.dumps(asdict(profile), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class DemoContext:
    """What a stage gets: the output directory, the profile and the state of earlier stages."""

    out_dir: Path
    profile: DemoProfile
    state: DemoState
    show_progress: bool = True

    @property
    def store_path(self) -> Path:
        return self.out_dir / "session.zarr"

    @property
    def figures(self) -> Path:
        return self.out_dir / "figures"

    def result(self, stage: str) -> dict[str, Any]:
        return self.state.stages[stage]["result"]
