"""The ``elastolab`` command line. Commands are thin: parse, build, call a library function."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from numpy.typing import NDArray

from analysis.runners import run_displacement, run_labels, run_tof
from analysis.tof import PAPER_TOF_DISTANCE_MM
from drivers.sim.lab import serve
from lab.cli_choices import (
    CoarseEstimator,
    DemoProfile,
    Device,
    DisplacementMethod,
    DisplacementReference,
    Simulator,
    TrainProfile,
    TrainSplit,
    Window,
)
from lab.config import ConfigError, load_config
from lab.demo_context import PROFILES, DemoError
from lab.info import print_info
from lab.logs import console, setup_logging
from lab.monitor import Monitor, MonitorError
from lab.progress import COMPILE_NOTE, progress_callback
from lab.provenance import git_commit, package_version
from lab.session_cli import session_app
from lab.store import SessionStore, StoreError
from lab.verify import verify_store

log = logging.getLogger("elastolab")

app = typer.Typer(
    name="elastolab",
    help="Automated ultrasound-elasticity experiments on gelatin phantoms: run sessions on real or "
    "simulated instruments, check stores, analyse datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
analyze_app = typer.Typer(help="Analyse a session store in place.", no_args_is_help=True)
sim_app = typer.Typer(help="Run instrument simulators standalone.", no_args_is_help=True)
config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
app.add_typer(session_app, name="session")
app.add_typer(analyze_app, name="analyze")
app.add_typer(sim_app, name="sim")
app.add_typer(config_app, name="config")

StorePath = Annotated[Path, typer.Argument(help="session store (a .zarr directory)")]


def _print_version(value: bool) -> None:
    if value:
        commit = git_commit()
        console.print(f"elastolab {package_version()}"
                      + (f" (commit {commit[:12]})" if commit else ""), highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version (and git commit) and exit")]
    = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings and errors only")] = False,
) -> None:
    setup_logging(verbose=verbose, quiet=quiet)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


# -- store -----------------------------------------------------------------------------------------
@app.command()
def verify(
    store: StorePath,
    repair: Annotated[bool, typer.Option(help="trim rows left by interrupted writes, "
                                               "remove temporary files (never committed data) "
                                               "and move a killed run's journalled force "
                                               "samples into force_log")]
    = False,
) -> None:
    """Check a store: index vs arrays, missing or truncated chunks, NaN/Inf, schema.

    Exit code 0 only when the store is clean.
    """
    try:
        report = verify_store(store, repair=repair)
    except OSError as exc:  # unreadable files, symlink loops below the metadata
        _fail(f"{store}: cannot read the store: {exc}")
        return
    for line in report.repaired:
        console.print(f"[yellow]repaired[/yellow] {line}", highlight=False)
    for problem in report.problems:
        style = "red" if problem.severity == "error" else "yellow"
        console.print(f"[{style}]{problem}[/{style}]", highlight=False)
    verdict = "[green]clean[/green]" if report.clean else "[red]NOT clean[/red]"
    console.print(f"{store}: {verdict} ({report.checked_arrays} arrays, "
                  f"{report.checked_chunks} chunks checked)")
    raise typer.Exit(0 if report.clean else 1)


@app.command()
def info(store: StorePath) -> None:
    """Print a summary of a store: provenance, tables, arrays, sizes."""
    try:
        print_info(store, console)
    except (StoreError, OSError) as exc:  # OSError: unreadable files, symlink loops
        _fail(str(exc))


@app.command()
def monitor(
    store: StorePath,
    port: Annotated[int, typer.Option(help="port to serve on (0 = any free port)")] = 8765,
    host: Annotated[str, typer.Option(help="address to bind; anyone reaching it can pause the "
                                           "session")] = "127.0.0.1",
) -> None:
    """Follow a running or finished session in the browser (read-only; can request a pause)."""
    try:
        mon = Monitor(store, host=host, port=port)
        url = mon.start()
    except (StoreError, MonitorError, OSError) as exc:
        _fail(str(exc))
        return
    console.print(f"monitoring {store} at [bold]{url}[/bold] (Ctrl-C to stop)", highlight=False)
    mon.serve_forever()


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="session TOML file")]) -> None:
    """Validate a session configuration file and print what it would run."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        _fail(str(exc))
        return
    console.print(f"[green]{path}: valid[/green] - session {cfg.name!r}, "
                  f"{len(cfg.phantoms)} phantoms, protocols: "
                  f"{', '.join(p.kind for p in cfg.protocols) or 'none'}")


# -- analysis --------------------------------------------------------------------------------------
@analyze_app.command("displacement")
def analyze_displacement(
    store: StorePath,
    method: Annotated[DisplacementMethod, typer.Option(help="estimator")]
    = DisplacementMethod.loupas,
    reference: Annotated[DisplacementReference, typer.Option(help="reference frame")]
    = DisplacementReference.fixed,
    scheduler: Annotated[str | None, typer.Option(
        help="dask.distributed scheduler address (tcp://host:8786); local threads if absent")]
    = None,
    workers: Annotated[int | None, typer.Option(help="local worker threads")] = None,
    axial_kernel: Annotated[int | None, typer.Option(
        min=1, help="odd axial kernel in IQ samples (default: ~1.5 wavelengths, at least 3)")]
    = None,
) -> None:
    """Axial displacement of every SWEI sequence (Dask, resumable) -> the `displacement` table."""
    log.info("displacement (%s) on %s; %s", method.value,
             f"the Dask scheduler at {scheduler}" if scheduler else "Dask local threads",
             COMPILE_NOTE)
    with _store_errors(), progress_callback("displacement") as progress:
        n = run_displacement(store, method=method.value, reference=reference.value,
                             scheduler_address=scheduler, num_workers=workers, progress=progress,
                             axial_kernel=axial_kernel)
    console.print(f"displacement: {n} sequences computed")


@analyze_app.command("labels")
def analyze_labels(
    store: StorePath,
    plot: Annotated[Path | None, typer.Option(help="stress-strain PNG to write")] = None,
) -> None:
    """Young's-modulus labels per concentration from the indentation runs."""
    from rich.table import Table as RichTable

    with _store_errors():
        labels = run_labels(store, plot_path=plot)
    table = RichTable(title="Young's modulus labels")
    for col in ("gelatin %", "E (kPa)", "95 % between runs", "runs used", "rejected",
                "strain range"):
        table.add_column(col)
    for lab in labels:
        lo, hi = lab["ci95_kpa"]
        s0, s1 = lab["strain_range"]
        # one run has no between-run spread (its regression CI treats correlated samples as
        # independent): n/a
        interval = f"{lo:.2f}-{hi:.2f}" if len(lab["runs_used"]) >= 2 else "n/a (1 run)"
        table.add_row(f"{lab['gelatin_percent']:g}", f"{lab['youngs_modulus_kpa']:.2f}",
                      interval, str(len(lab["runs_used"])),
                      str(len(lab["runs_rejected"])), f"{100 * s0:.1f}-{100 * s1:.1f} %")
    console.print(table)


@analyze_app.command("tof")
def analyze_tof(
    store: StorePath,
    alpha: Annotated[float | None, typer.Option(
        help="E scale factor; default: calibrated on the labels (0.75 without labels)")] = None,
    distance_mm: Annotated[float, typer.Option(
        help="lateral distance between the two time signals (mm), converted to pixels with "
        "the store's lateral step; default the paper's 65 px on 33 mm / 600 px")
    ] = PAPER_TOF_DISTANCE_MM,
) -> None:
    """Time-of-flight elasticity maps -> maps/tof_kpa (NaN where rejected)."""
    if not distance_mm > 0:
        _fail(f"--distance-mm must be a positive distance in mm, got {distance_mm}")
    with _store_errors(), progress_callback("time of flight") as progress:
        used = run_tof(store, alpha=alpha, progress=progress, distance_mm=distance_mm)
    console.print(f"tof maps written (alpha = {used:.3f})")


# -- simulators ------------------------------------------------------------------------------------
@sim_app.command("serve")
def sim_serve(
    kind: Annotated[Simulator, typer.Argument(help="hexapod (GCS over TCP) or netft (RDT over "
                                                   "UDP)")],
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0 = any free port)")] = 0,
    seed: int = 0,
) -> None:
    """Run a wire-protocol simulator in real time until Ctrl-C."""
    serve(kind.value, host=host, port=port, seed=seed)


@contextmanager
def _store_errors() -> Iterator[None]:
    """Turn expected user-facing errors into one red line and exit code 2."""
    try:
        yield
    except (StoreError, ValueError, OSError) as exc:  # OSError: unreadable files, symlink loops
        _fail(str(exc))


# -- SWEI CNN --------------------------------------------------------------------------------------
@app.command()
def train(
    store: StorePath,
    window: Annotated[Window, typer.Option(help="window size in pixels")] = Window.w33,
    profile: Annotated[TrainProfile, typer.Option(help="quick (CPU) or paper (the paper's "
                                                       "recipe)")] = TrainProfile.quick,
    epochs: Annotated[int | None, typer.Option(min=1, help="epochs instead of the profile's "
                                                          "(quick 12, paper 250)")] = None,
    out: Annotated[Path | None, typer.Option(help="model file (.safetensors); default "
                                                  "STORE/models/swei-cnn-w{window}.safetensors")]
    = None,
    split: Annotated[TrainSplit, typer.Option(help="positions (4-fold) or concentration (leave "
                                                   "one out)")] = TrainSplit.positions,
    fold: Annotated[int, typer.Option(help="fold index for --split positions")] = 0,
    held_out_percent: Annotated[float | None, typer.Option(
        help="gelatin % left out for --split concentration")] = None,
    seed: int = 0,
    device: Annotated[Device, typer.Option(help="torch device")] = Device.cpu,
    checkpoint: Annotated[Path | None, typer.Option(help="checkpoint file (resumable)")] = None,
    resume: Annotated[bool, typer.Option(help="continue from --checkpoint")] = False,
) -> None:
    """Train the spatio-temporal 3D DenseNet on a store's displacement."""
    from analysis.swei_cnn.runners import run_train  # lazy: torch, ~1.1 s
    from analysis.swei_cnn.train import get_profile  # lazy: torch, as above

    window_px = int(window.value)
    recipe = get_profile(profile.value)  # type: ignore[arg-type]
    if epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=epochs)
    # save_model creates the directory when there is a model to write (no empty models/ left).
    model_path = out or store / "models" / f"swei-cnn-w{window_px}.safetensors"

    def on_epoch(metrics: object) -> None:
        log.info("epoch %s", metrics)

    with _store_errors(), progress_callback(f"train w{window_px} ({profile.value})") as progress:
        result = run_train(store, window_px=window_px,  # type: ignore[arg-type]
                           profile=recipe, out_model_path=model_path, split=split.value,
                           fold=fold, held_out_percent=held_out_percent, seed=seed,
                           device=device.value, checkpoint_path=checkpoint, resume=resume,
                           on_epoch=on_epoch, on_progress=progress)
    console.print(f"model written to {model_path}")
    console.print_json(data=result["metrics"])


@app.command()
def predict(
    store: StorePath,
    model: Annotated[Path, typer.Option(help="model file (.safetensors with its .json card)")],
    stride: Annotated[int, typer.Option(help="predict every n-th pixel")] = 1,
    device: Annotated[Device, typer.Option(help="torch device")] = Device.cpu,
    png: Annotated[Path | None, typer.Option(help="directory for PNG maps (first sequences)")]
    = None,
    max_memory_mb: Annotated[float, typer.Option(help="memory budget of dense inference")]
    = 1024.0,
    map_name: Annotated[str, typer.Option(help="write maps/NAME_kpa (another name keeps the "
                                               "maps of an earlier model)")] = "cnn",
) -> None:
    """Full elasticity maps of every sequence -> maps/cnn_kpa (or maps/NAME_kpa; and PNGs)."""
    from analysis.swei_cnn.runners import run_predict  # lazy: torch, ~1.1 s

    with _store_errors(), progress_callback("predict") as progress:
        result = run_predict(store, model_path=model, stride=stride, device=device.value,
                             max_memory_mb=max_memory_mb, on_progress=progress,
                             map_path=f"maps/{map_name}_kpa")
    if png is not None:
        _write_map_pngs(store, png)
    console.print_json(data={k: v for k, v in result.items() if k != "path"})


def _write_map_pngs(store_path: Path, out_dir: Path, limit: int = 6) -> None:
    from lab.figures import image_panels  # lazy: matplotlib costs ~0.4 s at import

    out_dir.mkdir(parents=True, exist_ok=True)
    store = SessionStore.open(store_path)
    attrs = store.table("swei").group.attrs
    maps = {name: store.read_array(f"maps/{name}_kpa") for name in ("cnn", "tof")
            if f"maps/{name}_kpa" in store.root}
    keys = store.table("swei").keys()
    for i, key in enumerate(keys[:limit]):
        path = out_dir / f"map-{i:03d}.png"
        image_panels({name: m[i] for name, m in maps.items()}, path, depth_m=attrs["depth_m"],
                     lateral_m=attrs["lateral_m"], label="Young's modulus (kPa)", title=key)
    console.print(f"PNG maps in {out_dir}")


# -- demo ------------------------------------------------------------------------------------------
@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="output directory (created; a second run resumes)")]
    = Path("demo-out"),
    profile: Annotated[DemoProfile, typer.Option(help="default (laptop, minutes), study (larger "
                                                      "CPU run, ~1 h), paper (the paper's sizes "
                                                      "and recipe, GPU) or smoke (seconds)")]
    = DemoProfile.default,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bars")] = False,
    seed: Annotated[int | None, typer.Option(
        min=0, max=2**31 - 1, help="repeat the profile on new random data (speckle, noise, "
                                   "positions, training blocks, splits, network); default 0")]
    = None,
) -> None:
    """The simulated study end to end: acquisition, labels, displacement, ToF, CNN, strain, report.

    Writes DIR/session.zarr, DIR/report.html, DIR/metrics.json and DIR/figures/. Running again
    into the same DIR resumes after the last completed stage; a DIR made with another profile (or
    holding anything else) is refused, so results are never mixed.
    """
    from lab.demo import run_demo  # lazy: torch, ~1.1 s

    if profile.value not in PROFILES:
        _fail(f"--profile must be one of {sorted(PROFILES)}, got {profile.value!r}")
    try:
        run_demo(out, profile=profile.value,  # type: ignore[arg-type]
                 show_progress=not no_progress, seed=seed)
    except DemoError as exc:
        _fail(str(exc))
    console.print(f"[green]demo complete[/green]: open {out / 'report.html'}")


# -- strain imaging --------------------------------------------------------------------------------
@app.command()
def strain(
    store: StorePath,
    coarse: Annotated[CoarseEstimator, typer.Option(help="coarse estimator before GLUE")]
    = CoarseEstimator.dp,
    model: Annotated[Path | None, typer.Option(
        help="flow CNN weights for --coarse cnn (see `elastolab train-flow`)")] = None,
    png: Annotated[Path | None, typer.Option(help="directory for one PNG per pair (mm, signed "
                                                  "colour bar, beside the simulated truth when "
                                                  "the store has it)")] = None,
    max_strain: Annotated[float | None, typer.Option(
        help="largest compression expected (sets the default DP ranges; default 0.08)")] = None,
    dp_axial_range: Annotated[str | None, typer.Option(
        help="DP axial search LOW,HIGH in RF samples (e.g. -40,3)")] = None,
    dp_lateral_range: Annotated[str | None, typer.Option(
        help="DP lateral search LOW,HIGH in lines (e.g. -4,4)")] = None,
    alpha1: Annotated[float | None, typer.Option(help="GLUE axial continuity along a line")]
    = None,
    alpha2: Annotated[float | None, typer.Option(help="GLUE axial continuity across lines")]
    = None,
    beta1: Annotated[float | None, typer.Option(help="GLUE lateral continuity along a line")]
    = None,
    beta2: Annotated[float | None, typer.Option(help="GLUE lateral continuity across lines")]
    = None,
    strain_window: Annotated[int | None, typer.Option(
        help="odd LSQ strain window in samples (default 41)")] = None,
) -> None:
    """Strain images of consecutive compression frames -> strain/<coarse>/ arrays and metrics.

    Unset options keep the defaults of `analysis.strain.pipeline.estimate_strain`.
    """
    from analysis.strain.runners import run_strain  # lazy: torch, ~1.1 s

    if coarse == CoarseEstimator.cnn and model is None:
        _fail("--coarse cnn needs --model (train one with `elastolab train-flow`)")
    given = {"max_strain": max_strain, "alpha1": alpha1, "alpha2": alpha2, "beta1": beta1,
             "beta2": beta2, "strain_window": strain_window,
             "dp_axial_range": _int_pair(dp_axial_range, "--dp-axial-range"),
             "dp_lateral_range": _int_pair(dp_lateral_range, "--dp-lateral-range")}
    with _store_errors(), progress_callback(f"strain ({coarse.value}+GLUE)") as progress:
        result = run_strain(store, coarse=coarse.value, model_path=model,  # type: ignore[arg-type]
                            progress=progress,
                            **{k: v for k, v in given.items() if v is not None})
    if png is not None:
        _write_strain_pngs(store, png, coarse.value)
    from rich.table import Table as RichTable

    table = RichTable(title=f"{coarse.value.upper()}+GLUE strain")
    for col in ("pair", "SNR", "CNR", "MSSIM"):
        table.add_column(col)
    for (a, b), m in zip(result["pairs"], result["metrics"], strict=True):
        table.add_row(f"{a} -> {b}", *(f"{m[k]:.3g}" if m.get(k) is not None else "-"
                                       for k in ("snr", "cnr", "mssim")))
    console.print(table)
    for phantom, rate in result["failure_rate"].items():
        console.print(f"failure rate {phantom}: {100 * rate:.1f} % (NCC with the best image < 0.6)")


def _int_pair(text: str | None, option: str) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        low, high = (int(v) for v in text.split(","))
    except ValueError:
        _fail(f"{option} expects LOW,HIGH (integers), got {text!r}")
        raise
    return low, high


def _write_strain_pngs(store_path: Path, out_dir: Path, coarse: str) -> None:
    from lab.store_figures import strain_figures  # lazy: matplotlib costs ~0.4 s at import

    with _store_errors():
        figures = strain_figures(store_path, out_dir, methods=(coarse,),
                                 name=f"{coarse}_{{pair}}.png")
    truth = " beside the simulated truth" if any(f.with_truth for f in figures) else ""
    console.print(f"{len(figures)} strain PNGs (mm){truth} in {out_dir}", highlight=False)


@app.command("train-flow")
def train_flow(
    out: Annotated[Path, typer.Option(help="model file to write (.safetensors + .json card)")],
    pairs: Annotated[int, typer.Option(help="simulated compression pairs to train on")] = 48,
    epochs: Annotated[int, typer.Option(help="training epochs")] = 6,
    seed: int = 0,
) -> None:
    """Train the GLUENet coarse flow CNN on simulated compression pairs (CPU: minutes)."""
    from analysis.strain.flownet import save_flow_cnn  # lazy: torch, ~1.1 s
    from analysis.strain.synthetic import train_default_flow_cnn  # lazy: torch, as above

    if pairs < 2 or epochs < 1:
        _fail(f"--pairs must be >= 2 and --epochs >= 1, got {pairs}, {epochs}")
    if out.exists():
        _fail(f"{out} exists; refusing to overwrite a model (choose another --out)")
    with console.status("training the flow CNN on simulated pairs"):
        result = train_default_flow_cnn(n_pairs=pairs, epochs=epochs, seed=seed)
    save_flow_cnn(result.model, out, card={"pairs": pairs, "epochs": epochs, "seed": seed,
                                           "validation": result.validation})
    console.print(f"flow CNN written to {out}")
    if result.validation:
        console.print_json(data=result.validation)


# -- data export (lab/export.py) -------------------------------------------------------------------
@app.command("export")
def export(
    store: StorePath,
    fmt: Annotated[str, typer.Option("--format", help="uff (USTB) | mat (MATLAB v7.3) | hdf5")],
    what: Annotated[str | None, typer.Option(
        help="comma-separated items: iq,displacement,maps,labels (default: all the store has)")]
    = None,
    out: Annotated[Path | None, typer.Option(help="output file (default: next to the store, "
                                                  "STORE.uff / .mat / .h5)")] = None,
    block_mb: Annotated[float, typer.Option(help="largest block held in memory (MiB)")] = 64.0,
) -> None:
    """Export a store's IQ, displacement, maps and labels to UFF, MAT v7.3 or HDF5 (streamed)."""
    from lab.export import FORMATS, SUFFIX, export_store  # lazy: xarray + h5py, ~0.7 s

    if fmt not in FORMATS:
        _fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    items = [w.strip() for w in what.split(",") if w.strip()] if what else None
    target = out or store.with_suffix(SUFFIX[fmt])
    with _store_errors(), progress_callback(f"export {fmt}") as progress:
        summary = export_store(store, target, fmt=fmt, what=items,  # type: ignore[arg-type]
                               block_mb=block_mb, progress=progress)
    console.print(f"exported {', '.join(summary['what'])} to {summary['path']}")


# -- data import (lab/importers.py) ----------------------------------------------------------------
import_app = typer.Typer(help="Import data acquired elsewhere into a new session store.",
                         no_args_is_help=True)
app.add_typer(import_app, name="import")

Opt = typer.Option
SourcePath = Annotated[Path, typer.Argument(help="input file (.mat v5/v7.3, .uff/.h5, .npy)")]
OutStore = Annotated[Path, Opt("--out", help="store to create (.zarr)")]
FsOpt = Annotated[float | None, Opt("--sampling-frequency", help="RF rate of the input (Hz)")]
FcOpt = Annotated[float | None, Opt("--center-frequency", help="centre/demodulation freq. (Hz)")]
COpt = Annotated[float | None, Opt("--sound-speed", help="speed of sound (m/s)")]
T0Opt = Annotated[float | None, Opt("--t0", help="time of sample 0 after the transmit (s)")]
PrfOpt = Annotated[float | None, Opt("--prf", help="frame rate (Hz)")]
InitOpt = Annotated[float | None, Opt("--initial-time",
                                      help="time of the first tracked frame after the push (s)")]
VarOpt = Annotated[list[str] | None, Opt("--var", help="KEY=PATH[*scale] variable mapping "
                                                       "(repeatable), e.g. rf=RcvData")]
PhantomOpt = Annotated[str | None, Opt(help="phantom id (default: the file name)")]
GelOpt = Annotated[float | None, Opt(help="gelatin concentration of the phantom (%)")]
EOpt = Annotated[float | None, Opt(help="known Young's modulus of the phantom (kPa)")]
PushOpt = Annotated[float | None, Opt(help="lateral position of the push (mm; ToF needs it)")]


def _grid_mm(text: str, option: str) -> NDArray[np.float64]:
    try:
        start, stop, step = (float(v) for v in text.split(":"))
    except ValueError:
        _fail(f"{option} expects START:STOP:STEP in mm, got {text!r}")
        raise
    if step <= 0 or stop <= start:
        _fail(f"{option}: need STOP > START and STEP > 0, got {text!r}")
    return np.arange(start, stop + step / 2, step) * 1e-3


@import_app.command("channel")
def import_channel_cmd(
    source: SourcePath, out: OutStore,
    depth_mm: Annotated[str, Opt(help="pixel depths START:STOP:STEP (mm)")],
    lateral_mm: Annotated[str | None, Opt(help="pixel laterals START:STOP:STEP (mm); "
                                               "default the element positions")] = None,
    sampling_frequency: FsOpt = None, center_frequency: FcOpt = None, sound_speed: COpt = None,
    t0: T0Opt = None, prf: PrfOpt = None, initial_time: InitOpt = None,
    pitch_mm: Annotated[float | None, Opt(help="element pitch (mm)")] = None,
    angle_deg: Annotated[float | None, Opt(help="plane-wave steering angle (deg)")] = None,
    var: VarOpt = None,
    rf_axes: Annotated[str, Opt(help="axes of the RF array in MATLAB order")]
    = "sample,element,frame",
    f_number: Annotated[float, Opt(help="receive f-number of the beamformer")] = 1.5,
    phantom_id: PhantomOpt = None, gelatin_percent: GelOpt = None,
    youngs_modulus_kpa: EOpt = None, push_lateral_mm: PushOpt = None,
) -> None:
    """Plane-wave channel RF (MAT or UFF) -> beamformed IQ in a new store's `swei` table."""
    from lab.importers import Parameters, import_channel, parse_names  # lazy: ~1.1 s

    with _store_errors():
        given = Parameters(channel_sampling_frequency=sampling_frequency,
                           center_frequency=center_frequency, sound_speed=sound_speed, t0=t0,
                           prf=prf, initial_time=initial_time,
                           angle_rad=None if angle_deg is None else float(np.deg2rad(angle_deg)))
        path = import_channel(
            source, out, depth_m=_grid_mm(depth_mm, "--depth-mm"),
            lateral_m=None if lateral_mm is None else _grid_mm(lateral_mm, "--lateral-mm"),
            parameters=given, names=parse_names(var or []), rf_axes=rf_axes.split(","),
            pitch_m=None if pitch_mm is None else pitch_mm * 1e-3, f_number=f_number,
            phantom_id=phantom_id, gelatin_percent=gelatin_percent,
            youngs_modulus_kpa=youngs_modulus_kpa,
            push_lateral_m=None if push_lateral_mm is None else push_lateral_mm * 1e-3)
    console.print(f"imported {source} -> {path} (swei: 1 sequence); next: elastolab analyze "
                  f"displacement {path}")


@import_app.command("beamformed")
def import_beamformed_cmd(
    source: SourcePath, out: OutStore,
    iq_convention: Annotated[str, Opt(help="baseband (phase referred to 2z/c) | carrier (phase "
                                           "keeps exp(2j pi f 2z/c), e.g. PyMUST)")],
    center_frequency: FcOpt = None, sound_speed: COpt = None, prf: PrfOpt = None,
    initial_time: InitOpt = None, var: VarOpt = None,
    iq_axes: Annotated[str, Opt(help="axes of a MATLAB IQ array")] = "depth,lateral,frame",
    phantom_id: PhantomOpt = None, gelatin_percent: GelOpt = None,
    youngs_modulus_kpa: EOpt = None, push_lateral_mm: PushOpt = None,
) -> None:
    """Beamformed IQ frames (UFF beamformed_data or MAT) -> a new store's `swei` table."""
    from lab.importers import Parameters, import_beamformed, parse_names  # lazy: ~1.1 s

    with _store_errors():
        path = import_beamformed(
            source, out, iq_convention=iq_convention,  # type: ignore[arg-type]
            parameters=Parameters(center_frequency=center_frequency, sound_speed=sound_speed,
                                  prf=prf, initial_time=initial_time),
            names=parse_names(var or []), iq_axes=iq_axes.split(","), phantom_id=phantom_id,
            gelatin_percent=gelatin_percent, youngs_modulus_kpa=youngs_modulus_kpa,
            push_lateral_m=None if push_lateral_mm is None else push_lateral_mm * 1e-3)
    console.print(f"imported {source} -> {path} (swei: 1 sequence)")


@import_app.command("rf-pair")
def import_rf_pair_cmd(
    pre: Annotated[Path, typer.Argument(help="pre-compression frame (.npy) or a .mat with both")],
    out: OutStore,
    post: Annotated[Path | None, typer.Argument(help="post-compression frame (.npy)")] = None,
    sampling_frequency: FsOpt = None, center_frequency: FcOpt = None, sound_speed: COpt = None,
    t0: T0Opt = None,
    line_pitch_mm: Annotated[float | None, Opt(help="distance between RF lines (mm)")] = None,
    var: VarOpt = None, phantom_id: PhantomOpt = None,
) -> None:
    """Pre/post RF frames (depth sample x line) -> a new store's `compression` table."""
    from lab.importers import Parameters, import_rf_pair, parse_names  # lazy: ~1.1 s

    with _store_errors():
        path = import_rf_pair(
            pre, post, out, line_pitch_m=None if line_pitch_mm is None else line_pitch_mm * 1e-3,
            parameters=Parameters(channel_sampling_frequency=sampling_frequency,
                                  center_frequency=center_frequency, sound_speed=sound_speed,
                                  t0=t0), names=parse_names(var or []), phantom_id=phantom_id)
    console.print(f"imported -> {path} (compression: 2 frames); next: elastolab strain {path}")


@app.command("export-onnx")
def export_onnx_cmd(
    model: Annotated[Path, typer.Argument(help="SWEI CNN weights (.safetensors + .json card)")],
    out: Annotated[Path, typer.Option(help="ONNX file to write (its card: OUT.json)")],
) -> None:
    """The SWEI CNN as ONNX (z-scoring inside the graph), checked with onnxruntime vs torch."""
    from analysis.swei_cnn.export_onnx import export_onnx  # lazy: torch, ~1.1 s

    try:
        card = export_onnx(model, out)
    except (FileExistsError, RuntimeError) as exc:
        _fail(str(exc))
        return
    console.print(f"ONNX model written to {out} (card {out}.json); onnxruntime vs torch: max "
                  f"|diff| {card['check']['max_abs_difference_kpa']:.2e} kPa")


# -- datasets across sessions (analysis/datasets) --------------------------------------------------
dataset_app = typer.Typer(help="Several stores as one dataset (a TOML file: stores, roles, "
                               "label sources by gelatin batch).", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
DatasetPath = Annotated[Path, typer.Argument(help="dataset file (.toml, docs/data-exchange.md)")]


@dataset_app.command("check")
def dataset_check(spec: DatasetPath) -> None:
    """Validate a dataset file and list its stores, roles and label sources."""
    from analysis.datasets.spec import load_spec

    with _store_errors():
        parsed = load_spec(spec)
    for entry in parsed.stores:
        console.print(f"{entry.role:10s} {entry.path}  batch {entry.batch or '(own targets)'}")
    for source in parsed.labels:
        console.print(f"labels     {source.store}  batch {source.batch}")


@dataset_app.command("displacement")
def dataset_displacement(
    spec: DatasetPath,
    scheduler: Annotated[str | None, typer.Option(
        help="dask.distributed scheduler address; local Dask threads if absent")] = None,
    workers: Annotated[int | None, typer.Option(help="stores processed at once locally")]
    = None,
) -> None:
    """`analyze displacement` on every store of the dataset, one Dask task per store."""
    from analysis.datasets.runners import run_displacement_all  # lazy: torch, ~1.1 s

    with _store_errors():
        counts = run_displacement_all(spec, scheduler_address=scheduler, num_workers=workers)
    for path, n in counts.items():
        console.print(f"{path}: {n} sequences computed")


@dataset_app.command("train")
def dataset_train(
    spec: DatasetPath,
    out: Annotated[Path, typer.Option(help="model file to write (.safetensors)")],
    window: Annotated[int, typer.Option(help="window size in pixels: 65, 33, 17, 9 or 5")] = 33,
    profile: Annotated[str, typer.Option(help="quick | paper")] = "quick",
    seed: int = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
) -> None:
    """Train the SWEI CNN on the stores with roles train/validation (test: reported)."""
    from analysis.datasets.runners import run_train_dataset  # lazy: torch, ~1.1 s

    if window not in (65, 33, 17, 9, 5) or profile not in ("quick", "paper"):
        _fail(f"--window must be 65|33|17|9|5 and --profile quick|paper, got {window}, "
              f"{profile!r}")
    with _store_errors(), progress_callback(f"train w{window} ({profile})") as progress:
        result = run_train_dataset(spec, window_px=window, profile=profile, out_model_path=out,
                                   seed=seed, device=device, on_progress=progress)
    console.print(f"model written to {out}")
    console.print_json(data=result["metrics"])


@dataset_app.command("predict")
def dataset_predict(
    spec: DatasetPath,
    model: Annotated[Path, typer.Option(help="model file (.safetensors with its .json card)")],
    roles: Annotated[str, typer.Option(help="comma-separated roles to map")] = "test,predict",
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
) -> None:
    """Maps (maps/cnn_kpa) for the stores of the given roles, scored on the batch labels."""
    from analysis.datasets.runners import run_predict_dataset  # lazy: torch, ~1.1 s

    with _store_errors():
        results = run_predict_dataset(spec, model_path=model, roles=roles.split(","),
                                      device=device)
    console.print_json(data={p: r["metrics"]["overall"] if r["metrics"] else "unscored (no "
                             "known modulus)" for p, r in results.items()})


if __name__ == "__main__":
    app()
