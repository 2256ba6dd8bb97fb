"""The ``specgan`` command line: parses arguments, calls library functions, prints with rich. No logic here.

Every user error (:class:`~specgan.errors.SpecganError`) is printed as one line on stderr with exit code 2;
Ctrl-C exits with 130, SIGTERM with 143. Anything else is a bug: exit code 1 with a short message (``--debug``
shows the traceback).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import io
import math
import os
import re
import shlex
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
import typer.core
from rich.console import Console
from rich.table import Table
from rich.text import Text

from specgan.errors import ConfigError, InterruptedWithWorkKept, SpecganError, SpecganWarning, Terminated
from specgan.recipe import MAX_SEED

#: Click's usage error (a bad option value, a missing argument, an unknown command), reached through typer's public
#: BadParameter: typer has carried its own copy of click since 0.2x, and plain click before.
UsageError = typer.BadParameter.__mro__[1]


class OneLineUsageError(UsageError.__mro__[1]):  # a ClickException, printed as one line with exit code 2
    exit_code = 2

    def show(self, file=None) -> None:
        print_error(self.message)


@contextlib.contextmanager
def _usage_errors_in_one_line(ctx=None) -> Iterator[None]:
    """Click prints a usage error as usage, hint and message on four lines; specgan's rule is one line naming
    the option and value (with the help command in it). ``specgan`` alone still prints the help. An error the
    option parser raises without a context (an option given too few values) is placed under the command that
    ``ctx``, the top-level context, was invoking."""
    try:
        yield
    except UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            raise
        if e.ctx is not None:
            path = e.ctx.command_path
        elif ctx is not None:
            path = " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))
        else:
            raise
        given = _given_value(e)
        raise OneLineUsageError(f"{path}: {e.format_message().rstrip('.')}{given} (see '{path} --help')") from None


def _given_value(e: Exception) -> str:
    """``", got VALUE"`` where the parser's message leaves out the value it refused: typer since 0.2x validates
    options with pydantic, whose messages ("Input should be greater than or equal to 1") do not repeat the input,
    while click's own ("0 is not in the range x>=1") did."""
    errors = getattr(e.__cause__, "errors", None)
    try:
        value = errors()[0]["input"] if callable(errors) else None
    except Exception:  # another library's error type: nothing to add
        return ""
    # As a whole word: "0" is in "greater than or equal to 100", which had left the 0 unsaid.
    said = value is not None and re.search(rf"(?<![\w.-]){re.escape(str(value))}(?![\w.])", e.format_message())
    return "" if value is None or said else f", got {value}"


class SpecganGroup(typer.core.TyperGroup):
    """The top-level command group: parsing errors in one line."""

    def make_context(self, *args, **kwargs):
        with _usage_errors_in_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _usage_errors_in_one_line(ctx):
            return super().invoke(ctx)


app = typer.Typer(name="specgan", cls=SpecganGroup, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  rich_markup_mode=None,  # help text is plain: "[default: 22050]" must not be read as markup
                  help="Audio style transfer with GANs on mel-spectrogram images.")


class _Console(Console):
    """rich's Console, except when the reader of its stream goes away (``specgan train ... | head``): rich then
    exits with code 1 at the next line printed, which stopped a training between checkpoints and reported a bug
    (exit code 1). This one goes quiet instead, sends the stream's later writes to /dev/null, and lets the command
    finish its work and exit as that work ends."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.file.fileno())  # also spares the interpreter's own flush at exit
            os.close(devnull)
        except (OSError, ValueError, io.UnsupportedOperation):  # a stream without a file descriptor
            pass


out = _Console()
err = _Console(stderr=True)
_debug = False


def say(text: str, *, to: Console = out, style: str | None = None) -> None:
    """Print a message as one line of plain text: no markup (a path may hold brackets, which rich would read as
    tags), no highlighting, no hard wrap at the terminal's width (a path broken across lines cannot be copied), and
    a line break inside it written out (:func:`one_line`)."""
    to.print(one_line(text), style=style, highlight=False, markup=False, soft_wrap=True)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import PackageNotFoundError, version

        try:
            say(f"specgan {version('specgan')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            say("specgan (not installed: no version recorded)")
        raise typer.Exit()


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of internal errors.")] = False,
          _version: Annotated[bool, typer.Option("--version", help="Print specgan's version and exit.",
                                                 callback=_print_version, is_eager=True)] = False):
    global _debug
    _debug = debug
    warnings.showwarning = _show_warning


_shown_warnings: set[str] = set()
_default_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """specgan's own warnings as one ``warning:`` line each, once per command; other libraries' as Python shows
    them."""
    if not issubclass(category, SpecganWarning):
        _default_showwarning(message, category, filename, lineno, file, line)
    elif str(message) not in _shown_warnings and not other_rank():
        _shown_warnings.add(str(message))
        warn(str(message))


def one_line(text: str) -> str:
    """``text`` with line breaks written as ``\\n`` and ``\\r``: a message names files, and a file name may hold
    them, which had split a one-line error in two."""
    return text.replace("\n", "\\n").replace("\r", "\\r")


def print_error(message: str) -> None:
    """A user error's one line on stderr: ``error: MESSAGE``."""
    err.print(Text.assemble(("error:", "bold red"), f" {one_line(message)}"), highlight=False, soft_wrap=True)


def warn(text: str) -> None:
    """A warning's line on stderr: ``warning: TEXT``, in yellow on a terminal."""
    say(f"warning: {text}", to=err, style="yellow")


def other_rank() -> bool:
    """Whether this process is a rank other than 0 under torchrun (``RANK`` set by it)."""
    return os.environ.get("RANK", "0") != "0"


def guarded(fn: Callable | None = None, *, loads_torch: bool = False) -> Callable:
    """Turn exceptions into one-line messages and exit codes. ``loads_torch``: the command imports torch, which is
    then imported first, with Ctrl-C and SIGTERM held back until it is in (see :func:`_signals_deferred`)."""
    if fn is None:
        return lambda f: guarded(f, loads_torch=loads_torch)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            with _sigterm_as_interrupt():
                with _signals_deferred():  # (which also releases those held since start-up)
                    if loads_torch:
                        importlib.import_module("torch")
                return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except SpecganError as e:
            # Under torchrun every rank meets the same bad input: one of them says so (unless it may be gone).
            if not other_rank() or getattr(e, "every_rank", False):
                print_error(str(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt as e:
            if not other_rank():
                what = "stopped by SIGTERM" if getattr(e, "exit_code", 130) == 143 else "interrupted"
                kept = e if isinstance(e, InterruptedWithWorkKept) else "nothing half-written was kept"
                say(f"{what}; {kept}", to=err)
            raise typer.Exit(getattr(e, "exit_code", 130)) from None
        except Exception as e:
            if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:
                # A path with a name longer than the file system takes (an --output, a recipe's output.dir or name)
                # fails wherever it is first looked at: the user's input, not a bug. (Outputs are written atomically,
                # so those written before stay whole.)
                if not other_rank():
                    where = e.filename if e.filename is not None else "a path given"
                    print_error(f"{where}: a name in this path is too long for the file system ({e.strerror})")
                raise typer.Exit(2) from None
            if _debug:
                raise
            say(f"internal error: {type(e).__name__}: {e} (run 'specgan --debug ...' for the traceback, and "
                f"please report it)", to=err)
            raise typer.Exit(1) from None
    return wrapper


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`~specgan.errors.Terminated` (a KeyboardInterrupt) in the main thread while a command
    runs, so that it stops as after Ctrl-C: temporary files removed, what was written before kept, one line said.
    (Training installs its own handler while it steps: it checkpoints first.)"""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield  # (a SIGTERM ignored by whoever started us stays ignored)
        return

    def terminate(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


#: The signal mask from before ``specgan.__main__.run`` held Ctrl-C and SIGTERM back, until a command restores it.
mask_at_start: set[signal.Signals] | None = None


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Ctrl-C and SIGTERM blocked while the block runs; one that came meanwhile is delivered when it ends, and acts
    as it would have. For importing torch: its C initialisation imports numpy and discards any exception from that
    import, so a Ctrl-C in a command's first half second was lost (the command ran on), or left torch half-imported
    (an ImportError, a RecursionError, an abort). The signals are blocked in the process's signal mask rather than
    caught by a Python handler, which torch's import did not always let run; threads started meanwhile keep them
    blocked, so they reach the main thread."""
    global mask_at_start
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        if mask_at_start is not None:  # held since start-up (specgan.__main__.run): the mask from before that
            previous, mask_at_start = mask_at_start, None
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a pending signal is delivered here


def command(fn: Callable | None = None, *, name: str | None = None) -> Callable:
    """Register ``fn`` as a sub-command of ``specgan`` (named ``name`` or after the function), with
    :func:`guarded` error handling; every such command computes with torch."""
    if fn is None:
        return lambda f: command(f, name=name)
    return app.command(name)(guarded(fn, loads_torch=True))


# ---------------------------------------------------------------------------------------------------------------
# Options shared by the audio commands. Flags override the recipe's [audio] table; --set reaches every key.

Recipe = Annotated[Optional[Path], typer.Option("--recipe", "-r", help="TOML recipe; its [audio] table is used.",
                                                dir_okay=False)]
SetItems = Annotated[Optional[list[str]], typer.Option(
    "--set", "-s", metavar="KEY=VALUE", help="Override any [audio] key, e.g. --set f_max=8000 (repeatable).")]
SampleRate = Annotated[Optional[int], typer.Option(
    help="Target sample rate in Hz [default: the recipe's, else 22050].")]
NFft = Annotated[Optional[int], typer.Option("--n-fft", help="FFT size in samples [default: the recipe's, else 1024].")]
HopLength = Annotated[Optional[int], typer.Option(help="STFT hop in samples [default: the recipe's, else 256].")]
NMels = Annotated[Optional[int], typer.Option("--n-mels",
                                              help="Mel bands, the image height [default: the recipe's, else 80].")]
Overwrite = Annotated[bool, typer.Option(help="Replace output files that exist (refused otherwise, so that no "
                                                "recording is replaced by mistake).")]
Device = Annotated[str, typer.Option(help="auto (CUDA, else Apple's MPS, when present), cpu, cuda, cuda:N or "
                                               "mps.")]


def compute_device(device: str) -> tuple[Any, str | None]:
    """The torch device a command computes on (``--device``), and a line for the user or None. On a CPU whose cores
    other programs keep busy, torch is given only the free ones (a command with all cores' threads on two cores,
    one busy, ran 3-11x slower), and the line says so; a command prints it once its input has been accepted, so
    that an error stays the only line."""
    from specgan.device import fit_cpu_threads, resolve_device

    resolved = resolve_device(device)
    return resolved, fit_cpu_threads() if resolved.type == "cpu" else None


def note(text: str | None) -> None:
    """Print ``text`` (e.g. :func:`compute_device`'s line) on stderr, if there is one."""
    if text:
        say(text, to=err)


def _audio_params(recipe: Path | None, set_items: list[str] | None, **flags: Any):
    import dataclasses

    from specgan.audio.params import AudioParams, resolve_audio_params
    from specgan.recipe import as_written, parse_overrides, read_toml

    overrides = parse_overrides(set_items or [])
    audio = overrides.pop("audio", {})
    if not isinstance(audio, dict):  # --set audio=5: the table itself given a value
        raise ConfigError(f"--set audio={as_written(audio)}: [audio] is a table; set its keys, e.g. --set "
                          f"audio.n_fft=1024 (or --set n_fft=1024)")
    audio.update({k: overrides.pop(k) for k in list(overrides) if not isinstance(overrides[k], dict)})
    if overrides:
        key = next(iter(overrides))
        if key in {f.name for f in dataclasses.fields(AudioParams)}:  # --set n_fft.x=1
            raise ConfigError(f"--set {key}.…: {key} is an [audio] value, not a table; e.g. --set {key}=VALUE")
        raise ConfigError(f"--set {key}.…: only [audio] keys can be set here")
    params = resolve_audio_params(recipe=recipe, overrides=audio, flags=flags)
    if recipe is not None and set(read_toml(recipe)) - {"audio"}:
        from specgan.train.config import load_recipe

        # a whole training recipe: a mistake elsewhere in it is reported now, not at training
        kind = load_recipe(recipe).data.kind
        if kind != "spectrogram":  # an image recipe has no audio parameters to give
            raise ConfigError(f"{recipe}: a recipe for images (data.kind = \"{kind}\"), not spectrograms; give a "
                              f"spectrogram recipe (data.kind = \"spectrogram\"), e.g. recipes/voice_convert.toml")
    return params


# ---------------------------------------------------------------------------------------------------------------
@command
def prep(
    src: Annotated[Path, typer.Argument(metavar="SRC_DIR", help="Folder of audio files; each sub-folder is a domain.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Dataset folder to create or update.")],
    recipe: Recipe = None,
    set_items: SetItems = None,
    sample_rate: SampleRate = None,
    n_fft: NFft = None,
    hop_length: HopLength = None,
    n_mels: NMels = None,
    frames: Annotated[Optional[int],
                      typer.Option(help="Chunk width in frames [default: the recipe's, else 128].")] = None,
    chunk_hop: Annotated[Optional[int], typer.Option(
        help="Frames between chunks [default: the recipe's, else frames // 2].")] = None,
    trim_silence: Annotated[Optional[bool], typer.Option(
        "--trim/--no-trim", help="Trim leading/trailing silence [default: the recipe's, else trim].")] = None,
    pad_short: Annotated[Optional[bool], typer.Option("--pad-short/--skip-short",
                                                      help="Pad clips shorter than a chunk with silence (one whose "
                                                           "own frames are mostly quiet is still skipped) "
                                                           "[default: the recipe's, else skip].")] = None,
    domains: Annotated[Optional[str], typer.Option(help="Comma-separated domains to include [default: all].")] = None,
    domain_pattern: Annotated[Optional[str], typer.Option(
        help="Take each file's domain from its name: a regex whose first group is the domain, e.g. '^(\\d+)_' "
             "[default: the sub-folder].")] = None,
    workers: Annotated[Optional[int],
                       typer.Option(min=1, help="Files processed in parallel [default: all cores].")] = None,
    overwrite: Annotated[bool, typer.Option(
        help="Rebuild the dataset from the recordings, re-using none of it (also one made with other parameters, "
             "or damaged).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
):
    """Turn a folder of recordings into fixed-size normalised log-mel chunks (a dataset folder)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from specgan.data.prep import prep as run_prep

    params = _audio_params(recipe, set_items, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                           n_mels=n_mels, frames=frames, chunk_hop=chunk_hop, trim_silence=trim_silence,
                           pad_short=pad_short)
    wanted = tuple(d.strip() for d in domains.split(",") if d.strip()) if domains is not None else None
    if wanted == ():  # it had meant every domain
        raise ConfigError(f"--domains {shlex.quote(domains)}: names no domain; leave it out for all of them")
    progress = Progress(TextColumn("prep"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("eta"), TimeRemainingColumn(), console=err, transient=True,
                        # off the terminal a transient bar shows nothing, but leaves an empty line before any error
                        disable=quiet or not err.is_terminal)
    with progress:
        task = progress.add_task("files", total=None)
        report = run_prep(src, output, params=params, domains=wanted, domain_pattern=domain_pattern,
                          workers=workers or os.cpu_count() or 1, overwrite=overwrite,
                          on_start=lambda n: progress.update(task, total=n),
                          on_file=lambda _path: progress.advance(task))
    _print_prep_summary(report)


def _duration(seconds: float) -> str:
    """``h:mm:ss`` (a dataset's length), or seconds with a decimal below a minute: 0.8 s of audio is not 0.000 h."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _print_prep_summary(report) -> None:
    m = report.manifest
    table = Table(title=f"dataset {report.out}", title_justify="left")
    for name, justify in [("domain", "left"), ("label", "right"), ("files", "right"), ("chunks", "right"),
                          ("duration", "right"), ("skipped", "right")]:
        table.add_column(name, justify=justify)
    for d in m["domains"]:
        table.add_row(d["name"], str(d["label"]), str(d["files"]), str(d["chunks"]), _duration(d["seconds"]),
                      str(d["skipped"]))
    table.add_row("total", "", str(sum(d["files"] for d in m["domains"])), str(m["shape"][0]),
                  _duration(sum(d["seconds"] for d in m["domains"])), str(len(m["skipped"])), style="bold")
    out.print(table)
    a = m["audio"]
    say(f"chunks of {a['n_mels']} mels × {a['frames']} frames at {a['sample_rate']} Hz "
        f"(n_fft {a['n_fft']}, hop {a['hop_length']}); dB range [{a['min_db']}, {a['max_db']}] → [-1, 1]")
    state = "up to date, nothing to do" if report.up_to_date else \
        f"processed {report.processed} file(s), re-used {report.reused} unchanged"
    say(state)
    if report.removed:
        gone = f" (domain(s) {', '.join(report.removed_domains)} with them)" if report.removed_domains else ""
        say(f"removed {len(report.removed)} file(s) of the previous dataset, no longer found or selected{gone}: "
            f"{', '.join(report.removed[:5])}{', ...' if len(report.removed) > 5 else ''}", style="yellow")
    for note in report.notes:
        warn(note)
    if m["skipped"]:
        say(f"skipped {len(m['skipped'])} file(s):", style="yellow")
        for s in m["skipped"][:20]:
            say(f"  {s['path']}: {s['reason']}")
        if len(m["skipped"]) > 20:
            say(f"  … and {len(m['skipped']) - 20} more (see {report.out}/manifest.json)")


@command
def reconstruct(
    src: Annotated[Path, typer.Argument(metavar="AUDIO_FILE", help="An audio file.", dir_okay=False)],
    output: Annotated[str, typer.Option(  # a string: a trailing / says "a folder" (a Path drops it)
        "--output", "-o", help="Where to write the rebuilt audio (.wav, .flac or .ogg); a folder (one that exists, "
                               "or given with a trailing /) gets <stem>.reconstructed.wav.")],
    iters: Annotated[int, typer.Option("--iters", "-n", min=1, help="Griffin-Lim iterations.")] = 32,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of the random initial phase.")] = 0,
    recipe: Recipe = None,
    set_items: SetItems = None,
    sample_rate: SampleRate = None,
    n_fft: NFft = None,
    hop_length: HopLength = None,
    n_mels: NMels = None,
    overwrite: Overwrite = False,
    device: Device = "auto",
):
    """Audio → log-mel → audio: hear the ceiling Griffin-Lim puts on any conversion."""
    from specgan.audio.io import OUTPUT_FORMATS, check_output_name, check_output_rate, refuse_existing
    from specgan.reconstruct import reconstruct_file

    if not src.is_file():
        raise SpecganError(f"{src}: not a regular file" if src.exists() else f"{src}: no such file")
    into_folder = output.endswith(("/", os.sep))
    output = Path(output)
    check_output_name(output)  # (a name too long for a file is no folder either)
    if into_folder or output.is_dir():
        output = output / f"{src.stem}.reconstructed.wav"
        check_output_name(output)
    if output.exists() and os.path.samefile(output, src):
        raise SpecganError(f"{output}: is the input file; choose another output so the original is kept")
    if output.suffix.lower() not in OUTPUT_FORMATS:
        raise SpecganError(f"{output}: unsupported output format (use .wav, .flac or .ogg)")
    refuse_existing([output], overwrite=overwrite)
    params = _audio_params(recipe, set_items, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                           n_mels=n_mels)
    check_output_rate(output, params.sample_rate)
    dev, threads = compute_device(device)
    r = reconstruct_file(src, output, params=params, n_iter=iters, seed=seed, device=str(dev))
    note(threads)
    say(f"wrote {r.output} ({r.seconds:.2f} s at {r.sample_rate} Hz; input was {r.source_rate} Hz)")
    say(f"spectral convergence {_convergence_text(r.spectral_convergence)} after {r.n_iter} Griffin-Lim "
        f"iterations (0 is perfect; inverse took {r.elapsed:.2f} s on {r.device})")


def _convergence_text(value: float) -> str:
    """A spectral convergence as printed: NaN is the one of a silent input, which has nothing to converge to."""
    return "n/a (the input is silent)" if math.isnan(value) else f"{value:.4f}"


#: Seconds between plain progress lines of ``specgan train`` when its output is not a terminal.
PLAIN_PROGRESS_EVERY_S = 30.0


# ---------------------------------------------------------------------------------------------------------------
@command
def train(
    recipe: Annotated[Path, typer.Argument(metavar="RECIPE", help="A recipe .toml (or a run's recipe.toml, or its run "
                                                                  "folder, to continue it).")],
    set_items: Annotated[Optional[list[str]], typer.Option(
        "--set", "-s", metavar="KEY=VALUE", help="Override a recipe key, e.g. --set train.steps=200 "
                                                 "(value read as TOML; repeatable).")] = None,
    resume: Annotated[bool, typer.Option(help="Require a checkpoint to continue from (re-running a run "
                                              "folder continues anyway).")] = False,
    device: Device = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
):
    """Train the model a recipe describes; samples, metrics and checkpoints go to its run folder."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    from specgan.errors import DatasetError, TrainingInterrupted
    from specgan.train.config import load_recipe
    from specgan.train.loop import train as run_training

    recipe = _recipe_file(recipe)
    r = load_recipe(recipe, overrides=set_items or [])
    _say_if_a_runs_recipe_starts_elsewhere(recipe, r.run_dir)
    dev, threads = compute_device(device)
    progress = Progress(TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[info]}"),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=err,
                        disable=quiet or not err.is_terminal)  # off a terminal it drew nothing but an empty line
    task = progress.add_task("train", total=r.train.steps, info="")

    def on_start(first: int, last: int, data, accel) -> None:
        nonlocal paced_from
        what = f"continuing {r.run_dir} from step {first}" if first else f"training {r.name} in {r.run_dir}"
        say(f"{what}: {len(data)} images {tuple(data.image_shape)}, {data.n_classes} "
            f"class{'es' if data.n_classes != 1 else ''}, on {dev}", to=err)
        if not threads_said:  # a continued run's own line on its thread count already covers the busy cores
            note(threads)
        if accel.precision_note:
            warn(accel.precision_note)
        if accel.compile:
            say("compiling the networks (torch.compile): the first steps take a minute or so; "
                "train.compile = false skips it", to=err)
        elif accel.compile_skipped:
            say(f"not compiling the networks: {accel.compile_skipped} (steps are slower; see train.compile)", to=err)
        progress.update(task, completed=first)
        progress.start()  # only once the data and any checkpoint are loaded: errors before stay one line
        paced_from = (time.monotonic(), first)

    threads_said = False
    # On a CPU, once the pace is known, one line if the run will take hours (a GPU-sized recipe as it stands).
    paced_from: tuple[float, int] | None = None  # (when, step) training began, once it has
    pace_said = dev.type != "cpu"

    def on_warning(text: str) -> None:
        nonlocal threads_said
        threads_said = threads_said or "CPU thread" in text
        warn(text)

    # Off a terminal (nohup, | tee log) there is no bar: a plain line now and then says the run is alive.
    plain_lines = not quiet and not err.is_terminal
    last_line = time.monotonic()

    def on_step(record: dict) -> None:
        nonlocal last_line, pace_said
        info = (f"{record['images_per_s']:.0f} img/s  D {record['loss/D']:.3f}  G {record['loss/G']:.3f}  "
                f"D acc {record['D/accuracy']:.2f}")
        progress.update(task, completed=record["step"], info=info)
        if not pace_said and paced_from and record["step"] - paced_from[1] >= PACE_AFTER_STEPS:
            pace_said = True
            line = _pace_note(seconds_per_step=(time.monotonic() - paced_from[0]) / (record["step"] - paced_from[1]),
                              steps_left=r.train.steps - record["step"])
            if line:
                warn(line)
        if plain_lines and (time.monotonic() - last_line >= PLAIN_PROGRESS_EVERY_S or record["step"] == r.train.steps):
            last_line = time.monotonic()
            say(f"step {record['step']}/{r.train.steps}  {info}", to=err)

    try:
        result = run_training(r, device=dev, resume=resume, on_start=on_start, on_step=on_step,
                              on_warning=on_warning)
    except TrainingInterrupted as e:  # Ctrl-C or SIGTERM: say where the checkpoint is and how to go on
        progress.stop()
        if not other_rank():
            say(str(e), to=err)
        raise typer.Exit(e.exit_code) from None
    except ConfigError as e:  # a recipe value the data or the machine cannot satisfy: name the recipe too
        raise ConfigError(f"{recipe}: {e}") from None
    except DatasetError as e:
        raise DatasetError(f"{recipe}: data.path = {r.data.path!r}: {e}") from None
    finally:
        progress.stop()
    if result.rank != 0:  # under torchrun, rank 0 reports
        return
    if result.resumed_from >= r.train.steps:
        below = f" (train.steps = {r.train.steps} is below it: nothing is undone)" \
            if result.resumed_from > r.train.steps else ""
        say(f"{r.run_dir} already reached step {result.resumed_from}{below}; raise train.steps to go on")
        return
    say(f"finished step {result.step} in {result.run_dir}; checkpoint {result.checkpoint}")
    run = shlex.quote(str(result.run_dir))  # a command to copy: a path with spaces must stay one word
    more = f"specgan convert FILE --to {shlex.quote(r.data.domains[1])} --model {run}" if r.task == "translate" \
        else f"specgan sample {run} -o grid.png"
    say(f"samples: {result.run_dir / 'samples'}; more: {more}")


#: Steps after which train judges its pace on a CPU (:func:`_pace_note`), and the time left it warns about, in s.
PACE_AFTER_STEPS = 50
LONG_CPU_RUN_S = 2 * 3600


def _pace_note(*, seconds_per_step: float, steps_left: int) -> str | None:
    """A line for a CPU run that will take more than LONG_CPU_RUN_S at the pace it has: the recipes are sized for a
    GPU, and their headers give a short CPU run. None otherwise."""
    left = seconds_per_step * steps_left
    if left <= LONG_CPU_RUN_S:
        return None
    return (f"at this pace the remaining {steps_left} steps take about {left / 3600:.0f} h on the CPU; the recipes "
            f"are sized for a GPU, and the header of each gives a --set line for a short CPU run")


def _recipe_file(given: Path) -> Path:
    """train's RECIPE: a .toml file, or a run folder standing for its ``recipe.toml`` (``RUN/recipe.toml`` that was
    lost stands for the folder too, as the command that continues a run names it); a checkpoint given instead is a
    one-line error naming the command that continues its run."""
    from specgan.train.checkpoint import list_checkpoints

    if given.name == "recipe.toml" and not given.exists() and list_checkpoints(given.parent):
        given = given.parent
    if given.is_dir():
        if (given / "recipe.toml").is_file():
            return given / "recipe.toml"
        from specgan.train.config import restore_run_recipe

        restored = restore_run_recipe(given)
        if restored is not None:
            recipe, checkpoint = restored
            warn(f"{recipe} was missing: rebuilt from {checkpoint}, which holds the recipe the run trained with")
            return recipe
        raise ConfigError(f"{given}: a folder without a recipe.toml; give a recipe file (recipes/*.toml) or a run "
                          f"folder")
    if given.suffix == ".pt":
        from specgan.train.config import continue_command

        run = given.parent.parent if given.parent.name == "checkpoints" else given.parent
        raise ConfigError(f"{given}: a checkpoint, not a recipe; to continue its run: {continue_command(run)}")
    return given


def _say_if_a_runs_recipe_starts_elsewhere(recipe: Path, run_dir: Path) -> None:
    """A run's own recipe.toml given with another output.dir starts a new run there, from step 0, which reads like
    continuing or branching off the run: say so, and how to do either."""
    from specgan.train.checkpoint import list_checkpoints

    run = recipe.parent
    if (recipe.name == "recipe.toml" and list_checkpoints(run) and run.resolve() != run_dir.resolve()
            and not list_checkpoints(run_dir)):
        warn(f"output.dir = {str(run_dir)!r}: a new run from step 0; {run}'s checkpoints stay where they are (to "
             f"continue that run leave output.dir as it is; to branch off it, copy {run} to {run_dir} first)")


#: The ``RUN`` argument of the commands that read a trained model.
RunArgument = Annotated[Path, typer.Argument(metavar="RUN",
                                             help="A run folder (its latest checkpoint) or a checkpoint file.")]


@command
def sample(
    run: RunArgument,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG grid to write.")] = Path("samples.png"),
    n: Annotated[int, typer.Option("--n", "-n", min=1, max=4096, help="How many samples.")] = 64,
    label: Annotated[Optional[str], typer.Option(
        help="Class to generate (conditional models), by name (e.g. 7, sandal), or by index where no class is named "
             "by a number [default: every class, a row each, or in turn when there are fewer rows than "
             "classes; with --interpolate, a row (one walk) each, so rows beyond the classes repeat them and "
             "fewer rows leave some out].")] = None,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of the latents.")] = 0,
    interpolate: Annotated[bool, typer.Option(help="Latent walk: each row of 8 (or of n, below 8) goes from one "
                                                   "latent to another; n is rounded down to whole rows.")] = False,
    audio: Annotated[bool, typer.Option(help="Spectrogram models: also write each sample as .wav.")] = False,
    iters: Annotated[int, typer.Option(min=1, help="Griffin-Lim iterations for --audio.")] = 32,
    overwrite: Overwrite = False,
    device: Device = "auto",
):
    """Draw samples from a trained generator into a PNG grid (and audio for spectrogram models)."""
    from specgan.sample import draw

    dev, threads = compute_device(device)
    report = draw(run, output=output, n=n, label=label, seed=seed, interpolate=interpolate, audio=audio,
                  n_iter=iters, device=dev, overwrite=overwrite, on_warning=warn)
    note(threads)
    say(f"wrote {report.grid} ({report.n} samples from step {report.step} of {report.checkpoint})")
    for path in report.audio:
        say(f"wrote {path}")
    if report.stale:
        more = f" (and {len(report.stale) - 1} more)" if len(report.stale) > 1 else ""
        warn(f"{report.stale[0]}{more}: named as a sample of {report.grid} but left by an earlier call, not drawn "
             f"now")


@command
def convert(
    src: Annotated[Path, typer.Argument(metavar="INPUT",
                                        help="An audio file, or a folder of them (converted recursively).")],
    to: Annotated[str, typer.Option("--to", help="The domain to convert to, e.g. TM3 (a class of the model).")],
    output: Annotated[Optional[str], typer.Option(  # a string: a trailing / says "a folder" (a Path drops it)
        "--output", "-o", help="Output file (.wav/.flac/.ogg) for a file, output folder for a folder (or for a "
                               "file, given with a trailing /) [default: <stem>.to-DOMAIN.wav or "
                               "<folder>.to-DOMAIN/ beside the input].")] = None,
    model: Annotated[Optional[Path], typer.Option(
        help="A translate run folder (its latest checkpoint) or a checkpoint file [default: the newest run under "
             "./runs with domain DOMAIN].")] = None,
    sample_rate: Annotated[Optional[int], typer.Option(
        min=1000, max=384000, help="Sample rate of the output in Hz [default: the model's].")] = None,
    iters: Annotated[int, typer.Option("--iters", "-n", min=1, help="Griffin-Lim iterations.")] = 32,
    phase_init: Annotated[str, typer.Option(
        help="Griffin-Lim's starting phase: source (the input's own) or random.")] = "source",
    batch_size: Annotated[int, typer.Option(min=1, help="Windows translated at once (bounds memory).")] = 16,
    plot: Annotated[bool, typer.Option(help="Also write <output>.png: input and output log-mel, with time (s) and "
                                            "frequency (Hz) axes (past 4096 frames, runs of frames averaged to at "
                                            "most 4096 columns).")] = False,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Seed of any random phase.")] = 0,
    overwrite: Overwrite = False,
    skip_existing: Annotated[bool, typer.Option(
        help="Keep the outputs that exist and convert the rest (a folder's conversion continued, or new files "
             "added to it), with the model that converted the kept ones.")] = False,
    device: Device = "auto",
):
    """Convert recordings to another domain with a trained translator (a translate run)."""
    from specgan.convert import ConvertedFile, convert_path

    dev, threads = compute_device(device)

    def on_model(translator, picked: bool) -> None:
        how = f" (picked automatically: the newest run under runs/ with domain {to}; choose with --model)" \
            if picked else ""
        a, b = translator.domains
        say(f"model {translator.checkpoint} (step {translator.step}, {a} ↔ {b}){how}")
        note(threads)

    def on_file(item) -> None:
        if isinstance(item, ConvertedFile):
            plot_note = f" and {item.plot}" if item.plot else ""
            # Below a second of audio, the time per second of audio says more about start-up costs than speed.
            speed = f"{item.real_time_factor:.3f} s per s of audio" if item.seconds >= 1 else \
                f"took {item.real_time_factor * item.seconds:.2f} s"
            if item.kept_output:  # only its plot was drawn, from the file as it is: no conversion to measure
                say(f"wrote {item.plot}, the plot of {item.output}, which exists and was kept ({item.seconds:.2f} s; "
                    f"{speed})")
                return
            say(f"wrote {item.output}{plot_note} ({item.seconds:.2f} s; spectral convergence "
                f"{_convergence_text(item.spectral_convergence)}; {speed})")

    report = convert_path(src, to=to, model=model, output=output, sample_rate=sample_rate, n_iter=iters,
                          phase_init=phase_init, batch_size=batch_size, seed=seed, plot=plot,
                          overwrite=overwrite, skip_existing=skip_existing, device=dev, on_model=on_model,
                          on_file=on_file, on_warning=warn)
    if report.kept or report.plotted:
        plotted = f", {len(report.plotted)} of them given their missing plot" if report.plotted else ""
        say(f"kept {len(report.kept) + len(report.plotted)} output(s) that exist (--skip-existing{plotted})"
            + ("; nothing else to convert" if not report.converted and not report.failed else ""))
    if len(report.converted) + len(report.failed) > 1:
        say(f"converted {len(report.converted)} file(s) to {report.to} in {report.output}: "
            f"{report.seconds:.1f} s of audio in {report.elapsed:.1f} s ({report.real_time_factor:.3f} s per s "
            f"of audio)")
    if report.failed:
        for f in report.failed:
            say(f"skipped {f.reason}", to=err)
        others = f"; the others are in {report.output}" if report.converted else ""
        raise SpecganError(f"{len(report.failed)} of {len(report.failed) + len(report.converted)} file(s) could not "
                           f"be converted (listed above){others}")


#: eval's options for one kind of run, when not given.
EVAL_DEFAULTS = {"direction": "A2B", "iters": 32, "n": 10000, "seed": 0}


@command(name="eval")
def evaluate(
    run: RunArgument,
    pairs: Annotated[Optional[tuple[Path, Path]], typer.Option(
        metavar="SOURCE_DIR TARGET_DIR", help="Translate runs: parallel recordings; each source file is converted "
                                              "and compared with the target file of the same name.")] = None,
    # Defaults None: an option of the other kind of run is refused (below), not ignored; EVAL_DEFAULTS fill in.
    direction: Annotated[Optional[str], typer.Option(
        help="Translate runs: A2B converts the run's first domain (data.domains[0]) into its second; B2A the other "
             f"way [default: {EVAL_DEFAULTS['direction']}].")] = None,
    iters: Annotated[Optional[int], typer.Option(
        "--iters", min=1, help=f"Translate runs: Griffin-Lim iterations [default: {EVAL_DEFAULTS['iters']}].")] = None,
    n: Annotated[Optional[int], typer.Option(
        "--n", "-n", min=100, max=100_000, help=f"Generate runs: samples to draw [default: {EVAL_DEFAULTS['n']}].")] \
        = None,
    seed: Annotated[Optional[int], typer.Option(min=0, max=MAX_SEED,
                                                help=f"Generate runs: seed of the latents [default: "
                                                     f"{EVAL_DEFAULTS['seed']}].")] = None,
    data: Annotated[Optional[Path], typer.Option(
        help="Generate runs: the dataset folder [default: the run's data.path].")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    device: Device = "auto",
):
    """Measure a run: generate runs on MNIST-like data (label accuracy, Fréchet distance, class entropy,
    within-class diversity);
    translate runs against parallel recordings (mel-cepstral distortion, log-spectral distance)."""
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from specgan.evaluate import evaluate_run, evaluate_translation, record_result

    # Options of the other kind of run would be ignored without a word: refused instead.
    if pairs is not None:
        given = [(flag, value) for flag, value in (("-n", n), ("--seed", seed), ("--data", data)) if value is not None]
        if given:
            raise ConfigError(f"{given[0][0]} {given[0][1]}: for generate runs; with --pairs, the recordings are "
                              f"what a run is measured against")
    else:
        given = [(flag, value) for flag, value in (("--direction", direction), ("--iters", iters)) if value is not None]
        if given:
            raise ConfigError(f"{given[0][0]} {given[0][1]}: for translate runs, measured with --pairs SOURCE_DIR "
                              f"TARGET_DIR")
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=True, disable=not err.is_terminal)
    current = {"task": None}

    def on_stage(text: str) -> None:
        if current["task"] is not None:
            progress.update(current["task"], visible=False)
        current["task"] = progress.add_task(text, total=None)

    dev, threads = compute_device(device)

    def on_progress(done: int, total: int) -> None:
        nonlocal threads
        note(threads)  # the work has started: the input was accepted
        threads = None
        progress.update(current["task"], completed=done, total=total)

    with progress:
        if pairs is not None:
            on_stage("converting and scoring pairs")
            result = evaluate_translation(run, source_dir=pairs[0], target_dir=pairs[1],
                                          direction=direction or EVAL_DEFAULTS["direction"],
                                          n_iter=iters or EVAL_DEFAULTS["iters"], device=dev, on_progress=on_progress,
                                          on_warning=warn)
        else:
            result = evaluate_run(run, n=n or EVAL_DEFAULTS["n"], seed=seed or EVAL_DEFAULTS["seed"], device=dev,
                                  data_path=data, on_stage=on_stage, on_progress=on_progress, on_warning=warn)
    # Shown before it is kept, so that a run folder that cannot be written loses nothing that was measured.
    if json_output:
        out.print_json(json.dumps(result))
    else:
        table = Table(title=f"eval of {result['checkpoint']} (step {result['step']})", title_justify="left")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("meaning")
        if result.get("task") == "translate":
            _translation_rows(table, result)
        else:
            _generation_rows(table, result)
        out.print(table)
    say(f"appended to {record_result(result)}", to=err if json_output else out)
    if result.get("failed"):
        for f in result["failed"]:
            say(f"skipped the pair of {f['reason']}", to=err)
        raise SpecganError(f"{len(result['failed'])} of {len(result['failed']) + result['pairs']} pair(s) could not "
                           f"be scored (listed above); the result is over the other {result['pairs']}")


def _translation_rows(table: Table, result: dict) -> None:
    table.add_row("MCD converted", f"{result['mcd_db']:.3f} dB", f"{result['direction']} output vs target, "
                  "mel-cepstral distortion after DTW (lower is better)")
    table.add_row("MCD unconverted", f"{result['baseline_mcd_db']:.3f} dB", "the source itself vs target: the "
                  "baseline to beat")
    ratio = "n/a" if result["mcd_ratio"] is None else f"{result['mcd_ratio']:.3f}"
    table.add_row("MCD ratio", ratio, "converted / unconverted (below 1: closer to the target)")
    table.add_row("MCD resynthesis floor", f"{result['resynthesis_mcd_db']:.3f} dB", "the target itself through "
                  "log-mel and Griffin-Lim: no conversion can go below this")
    table.add_row("LSD converted", f"{result['lsd_db']:.3f} dB", "log-spectral distance after DTW")
    table.add_row("LSD unconverted", f"{result['baseline_lsd_db']:.3f} dB", "")
    table.add_row("spectral convergence", f"{result['spectral_convergence']:.4f}",
                  "Griffin-Lim vs the magnitude it was given (0 is perfect)")
    unmatched = [Path(path).name for path in result["unmatched_sources"]]
    named = f": {', '.join(unmatched[:3])}{', ...' if len(unmatched) > 3 else ''}" if unmatched else ""
    table.add_row("pairs", str(result["pairs"]), f"{result['unmatched']} source file(s) had no target{named}")


def _generation_rows(table: Table, result: dict) -> None:
    if result.get("label_accuracy") is not None:
        table.add_row("label accuracy", f"{result['label_accuracy']:.4f}",
                      "samples the classifier reads as the requested class")
    table.add_row("Fréchet distance", f"{result['fd']:.3f}", "classifier features, samples vs real test set (lower "
                                                              "is better)")
    table.add_row("class entropy", f"{result['class_entropy']:.3f} bits",
                  "of predicted classes over the samples (max 3.32 for 10; low = mode collapse)")
    if result.get("within_class_diversity") is not None:  # (results recorded before it have none)
        table.add_row("within-class diversity", f"{result['within_class_diversity']:.3f}",
                      "feature variance within a class, against real images' (1 = as varied; near 0 = one image "
                      "per class)")
    table.add_row("samples", str(result["n"]), "")
    table.add_row("classifier accuracy", f"{result['classifier_test_accuracy']:.4f}", "on the real test set")


data_app = typer.Typer(help="Fetch the standard datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("fetch")
@guarded
def data_fetch(
    name: Annotated[str, typer.Argument(metavar="NAME", help="mnist or fashion-mnist.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Folder [default: data/NAME].")] = None,
    mirror: Annotated[Optional[Path], typer.Option(help="Copy from this local folder instead of downloading.")] = None,
    url: Annotated[Optional[str], typer.Option(
        help="Download from this address instead of the set's own (an HTTP mirror: the file names are appended; "
             "the checksums are the same).")] = None,
):
    """Download (or copy from a local mirror) the four IDX files of MNIST or Fashion-MNIST, checking checksums."""
    from specgan.data.idx import IDX_SETS, fetch_idx

    if name not in IDX_SETS:
        raise ConfigError(f"dataset {name!r}: must be one of {', '.join(IDX_SETS)}")
    if mirror is not None and url is not None:
        raise ConfigError("--mirror and --url: choose one (a local folder, or an address to download from)")
    dest = output or Path("data") / name
    path = fetch_idx(name, dest, mirror=mirror, base_url=url)
    say(f"{name}: the four IDX files are in {path} (checksums verified)")


def main() -> None:
    app(prog_name="specgan")


if __name__ == "__main__":
    sys.exit(main())
