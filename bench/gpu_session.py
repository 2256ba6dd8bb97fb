"""Every GPU benchmark in one call, for a lent GPU machine with a fixed time budget:

    SPECGAN_DATA_MIRROR=$PWD/.data PYTHONUNBUFFERED=1 python3 bench/gpu_session.py --out $OUT --budget-s 420

Sections, in priority order, each in its own try/except (a failure is recorded and the next section runs), each
writing its JSON into ``--out`` as soon as it finishes:

0. ``scaling_cuda.json``          with two or more GPUs: ``specgan train`` under ``torchrun`` on 1, 2, 4, ... and
                                  all of them, DCGAN and CycleGAN (``scaling.py``); skipped with one GPU
1. ``train_dcgan_cuda.json``      DCGAN on MNIST, specgan's loop (the variants of
                                  ``train_throughput.DEFAULT_VARIANTS``) vs the reference loop
2. ``train_cyclegan_cuda.json``   CycleGAN translate step, its variants, vs the reference step
3. ``train_flops_cuda.json``      achieved TFLOP/s of both against the card's dense bf16 peak
5. ``convert_speed_cuda.json``    convert real-time factor on a 60 s input
4. ``reconstruct_speed_cuda.json`` mel → audio, x faster than real time (and librosa on the CPU)
6. ``profile_translate_cuda.json`` the CycleGAN step's top kernels in each of ``PROFILE_VARIANTS`` (only with
                                  ``--sections ...,profile``: not part of the default set)
then the torch.compile variants of 1 and 2 in a subprocess each, with what is left of the budget (killed when
it runs out), merged into files 1-3, which are rewritten. ``gpu_session_cuda.json`` holds the log, each
section's status and wall time, and any errors.

Data read from the mirror: ``mnist/train-images-idx3-ubyte.gz``, ``mnist/train-labels-idx1-ubyte.gz`` and the
first three sorted ``.flac`` of ``vcc2016/evaluation_all/SF1`` and ``.../TM3`` (100160, 200001, 200002). The
convert benchmark uses ``data/demo/voices`` from the repository.

``--tiny`` runs every code path with tiny sizes on any device (CPU included), to check the script before GPU
time is spent on it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

from common import machine, result_name, versions, write_json  # noqa: E402

#: Share of the budget each section may use at most (what it leaves goes to the compile measurements at the end).
SHARES = {"scaling": 0.30, "train_dcgan": 0.20, "train_cyclegan": 0.45, "convert_speed": 0.10,
          "reconstruct_speed": 0.08}
#: Share of what is left at the end that the DCGAN compile measurement gets (CycleGAN gets the rest).
DCGAN_COMPILE_SHARE = 0.45
#: What --sections can pick.
SECTIONS = ("scaling", "dcgan", "cyclegan", "flops", "convert", "reconstruct", "compile", "profile")
#: The CycleGAN step's variants the profile section profiles: as it runs by default (compiled on CUDA, channels-last
#: inside the compiled code) and compiled without channels-last.
PROFILE_VARIANTS = ("default", "no_channels_last")


class Session:
    def __init__(self, out: Path, budget_s: float, device: torch.device, tiny: bool):
        self.out, self.budget_s, self.device, self.tiny = out, budget_s, device, tiny
        self.started = time.perf_counter()
        self.record = {"benchmark": "gpu_session", "started": datetime.datetime.now().isoformat(timespec="seconds"),
                       "budget_s": budget_s, "device": str(device), "tiny": tiny, "argv": sys.argv,
                       "machine": machine(), "versions": versions(), "sections": {}, "log": []}
        self.results: dict[str, dict] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def log(self, line: str) -> None:
        line = f"[{self.elapsed():6.1f} s] {line}"
        print(line, flush=True)
        self.record["log"].append(line)

    def name(self, base: str) -> str:
        return result_name(base, self.device) + ("_tiny" if self.tiny else "")

    def save(self, base: str, result: dict) -> None:
        result["session_elapsed_s"] = round(self.elapsed(), 1)
        path = write_json(self.name(base), result, self.out)
        self.log(f"wrote {path.name}")

    def save_session(self) -> None:
        self.record["elapsed_s"] = round(self.elapsed(), 1)
        write_json(self.name("gpu_session"), self.record, self.out)

    def section(self, base: str, fn, *, budget_s: float, min_s: float = 5.0, key: str | None = None) -> dict | None:
        """Run ``fn(budget_s)`` and save its result as ``base``; ``key`` names it in the session record."""
        key = key or base
        status = self.record["sections"].setdefault(key, {})
        if budget_s < min_s:
            status.update(status="skipped", reason=f"budget: {budget_s:.0f} s for it, {self.left():.0f} s left")
            self.log(f"== {key}: skipped ({status['reason']})")
            self.save_session()
            return None
        self.log(f"== {key} (budget {budget_s:.0f} s, {self.left():.0f} s left in the session)")
        started = time.perf_counter()
        try:
            result = fn(budget_s)
            status.update(status="ok")
        except (Exception, SystemExit) as e:
            result = None
            status.update(status="failed", error="".join(traceback.format_exception(type(e), e, e.__traceback__))
                          [-4000:])
            self.log(f"== {key}: FAILED: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")
            traceback.print_exc()
        status["wall_s"] = round(time.perf_counter() - started, 1)
        if result is not None:
            self.results[base] = result
            self.save(base, result)
            errors = result.get("errors") or {}
            if errors:
                status["errors"] = errors
            if result.get("skipped"):
                status["skipped_runs"] = result["skipped"]
        self.log(f"== {key}: {status['status']} in {status['wall_s']:.1f} s")
        self.save_session()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return result


def run_compile(session: Session, kind: str, budget_s: float) -> dict:
    """The compile variants of ``kind`` in a subprocess that is killed when ``budget_s`` runs out."""
    import train_throughput as tt

    size = "tiny" if session.tiny else ("gpu" if session.device.type == "cuda" else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, str(HERE / "train_throughput.py"), kind, "--device", session.device.type,
                   "--size", size, "--variants", ",".join(tt.COMPILE_VARIANTS), "--rounds", "1", "--no-reference",
                   "--out", tmp, "--name", "compile", "--budget-s", str(max(1.0, budget_s - 10))]
        if session.device.type == "cpu":
            command += ["--threads", str(torch.get_num_threads())]
        session.log("  " + " ".join(command[1:]))
        process = subprocess.Popen(command, start_new_session=True)
        try:
            process.wait(timeout=budget_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise TimeoutError(f"torch.compile measurement of {kind} killed after {budget_s:.0f} s (budget spent; "
                               f"most of it is compilation)") from None
        path = Path(tmp) / "compile.json"
        if not path.exists():
            raise RuntimeError(f"compile subprocess exited with {process.returncode} and wrote no result")
        return json.loads(path.read_text())


def merge_compile(session: Session, base: str, kind: str, budget_s: float) -> dict | None:
    """Run the compile variants and merge them into section ``base``'s result."""
    import train_throughput as tt

    main = session.results.get(base)
    if main is None:
        raise RuntimeError(f"{base} has no result to add the compile variants to (it failed or was skipped)")
    try:
        sub = run_compile(session, kind, budget_s)
    except Exception as e:
        main["errors"]["compile"] = str(e)
        session.log(f"  {kind} compile: {e}")
    else:
        for data in sub["variants"].values():  # not paired with this file's reference runs: measured later
            for run in data["runs"]:
                run.pop("round", None)
        main["variants"].update(sub["variants"])
        main["errors"].update({f"compile/{k}": v for k, v in sub["errors"].items()})
        main["skipped"] += [f"compile/{s}" for s in sub["skipped"]]
        main["compile_note"] = ("compile variants measured in a separate process after the other sections, one "
                                "round; their speed-up is against this file's reference median")
    tt.summarize(main)
    for v in tt.COMPILE_VARIANTS:
        data = main["variants"].get(v)
        if data and data.get("images_per_s"):
            session.log(f"  {kind} {v}: {data['images_per_s']:.1f} images/s, {tt.goal_speedup(data):.2f}x the reference")
    return main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for the JSON files (at most 8 are written)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall seconds for everything")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, any device: checks every code path")
    parser.add_argument("--device", default="auto", help="auto: cuda if present (required unless --tiny)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (CPU runs only)")
    parser.add_argument("--dcgan-variants", default=None,
                        help="comma-separated variants of the DCGAN section (default: train_throughput's for the "
                             "device)")
    parser.add_argument("--cyclegan-variants", default=None,
                        help="comma-separated variants of the CycleGAN section (default: train_throughput's)")
    parser.add_argument("--sections", default=",".join(s for s in SECTIONS if s != "profile"),
                        help=f"comma-separated, of {', '.join(SECTIONS)} (default: all); a training section left out "
                             "is taken for the TFLOP/s report from the committed bench/gpu JSON, if any")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    if sections - set(SECTIONS):
        raise SystemExit(f"--sections: unknown {', '.join(sorted(sections - set(SECTIONS)))}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type != "cuda" and not args.tiny:
        raise SystemExit("no CUDA device: this script is for the GPU machine (use --tiny to check it on a CPU)")
    if args.threads:
        from common import set_threads
        set_threads(args.threads)
    session = Session(out, args.budget_s, device, args.tiny)
    session.log(f"gpu_session on {device} ({session.record['machine'].get('gpu', session.record['machine']['cpu'])}),"
                f" torch {torch.__version__}, budget {args.budget_s:.0f} s, tiny={args.tiny}, "
                f"mirror {os.environ.get('SPECGAN_DATA_MIRROR', '(default)')}")
    B = args.budget_s

    import train_throughput as tt
    size = "tiny" if args.tiny else "gpu"

    asked = {"dcgan": args.dcgan_variants, "cyclegan": args.cyclegan_variants}
    for kind, names in asked.items():
        unknown = set((names or "").split(",")) - set(tt.VARIANTS) - {""}
        if unknown:
            raise SystemExit(f"--{kind}-variants: unknown {', '.join(sorted(unknown))}")

    def throughput(kind):
        variants = asked[kind].split(",") if asked[kind] else tt.default_variants(kind, device.type)

        def fn(budget):
            return tt.measure(kind, device=device, size_name=size, variants=variants, rounds=2, budget_s=budget,
                              log=session.log)
        return fn

    # 0: several GPUs (never measured before a machine with several was lent)
    def scaling(budget):
        import scaling as scaling_bench
        scale_device = "cpu" if device.type == "cpu" else "cuda"
        return scaling_bench.measure(["dcgan", "cyclegan"], device=scale_device,
                                     ranks=scaling_bench.default_ranks(scale_device), size_name=size, rounds=1,
                                     budget_s=budget, log=session.log)
    if "scaling" in sections:
        if device.type == "cuda" and torch.cuda.device_count() < 2:
            session.record["sections"]["scaling"] = {"status": "skipped", "reason": "one GPU on this machine"}
            session.log("== scaling: skipped (one GPU on this machine)")
        else:
            session.section("scaling", scaling, budget_s=min(SHARES["scaling"] * B, session.left()))

    # 1, 2: throughput without compile
    for kind in ("dcgan", "cyclegan"):
        if kind in sections:
            session.section(f"train_{kind}", throughput(kind),
                            budget_s=min(SHARES[f"train_{kind}"] * B, session.left()))

    # 3: TFLOP/s
    def flops(_budget):
        results = {}
        for kind in ("dcgan", "cyclegan"):
            results[kind] = session.results.get(f"train_{kind}")
            committed = HERE / "gpu" / f"train_{kind}_cuda.json"
            if results[kind] is None and committed.exists() and not args.tiny:
                results[kind] = json.loads(committed.read_text())
                session.log(f"  TFLOP/s of {kind} from the committed {committed.name} (not measured now)")
        return tt.tflops_report(results, device)
    if "flops" in sections:
        session.section("train_flops", flops, budget_s=max(session.left(), 0), min_s=0)

    # 5: convert
    def convert(_budget):
        import convert_speed
        argv = ["--device", device.type, "--out", str(out), "--naive-seconds", "0"]
        argv += ["--tiny", "--repeats", "1", "--seconds", "20"] if args.tiny else ["--repeats", "3"]
        result = convert_speed.main(argv)
        return result
    # convert_speed writes its own JSON; the session rewrites it with the session time added.
    if "convert" in sections:
        session.section("convert_speed", convert, budget_s=min(SHARES["convert_speed"] * B, session.left()))

    # 4: reconstruction
    def reconstruct(_budget):
        import reconstruct_speed
        argv = ["--device", device.type, "--out", str(out), "--librosa-repeats", "1"]
        argv += ["--clips", "2", "--repeats", "1", "--suffix", "_tiny"] if args.tiny else ["--repeats", "3"]
        return reconstruct_speed.main(argv)
    if "reconstruct" in sections:
        session.section("reconstruct_speed", reconstruct,
                        budget_s=min(SHARES["reconstruct_speed"] * B, session.left()))

    # where the CycleGAN step's kernel time goes, in each of PROFILE_VARIANTS
    def profile(_budget):
        from profile_step import profile_translate
        profiles = {}
        for variant in PROFILE_VARIANTS:
            profiles[variant] = profile_translate(size_name=size, device=device, variant=variant)
            session.log(f"  profiled {variant}: {profiles[variant]['ms_per_step_total']:.1f} ms of kernels per step")
        return profiles
    if "profile" in sections:
        session.section("profile_translate", profile, budget_s=session.left(), min_s=60)

    # compile variants of 1 and 2 with what is left
    if "compile" in sections:
        left = session.left()
        session.section("train_dcgan", lambda budget: merge_compile(session, "train_dcgan", "dcgan", budget),
                        budget_s=left * DCGAN_COMPILE_SHARE, min_s=20, key="train_dcgan_compile")
        session.section("train_cyclegan", lambda budget: merge_compile(session, "train_cyclegan", "cyclegan", budget),
                        budget_s=session.left() - 3, min_s=20, key="train_cyclegan_compile")
        if "flops" in sections:
            session.section("train_flops", flops, budget_s=max(session.left(), 0), min_s=0,
                            key="train_flops_with_compile")

    session.log("summary:")
    for base in ("train_dcgan", "train_cyclegan"):
        r = session.results.get(base)
        if not r:
            continue
        session.log(f"  {base}: reference {r['reference'].get('images_per_s') or float('nan'):.0f} images/s; "
                    + "; ".join(f"{v} {d['images_per_s']:.0f} ({tt.goal_speedup(d):.2f}x)"
                                for v, d in r["variants"].items() if d.get("images_per_s") and d.get("speedup")))
    if session.results.get("train_flops"):
        for row in session.results["train_flops"]["rows"]:
            session.log(f"  {row['model']} {row['side']}: {row['tflops']:.1f} TFLOP/s"
                        + (f" ({row['fraction_of_peak'] * 100:.1f}% of peak)" if row["fraction_of_peak"] else ""))
    c = session.results.get("convert_speed")
    if c:
        session.log(f"  convert: RTF {c['rtf']:.4f} ({c['x_realtime']:.0f}x real time) on {c['audio_seconds']:.0f} s")
    r = session.results.get("reconstruct_speed")
    if r:
        session.log(f"  reconstruct: median {r['median_specgan_x_realtime']:.0f}x real time"
                    + (f", {r['median_speedup']:.1f}x librosa" if "median_speedup" in r else ""))
    for base, status in session.record["sections"].items():
        session.log(f"  {base}: {status.get('status')}" + (f" ({status['reason']})" if "reason" in status else ""))
    session.save_session()


if __name__ == "__main__":
    main()
