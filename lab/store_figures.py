"""Figures of what a session store holds, shared by the CLI's ``--png`` options and the demo report.

The plotting itself is :mod:`lab.figures` (arrays in, PNG out); this module only reads the store
and picks what goes beside what.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.figures import strain_panels
from lab.store import SessionStore

__all__ = ["StrainFigure", "strain_figures"]

COMPRESSION_TABLE = "compression"
TRUTH_TABLE = "truth/compression"


@dataclass(frozen=True)
class StrainFigure:
    """One written strain figure: its file, the pair it shows, whether the truth is beside it."""

    path: Path
    pre_key: str
    post_key: str
    with_truth: bool


def strain_figures(
    store_path: str | Path, out_dir: Path, *, methods: tuple[str, ...] = ("dp", "cnn"),
    limit: int | None = None, name: str = "strain-{index}.png",
) -> list[StrainFigure]:
    """One PNG per compression pair of ``strain/<method>/axial_strain``: each method's strain
    beside the simulated truth strain of the pair (``truth/compression``) when the store has it.

    Parameters
    ----------
    store_path : path
        Session store after :func:`analysis.strain.runners.run_strain`.
    out_dir : path
        Directory for the PNGs (created).
    methods : tuple of str
        Coarse estimators to show, those the store holds (at least one must be there).
    limit : int, optional
        At most this many pairs (the first ones).
    name : str
        File name pattern; ``{index}`` is the pair number, ``{pair}`` the two record keys
        (``block_step00__step01``).

    Raises
    ------
    ValueError
        No strain of ``methods`` in the store, or a compression table without the ``depth_m`` /
        ``lateral_m`` attributes the mm axes come from.
    """
    store = SessionStore.open(store_path)
    estimates = {m: store.read_array(f"strain/{m}/axial_strain") for m in methods
                 if f"strain/{m}/axial_strain" in store.root}
    if not estimates:
        raise ValueError(f"{store_path}: no strain/{{{','.join(methods)}}}/axial_strain; run "
                         "`elastolab strain` first")
    attrs = store.table(COMPRESSION_TABLE).group.attrs.asdict()
    missing = [k for k in ("depth_m", "lateral_m") if k not in attrs]
    if missing:
        raise ValueError(f"{store_path}: the {COMPRESSION_TABLE!r} table has no {missing} "
                         "attribute(s), so strain images cannot be drawn in mm")
    truth = store.table(TRUTH_TABLE) if store.has_table(TRUTH_TABLE) else None
    first = next(iter(estimates))
    pairs = list(store.root[f"strain/{first}/axial_strain"].attrs.get("pairs", []))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (key_a, key_b) in enumerate(pairs[:limit]):
        panels = {f"{m.upper()}+GLUE": e[i] for m, e in estimates.items()}
        with_truth = False
        if truth is not None and key_a in truth and key_b in truth:
            true = truth.read("axial_strain", key_b)[0] - truth.read("axial_strain", key_a)[0]
            if true.shape == estimates[first][i].shape:
                panels["simulated truth"] = true
                with_truth = True
        step_b = key_b.rsplit("/", 1)[-1]
        path = out_dir / name.format(index=i, pair=f"{key_a.replace('/', '_')}__{step_b}")
        strain_panels(panels, path, depth_m=attrs["depth_m"],
                      lateral_m=attrs["lateral_m"], title=f"{key_a} -> {step_b}")
        written.append(StrainFigure(path, key_a, key_b, with_truth))
    return written
