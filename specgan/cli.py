"""The ``specgan`` command line: parses arguments, calls library functions, prints with rich. No logic here.

Every user error (:class:`~specgan.errors.SpecganError`) is printed as one line on stderr with exit code 2;
Ctrl-C exits with 130. Anything else is a bug: exit code 1 with a short message (``--debug`` shows the traceback).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from specgan.errors import ConfigError, SpecganError

app = typer.Typer(name="specgan", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Audio style transfer with GANs on mel-spectrogram images.")
out = Console()
err = Console(stderr=True)
_debug = False


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")] = False):
    global _debug
    _debug = debug


def command(fn: Callable) -> Callable:
    """Register ``fn`` as a sub-command and turn exceptions into one-line messages and exit codes."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpecganError as e:
            err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; nothing half-written was kept", highlight=False)
            raise typer.Exit(130) from None
        except Exception as e:
            if _debug:
                raise
            err.print(f"internal error: {type(e).__name__}: {e} (run 'specgan --debug ...' for the traceback, and "
                      f"please report it)", highlight=False, soft_wrap=True, markup=False)
            raise typer.Exit(1) from None
    return app.command()(wrapper)


# ---------------------------------------------------------------------------------------------------------------
# Options shared by the audio commands. Flags override the recipe's [audio] table; --set reaches every key.

Recipe = Annotated[Optional[Path], typer.Option("--recipe", "-r", help="TOML recipe; its [audio] table is used.",
                                                dir_okay=False)]
SetItems = Annotated[Optional[list[str]], typer.Option(
    "--set", "-s", metavar="KEY=VALUE", help="Override any [audio] key, e.g. --set f_max=8000 (repeatable).")]
SampleRate = Annotated[Optional[int], typer.Option(help="Target sample rate in Hz [default: 22050].")]
NFft = Annotated[Optional[int], typer.Option("--n-fft", help="FFT size in samples [default: 1024].")]
HopLength = Annotated[Optional[int], typer.Option(help="STFT hop in samples [default: 256].")]
NMels = Annotated[Optional[int], typer.Option("--n-mels", help="Mel bands, the image height [default: 80].")]
Device = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda or cuda:N.")]


def _audio_params(recipe: Path | None, set_items: list[str] | None, **flags: Any):
    from specgan.audio.params import resolve_audio_params
    from specgan.recipe import parse_overrides

    overrides = parse_overrides(set_items or [])
    audio = overrides.pop("audio", {})
    audio.update({k: overrides.pop(k) for k in list(overrides) if not isinstance(overrides[k], dict)})
    if overrides:
        raise ConfigError(f"--set {next(iter(overrides))}.…: only [audio] keys can be set here")
    audio.update({k: v for k, v in flags.items() if v is not None})
    return resolve_audio_params(recipe=recipe, overrides=audio)


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available (use --device cpu)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"--device {name}: expected auto, cpu, cuda or cuda:N")
    return name


# ---------------------------------------------------------------------------------------------------------------
@command
def prep(
    src: Annotated[Path, typer.Argument(help="Folder of audio files; each sub-folder is a domain.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Dataset folder to create or update.")],
    recipe: Recipe = None,
    set_items: SetItems = None,
    sample_rate: SampleRate = None,
    n_fft: NFft = None,
    hop_length: HopLength = None,
    n_mels: NMels = None,
    frames: Annotated[Optional[int], typer.Option(help="Chunk width in frames [default: 128].")] = None,
    chunk_hop: Annotated[Optional[int], typer.Option(help="Frames between chunks [default: frames // 2].")] = None,
    trim_silence: Annotated[Optional[bool], typer.Option("--trim/--no-trim",
                                                         help="Trim leading/trailing silence [default: trim].")] = None,
    pad_short: Annotated[Optional[bool], typer.Option("--pad-short/--skip-short",
                                                      help="Pad clips shorter than a chunk [default: skip].")] = None,
    domains: Annotated[Optional[str], typer.Option(help="Comma-separated domains to include [default: all].")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="Files processed in parallel [default: all cores].")] = None,
    overwrite: Annotated[bool, typer.Option(help="Rebuild OUT even if it was made with other parameters.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
):
    """Turn a folder of recordings into fixed-size normalised log-mel chunks (a dataset folder)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from specgan.data.prep import prep as run_prep

    params = _audio_params(recipe, set_items, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                           n_mels=n_mels, frames=frames, chunk_hop=chunk_hop, trim_silence=trim_silence,
                           pad_short=pad_short)
    wanted = tuple(d.strip() for d in domains.split(",") if d.strip()) if domains else None
    progress = Progress(TextColumn("prep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("eta"), TimeRemainingColumn(), console=err, disable=quiet, transient=True)
    with progress:
        task = progress.add_task("files", total=None)
        report = run_prep(src, output, params=params, domains=wanted, workers=workers or os.cpu_count() or 1,
                          overwrite=overwrite, on_start=lambda n: progress.update(task, total=n),
                          on_file=lambda _path: progress.advance(task))
    _print_prep_summary(report)


def _print_prep_summary(report) -> None:
    m = report.manifest
    table = Table(title=f"dataset {report.out}", title_justify="left")
    for name, justify in [("domain", "left"), ("label", "right"), ("files", "right"), ("chunks", "right"),
                          ("hours", "right"), ("skipped", "right")]:
        table.add_column(name, justify=justify)
    for d in m["domains"]:
        table.add_row(d["name"], str(d["label"]), str(d["files"]), str(d["chunks"]), f"{d['seconds'] / 3600:.3f}",
                      str(d["skipped"]))
    table.add_row("total", "", str(sum(d["files"] for d in m["domains"])), str(m["shape"][0]),
                  f"{sum(d['seconds'] for d in m['domains']) / 3600:.3f}", str(len(m["skipped"])), style="bold")
    out.print(table)
    a = m["audio"]
    out.print(f"chunks of {a['n_mels']} mels × {a['frames']} frames at {a['sample_rate']} Hz "
              f"(n_fft {a['n_fft']}, hop {a['hop_length']}); dB range [{a['min_db']}, {a['max_db']}] → [-1, 1]",
              highlight=False)
    state = "up to date, nothing to do" if report.up_to_date else \
        f"processed {report.processed} file(s), re-used {report.reused} unchanged"
    out.print(state, highlight=False)
    if m["skipped"]:
        out.print(f"skipped {len(m['skipped'])} file(s):", style="yellow", highlight=False)
        for s in m["skipped"][:20]:
            out.print(f"  {s['path']}: {s['reason']}", highlight=False, markup=False, soft_wrap=True)
        if len(m["skipped"]) > 20:
            out.print(f"  … and {len(m['skipped']) - 20} more (see {report.out}/manifest.json)", highlight=False)


@command
def reconstruct(
    src: Annotated[Path, typer.Argument(help="An audio file.", dir_okay=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the rebuilt audio (.wav/.flac).")],
    iters: Annotated[int, typer.Option("--iters", "-n", min=1, help="Griffin-Lim iterations.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the random initial phase.")] = 0,
    recipe: Recipe = None,
    set_items: SetItems = None,
    sample_rate: SampleRate = None,
    n_fft: NFft = None,
    hop_length: HopLength = None,
    n_mels: NMels = None,
    device: Device = "auto",
):
    """Audio → log-mel → audio: hear the ceiling Griffin-Lim puts on any conversion."""
    from specgan.audio.io import AUDIO_SUFFIXES
    from specgan.reconstruct import reconstruct_file

    if not src.is_file():
        raise SpecganError(f"{src}: no such file")
    if output.exists() and output.resolve() == src.resolve():
        raise SpecganError(f"{output}: is the input file; choose another output so the original is kept")
    if output.suffix.lower() not in AUDIO_SUFFIXES:
        raise SpecganError(f"{output}: unsupported output format (use .wav, .flac or .ogg)")
    params = _audio_params(recipe, set_items, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                           n_mels=n_mels)
    r = reconstruct_file(src, output, params=params, n_iter=iters, seed=seed, device=resolve_device(device))
    out.print(f"wrote {r.output} ({r.seconds:.2f} s at {r.sample_rate} Hz; input was {r.source_rate} Hz)",
              highlight=False)
    out.print(f"spectral convergence {r.spectral_convergence:.4f} after {r.n_iter} Griffin-Lim iterations "
              f"(0 is perfect; inverse took {r.elapsed:.2f} s on {r.device})", highlight=False)


def main() -> None:
    app(prog_name="specgan")


if __name__ == "__main__":
    sys.exit(main())
