"""Faults during ``specgan prep``: a second prep on the same folder, a full disk, Ctrl-C. Each leaves the previous
dataset complete and loadable, says what happened in one line, and leaves no half-written file behind."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

import specgan.data.dataset_dir as dataset_dir
import specgan.data.prep as prep_module
from specgan.cli import app
from specgan.data.dataset_dir import open_dataset
from specgan.data.prep import prep
from specgan.errors import DatasetError

from .conftest import PARAM_FLAGS, PARAMS, voiced

ROOT = Path(__file__).resolve().parents[2]
LOCKED = "another specgan prep is writing this dataset"


def run_cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def make_corpus(src: Path, *, files: int = 3) -> Path:
    """``files`` short speech-like recordings over two domains."""
    for i in range(files):
        folder = src / ("a" if i % 2 == 0 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"clip{i}.wav", voiced(2.0, 16000, f0=120.0 + 30 * i, seed=i), 16000, subtype="PCM_16")
    return src


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file of a dataset folder (but the lock file) and its bytes."""
    return {f.name: f.read_bytes() for f in sorted(out.iterdir()) if f.name != ".lock"}


@pytest.fixture
def existing(tmp_path):
    """A corpus, its dataset, that dataset's files, and a new recording added since: ``(src, out, before)``."""
    src, out = make_corpus(tmp_path / "src"), tmp_path / "ds"
    prep(src, out, params=PARAMS, workers=1)
    before = snapshot(out)
    sf.write(src / "b" / "new.wav", voiced(3.0, 16000, f0=300.0, seed=9), 16000, subtype="PCM_16")
    return src, out, before


def assert_previous_dataset_intact(out: Path, before: dict[str, bytes]) -> None:
    assert snapshot(out) == before  # no new or half-written file, nothing changed
    ds = open_dataset(out)
    assert len(ds.chunks) == ds.manifest["shape"][0] > 0 and np.isfinite(np.asarray(ds.chunks)).all()
    assert "b/new.wav" not in {s["path"] for s in ds.manifest["sources"]}


# -- two preps on one dataset folder ---------------------------------------------------------------------------
PAUSED_PREP = textwrap.dedent("""
    # A real `specgan prep` that stops before its first file until told to go on (a line on stdin).
    import sys
    import specgan.data.prep as prep_module
    from specgan.cli import main
    real = prep_module.decode_whole  # every file is opened by it first
    def paused(path, **kwargs):
        if not getattr(paused, "done", False):
            paused.done = True
            print("working", flush=True)
            sys.stdin.readline()
        return real(path, **kwargs)
    prep_module.decode_whole = paused
    sys.argv = ["specgan", *sys.argv[1:]]
    main()
""")


def test_second_prep_is_refused_while_the_first_writes(tmp_path):
    src, out = make_corpus(tmp_path / "src"), tmp_path / "ds"
    first = subprocess.Popen([sys.executable, "-c", PAUSED_PREP, "prep", str(src), "-o", str(out),
                              "--workers", "1", *PARAM_FLAGS], cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert first.stdout.readline().strip() == "working"  # the first prep holds the folder
        code, output = run_cli("prep", src, "-o", out, *PARAM_FLAGS)
        assert code == 2
        assert len(output.strip().splitlines()) == 1 and LOCKED in output and str(out) in output
        assert not (out / "manifest.json").exists()
        first.stdin.write("go\n")
        first.stdin.close()
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        first.kill()
        first.wait()
    ds = open_dataset(out)  # the first prep's dataset, whole
    assert len(ds.manifest["sources"]) == 3 and len(list(out.glob("chunks-*.npy"))) == 1
    code, output = run_cli("prep", src, "-o", out, *PARAM_FLAGS)  # the lock went with its holder
    assert code == 0 and "up to date" in output


def test_two_preps_started_together_never_interleave(tmp_path):
    src = make_corpus(tmp_path / "src", files=4)
    out = tmp_path / "ds"
    command = [sys.executable, "-m", "specgan", "prep", str(src), "-o", str(out), "--workers", "1", *PARAM_FLAGS]
    runs = [subprocess.Popen(command, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)]
    results = [(run.wait(timeout=180), run.stdout.read() + run.stderr.read()) for run in runs]
    for code, output in results:
        assert code in (0, 2), output
        if code == 2:  # refused, in one line; otherwise it ran after the other, alone
            assert len(output.strip().splitlines()) == 1 and LOCKED in output
    assert 0 in [code for code, _ in results]
    reference = prep(src, tmp_path / "reference", params=PARAMS, workers=1)
    ds, ref = open_dataset(out), open_dataset(reference.out)
    np.testing.assert_array_equal(ds.chunks, ref.chunks)
    np.testing.assert_array_equal(ds.positions, ref.positions)
    assert sorted(f.name for f in out.iterdir() if not f.name.startswith(("chunks-", "labels-", "positions-"))) \
        == [".lock", "manifest.json"]
    assert len(list(out.glob("*.npy"))) == 3


# -- a full disk ---------------------------------------------------------------------------------------------------
def full_disk_after(monkeypatch, writes: int, error: BaseException) -> None:
    """Make the dataset writer fail on its ``writes + 1``-th write, after ``writes`` succeeded."""
    real = dataset_dir.write_bytes
    count = {"n": 0}

    def failing(f, array):
        count["n"] += 1
        if count["n"] > writes:
            raise error
        real(f, array)

    monkeypatch.setattr(dataset_dir, "write_bytes", failing)


def test_full_disk_while_writing_keeps_the_previous_dataset(existing, monkeypatch):
    src, out, before = existing
    full_disk_after(monkeypatch, 2, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))  # mid-way through chunks
    with pytest.raises(DatasetError) as caught:
        prep(src, out, params=PARAMS, workers=1)
    message = str(caught.value)
    assert "No space left on device" in message and "previous dataset" in message and "\n" not in message
    assert_previous_dataset_intact(out, before)
    code, output = run_cli("prep", src, "-o", out, *PARAM_FLAGS)  # the command line says the same, exit code 2
    assert code == 2 and len(output.strip().splitlines()) == 1 and "No space left on device" in output
    assert_previous_dataset_intact(out, before)
    monkeypatch.undo()
    assert prep(src, out, params=PARAMS, workers=1).processed == 1  # once there is room, the update goes through


FULL_DISK = textwrap.dedent("""
    # Runs inside a private mount namespace where sys.argv[1] is a 1 MB tmpfs.
    import json, sys
    from pathlib import Path
    import numpy as np, soundfile as sf
    from typer.testing import CliRunner
    from specgan.cli import app
    from specgan.data.dataset_dir import open_dataset
    disk, src = Path(sys.argv[1]), Path(sys.argv[2])
    out, flags = disk / "ds", sys.argv[3:]
    first = CliRunner().invoke(app, ["prep", str(src / "small"), "-o", str(out), *flags])
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    # Another source folder replaces a dataset only with --overwrite, which also keeps it until the new one is whole.
    second = CliRunner().invoke(app, ["prep", str(src / "big"), "-o", str(out), "--overwrite", *flags])
    after = {f.name: f.read_bytes() for f in out.iterdir()}
    ds = open_dataset(out)
    print(json.dumps({"first": [first.exit_code, first.output], "second": [second.exit_code, second.output],
                      "unchanged": before == after, "chunks": len(np.asarray(ds.chunks)),
                      "files": sorted(after)}))
""")


def test_real_full_disk_on_a_small_tmpfs(tmp_path):
    """The same on a real 1 MB tmpfs (in a private mount namespace, so nothing outside this test sees it):
    the kernel's ENOSPC, not a simulated one. Skipped where mounting is not allowed."""
    src = tmp_path / "src"
    make_corpus(src / "small", files=1)  # a few chunks: fits
    (src / "big" / "a").mkdir(parents=True)  # 2 minutes: 230 chunks of 8 KB, more than the disk holds
    sf.write(src / "big" / "a" / "long.wav", voiced(120.0, 16000), 16000, subtype="PCM_16")
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = 'mount -t tmpfs -o size=1m specgan-test "$1" && shift && exec "$@"'
    for prefix in (["unshare", "--mount", "--propagation", "private"],
                   ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]):
        try:
            done = subprocess.run([*prefix, "sh", "-c", mount, "sh", str(disk), sys.executable, "-c", FULL_DISK,
                                   str(disk), str(src), *PARAM_FLAGS], cwd=ROOT, capture_output=True, text=True,
                                  timeout=180)
        except (FileNotFoundError, subprocess.SubprocessError) as e:
            pytest.skip(f"unshare unavailable ({e})")
        if done.returncode == 0 or "mount" not in done.stderr and "unshare" not in done.stderr:
            break
    else:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["first"][0] == 0, result["first"][1]
    code, output = result["second"]
    assert code == 2 and len(output.strip().splitlines()) == 1, output
    assert "No space left on device" in output and "previous dataset" in output
    assert result["unchanged"] and result["chunks"] > 0
    assert not [f for f in result["files"] if f.endswith(".tmp")]


# -- Ctrl-C -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_while_files_are_processed_keeps_the_previous_dataset(existing, monkeypatch, workers):
    """A real SIGINT arrives while files are being processed (raised from inside the second one)."""
    src, out, before = existing
    real = prep_module.decode_whole  # every file is opened by it first
    calls = {"n": 0}

    def interrupted(path, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            signal.raise_signal(signal.SIGINT)  # Python turns it into KeyboardInterrupt in the main thread
        return real(path, **kwargs)

    monkeypatch.setattr(prep_module, "decode_whole", interrupted)
    monkeypatch.setattr(prep_module, "file_sha256", lambda path: f"changed-{path.name}")  # all new: reprocess all
    with pytest.raises(KeyboardInterrupt):
        prep(src, out, params=PARAMS, workers=workers)
    assert calls["n"] >= 2
    assert_previous_dataset_intact(out, before)
    monkeypatch.undo()
    report = prep(src, out, params=PARAMS, workers=workers)  # the lock was released; the update goes through
    assert report.processed == 1 and "b/new.wav" in {s["path"] for s in report.manifest["sources"]}


def test_ctrl_c_while_the_dataset_is_written_keeps_the_previous_one(existing, monkeypatch):
    src, out, before = existing
    full_disk_after(monkeypatch, 1, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        prep(src, out, params=PARAMS, workers=1)
    assert_previous_dataset_intact(out, before)


def test_an_overwrite_that_fails_or_is_interrupted_keeps_the_previous_dataset(existing, monkeypatch):
    """--overwrite with other parameters replaces the dataset only when the new one is committed."""
    src, out, before = existing
    with pytest.raises(DatasetError, match="other audio parameters \\(n_fft: 1024 → 512, hop_length: 256 → 128\\)"):
        prep(src, out, params=dataclasses.replace(PARAMS, n_fft=512, hop_length=128), workers=1)
    with pytest.raises(DatasetError, match="other audio parameters \\(chunk_hop: \\(not set\\) → 8\\)"):
        prep(src, out, params=dataclasses.replace(PARAMS, chunk_hop=8), workers=1)
    with pytest.raises(DatasetError, match="none of the 4 audio files could be used"):
        prep(src, out, params=dataclasses.replace(PARAMS, frames=4096), workers=1, overwrite=True)
    assert_previous_dataset_intact(out, before)
    real = prep_module.decode_whole

    def interrupted(path, **kwargs):
        if path.name == "new.wav":
            raise KeyboardInterrupt
        return real(path, **kwargs)

    monkeypatch.setattr(prep_module, "decode_whole", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prep(src, out, params=dataclasses.replace(PARAMS, n_fft=512), workers=1, overwrite=True)
    assert_previous_dataset_intact(out, before)
    monkeypatch.undo()
    report = prep(src, out, params=dataclasses.replace(PARAMS, n_fft=512), workers=1, overwrite=True)
    assert open_dataset(out).audio.n_fft == 512 and report.processed == 4
    assert len(list(out.glob("chunks-*.npy"))) == 1  # the replaced dataset's arrays are gone after the commit


def test_overwrite_rebuilds_a_dataset_whose_manifest_is_damaged(existing):
    """The damaged-manifest error says to run prep with --overwrite; that must then work."""
    src, out, _ = existing
    (out / "manifest.json").write_text('{"format": "specgan-dataset", "version": 1, "audio": 3}')
    with pytest.raises(DatasetError, match="damaged dataset manifest.*--overwrite"):
        prep(src, out, params=PARAMS, workers=1)
    report = prep(src, out, params=PARAMS, workers=1, overwrite=True)
    assert report.processed == 4 and len(open_dataset(out).labels) > 0
    assert len(list(out.glob("chunks-*.npy"))) == 1


def test_an_update_says_which_files_and_domains_of_the_previous_dataset_it_dropped(existing):
    src, out, _ = existing
    (src / "a" / "clip0.wav").unlink()
    report = prep(src, out, params=PARAMS, workers=1)
    assert report.removed == ["a/clip0.wav"] and report.removed_domains == []
    # Leaving a domain out with --domains is refused (the dataset kept); its folder gone, it goes with its files.
    code, output = run_cli("prep", src, "-o", out, "--workers", "1", "--domains", "b", *PARAM_FLAGS[:-1])
    assert code == 2 and "holds domain(s) a, which --domains b leaves out" in output, output
    assert open_dataset(out).domains == ("a", "b")
    shutil.rmtree(src / "a")
    code, output = run_cli("prep", src, "-o", out, "--workers", "1", *PARAM_FLAGS[:-1])
    assert code == 0, output
    assert "removed 1 file(s) of the previous dataset, no longer found or selected (domain(s) a with them): " \
           "a/clip2.wav" in output
    assert open_dataset(out).domains == ("b",)


INTERRUPTIBLE_PREP = textwrap.dedent("""
    # A real `specgan prep` whose second file takes long enough to be interrupted (it says when it starts).
    import sys, time
    import specgan.data.prep as prep_module
    from specgan.cli import main
    real = prep_module.decode_whole  # every file is opened by it first
    def slow(path, **kwargs):
        if path.name == "new.wav":
            print("working", flush=True)
            time.sleep(60)
        return real(path, **kwargs)
    prep_module.decode_whole = slow
    sys.argv = ["specgan", *sys.argv[1:]]
    main()
""")


@pytest.mark.parametrize("sent, code, said", [(signal.SIGINT, 130, "interrupted"),
                                              (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_sigint_or_sigterm_to_the_prep_command_keeps_the_previous_dataset(existing, sent, code, said):
    src, out, before = existing
    run = subprocess.Popen([sys.executable, "-c", INTERRUPTIBLE_PREP, "prep", str(src), "-o", str(out),
                            "--workers", "1", *PARAM_FLAGS], cwd=ROOT, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert run.stdout.readline().strip() == "working"
        run.send_signal(sent)
        exit_code = run.wait(timeout=60)
    finally:
        run.kill()
        run.wait()
    errors = run.stderr.read()
    assert exit_code == code, errors
    assert errors.strip().splitlines() == [f"{said}; nothing half-written was kept"]
    assert_previous_dataset_intact(out, before)
