"""The end-to-end demo (``make demo``): from the embedded demo corpus to converted audio and generated digits.

It runs the ``specgan`` command line of this interpreter's environment, one command at a time, printing each
command first exactly as you would type it:

1. music: prep ``data/demo/music``, train ``recipes/music_style.toml`` (classical ↔ jazz), convert a held-out
   classical piece to jazz with a before/after spectrogram plot;
2. voices: prep ``data/demo/voices``, train ``recipes/voices_demo.toml`` (kal ↔ slt), convert a held-out kal
   sentence to slt, and score the conversion on all held-out sentences (the two voices are parallel);
3. MNIST: fetch it (from a local mirror, or use ``data/mnist`` when it is already there; skipped otherwise),
   train ``recipes/mnist_dcgan.toml`` and draw a grid of digits.

On a GPU the recipes train with their own budgets; on a CPU with small models and few steps: the whole demo
takes about 6 minutes on two idle cores, 10 when another program keeps one of them busy (before each torch
command the demo then gives torch only the free cores, as OMP_NUM_THREADS=N, printed with the command).
``--tiny`` runs a few steps of tiny models (about a minute; for the tests). Everything goes under ``--out``
(default ``build/demo``); the demo's run folders there are replaced on every run, the prepped datasets are
updated incrementally. A failing command stops the demo with its own error message and exit code. Uses only the
standard library and rich, so that it runs with the project's venv.

    .venv/bin/python scripts/demo.py [--out build/demo] [--tiny] [--cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"

console = Console(highlight=False)
err = Console(stderr=True, highlight=False)

#: --set overrides of the CycleGAN recipes (music_style, voices_demo), by budget. "gpu" keeps the recipe's own.
#: CPU: a step of this size takes 0.5-0.75 s on two cores (0.75 while the identity loss is on).
CYCLEGAN_SETS = {
    "gpu": [],
    "cpu": ["model.channels=16", "model.n_blocks=3", "train.batch_size=8", "train.steps=400",
            "loss.identity_until=200", "train.sample_every=200", "train.checkpoint_every=400"],
    "tiny": ["model.channels=4", "model.n_blocks=1", "train.batch_size=2", "train.crop_frames=32", "train.steps=3",
             "loss.identity_until=2", "train.sample_every=3", "train.checkpoint_every=3"],
}
#: --set overrides of recipes/mnist_dcgan.toml, by budget (CPU: about 0.05 s a step on two cores).
MNIST_SETS = {
    "gpu": [],
    "cpu": ["model.channels=32", "train.batch_size=64", "train.steps=1500", "train.sample_every=500",
            "train.checkpoint_every=1500"],
    "tiny": ["model.channels=8", "train.batch_size=16", "train.steps=3", "train.sample_every=3",
             "train.checkpoint_every=3"],
}
#: Griffin-Lim iterations of `specgan convert` (None: its default) and `specgan eval`, by budget.
CONVERT_ITERS = {"gpu": None, "cpu": None, "tiny": 4}
EVAL_ITERS = {"gpu": 16, "cpu": 16, "tiny": 4}

#: The commands that compute with torch (prep's threads are its own; data fetch copies files).
TORCH_COMMANDS = ("train", "convert", "eval", "sample")

#: The file that marks an --out folder as the demo's (so that it may replace the run folders in it).
MARKER = ".specgan-demo"

IDX_TRAIN = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


class StepFailed(Exception):
    def __init__(self, shown: str, code: int):
        super().__init__(shown)
        self.shown, self.code = shown, code


@dataclass
class Demo:
    out: Path
    budget: str                      # gpu, cpu or tiny
    device: list[str] = field(default_factory=list)   # ["--device", "cpu"] with --cpu
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    fit_threads: bool = False        # size torch's CPU threads to the free cores before each torch command
    noted: bool = False

    # -- helpers ---------------------------------------------------------------------------------------------
    def show(self, path: Path) -> str:
        """A path as the user types it: relative to the project root (where the commands run) when inside it or
        beside it (../shared/datasets), else absolute."""
        path = (ROOT / path).resolve()        # a relative path is one of the project's (recipes/...)
        if path.is_relative_to(ROOT.parent):
            return os.path.relpath(path, ROOT)
        return str(path)

    def run(self, *args: object, device: bool = False) -> None:
        """Run ``specgan ARGS`` (printed first as typed); a failure raises StepFailed."""
        words = [self.show(a) if isinstance(a, Path) else str(a) for a in args]
        if device:
            words += self.device
        env, prefix = None, []
        if self.fit_threads and words[0] in TORCH_COMMANDS:
            free = _free_cores()
            if free is not None:
                # torch's CPU threads wait for each other at every operation: with one of them on a core that
                # another program keeps busy, a command takes several times longer than with fewer threads
                # (5-15x measured on 2 cores with one busy).
                env, prefix = {**os.environ, "OMP_NUM_THREADS": str(free)}, [f"OMP_NUM_THREADS={free}"]
                if not self.noted:
                    console.print(f"\n[yellow]note:[/] other programs keep {os.cpu_count() - free} of this "
                                  f"machine's {os.cpu_count()} cores busy, so torch gets only the free ones "
                                  "(OMP_NUM_THREADS): its threads would otherwise wait on each other for a busy core. "
                                  "Training is slower than on an idle machine.", markup=True, soft_wrap=True)
                    self.noted = True
        shown = shlex.join(["specgan", *words])
        console.print(f"\n[bold cyan]$ {' '.join(prefix + [shown])}[/]", markup=True, soft_wrap=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", "specgan", *words], cwd=ROOT, env=env)
        elapsed = time.perf_counter() - start
        if code != 0:
            raise StepFailed(shown, code)
        console.print(f"[dim](took {_duration(elapsed)})[/]", markup=True)

    def sets(self, overrides: list[str]) -> list[str]:
        return [w for o in overrides for w in ("--set", o)]

    def fresh(self, run: Path) -> None:
        """The demo's run folders start afresh (another budget's checkpoint could not be continued); only in an
        --out folder that carries the demo's marker."""
        if run.exists():
            shutil.rmtree(run)

    # -- the three parts -------------------------------------------------------------------------------------
    def translate(self, *, title: str, recipe: str, corpus: str, heldout: str, source: str, target: str,
                  what: str, evaluate: bool) -> None:
        console.rule(f"[bold]{title}", characters="─")
        data = self.out / "data" / corpus
        run = self.out / "runs" / recipe
        self.fresh(run)
        self.run("prep", DEMO / corpus, "-o", data, "--recipe", Path(f"recipes/{recipe}.toml"))
        self.run("train", Path(f"recipes/{recipe}.toml"), "--set", f"data.path={self.show(data)}",
                 "--set", f"output.dir={self.show(run)}", *self.sets(CYCLEGAN_SETS[self.budget]), device=True)
        src = sorted((DEMO / heldout / source).glob("*.flac"))[0]
        wav = self.out / f"{source}_{src.stem}.to-{target}.wav"
        iters = CONVERT_ITERS[self.budget]
        self.run("convert", src, "--to", target, "--plot", "-o", wav, "--overwrite", "--model", run,
                 *(["--iters", iters] if iters else []), device=True)
        note = f"input: {self.show(src)}"
        if evaluate:                                # parallel recordings: the same sentence in the target voice
            note += f"; the real {target}: {self.show(DEMO / heldout / target / src.name)}"
        self.rows.append((f"{what} (held out)", self.show(wav), note))
        self.rows.append(("before/after spectrograms", self.show(wav.with_suffix(".png")),
                          f"log-mel of the input (top) and the {target} output (bottom)"))
        if evaluate:
            self.run("eval", run, "--pairs", DEMO / heldout / source, DEMO / heldout / target,
                     "--iters", EVAL_ITERS[self.budget], device=True)
            record = json.loads((run / "eval.jsonl").read_text().splitlines()[-1])
            self.rows.append((f"{source} → {target} score ({record['pairs']} held-out sentences)",
                              self.show(run / "eval.jsonl"),
                              f"MCD {record['mcd_db']:.2f} dB converted vs {record['baseline_mcd_db']:.2f} dB "
                              f"unconverted (lower is closer to the real {target})"))

    def mnist(self) -> None:
        console.rule("[bold]3. MNIST digits: a DCGAN", characters="─")
        env_mirror = os.environ.get("SPECGAN_DATA_MIRROR")
        mirror = (Path(env_mirror) if env_mirror else ROOT.parent / "shared" / "datasets") / "mnist"
        local = ROOT / "data" / "mnist"
        if mirror.is_dir():
            data = self.out / "data" / "mnist"
            self.run("data", "fetch", "mnist", "-o", data, "--mirror", mirror)
        elif all((local / n).exists() or (local / f"{n}.gz").exists() for n in IDX_TRAIN):
            data = local
            console.print(f"using the MNIST files already in {self.show(local)}")
        else:
            console.print(f"[yellow]MNIST step skipped:[/] no MNIST files in {self.show(local)}, nor a mirror at "
                          f"{mirror} (SPECGAN_DATA_MIRROR chooses it); get them with 'specgan data fetch mnist' "
                          f"(downloads about 11 MB), then run the demo again.", markup=True, soft_wrap=True)
            self.rows.append(("generated digits", "skipped", "no MNIST files: specgan data fetch mnist"))
            return
        run = self.out / "runs" / "mnist_dcgan"
        self.fresh(run)
        self.run("train", Path("recipes/mnist_dcgan.toml"), "--set", f"data.path={self.show(data)}",
                 "--set", f"output.dir={self.show(run)}", *self.sets(MNIST_SETS[self.budget]), device=True)
        grid = self.out / "digits.png"
        self.run("sample", run, "-o", grid, "--overwrite", device=True)
        self.rows.append(("generated digits", self.show(grid), "64 samples of the trained generator"))

    def summary(self, elapsed: float) -> None:
        runs = self.show(self.out / "runs")
        self.rows.append(("training samples", f"{runs}/*/samples/",
                          "a grid per sample step (spectrogram runs: also .wav renderings of the translations)"))
        table = Table(title=f"demo outputs ({self.budget} budget, {_duration(elapsed)})", title_justify="left",
                      expand=True)
        table.add_column("what", ratio=1)
        table.add_column("file: open it, or listen to it", overflow="fold", ratio=3)   # folded, never cut short
        for what, path, note in self.rows:
            table.add_row(what, Text(path, style="bold") + Text(f"\n{note}", style="dim"))
        console.print()
        console.print(table)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"


def _has_cuda() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)
    return probe.returncode == 0 and probe.stdout.strip() == "True"


def _free_cores(seconds: float = 0.5) -> int | None:
    """Cores left free by other programs, measured over ``seconds`` from /proc/stat (Linux), when other programs
    keep at least one busy; None when they do not, or where it cannot be measured."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]   # guest time is in user already
        return sum(values), values[3] + values[4]          # all jiffies, idle + iowait
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    cores = os.cpu_count() or 1
    if total1 <= total0:
        return None
    busy = round(cores * (1 - (idle1 - idle0) / (total1 - total0)))
    return max(1, cores - busy) if busy >= 1 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="specgan end to end on the demo corpus: converted audio and "
                                                 "generated digits.")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "demo",
                        help="folder for everything the demo writes [default: build/demo]")
    parser.add_argument("--tiny", action="store_true",
                        help="a few steps of tiny models (about a minute; checks the plumbing, not the results)")
    parser.add_argument("--cpu", action="store_true", help="use the CPU (and its budget) even when there is a GPU")
    args = parser.parse_args(argv)

    if args.tiny:
        budget = "tiny"
    elif not args.cpu and _has_cuda():
        budget = "gpu"
    else:
        budget = "cpu"
    demo = Demo(out=args.out.resolve(), budget=budget, device=["--device", "cpu"] if args.cpu else [],
                fit_threads=budget != "gpu" and "OMP_NUM_THREADS" not in os.environ)
    marker = demo.out / MARKER
    if demo.out.is_dir() and any(demo.out.iterdir()) and not marker.exists():
        err.print(f"[bold red]error:[/] {demo.show(demo.out)} already holds files the demo did not write (the demo "
                  "replaces its run folders there); choose another --out", markup=True, soft_wrap=True)
        return 2
    demo.out.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by scripts/demo.py; its runs/ folders are replaced on every run of the demo\n")
    about = {"gpu": "GPU: the recipes' own budgets",
             "cpu": "no GPU: small models and short runs (about 6 minutes on two idle cores)",
             "tiny": "--tiny: a few steps of tiny models (the results are noise)"}[budget]
    console.print(f"[bold]specgan demo[/] → {demo.show(demo.out)} ({about})", markup=True, soft_wrap=True)
    start = time.perf_counter()
    try:
        demo.translate(title="1. music style transfer: classical ↔ jazz", recipe="music_style", corpus="music",
                       heldout="music_heldout", source="classical", target="jazz",
                       what="classical piece → jazz", evaluate=False)
        demo.translate(title="2. voice conversion: kal ↔ slt", recipe="voices_demo", corpus="voices",
                       heldout="voices_heldout", source="kal", target="slt",
                       what="kal sentence → slt", evaluate=True)
        demo.mnist()
    except StepFailed as e:
        err.print(f"\n[bold red]demo stopped:[/] '{e.shown}' failed with exit code {e.code} (its message is "
                  "above)", markup=True, soft_wrap=True)
        return e.code if 0 < e.code < 256 else 1
    except KeyboardInterrupt:
        err.print("\ndemo interrupted")
        return 130
    demo.summary(time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
