"""Distributed training under torchrun: two gloo processes on the CPU.

Each rank must train on its own shard of the global batch, end with weights identical to the other rank's, and
match a single process trained on the same global batch; a checkpoint written by two ranks continues in one.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import pytest
import torch
from torch import nn

from specgan.recipe import dump_toml
from specgan.train.checkpoint import list_checkpoints, load_checkpoint
from specgan.train.config import TrainConfig, recipe_mapping
from specgan.train.loop import train
from test_train import make_two_tone_folder, tiny_recipe as gan_recipe
from test_translate import tiny_recipe

WORKER = Path(__file__).with_name("distributed_worker.py")
ROOT = Path(__file__).resolve().parents[1]


def worker_folder(out: Path) -> Path:
    """Where :func:`torchrun` keeps the recipe file it runs and what each rank saves (``rank_R.pt``, ``pid_R``):
    beside ``out`` (usually the run folder), since train refuses a run folder holding other files."""
    return out.parent / f"{out.name}.torchrun"


def torchrun(recipe, out: Path, *, ranks: int = 2, during: Callable[[subprocess.Popen], None] | None = None,
             device: str = "cpu", env: dict[str, str] | None = None, check: bool = True) -> list[dict | None]:
    """Run ``recipe`` on ``ranks`` processes (gloo on ``device = "cpu"``, NCCL on ``"cuda"``; calling
    ``during(torchrun's process)`` while they run); what each rank saved (None for a rank that saved nothing, when
    not ``check``-ing that torchrun succeeded)."""
    out = worker_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "recipe.toml"
    path.write_text(dump_toml(recipe_mapping(recipe)))
    # The project first, then whatever the caller's path holds (a GPU machine's extra packages live there).
    python_path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": python_path, **(env or {})}
    process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                f"--nproc_per_node={ranks}", str(WORKER), str(path), str(out), device], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    if during:
        during(process)
    _, stderr = process.communicate(timeout=600)  # also waits for workers that outlive torchrun: they hold its pipes
    assert process.returncode == 0 or not check, stderr[-3000:]
    saved = [out / f"rank_{r}.pt" for r in range(ranks)]
    return [torch.load(path, weights_only=True) if path.exists() else None for path in saved]


def assert_same(a: dict, b: dict, *, exact: bool, loose: set[str] = frozenset(), loose_atol: float = 0.0) -> None:
    """Equal state dicts (``exact``), or equal up to float rounding; ``loose`` names are only checked to within
    ``loose_atol``, Adam's largest possible drift (see :func:`normalised_biases` and :func:`adam_drift_bound`)."""
    assert a.keys() == b.keys()
    for name in a:
        for key, value in a[name].items():
            if exact:
                assert torch.equal(value, b[name][key]), f"{name}.{key} differs"
            elif f"{name}.{key}" in loose:
                torch.testing.assert_close(value, b[name][key], rtol=0, atol=loose_atol, msg=f"{name}.{key}")
            else:
                torch.testing.assert_close(value, b[name][key], rtol=1e-4, atol=1e-6, msg=f"{name}.{key}")


def adam_drift_bound(train_config, *, steps: int) -> float:
    """How far apart two runs can leave a parameter after ``steps`` Adam updates, whatever gradients each saw:
    twice the furthest one run can move it.

    Update ``t`` moves a parameter by ``lr · |m̂_t| / sqrt(v̂_t)`` (ε aside). The bias-corrected moments are
    ``m̂_t = Σ a_i g_i`` and ``v̂_t = Σ b_i g_i²`` with ``a_i = (1 - β1) β1^(t-i) / (1 - β1^t)`` and
    ``b_i = (1 - β2) β2^(t-i) / (1 - β2^t)``, so by Cauchy-Schwarz the ratio is at most ``sqrt(Σ a_i² / b_i)``:
    1 at the first update, 1.23 at the fourth for betas (0.5, 0.999). Learning rates only fall, so the recipe's
    largest one bounds every step.
    """
    beta1, beta2 = train_config.betas
    furthest = 0.0
    for t in range(1, steps + 1):
        a = [(1 - beta1) * beta1 ** (t - i) / (1 - beta1 ** t) for i in range(1, t + 1)]
        b = [(1 - beta2) * beta2 ** (t - i) / (1 - beta2 ** t) for i in range(1, t + 1)]
        furthest += math.sqrt(sum(ai * ai / bi for ai, bi in zip(a, b)))
    return 2 * max(train_config.lr_g, train_config.lr_d) * furthest


def normalised_biases(models: dict[str, nn.Module]) -> set[str]:
    """``model.bias`` names of convolutions followed directly by an instance norm. The norm subtracts each
    channel's mean, so these biases get a gradient that is zero up to rounding, and Adam turns rounding noise of
    either sign into full-size steps: they differ between any two summation orders (one process vs two)."""
    names = set()
    for model_name, model in models.items():
        for prefix, seq in model.named_modules():
            if isinstance(seq, nn.Sequential):
                kids = list(seq.named_children())
                for (name, a), (_, b) in zip(kids, kids[1:]):
                    if isinstance(a, nn.modules.conv._ConvNd) and isinstance(b, nn.modules.instancenorm._InstanceNorm):
                        names.add(f"{model_name}.{prefix + '.' if prefix else ''}{name}.bias")
    return names


def models_of(result) -> dict:
    return {name: module.state_dict() for name, module in result.task.models.items()}


@pytest.fixture
def one_thread():
    """This process computes with one thread, as each torchrun rank does (OMP_NUM_THREADS=1)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


#: Runs compared with one process: one thread each and the contiguous layout. Other thread counts, and channels-last
#: kernels, round a batch summed in two shards differently, and Adam amplifies it (measured on an AMD EPYC with
#: AVX-512: weights 5e-6 apart after 4 steps channels-last, 2.4e-7 contiguous; a pre-IN bias past 1e-3 with two
#: threads in this process; on an AMD Zen 3 without AVX-512, contiguous: within 4% of the tolerance below after 3
#: steps, 1.2e-4 apart after 4), which would blur what these tests check: sharding, averaging and the checkpoint.
#: Both ranks always agree exactly.
COMPARED = dict(precision="fp32", channels_last=False)


def test_two_ranks_train_their_shards_and_match_one_process(tones, tmp_path, one_thread):
    # Pool and crops are drawn for the global batch, so even they agree with one process.
    recipe = tiny_recipe(tones, tmp_path / "ddp", steps=3, batch_size=4, pool_size=3, **COMPARED)
    ranks = torchrun(recipe, tmp_path / "ddp")
    assert [r["shard"] for r in ranks] == [2, 2] and ranks[0]["global_batch"] == 4
    assert_same(ranks[0]["models"], ranks[1]["models"], exact=True)

    single = train(tiny_recipe(tones, tmp_path / "one", steps=3, batch_size=4, pool_size=3, **COMPARED),
                   device=torch.device("cpu"))
    assert_same(ranks[0]["models"], models_of(single), exact=False, loose=normalised_biases(single.task.models),
                loose_atol=adam_drift_bound(recipe.train, steps=3))
    # Only rank 0 wrote the run folder: one line per step.
    assert len((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_two_rank_checkpoint_continues_in_one_process(tones, tmp_path, one_thread):
    """Two ranks train 2 steps and checkpoint; one process continues to step 4 and must land where the two ranks
    would have, uninterrupted. The reference is the two-rank run, not a one-process one: steps 1-2 then round alike
    on both sides, and only steps 3-4 differ, by the rounding of one batch against two shards. (Against a
    one-process run of 4 steps, Adam blew that rounding up to 1.2e-4 on an AMD Zen 3 CPU, on weights of 0.08, as it
    does for an uninterrupted two-rank run; the continued run matched the two-rank one to 1e-8.)"""
    keys = dict(checkpoint_every=2, **COMPARED)
    torchrun(tiny_recipe(tones, tmp_path / "run", steps=2, **keys), tmp_path / "run")
    said = []
    continued = train(tiny_recipe(tones, tmp_path / "run", steps=4, **keys), device=torch.device("cpu"),
                      on_warning=said.append)
    assert continued.resumed_from == 2
    # A translator has instance norm only: the line had also blamed batch norm's statistics, which it has none of.
    assert ("this run trained in 2 process(es) and continues in 1: it goes on from its checkpoint, but its numbers "
            "will differ from an uninterrupted run's (gradients are summed in another order)") in said
    recipe = tiny_recipe(tones, tmp_path / "two_ranks", steps=4, **keys)
    [two_ranks, _] = torchrun(recipe, tmp_path / "two_ranks")
    assert_same(models_of(continued), two_ranks["models"], exact=False,
                loose=normalised_biases(continued.task.models), loose_atol=adam_drift_bound(recipe.train, steps=2))


def test_adam_drift_bound_holds_for_any_gradients_and_is_tight():
    """The tolerance above, checked against torch's Adam on one number: random gradient sequences of any scale never
    move it further than half the bound, and the Cauchy-Schwarz worst case for the last step moves it exactly
    that step's share."""
    config = TrainConfig()
    beta1, beta2 = config.betas

    def moved(grads: list[float]) -> float:
        p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([p], lr=config.lr_g, betas=config.betas, eps=1e-30)
        for g in grads:
            p.grad = torch.tensor([g], dtype=torch.float64)
            opt.step()
        return abs(float(p.detach()))

    gen = torch.Generator().manual_seed(0)
    for steps in (1, 2, 3, 4):
        half = adam_drift_bound(config, steps=steps) / 2
        scales = 10 ** (torch.rand(200, steps, generator=gen, dtype=torch.float64) * 12 - 6)
        signs = torch.randint(0, 2, (200, steps), generator=gen).double() * 2 - 1
        assert max(moved((s * g).tolist()) for s, g in zip(signs, scales)) <= half * (1 + 1e-9)
        # The last step's largest move: gradients proportional to a_i / b_i (the Cauchy-Schwarz equality case).
        a = [(1 - beta1) * beta1 ** (steps - i) / (1 - beta1 ** steps) for i in range(1, steps + 1)]
        b = [(1 - beta2) * beta2 ** (steps - i) / (1 - beta2 ** steps) for i in range(1, steps + 1)]
        last = config.lr_g * math.sqrt(sum(ai * ai / bi for ai, bi in zip(a, b)))
        share = half - (adam_drift_bound(config, steps=steps - 1) / 2 if steps > 1 else 0.0)
        assert last == pytest.approx(share, rel=1e-12)
        before = moved([ai / bi for ai, bi in zip(a[:-1], b[:-1])])
        assert moved([ai / bi for ai, bi in zip(a, b)]) - before == pytest.approx(last, rel=1e-6)


def _collectives_rank(rank: int, world_size: int, folder: str) -> None:
    """One gloo rank of :func:`test_collectives_of_two_ranks_match_one_process`: saves what each method gave."""
    import torch.distributed as dist

    from specgan.train.distributed import Distributed, stop

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size)
    ranks, cpu = Distributed(rank=rank, world_size=world_size), torch.device("cpu")
    try:
        batch = torch.arange(24.0).view(6, 4)
        shard = ranks.shard(batch)
        torch.manual_seed(0)
        model = ranks.wrap(nn.Linear(4, 1), device=cpu)
        model(shard).square().mean().backward()
        saved = {"shard": shard, "gathered": ranks.all_gather(shard), "is_main": ranks.is_main,
                 "mean": ranks.mean(torch.tensor([float(rank), 10.0 * rank])),
                 "any": ranks.any(rank == 1, device=cpu), "none": ranks.any(False, device=cpu),
                 "largest": ranks.largest(3 * rank, device=cpu),
                 "grads": [p.grad for p in model.parameters()]}
        torch.save(saved, f"{folder}/rank_{rank}.pt")
    finally:
        # the product's way out: a barrier, then time for gloo's threads to let go (a bare destroy_process_group
        # aborted 1 CI run in many with "terminate called without an active exception")
        stop(ranks)


def test_collectives_of_two_ranks_match_one_process(tmp_path):
    """Distributed's methods on two gloo ranks against what one process computes on the whole batch: contiguous
    shards that put the batch back together in rank order, means and maxima over ranks, and DDP's gradients equal
    to the whole batch's (every loss a mean over equal shards)."""
    import torch.multiprocessing as mp

    from specgan.errors import ConfigError
    from specgan.train.distributed import Distributed

    mp.start_processes(_collectives_rank, args=(2, str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank_{r}.pt", weights_only=True) for r in range(2)]
    batch = torch.arange(24.0).view(6, 4)
    assert torch.equal(ranks[0]["shard"], batch[:3]) and torch.equal(ranks[1]["shard"], batch[3:])
    torch.manual_seed(0)
    one = nn.Linear(4, 1)
    one(batch).square().mean().backward()
    for r in ranks:
        assert torch.equal(r["gathered"], batch)
        assert torch.equal(r["mean"], torch.tensor([0.5, 5.0]))
        assert r["any"] is True and r["none"] is False and r["largest"] == 3
        for got, want in zip(r["grads"], [p.grad for p in one.parameters()]):
            torch.testing.assert_close(got, want)
    assert [r["is_main"] for r in ranks] == [True, False]
    # one process is a world of one: every method gives back what it was given
    alone = Distributed()
    assert alone.shard(batch) is batch and alone.all_gather(batch) is batch and alone.is_main
    # a global batch must split into equal shards
    Distributed(rank=1, world_size=2).check_batch(6)
    with pytest.raises(ConfigError, match="train.batch_size = 5: with 2 processes"):
        Distributed(rank=1, world_size=2).check_batch(5)


@pytest.mark.parametrize("train_keys", [{}, {"loss": "wgan", "gp_weight": 10.0, "n_critic": 2}],
                         ids=["bce", "wgan-gp"])
def test_generate_ranks_stay_identical(tmp_path, train_keys):
    """DCGAN (batch norm: per-shard statistics on CPU, where SyncBatchNorm does not run), also with the gradient
    penalty's double backward: both ranks end with the same weights."""
    images = make_two_tone_folder(tmp_path / "images", n=16)
    recipe = gan_recipe(images, tmp_path / "run", steps=3, **train_keys)
    ranks = torchrun(recipe, tmp_path / "run")
    assert [r["shard"] for r in ranks] == [4, 4]
    # Batch-norm running statistics are each rank's own (rank 0's are saved); the weights must agree exactly.
    weights = [{name: {k: v for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "_tracked"))}
                for name, sd in r["models"].items()} for r in ranks]
    assert_same(weights[0], weights[1], exact=True)
    assert (tmp_path / "run" / "checkpoints" / "step_00000003.pt").exists()
    # Continued in one process, the user is told why its numbers differ, batch norm included.
    said = []
    continued = train(gan_recipe(images, tmp_path / "run", steps=4, **train_keys), device=torch.device("cpu"),
                      on_warning=said.append)
    assert ("this run trained in 2 process(es) and continues in 1: it goes on from its checkpoint, but its numbers "
            "will differ from an uninterrupted run's (gradients are summed in another order, and batch norm's "
            "statistics are each process's own)") in said
    # Synchronised on GPUs, whole in one process; a checkpoint from before its device was recorded may be a CPU's.
    from specgan.train.loop import _batch_statistics_per_process

    assert not _batch_statistics_per_process(continued.task, sides=(("cuda", 2), ("cuda", 1)))
    assert not _batch_statistics_per_process(continued.task, sides=(("cpu", 1), ("cuda", 2)))  # whole batch; synced
    assert _batch_statistics_per_process(continued.task, sides=((None, 2), ("cuda", 1)))


@pytest.mark.parametrize("batch_size", [5])
def test_a_global_batch_that_does_not_split_is_a_config_error(tones, tmp_path, batch_size):
    recipe = tiny_recipe(tones, tmp_path / "odd", steps=1, batch_size=batch_size)
    out = tmp_path / "odd"
    out.mkdir()
    (out / "recipe.toml").write_text(dump_toml(recipe_mapping(recipe)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "specgan", "train", str(out / "recipe.toml")], env=env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert done.returncode != 0
    # said once: every rank meets the same bad input, and only rank 0 reports it
    assert done.stderr.count("train.batch_size = 5: with 2 processes the global batch must be a multiple of 2") == 1


def test_ctrl_c_on_one_rank_stops_all_ranks_after_the_same_checkpointed_step(tones, tmp_path):
    run = tmp_path / "run"
    recipe = tiny_recipe(tones, run, steps=2000, checkpoint_every=1000, sample_every=1000)

    def interrupt_rank_1(_):
        wait_for_a_logged_step(run)
        os.kill(int((worker_folder(run) / "pid_1").read_text()), signal.SIGINT)

    ranks = torchrun(recipe, run, during=interrupt_rank_1)
    stopped = {r["interrupted_at"] for r in ranks}
    assert len(stopped) == 1 and 0 < stopped.pop() < 2000  # both ranks named the same checkpoint
    [checkpoint] = list_checkpoints(run)
    assert load_checkpoint(checkpoint)["step"] == ranks[0]["interrupted_at"]


def wait_for_a_logged_step(run: Path) -> None:
    deadline = time.monotonic() + 300  # a hang fails the test; not a timing test
    while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text():
        assert time.monotonic() < deadline, "training never logged a step"
        time.sleep(0.2)


def test_when_torchrun_itself_is_killed_its_ranks_checkpoint_and_stop(tones, tmp_path):
    """``kill -9`` of the launcher: each worker gets SIGTERM (its parent-death signal) and stops as after Ctrl-C,
    rather than training on as an orphan that holds the run folder."""
    run = tmp_path / "run"
    recipe = tiny_recipe(tones, run, steps=2000, checkpoint_every=1000, sample_every=1000)

    def kill_torchrun(launcher):
        wait_for_a_logged_step(run)
        launcher.kill()

    ranks = torchrun(recipe, run, during=kill_torchrun, check=False)
    assert all(r["message"].startswith("torchrun's launcher ended: stopped after step ") for r in ranks), ranks
    stopped = {r["interrupted_at"] for r in ranks}
    assert len(stopped) == 1 and 0 < stopped.pop() < 2000, ranks
    [checkpoint] = list_checkpoints(run)
    assert load_checkpoint(checkpoint)["step"] == ranks[0]["interrupted_at"]


def test_a_rank_killed_mid_run_leaves_the_other_with_a_one_line_error(tones, tmp_path):
    run = tmp_path / "run"
    recipe = tiny_recipe(tones, run, steps=200, checkpoint_every=3, sample_every=1000)
    ranks = torchrun(recipe, run, env={"DIE_AT": "1:5"}, check=False)
    assert ranks[1] is None and ranks[0]["error"] == "LostRankError", ranks
    assert ranks[0]["message"].startswith("rank 0: lost contact with the other ranks (one of them stopped or was "
                                          "killed: ")
    assert ranks[0]["message"].endswith(f"the newest checkpoint is {run / 'checkpoints' / 'step_00000003.pt'}; "
                                        f"continue with: specgan train {run / 'recipe.toml'}")


def test_an_error_on_one_rank_alone_stops_every_rank_and_rank_0_names_it(tones, tmp_path):
    """Rank 1 cannot read the data (on another machine, say): no rank waits for it; rank 0 reports its error."""
    run = tmp_path / "run"
    ranks = torchrun(tiny_recipe(tones, run, steps=3), run, env={"NO_DATA_ON": "1"})
    assert ranks[1] == {"error": "DatasetError", "message": "no data on this machine"}
    assert ranks[0] == {"error": "RankFailed", "message": "rank 1: no data on this machine"}


def test_a_run_folder_rank_0_cannot_lock_stops_every_rank_with_one_message(tones, tmp_path):
    """The lock is rank 0's to take; when another train holds it, the other ranks stop too instead of waiting."""
    from specgan.errors import CheckpointError
    from specgan.folder_lock import FolderLock

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.toml").write_text(dump_toml(recipe_mapping(tiny_recipe(tones, run, steps=3))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with FolderLock(run, error=CheckpointError, busy="busy"):  # as another specgan train would
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "specgan", "train", str(run / "recipe.toml")], env=env, capture_output=True,
                              text=True, timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.count("another specgan train is writing this run folder") == 1, done.stderr[-3000:]
    assert not list_checkpoints(run)


@pytest.mark.parametrize("sent, said", [("SIGINT", "interrupted: stopped"), ("SIGTERM", "stopped by SIGTERM")])
def test_on_cpus_ranks_stop_after_the_very_step_ctrl_c_reached_one_of_them(tones, tmp_path, sent, said):
    """Not at the next step where scalars are fetched (every 25): with CPU steps of seconds, that could come after
    torchrun's 30 s grace, which kills the ranks and loses everything since the last checkpoint. Every rank names
    the signal that reached one of them."""
    run = tmp_path / "run"
    recipe = tiny_recipe(tones, run, steps=200, checkpoint_every=1000, sample_every=1000)
    ranks = torchrun(recipe, run, env={"INTERRUPT_AT": "1:7", "INTERRUPT_WITH": sent})
    assert [r["interrupted_at"] for r in ranks] == [7, 7]
    assert all(r["message"].startswith(f"{said} after step 7, checkpoint ") for r in ranks), ranks
    assert [load_checkpoint(c)["step"] for c in list_checkpoints(run)] == [7]


def test_more_cpu_ranks_per_machine_than_cores_are_warned_about(tones, tmp_path, monkeypatch):
    """torchrun --nproc_per_node 3 on 2 cores trains (slowly): rank 0 says so once, in training's warnings."""
    from specgan.train import distributed

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    note = distributed.crowded_cpu_note(torch.device("cpu"))
    assert note == ("--nproc_per_node 3 on 2 CPU cores: the processes take turns on the cores and each step waits "
                    "for the slowest; at most 2 train faster")
    assert distributed.crowded_cpu_note(torch.device("cuda")) is None   # GPUs have their own check
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert distributed.crowded_cpu_note(torch.device("cpu")) is None
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")  # the loop passes it on (here in one process, whose env says 3)
    warnings = []
    train(tiny_recipe(tones, tmp_path / "run", steps=1), device=torch.device("cpu"), on_warning=warnings.append)
    assert warnings == [note]


@pytest.mark.parametrize("gpus", [1, 2])
def test_more_ranks_per_machine_than_gpus_is_a_config_error_on_every_rank(monkeypatch, gpus):
    """torchrun --nproc_per_node 3 on a machine with fewer GPUs: every rank, not only the ones without a GPU, stops
    with the same one-line error before joining the group (none is left waiting for the others)."""
    from specgan.errors import ConfigError
    from specgan.train import distributed

    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: pytest.fail("set a device"))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *a, **k: pytest.fail("joined the group"))
    for rank in range(3):
        monkeypatch.setenv("WORLD_SIZE", "3")
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
        with pytest.raises(ConfigError, match=f"--nproc_per_node 3: this machine has {gpus} GPUs?, and each process "
                                              f"trains on its own; start at most {gpus} per machine"):
            distributed.start(torch.device("cuda"))


def test_as_many_ranks_as_gpus_pick_their_own_gpu(monkeypatch):
    from specgan.train import distributed

    chosen, joined = [], []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, **kw: joined.append((backend, kw)))
    for rank in range(2):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        ranks, device = distributed.start(torch.device("cuda"))
        assert (ranks.rank, ranks.world_size, device) == (rank, 2, torch.device("cuda", rank))
    assert chosen == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert joined == [("nccl", {"device_id": torch.device("cuda", 0)}), ("nccl", {"device_id": torch.device("cuda", 1)})]


def _ddp_stride_warning(grad_strides: list[int], bucket_strides: list[int], sizes: list[int]) -> str:
    """The text of DDP's reducer warning (torch 2.11, as a Python warning) for one gradient."""
    return ("Grad strides do not match bucket view strides. This may indicate grad was not created according to the "
            "gradient layout contract, or that the param's strides changed since DDP was constructed.  This is not "
            f"an error, but may impair performance.\ngrad.sizes() = {sizes}, strides() = {grad_strides}\n"
            f"bucket_view.sizes() = {sizes}, strides() = {bucket_strides} (Triggered internally at "
            "/pytorch/torch/csrc/distributed/c10d/reducer.cpp:332.)")


def test_only_ddps_size_one_stride_warning_is_silenced():
    """A one-input-channel weight's gradient that differs from its bucket only in the size-1 dimension's stride (as
    the gradient penalty's double backward gives it, channels-last on a CPU) warns no more; any other mismatch
    still does."""
    from specgan.train.distributed import ignore_size_one_stride_warnings
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ignore_size_one_stride_warnings()
        warnings.warn(_ddp_stride_warning([16, 16, 4, 1], [16, 1, 4, 1], [64, 1, 4, 4]), UserWarning)
        assert not seen
        warnings.warn(_ddp_stride_warning([16, 1, 4, 1], [16, 16, 4, 1], [64, 1, 4, 4]), UserWarning)
        assert not seen
        for grad, bucket, sizes in (([512, 1, 128, 32], [512, 32, 128, 1], [64, 32, 4, 4]),   # a real layout change
                                    ([16, 16, 1, 4], [16, 1, 4, 1], [64, 1, 4, 4]),           # another dim's stride
                                    ([16, 16, 4, 1], [16, 1, 4, 1], [64, 2, 4, 4])):          # size 2, not 1
            warnings.warn(_ddp_stride_warning(grad, bucket, sizes), UserWarning)
        assert len(seen) == 3
