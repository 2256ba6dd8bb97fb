"""Voice conversion quality for a stated budget: ``recipes/voice_convert.toml`` (VCC2016 SF1 → TM3) trained on the
best device here, then mel-cepstral distortion on the parallel evaluation sentences, converted vs unconverted.

The unconverted source against the target is the baseline any conversion must beat; the goal is a converted MCD
of at most 0.8× the baseline. On a GPU the recipe runs as written; on a CPU, ``--cpu-size`` shrinks it to the
recipe header's CPU line (``--steps`` sets the budget). Writes ``bench/out/voice_convert.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import OUT, ROOT, data_mirror, machine, write_json  # noqa: E402

from specgan.audio.params import resolve_audio_params  # noqa: E402
from specgan.data.prep import prep  # noqa: E402
from specgan.device import resolve_device  # noqa: E402
from specgan.evaluate import evaluate_translation  # noqa: E402
from specgan.train.config import load_recipe  # noqa: E402
from specgan.train.loop import train  # noqa: E402

RECIPE = ROOT / "recipes" / "voice_convert.toml"
CPU_SIZE = ["model.channels=16", "model.n_blocks=3", "train.batch_size=8"]
GOAL_RATIO = 0.8


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's on a GPU, "
                                                                "3000 on a CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--iters", type=int, default=32, help="Griffin-Lim iterations when converting")
    parser.add_argument("--fresh", action="store_true", help="delete an earlier run of this benchmark first")
    args = parser.parse_args()

    device = resolve_device(args.device)
    vcc = data_mirror() / "vcc2016"
    work = OUT / "voice_convert"
    dataset, run = work / "vcc2016", work / "run"
    if args.fresh and run.exists():
        import shutil
        shutil.rmtree(run)

    started = time.perf_counter()
    prep(vcc / "vcc2016_training", dataset, params=resolve_audio_params(recipe=RECIPE), domains=("SF1", "TM3"))
    prep_s = time.perf_counter() - started

    overrides = [f"data.path={dataset}", f"output.dir={run}"]
    if device.type == "cpu":
        steps = args.steps or 3000
        overrides += CPU_SIZE + [f"loss.identity_until={steps * 2 // 3}"]
    else:
        steps = args.steps or load_recipe(RECIPE).train.steps
    overrides += [f"train.steps={steps}", f"train.sample_every={max(steps // 4, 1)}",
                  f"train.checkpoint_every={max(steps // 4, 1)}"]
    recipe = load_recipe(RECIPE, overrides=overrides)
    started = time.perf_counter()
    result = train(recipe, device=device)
    train_s = time.perf_counter() - started

    started = time.perf_counter()
    scores = evaluate_translation(run, source_dir=vcc / "evaluation_all" / "SF1",
                                  target_dir=vcc / "evaluation_all" / "TM3", direction="A2B", n_iter=args.iters,
                                  device=device)
    eval_s = time.perf_counter() - started
    report = {
        "machine": machine(), "device": str(device), "recipe": "recipes/voice_convert.toml", "overrides": overrides,
        "steps": steps, "resumed_from": result.resumed_from, "prep_s": round(prep_s, 1),
        "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
        "pairs": scores["pairs"], "griffinlim_iters": args.iters,
        "mcd_db": scores["mcd_db"], "baseline_mcd_db": scores["baseline_mcd_db"], "mcd_ratio": scores["mcd_ratio"],
        "lsd_db": scores["lsd_db"], "baseline_lsd_db": scores["baseline_lsd_db"],
        "resynthesis_mcd_db": scores["resynthesis_mcd_db"],
        "spectral_convergence": scores["spectral_convergence"], "goal_ratio": GOAL_RATIO,
    }
    path = write_json("voice_convert", report)
    print(f"SF1 → TM3 after {steps} steps on {device} ({report['train_s']:.0f} s of training): MCD "
          f"{report['mcd_db']:.3f} dB converted vs {report['baseline_mcd_db']:.3f} dB unconverted, ratio "
          f"{report['mcd_ratio']:.3f} (goal <= {GOAL_RATIO}); {path}")
    return report


if __name__ == "__main__":
    main()
