"""The ``elastolab`` command line. Commands are thin: parse, build, call a library function."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from analysis.runners import run_displacement, run_labels, run_tof
from drivers.sim.lab import serve
from lab.config import ConfigError, load_config
from lab.demo_context import PROFILES, DemoError
from lab.info import print_info
from lab.logs import console, setup_logging
from lab.progress import progress_callback
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


@app.callback()
def _main(
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
    repair: Annotated[bool, typer.Option(help="trim rows left by interrupted writes and "
                                               "remove temporary files (never committed data)")]
    = False,
) -> None:
    """Check a store: index vs arrays, missing or truncated chunks, NaN/Inf, schema.

    Exit code 0 only when the store is clean.
    """
    report = verify_store(store, repair=repair)
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
    except StoreError as exc:
        _fail(str(exc))


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
    method: Annotated[str, typer.Option(help="loupas | kasai")] = "loupas",
    reference: Annotated[str, typer.Option(help="fixed | progressive")] = "fixed",
    scheduler: Annotated[str | None, typer.Option(
        help="dask.distributed scheduler address (tcp://host:8786); local threads if absent")]
    = None,
    workers: Annotated[int | None, typer.Option(help="local worker threads")] = None,
) -> None:
    """Axial displacement of every SWEI sequence (Dask, resumable) -> the `displacement` table."""
    if method not in ("loupas", "kasai") or reference not in ("fixed", "progressive"):
        _fail(f"--method must be loupas|kasai and --reference fixed|progressive, got "
              f"{method!r}, {reference!r}")
    with _store_errors(), progress_callback("displacement") as progress:
        n = run_displacement(store, method=method, reference=reference,  # type: ignore[arg-type]
                             scheduler_address=scheduler, num_workers=workers, progress=progress)
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
    for col in ("gelatin %", "E (kPa)", "95 % CI", "runs used", "rejected", "strain range"):
        table.add_column(col)
    for lab in labels:
        lo, hi = lab["ci95_kpa"]
        s0, s1 = lab["strain_range"]
        table.add_row(f"{lab['gelatin_percent']:g}", f"{lab['youngs_modulus_kpa']:.2f}",
                      f"{lo:.2f}-{hi:.2f}", str(len(lab["runs_used"])),
                      str(len(lab["runs_rejected"])), f"{100 * s0:.1f}-{100 * s1:.1f} %")
    console.print(table)


@analyze_app.command("tof")
def analyze_tof(
    store: StorePath,
    alpha: Annotated[float | None, typer.Option(
        help="E scale factor; default: calibrated on the labels (0.75 without labels)")] = None,
) -> None:
    """Time-of-flight elasticity maps -> maps/tof_kpa (NaN where rejected)."""
    with _store_errors(), progress_callback("time of flight") as progress:
        used = run_tof(store, alpha=alpha, progress=progress)
    console.print(f"tof maps written (alpha = {used:.3f})")


# -- simulators ------------------------------------------------------------------------------------
@sim_app.command("serve")
def sim_serve(
    kind: Annotated[str, typer.Argument(help="hexapod (GCS over TCP) | netft (RDT over UDP)")],
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0 = any free port)")] = 0,
    seed: int = 0,
) -> None:
    """Run a wire-protocol simulator in real time until Ctrl-C."""
    if kind not in ("hexapod", "netft"):
        _fail(f"unknown simulator {kind!r}; choose hexapod or netft")
    serve(kind, host=host, port=port, seed=seed)  # type: ignore[arg-type]


@contextmanager
def _store_errors() -> Iterator[None]:
    """Turn expected user-facing errors into one red line and exit code 2."""
    try:
        yield
    except (StoreError, ValueError, FileNotFoundError) as exc:
        _fail(str(exc))


# -- SWEI CNN --------------------------------------------------------------------------------------
@app.command()
def train(
    store: StorePath,
    window: Annotated[int, typer.Option(help="window size in pixels: 65, 33, 17, 9 or 5")] = 33,
    profile: Annotated[str, typer.Option(help="quick (CPU) | paper (the paper's recipe)")]
    = "quick",
    out: Annotated[Path | None, typer.Option(help="model file (.safetensors); default "
                                                  "STORE/models/swei-cnn-w{window}.safetensors")]
    = None,
    split: Annotated[str, typer.Option(help="positions (4-fold) | concentration (leave one "
                                            "out)")] = "positions",
    fold: Annotated[int, typer.Option(help="fold index for --split positions")] = 0,
    held_out_percent: Annotated[float | None, typer.Option(
        help="gelatin % left out for --split concentration")] = None,
    seed: int = 0,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    checkpoint: Annotated[Path | None, typer.Option(help="checkpoint file (resumable)")] = None,
    resume: Annotated[bool, typer.Option(help="continue from --checkpoint")] = False,
) -> None:
    """Train the spatio-temporal 3D DenseNet on a store's displacement."""
    from analysis.swei_cnn.runners import run_train  # lazy: torch, ~1.1 s

    if window not in (65, 33, 17, 9, 5):
        _fail(f"--window must be one of 65, 33, 17, 9, 5; got {window}")
    if profile not in ("quick", "paper") or split not in ("positions", "concentration"):
        _fail(f"--profile must be quick|paper and --split positions|concentration; got "
              f"{profile!r}, {split!r}")
    model_path = out or store / "models" / f"swei-cnn-w{window}.safetensors"
    model_path.parent.mkdir(parents=True, exist_ok=True)

    def on_epoch(metrics: object) -> None:
        log.info("epoch %s", metrics)

    with _store_errors(), progress_callback(f"train w{window} ({profile})") as progress:
        result = run_train(store, window_px=window, profile=profile,  # type: ignore[arg-type]
                           out_model_path=model_path, split=split,  # type: ignore[arg-type]
                           fold=fold, held_out_percent=held_out_percent, seed=seed,
                           device=device, checkpoint_path=checkpoint, resume=resume,
                           on_epoch=on_epoch, on_progress=progress)
    console.print(f"model written to {model_path}")
    console.print_json(data=result["metrics"])


@app.command()
def predict(
    store: StorePath,
    model: Annotated[Path, typer.Option(help="model file (.safetensors with its .json card)")],
    stride: Annotated[int, typer.Option(help="predict every n-th pixel")] = 1,
    device: Annotated[str, typer.Option(help="cpu | cuda")] = "cpu",
    png: Annotated[Path | None, typer.Option(help="directory for PNG maps (first sequences)")]
    = None,
    max_memory_mb: Annotated[float, typer.Option(help="memory budget of dense inference")]
    = 1024.0,
) -> None:
    """Full elasticity maps of every sequence -> maps/cnn_kpa (and PNGs)."""
    from analysis.swei_cnn.runners import run_predict  # lazy: torch, ~1.1 s

    with _store_errors(), progress_callback("predict") as progress:
        result = run_predict(store, model_path=model, stride=stride, device=device,
                             max_memory_mb=max_memory_mb, on_progress=progress)
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
    profile: Annotated[str, typer.Option(help="default (laptop, minutes) | study (larger CPU "
                                              "run, ~1 h) | paper (the paper's sizes and "
                                              "recipe, GPU) | smoke (seconds)")]
    = "default",
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no progress bars")] = False,
) -> None:
    """The simulated study end to end: acquisition, labels, displacement, ToF, CNN, strain, report.

    Writes DIR/session.zarr, DIR/report.html, DIR/metrics.json and DIR/figures/. Running again
    into the same DIR resumes after the last completed stage; a DIR made with another profile (or
    holding anything else) is refused, so results are never mixed.
    """
    from lab.demo import run_demo  # lazy: torch, ~1.1 s

    if profile not in PROFILES:
        _fail(f"--profile must be one of {sorted(PROFILES)}, got {profile!r}")
    try:
        run_demo(out, profile=profile, show_progress=not no_progress)  # type: ignore[arg-type]
    except DemoError as exc:
        _fail(str(exc))
    console.print(f"[green]demo complete[/green]: open {out / 'report.html'}")


# -- strain imaging --------------------------------------------------------------------------------
@app.command()
def strain(
    store: StorePath,
    coarse: Annotated[str, typer.Option(help="coarse estimator before GLUE: dp | cnn")] = "dp",
    model: Annotated[Path | None, typer.Option(
        help="flow CNN weights for --coarse cnn (see `elastolab train-flow`)")] = None,
    png: Annotated[Path | None, typer.Option(help="directory for one PNG per pair")] = None,
) -> None:
    """Strain images of consecutive compression frames -> strain/<coarse>/ arrays and metrics."""
    from analysis.strain.runners import run_strain  # lazy: torch, ~1.1 s

    if coarse not in ("dp", "cnn"):
        _fail(f"--coarse must be dp or cnn, got {coarse!r}")
    if coarse == "cnn" and model is None:
        _fail("--coarse cnn needs --model (train one with `elastolab train-flow`)")
    with _store_errors(), progress_callback(f"strain ({coarse}+GLUE)") as progress:
        result = run_strain(store, coarse=coarse, model_path=model,  # type: ignore[arg-type]
                            out_png_dir=png, progress=progress)
    from rich.table import Table as RichTable

    table = RichTable(title=f"{coarse.upper()}+GLUE strain")
    for col in ("pair", "SNR", "CNR", "MSSIM"):
        table.add_column(col)
    for (a, b), m in zip(result["pairs"], result["metrics"], strict=True):
        table.add_row(f"{a} -> {b}", *(f"{m[k]:.3g}" if m.get(k) is not None else "-"
                                       for k in ("snr", "cnr", "mssim")))
    console.print(table)
    for phantom, rate in result["failure_rate"].items():
        console.print(f"failure rate {phantom}: {100 * rate:.1f} % (NCC with the best image < 0.6)")


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
