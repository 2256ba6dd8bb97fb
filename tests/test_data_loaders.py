"""Dataset loaders: IDX files and their fetching (mirror, local HTTP server), image folders, prepped spectrograms,
and the ``data.kind`` registry. No test touches the network."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import re
import shutil
import struct
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from specgan.audio.params import AudioParams
from specgan.data.idx import IDX_SETS, IdxFile, IdxSet, fetch_idx, load_idx_set, read_idx, verify_file
from specgan.data.image_folder import load_image_folder
from specgan.data.loaders import DATA_KINDS, load_data
from specgan.data.prep import prep
from specgan.data.spectrogram_data import load_spectrogram_data
from specgan.errors import ConfigError, DatasetError, SpecganWarning

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")  # apt-get install dataset-fashion-mnist


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx_bytes(array: np.ndarray, code: int) -> bytes:
    """An IDX file written by hand: magic (0, 0, dtype code, ndim), big-endian uint32 dims, big-endian values."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def gz(data: bytes, *, mtime: int = 0) -> bytes:
    return gzip.compress(data, mtime=mtime)


# -- read_idx --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, code", [(np.uint8, 0x08), (np.int8, 0x09), (np.int16, 0x0B), (np.int32, 0x0C),
                                         (np.float32, 0x0D), (np.float64, 0x0E)])
def test_read_idx_hand_made(tmp_path, dtype, code):
    array = (np.arange(2 * 3 * 4).reshape(2, 3, 4) * (1 if dtype in (np.uint8, np.int8) else -1001)).astype(dtype)
    raw = idx_bytes(array, code)
    (tmp_path / "a-idx3").write_bytes(raw)
    (tmp_path / "a-idx3.gz").write_bytes(gz(raw))
    for name in ("a-idx3", "a-idx3.gz"):
        got = read_idx(tmp_path / name)
        assert got.shape == (2, 3, 4) and got.dtype == np.dtype(dtype) and got.dtype.isnative
        np.testing.assert_array_equal(got, array)


def test_read_idx_known_bytes(tmp_path):
    # 2 labels, uint8: header 00 00 08 01, count 2, then the values
    (tmp_path / "labels").write_bytes(bytes.fromhex("00000801 00000002 0709"))
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), [7, 9])


@pytest.mark.parametrize("data, message", [
    (bytes.fromhex("00000801 00000003 0709"), "truncated or damaged"),        # one value short
    (bytes.fromhex("00000801 00000002 070901"), "truncated or damaged"),      # one value too many
    (bytes.fromhex("00000803 00000002"), "truncated IDX header"),
    (bytes.fromhex("01020801 00000001 07"), "not an IDX file"),
    (bytes.fromhex("00000701 00000001 07"), "unknown IDX dtype code 0x07"),
    (b"", "not an IDX file"),
    # a header claiming (2**32-1)**3 values: the size it needs is said as it is (an int64 product wrapped negative)
    (bytes.fromhex("00000803 ffffffff ffffffff ffffffff 07"), "needs 79228162458924105385300197391 "),
])
def test_read_idx_damaged(tmp_path, data, message):
    file = tmp_path / "bad-idx1-ubyte"
    file.write_bytes(data)
    with pytest.raises(DatasetError, match=message) as e:
        read_idx(file)
    assert str(file) in str(e.value)


def test_read_idx_damaged_gzip(tmp_path):
    file = tmp_path / "cut.gz"
    file.write_bytes(gz(idx_bytes(np.zeros((50, 28, 28), np.uint8), 0x08))[:-30])
    with pytest.raises(DatasetError, match=f"{file}: damaged gzip"):
        read_idx(file)
    with pytest.raises(DatasetError, match="file not found"):
        read_idx(tmp_path / "absent.gz")


def test_read_idx_mnist(mnist):
    images = read_idx(mnist / "train-images-idx3-ubyte.gz")
    labels = read_idx(mnist / "train-labels-idx1-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255
    assert 25 < images.mean() < 40  # mostly black background, white strokes
    counts = np.bincount(labels, minlength=10)
    assert labels.shape == (60000,) and len(counts) == 10
    assert counts.min() > 5000 and counts.max() < 7000  # MNIST is roughly balanced (5421 fives .. 6742 ones)
    assert counts[1] == 6742


def test_load_idx_set_mnist(mnist):
    test = load_idx_set(mnist, name="mnist", split="test")
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == torch.float32
    assert test.labels.dtype == torch.int64 and test.labels.shape == (10000,)
    assert test.images.min() == -1 and test.images.max() == 1
    assert test.class_names == tuple("0123456789") and test.audio is None
    assert len(test) == 10000 and test.image_shape == (1, 28, 28) and test.n_classes == 10
    assert torch.equal(test.labels, torch.from_numpy(read_idx(mnist / "t10k-labels-idx1-ubyte.gz").astype(np.int64)))


def test_load_idx_set_missing_file(tmp_path, mnist):
    """The error says how to fetch the set, as a command that can be copied: the folder quoted for the shell."""
    folder = tmp_path / "my data"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte.gz").symlink_to(mnist / "train-images-idx3-ubyte.gz")
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte.gz: missing .*"
                                           + re.escape(f"fetch the set with: specgan data fetch mnist -o '{folder}'")):
        load_idx_set(folder, name="mnist", split="train")
    with pytest.raises(ConfigError, match="must be one of mnist, fashion-mnist"):
        load_idx_set(tmp_path, name="kmnist", split="train")
    with pytest.raises(ConfigError, match="data.split = 'val'"):
        load_idx_set(tmp_path, name="mnist", split="val")


def test_idx_table():
    assert set(IDX_SETS) == {"mnist", "fashion-mnist"}
    fashion = IDX_SETS["fashion-mnist"]
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[-1] == "Ankle boot"
    assert len(fashion.class_names) == 10 and IDX_SETS["mnist"].class_names == tuple("0123456789")
    for spec in IDX_SETS.values():
        assert [f.name for f in spec.files] == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
        assert all(len(f.md5) == len(f.raw_md5) == 32 for f in spec.files)


# -- fetching --------------------------------------------------------------------------------------------------

@pytest.fixture
def tiny(tmp_path, monkeypatch) -> tuple[str, Path]:
    """A made-up four-file IDX set "tiny" (3 classes, 5 train and 2 test images of 4×3) and a mirror folder of it."""
    rng = np.random.default_rng(0)
    mirror = tmp_path / "tiny-mirror"
    mirror.mkdir()
    entries = []
    for name, array in [("train-images-idx3-ubyte", rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)),
                        ("train-labels-idx1-ubyte", np.array([0, 1, 2, 0, 1], np.uint8)),
                        ("t10k-images-idx3-ubyte", rng.integers(0, 256, (2, 4, 3), dtype=np.uint8)),
                        ("t10k-labels-idx1-ubyte", np.array([2, 2], np.uint8))]:
        raw = idx_bytes(array, 0x08)
        packed = gz(raw)
        (mirror / f"{name}.gz").write_bytes(packed)
        entries.append(IdxFile(f"{name}.gz", md5(packed), md5(raw)))
    monkeypatch.setitem(IDX_SETS, "tiny", IdxSet("http://invalid.example/", *entries, class_names=("a", "b", "c")))
    return "tiny", mirror


def test_fetch_from_mirror(tiny, tmp_path):
    name, mirror = tiny
    dest = tmp_path / "data" / "tiny"
    assert fetch_idx(name, dest, mirror=mirror) == dest
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in mirror.iterdir())
    data = load_idx_set(dest, name=name, split="train")
    assert data.images.shape == (5, 1, 4, 3) and data.labels.tolist() == [0, 1, 2, 0, 1]
    assert data.class_names == ("a", "b", "c")
    # already there with the right checksum: nothing is copied again, even from a mirror that lost the files
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    for p in mirror.iterdir():
        p.unlink()
    fetch_idx(name, dest, mirror=mirror)
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before
    with pytest.raises(DatasetError, match="missing from the mirror"):
        fetch_idx(name, tmp_path / "other", mirror=mirror)
    assert not (tmp_path / "other").exists()  # a failed first fetch leaves no empty folder behind
    # A mirror one level up (a folder of sets, like ../shared/datasets) is pointed at the set's own folder.
    (tmp_path / "sets").mkdir()
    shutil.copytree(dest, tmp_path / "sets" / name)
    with pytest.raises(DatasetError, match=f"it is in {tmp_path / 'sets' / name}: give that folder as the mirror"):
        fetch_idx(name, tmp_path / "third", mirror=tmp_path / "sets")
    # A mirror that holds only some of the files: the missing one is named before any file is copied.
    (tmp_path / "partial").mkdir()
    for p in sorted(dest.iterdir())[:-1]:
        shutil.copyfile(p, tmp_path / "partial" / p.name)
    with pytest.raises(DatasetError, match=f"{sorted(dest.iterdir())[-1].name}: missing from the mirror"):
        fetch_idx(name, tmp_path / "fourth", mirror=tmp_path / "partial")
    assert not (tmp_path / "fourth").exists()
    # ... and one whose file is damaged: named with its checksums, before any file is copied.
    shutil.copyfile(sorted(dest.iterdir())[-1], tmp_path / "partial" / sorted(dest.iterdir())[-1].name)
    damaged = tmp_path / "partial" / sorted(dest.iterdir())[-1].name
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"x")
    with pytest.raises(DatasetError, match=f"{re.escape(str(damaged))}: md5 "):
        fetch_idx(name, tmp_path / "fifth", mirror=tmp_path / "partial")
    assert not (tmp_path / "fifth").exists()


def test_fetch_names_what_is_in_the_way_before_copying_anything(tiny, tmp_path):
    name, mirror = tiny
    prepped = tmp_path / "prepped"   # a prep dataset's folder: the set beside it would no longer load
    prepped.mkdir()
    (prepped / "manifest.json").write_text("{}")
    with pytest.raises(DatasetError, match=f"^{re.escape(str(prepped))}: holds a dataset made by specgan prep "
                                           f"\\(manifest.json\\); fetch {name} into a folder of its own$"):
        fetch_idx(name, prepped, mirror=mirror)
    assert [p.name for p in prepped.iterdir()] == ["manifest.json"]
    first = sorted(mirror.iterdir())[0]
    with pytest.raises(DatasetError, match=f"^{re.escape(str(first))}: not a folder; give the mirror folder"):
        fetch_idx(name, tmp_path / "dest", mirror=first)   # it had said "mirror folder does not exist"
    blocked = tmp_path / "blocked"   # a folder where the last file goes: found before the first is copied
    (blocked / "t10k-labels-idx1-ubyte.gz").mkdir(parents=True)
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz: not a file, where tiny's file of that name "
                                           "goes$"):
        fetch_idx(name, blocked, mirror=mirror)
    assert [p.name for p in blocked.iterdir()] == ["t10k-labels-idx1-ubyte.gz"]
    odd_mirror = tmp_path / "odd-mirror"  # a mirror whose "file" is a folder: not "missing from the mirror"
    shutil.copytree(mirror, odd_mirror)
    (odd_mirror / first.name).unlink()
    (odd_mirror / first.name).mkdir()
    with pytest.raises(DatasetError, match=f"^{re.escape(str(odd_mirror / first.name))}: not a regular file$"):
        fetch_idx(name, tmp_path / "dest", mirror=odd_mirror)
    assert not (tmp_path / "dest").exists()


def test_fetch_accepts_raw_and_recompressed_files(tiny, tmp_path):
    name, mirror = tiny
    # a raw (uncompressed) copy, and a re-compressed one whose .gz md5 differs (as Debian's Fashion-MNIST)
    first, second = sorted(mirror.iterdir())[:2]
    first.with_suffix("").write_bytes(gzip.decompress(first.read_bytes()))
    first.unlink()
    repacked = gz(gzip.decompress(second.read_bytes()), mtime=1234567)
    assert md5(repacked) != md5(second.read_bytes())
    second.write_bytes(repacked)
    dest = tmp_path / "dest"
    fetch_idx(name, dest, mirror=mirror)
    assert (dest / first.with_suffix("").name).exists() and (dest / second.name).exists()
    assert load_idx_set(dest, name=name, split="test").labels.tolist() == [2, 2]
    assert len(load_idx_set(dest, name=name, split="train")) == 5


def test_fetch_checksum_mismatch_leaves_nothing(tiny, tmp_path):
    name, mirror = tiny
    file = mirror / "t10k-labels-idx1-ubyte.gz"
    bad = gz(idx_bytes(np.array([2, 1], np.uint8), 0x08))
    file.write_bytes(bad)
    entry = IDX_SETS[name].test_labels
    dest = tmp_path / "data" / "dest"
    with pytest.raises(DatasetError) as e:
        fetch_idx(name, dest, mirror=mirror)
    message = str(e.value)
    assert str(file) in message and md5(bad) in message and entry.md5 in message and "\n" not in message
    # the mirror's files are all checked before any is copied: nothing was, not even a temporary file, and the
    # folders made for them are gone again
    assert not (tmp_path / "data").exists()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.txt").write_text("kept")
    with pytest.raises(DatasetError):
        fetch_idx(name, dest, mirror=mirror)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["mine.txt"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DatasetError, match=f"^{re.escape(str(tmp_path / 'afile'))}: is a file; give a folder for "
                                           f"the {name} files$"):
        fetch_idx(name, tmp_path / "afile", mirror=mirror)
    # a damaged file already in dest is replaced, not trusted
    dest.mkdir()
    (dest / "train-labels-idx1-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="md5"):
        verify_file(dest / "train-labels-idx1-ubyte.gz", IDX_SETS[name].train_labels)
    file.write_bytes(gz(idx_bytes(np.array([2, 2], np.uint8), 0x08)))
    fetch_idx(name, dest, mirror=mirror)
    assert load_idx_set(dest, name=name, split="train").labels.tolist() == [0, 1, 2, 0, 1]


def test_a_damaged_copy_under_the_other_name_is_removed_and_the_gz_is_read_first(tiny, tmp_path):
    """A damaged .gz in the folder, the mirror holding the file uncompressed: the raw copy is put in and the .gz
    removed (find_file reads the .gz first, so a damaged one left behind would keep the set from loading)."""
    name, mirror = tiny
    packed = mirror / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(packed.read_bytes())
    packed.with_suffix("").write_bytes(raw)
    packed.unlink()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / packed.name).write_bytes(b"garbage")
    fetch_idx(name, dest, mirror=mirror)
    assert not (dest / packed.name).exists() and (dest / packed.with_suffix("").name).read_bytes() == raw
    assert load_idx_set(dest, name=name, split="test").labels.tolist() == [2, 2]
    # Both forms in the folder: the .gz is the one read.
    (dest / packed.name).write_bytes(gz(raw))
    (dest / packed.with_suffix("").name).write_bytes(idx_bytes(np.array([0, 1], np.uint8), 0x08))
    assert load_idx_set(dest, name=name, split="test").labels.tolist() == [2, 2]


def test_images_and_labels_that_do_not_fit_together_are_refused(tiny, tmp_path):
    """Labels of another length than the images (a file of another set or split), or images that are no uint8
    (N, H, W) array: one DatasetError naming the file, not a dataset of misnumbered or rescaled images."""
    name, mirror = tiny
    dest = tmp_path / "dest"
    fetch_idx(name, dest, mirror=mirror)
    labels, images = dest / "train-labels-idx1-ubyte.gz", dest / "train-images-idx3-ubyte.gz"
    labels.write_bytes(gz(idx_bytes(np.array([0, 1, 2], np.uint8), 0x08)))
    with pytest.raises(DatasetError, match=f"^{re.escape(str(labels))}: 3 labels for the 5 images of "):
        load_idx_set(dest, name=name, split="train")
    labels.write_bytes(gz(idx_bytes(np.array([0, 1, 3, 0, 1], np.uint8), 0x08)))  # 3 classes: 0, 1, 2
    with pytest.raises(DatasetError, match=f"^{re.escape(str(labels))}: label 3 is out of range for tiny's 3 classes"):
        load_idx_set(dest, name=name, split="train")
    labels.write_bytes(gz(idx_bytes(np.array([0, 1, 2, 0, 1], np.uint8), 0x08)))
    images.write_bytes(gz(idx_bytes(np.zeros((5, 4, 3), np.int16), 0x0B)))
    with pytest.raises(DatasetError, match=f"^{re.escape(str(images))}: expected uint8 images \\(N, H, W\\), got int16"):
        load_idx_set(dest, name=name, split="train")
    images.write_bytes(gz(idx_bytes(np.zeros((5, 12), np.uint8), 0x08)))
    with pytest.raises(DatasetError, match="expected uint8 images"):
        load_idx_set(dest, name=name, split="train")


@contextmanager
def serve(folder: Path):
    """An HTTP server on 127.0.0.1 serving ``folder`` from a thread; yields its base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_from_local_server(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    name, mirror = tiny
    dest = tmp_path / "dest"
    progress = []
    with serve(mirror) as url:
        fetch_idx(name, dest, base_url=url, on_progress=lambda *a: progress.append(a))
        assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in mirror.iterdir())
        assert {p[0] for p in progress} == {p.name for p in mirror.iterdir()}
        last = {file: (done, total) for file, done, total in progress}
        assert all(done == total == len((mirror / file).read_bytes()) for file, (done, total) in last.items())
        # a damaged file on the server: the error names the URL and both checksums, and nothing is left
        bad = b"\x1f\x8b not really gzip"
        (mirror / "t10k-images-idx3-ubyte.gz").write_bytes(bad)
        (dest / "t10k-images-idx3-ubyte.gz").unlink()
        with pytest.raises(DatasetError, match=f"{url}t10k-images-idx3-ubyte.gz: md5 {md5(bad)}, expected "
                                               f"{IDX_SETS[name].test_images.md5}"):
            fetch_idx(name, dest, base_url=url)
        assert not (dest / "t10k-images-idx3-ubyte.gz").exists() and len(list(dest.iterdir())) == 3
        (mirror / "t10k-images-idx3-ubyte.gz").unlink()
        with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz: download failed \\(HTTP 404"):
            fetch_idx(name, dest, base_url=url)
        assert len(list(dest.iterdir())) == 3


def test_a_download_cut_short_says_so_and_a_killed_ones_file_is_removed(tiny, tmp_path, monkeypatch):
    """A server that closes early had made a 'damaged file' (md5) error; a killed fetch's temporary file stayed."""
    import os
    import time

    from specgan.data import idx

    monkeypatch.setenv("no_proxy", "127.0.0.1")
    name, mirror = tiny
    first = sorted(mirror.iterdir())[0]

    class HalfServed(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            data = first.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HalfServed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    dest = tmp_path / "dest"
    try:
        with pytest.raises(DatasetError, match=f"download incomplete \\({len(first.read_bytes()) // 2} of "
                                               f"{len(first.read_bytes())} bytes; the connection closed early\\)"):
            fetch_idx(name, dest, base_url=f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    dest.mkdir(exist_ok=True)
    dead, live = dest / f".{first.name}.abc123.tmp", dest / f".{first.name}.def456.tmp"
    dead.write_bytes(b"half")
    live.write_bytes(b"being written")
    old = time.time() - idx.STALE_DOWNLOAD_S - 60
    os.utime(dead, (old, old))
    fetch_idx(name, dest, mirror=mirror)
    assert not dead.exists() and live.exists()  # a download still going on (another fetch) is left alone


def test_the_command_line_downloads_from_an_http_mirror(tiny, tmp_path, monkeypatch):
    """--url: a user's own HTTP mirror (only a local folder, --mirror, had been reachable from the command line)."""
    from typer.testing import CliRunner

    from specgan.cli import app

    monkeypatch.setenv("no_proxy", "127.0.0.1")
    name, mirror = tiny
    with serve(mirror) as url:
        result = CliRunner().invoke(app, ["data", "fetch", name, "-o", str(tmp_path / "dest"), "--url", url])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == sorted(p.name for p in mirror.iterdir())
    result = CliRunner().invoke(app, ["data", "fetch", name, "--url", url, "--mirror", str(mirror)])
    assert result.exit_code == 2 and "--mirror and --url: choose one" in result.output
    result = CliRunner().invoke(app, ["data", "fetch", name, "-o", str(tmp_path / "x"), "--url", "nowhere/"])
    assert result.exit_code == 2 and "download failed (unknown url type" in result.output, result.output
    assert not (tmp_path / "x").exists()


def test_download_mnist_from_local_server(mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    dest = tmp_path / "mnist"
    with serve(mnist) as url:
        fetch_idx("mnist", dest, base_url=url)
    for entry in IDX_SETS["mnist"].files:
        assert md5((dest / entry.name).read_bytes()) == entry.md5
    # all present and verified: a second fetch needs no server at all
    fetch_idx("mnist", dest, base_url="http://127.0.0.1:9/")
    assert len(load_idx_set(dest, name="mnist", split="test")) == 10000


def test_fetch_mnist_from_mirror(mnist, tmp_path):
    dest = fetch_idx("mnist", tmp_path / "mnist", mirror=mnist)
    assert sorted(p.name for p in dest.iterdir()) == sorted(f.name for f in IDX_SETS["mnist"].files)


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason=f"{DEBIAN_FASHION} absent (apt-get install "
                                                        "dataset-fashion-mnist)")
def test_fashion_mnist_debian_package():
    # Debian re-compressed the files: the .gz md5s differ from the published ones, the IDX content does not.
    spec = IDX_SETS["fashion-mnist"]
    for entry in spec.files:
        verify_file(DEBIAN_FASHION / entry.name, entry)
    test = load_idx_set(DEBIAN_FASHION, name="fashion-mnist", split="test")
    assert test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10


# -- image folders ---------------------------------------------------------------------------------------------

def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    """Two classes of 8×6 grayscale images: "cats" (3, dark) and "dogs" (2, bright), plus a file that is ignored."""
    root = tmp_path / "pets"
    for i in range(3):
        write_png(root / "cats" / f"c{i}.png", np.full((8, 6), 10 * i, np.uint8))
    write_png(root / "dogs" / "d0.png", np.full((8, 6), 255, np.uint8))
    Image.fromarray(np.full((8, 6, 3), 200, np.uint8)).save(root / "dogs" / "d1.JPG")
    (root / "dogs" / "notes.txt").write_text("not an image")
    return root


def test_image_folder(folder):
    data = load_image_folder(folder)
    assert data.images.shape == (5, 1, 8, 6) and data.images.dtype == torch.float32
    assert data.class_names == ("cats", "dogs") and data.labels.tolist() == [0, 0, 0, 1, 1]
    assert data.images.min() == -1 and data.images.max() == 1
    assert torch.allclose(data.images[1], torch.full((1, 8, 6), 10 / 127.5 - 1))
    assert data.audio is None and data.source == str(folder)
    rgb = load_image_folder(folder, channels=3)
    assert rgb.images.shape == (5, 3, 8, 6)
    resized = load_image_folder(folder, image_size=(16, 4))
    assert resized.images.shape == (5, 1, 16, 4)
    assert torch.allclose(resized.images[3], torch.ones(1, 16, 4))


def test_a_folder_without_images_is_no_class_and_is_named(folder):
    (folder / "empty").mkdir()
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("no image")
    (folder / ".cache").mkdir()  # hidden: not a class folder either way
    with pytest.warns(SpecganWarning, match=r"pets: 2 folder\(s\) hold no images \(empty, notes\), so they are no "
                                            r"classes$"):
        data = load_image_folder(folder)
    assert data.class_names == ("cats", "dogs")


def test_a_16_bit_picture_is_scaled_to_8_bits_not_clipped(tmp_path):
    """16-bit grayscale PNG (mode I;16): 65535 is white and 257 * v is v in 8 bits; clipping had made every value
    above 255 white."""
    values = np.array([[0, 257 * 100], [257 * 200, 65535]], np.uint16)
    (tmp_path / "deep").mkdir()
    Image.fromarray(values).save(tmp_path / "deep" / "a.png")
    with Image.open(tmp_path / "deep" / "a.png") as img:
        assert img.mode.startswith("I;16")
    data = load_image_folder(tmp_path / "deep")
    expected = torch.tensor([[0, 100], [200, 255]], dtype=torch.float32) / 127.5 - 1
    torch.testing.assert_close(data.images[0, 0], expected)


def test_image_folder_root_files_form_a_class(tmp_path):
    write_png(tmp_path / "digits" / "a.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "digits" / "sevens" / "b.png", np.zeros((4, 4), np.uint8))
    data = load_image_folder(tmp_path / "digits")
    assert data.class_names == ("digits", "sevens") and data.labels.tolist() == [0, 1]
    # With a class folder of the folder's own name, the two merge: said, not silent.
    write_png(tmp_path / "digits" / "digits" / "c.png", np.zeros((4, 4), np.uint8))
    with pytest.warns(SpecganWarning, match=r"digits: its 1 picture\(s\) outside class folders are class digits, as "
                                            r"are those of its folder digits; move them"):
        data = load_image_folder(tmp_path / "digits")
    assert data.class_names == ("digits", "sevens") and data.labels.tolist() == [0, 0, 1]


def test_pictures_loose_in_a_folder_given_as_dot_are_classed_by_its_name(tmp_path, monkeypatch):
    """"." names no folder by itself: the pictures directly in it are class "digits" (its real name), not "images"."""
    write_png(tmp_path / "digits" / "a.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "digits" / "sevens" / "b.png", np.zeros((4, 4), np.uint8))
    monkeypatch.chdir(tmp_path / "digits")
    data = load_image_folder(Path("."))
    assert data.class_names == ("digits", "sevens") and data.labels.tolist() == [0, 1]


def test_image_folder_errors(folder, tmp_path):
    odd = folder / "dogs" / "d2.png"
    write_png(odd, np.zeros((9, 6), np.uint8))
    with pytest.raises(DatasetError, match=f"{odd}: 9x6 pixels .* but .*c0.png is 8x6; .*data.image_size"):
        load_image_folder(folder)
    assert load_image_folder(folder, image_size=(8, 6)).images.shape == (6, 1, 8, 6)
    broken = folder / "cats" / "c3.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DatasetError, match=f"{broken}: unreadable image"):
        load_image_folder(folder, image_size=(8, 6))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        load_image_folder(tmp_path / "absent")
    with pytest.raises(ConfigError, match="channels = 2"):
        load_image_folder(folder, channels=2)
    # Several problems: one error names them all, so that one run tells what to fix.
    with pytest.raises(DatasetError) as caught:
        load_image_folder(folder)
    assert str(caught.value) == (
        f"{folder}: 2 of 7 images cannot be used: {broken}: unreadable image (cannot identify image file "
        f"'{broken}'); {odd}: 9x6 pixels (height x width), but {folder / 'cats' / 'c0.png'} is 8x6; resize them all "
        f"with data.image_size = [height, width]")
    for i in range(6):
        write_png(folder / "dogs" / f"e{i}.png", np.zeros((5, 5), np.uint8))
    with pytest.raises(DatasetError, match=r": 8 of 13 images cannot be used: .*e2.png: 5x5 pixels[^;]*; \.\.\.; "
                                           r"resize") as caught:
        load_image_folder(folder)
    assert "e3.png" not in str(caught.value)  # the first five are named


def test_pillows_warnings_name_the_picture(folder, monkeypatch):
    """Pillow's warnings (corrupt EXIF data, a picture past its size limit) had come out as Python prints them, two
    lines each, naming Pillow's source file instead of the picture."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # 8x6 = 48 pixels: a warning (an error from 80)
    with pytest.warns(SpecganWarning) as caught:
        load_image_folder(folder)
    said = [str(w.message) for w in caught if "exceeds limit" in str(w.message)]
    assert said[0].startswith(f"{folder / 'cats' / 'c0.png'}: Image size (48 pixels) exceeds limit of 40 pixels")
    assert len(said) == 5  # every picture, each named


def test_a_named_pipe_or_a_picture_pillow_cannot_decode_is_an_unreadable_image(folder):
    """A named pipe called x.png had hung training forever in Pillow's open(); a DDS texture named .png (Pillow's
    plugin raises NotImplementedError for a pixel format it lacks) had been an internal error."""
    pipe = folder / "cats" / "pipe.png"
    os.mkfifo(pipe)
    unblock = threading.Timer(10, _open_and_close_for_writing, [pipe])  # a reader hung in open() fails instead
    unblock.daemon = True
    unblock.start()
    texture = folder / "dogs" / "texture.png"
    header = struct.pack("<7I", 124, 0x1007, 4, 4, 16, 0, 0) + bytes(44) + struct.pack("<2I4s5I", 32, 0x2000,
                                                                                       bytes(4), 0, 0, 0, 0, 0)
    texture.write_bytes(b"DDS " + header + bytes(20 + 64))
    with pytest.raises(DatasetError) as caught:
        load_image_folder(folder, image_size=(8, 6))
    assert f"{pipe}: unreadable image (not a regular file)" in str(caught.value)
    assert f"{texture}: unreadable image (Unknown pixel format flags 8192)" in str(caught.value)
    unblock.cancel()


def _open_and_close_for_writing(pipe: Path) -> None:
    try:
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader: nothing to unblock
        pass


def test_a_file_name_with_a_line_break_stays_one_line_in_an_error(tmp_path):
    from test_cli_train import ROOT, specgan as cli_run

    (tmp_path / "pics" / "c").mkdir(parents=True)
    (tmp_path / "pics" / "c" / "bad\nname.png").write_text("not a picture")
    code, _, stderr = cli_run("train", ROOT / "recipes" / "image_folder.toml", "--set",
                              f"data.path={tmp_path / 'pics'}", "--set", f"output.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert code == 2 and len(stderr.strip().splitlines()) == 1 and "bad\\nname.png: unreadable image" in stderr, \
        stderr


# -- spectrogram datasets --------------------------------------------------------------------------------------

FAST = AudioParams(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, frames=16)


@pytest.fixture(scope="module")
def prepped(tmp_path_factory) -> Path:
    """A dataset prepped from sine waves: domains "high" (2 files), "low" (1 file) and "mid" (1 file)."""
    root = tmp_path_factory.mktemp("spec")
    t = np.arange(4000) / 8000  # 0.5 s
    for domain, freq, names in [("low", 200, ["a"]), ("mid", 800, ["a"]), ("high", 2000, ["a", "b"])]:
        (root / "src" / domain).mkdir(parents=True)
        for i, name in enumerate(names):
            sf.write(root / "src" / domain / f"{name}.wav", 0.5 * np.sin(2 * np.pi * (freq + 50 * i) * t), 8000)
    prep(root / "src", root / "ds", params=FAST, workers=1)
    return root / "ds"


def test_spectrogram_data(prepped):
    data = load_spectrogram_data(prepped)
    assert data.class_names == ("high", "low", "mid")
    assert data.images.shape[1:] == (1, 32, 16) and data.images.dtype == torch.float32
    assert data.audio == FAST and data.source == str(prepped)
    assert -1 <= data.images.min() and data.images.max() <= 1 and data.images.std() > 0.1
    counts = torch.bincount(data.labels, minlength=3).tolist()
    assert counts[0] == 2 * counts[1] == 2 * counts[2] > 0
    # the low tone's energy sits in lower mel bands than the high one's
    band = torch.arange(32.0).view(1, 1, 32, 1)
    centre = [((data.images[data.labels == k] + 1) * band).sum((1, 2, 3)).mean()
              / (data.images[data.labels == k] + 1).sum((1, 2, 3)).mean() for k in range(3)]
    assert centre[1] < centre[2] < centre[0]


def test_spectrogram_domains(prepped):
    full = load_spectrogram_data(prepped)
    data = load_spectrogram_data(prepped, domains=("low", "high"))
    assert data.class_names == ("low", "high")
    assert torch.equal(data.labels, torch.where(full.labels[full.labels != 2] == 1, 0, 1))
    assert torch.equal(data.images, full.images[full.labels != 2])
    with pytest.raises(DatasetError, match=r"no domain 'bass' \(available: high, low, mid\)"):
        load_spectrogram_data(prepped, domains=("low", "bass"))
    with pytest.raises(DatasetError, match="listed twice"):
        load_spectrogram_data(prepped, domains=("low", "low"))


def test_spectrogram_missing(tmp_path):
    with pytest.raises(DatasetError, match="no manifest.json; make the dataset with: specgan prep"):
        load_spectrogram_data(tmp_path)


# -- the registry ----------------------------------------------------------------------------------------------

def test_load_data_registry(prepped, folder, tiny):
    assert list(DATA_KINDS) == ["mnist", "fashion-mnist", "image-folder", "spectrogram"]
    with pytest.raises(ConfigError, match="data.kind = 'cifar': must be one of mnist, fashion-mnist, image-folder, "
                                          "spectrogram"):
        load_data("cifar", prepped)
    assert load_data("spectrogram", prepped, domains=("mid",)).class_names == ("mid",)
    assert load_data("image-folder", folder, image_size=(4, 4)).images.shape == (5, 1, 4, 4)
    with pytest.raises(ConfigError, match="data.split = 'test': data.kind = 'image-folder' has no test split"):
        load_data("image-folder", folder, split="test")
    with pytest.raises(ConfigError, match="only spectrogram datasets have domains"):
        load_data("image-folder", folder, domains=("cats",))
    with pytest.raises(ConfigError, match="only image folders are resized"):
        load_data("spectrogram", prepped, image_size=(32, 16))
    with pytest.raises(ConfigError, match="data.split = 'val': must be one of train, test"):
        load_data("spectrogram", prepped, split="val")
    # A file given for the dataset folder is named as such, whatever the kind (not "files missing in it").
    manifest = prepped / "manifest.json"
    for kind in DATA_KINDS:
        with pytest.raises(DatasetError, match=f"^{re.escape(str(manifest))}: a file, not a folder; the dataset is "
                                               f"the folder that holds its files$"):
            load_data(kind, manifest)


def test_load_data_mnist(mnist):
    test = load_data("mnist", mnist, split="test")
    assert test.images.shape == (10000, 1, 28, 28) and test.class_names == tuple("0123456789")
    with pytest.raises(DatasetError, match="specgan data fetch fashion-mnist"):
        load_data("fashion-mnist", mnist.parent / "no-such-folder")


@pytest.mark.parametrize("damage, problem", [
    (lambda m: m.update(domains=["low", "high", "mid"]), r"domains\[0\].name is missing or not of type str"),
    (lambda m: m["domains"][1].pop("label"), r"domains\[1\].label is missing or not of type int"),
    (lambda m: m["files"].pop("labels"), "'files' does not name the chunks, labels, positions arrays"),
    (lambda m: m["sources"][0].update(first_chunk="0"), r"sources\[0\].first_chunk is missing or not of type int"),
    (lambda m: m.update(skipped={}), "'skipped' is not a list"),
    (lambda m: m.update(audio=[]), "'audio' is not a table"),
], ids=["domain-names", "label", "files", "first-chunk", "skipped", "audio"])
def test_a_damaged_manifest_is_one_dataset_error_naming_it(prepped, tmp_path, damage, problem):
    """A hand-edited manifest (or one another tool wrote) with the right header but broken tables: one line naming
    the manifest and what is wrong, for training and for an incremental prep alike; never a KeyError or TypeError
    from deep inside."""
    import json
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(prepped, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    damage(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    expected = rf"{folder / 'manifest.json'}: damaged dataset manifest \({problem}\); make the dataset again"
    with pytest.raises(DatasetError, match=expected):
        load_spectrogram_data(folder)
    with pytest.raises(DatasetError, match=expected):
        prep(prepped.parent / "src", folder, params=FAST, workers=1)


def _damage_array(folder: Path, name: str, damage) -> Path:
    import json
    file = folder / json.loads((folder / "manifest.json").read_text())["files"][name]
    if damage == "empty":
        file.write_bytes(b"")
    else:
        np.save(file, damage(np.load(file)), allow_pickle=False)
    return file


@pytest.mark.parametrize("name, damage, problem", [
    ("chunks", "empty", r"missing or damaged dataset array \(No data left in file\)"),
    ("chunks", lambda a: a.transpose(0, 2, 1), r"damaged dataset array \(float of shape \(\d+, 32, 16\) \(n_mels, "
                                               r"frames: the manifest's audio table\) expected, found float16 of shape "
                                               r"\(\d+, 16, 32\)\)"),
    ("labels", lambda a: np.stack([a, a], 1),
     r"damaged dataset array \(integer of shape \(\d+,\) expected, found int64 of shape \(\d+, 2\)"),
    ("labels", lambda a: np.array(["a"] * len(a)),
     r"damaged dataset array \(integer of shape \(\d+,\) expected, found <U1"),
    ("labels", lambda a: np.full(len(a), np.nan),
     r"damaged dataset array \(integer of shape \(\d+,\) expected, found float64"),
    ("positions", lambda a: a[:-1],
     r"damaged dataset array \(integer of shape \(\d+, 2\) expected, found int64 of shape \(\d+, 2\)"),
], ids=["empty", "transposed-chunks", "2d-labels", "text-labels", "nan-labels", "short-positions"])
def test_a_damaged_dataset_array_is_one_dataset_error_naming_it(prepped, tmp_path, name, damage, problem):
    """An empty array file was an EOFError, and arrays of another shape or kind than prep writes failed inside
    training (a matrix product of the wrong sizes, int() of a string): one line naming the file, for training and
    for an incremental prep alike."""
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(prepped, folder)
    file = _damage_array(folder, name, damage)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NaN labels had printed numpy's cast warning before the error
        with pytest.raises(DatasetError, match=rf"^{re.escape(str(file))}: {problem}"):
            load_spectrogram_data(folder)
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(file))}: {problem}"):
        prep(prepped.parent / "src", folder, params=FAST, workers=1)


def test_a_dataset_updated_by_prep_while_it_is_opened_opens_whole(prepped, tmp_path, monkeypatch):
    """prep commits a new manifest, then removes the arrays the old one named: an open that had read the old
    manifest found its arrays gone and called the dataset damaged (8 of 12 updates, in a user's loop). The newer
    manifest is read and its arrays opened."""
    import shutil
    from specgan.data import dataset_dir

    folder, src = tmp_path / "ds", tmp_path / "src"
    shutil.copytree(prepped, folder)
    shutil.copytree(prepped.parent / "src", src)
    before = len(load_spectrogram_data(folder))
    sf.write(src / "low" / "b.wav", 0.5 * np.sin(2 * np.pi * 300 * np.arange(4000) / 8000), 8000)
    real_load, calls = dataset_dir._load_arrays, []

    def prep_commits_in_between(path, manifest):
        calls.append(manifest["files"]["chunks"])
        if len(calls) == 1:  # the manifest was read; now a prep of the added file commits
            prep(src, folder, params=FAST, workers=1)
        return real_load(path, manifest)

    monkeypatch.setattr(dataset_dir, "_load_arrays", prep_commits_in_between)
    data = load_spectrogram_data(folder)
    assert calls[-1] != calls[0]  # the old generation's arrays (prep's own open reads them too), then the new one's
    assert len(data) > before and data.class_names == ("high", "low", "mid")


def test_a_manifest_whose_audio_table_disagrees_with_the_chunks_is_one_dataset_error(prepped, tmp_path):
    import json
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(prepped, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["audio"]["n_mels"] = 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"chunks-\w+\.npy: damaged dataset array \(float of shape \(\d+, 64, 16\)"):
        load_spectrogram_data(folder)


def test_a_prepped_dataset_given_as_idx_files_is_named_as_such(tmp_path):
    """Not 'missing; fetch the set with: specgan data fetch mnist -o FOLDER', which would mix two datasets."""
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(DatasetError, match=f"^{re.escape(str(tmp_path))}: a dataset made by specgan prep, not the "
                                           f"mnist IDX files$"):
        load_idx_set(tmp_path, name="mnist")


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnists_files_are_not_taken_for_fashion_mnist(mnist, tmp_path, split):
    """The two sets have the same shapes: data.kind = "fashion-mnist" on MNIST's folder trained on digits under
    clothing names. Oracle: the published checksums of MNIST's label files; the raw copy of the same labels too."""
    with pytest.raises(DatasetError, match=f"^{re.escape(str(mnist))}: holds mnist's files, not fashion-mnist's; "
                                           r"fetch fashion-mnist with: specgan data fetch fashion-mnist -o "):
        load_idx_set(mnist, name="fashion-mnist", split=split)
    raw = tmp_path / "raw"
    raw.mkdir()
    for entry in IDX_SETS["mnist"].split(split):
        with gzip.open(mnist / entry.name) as f:
            (raw / entry.raw_name).write_bytes(f.read())
    with pytest.raises(DatasetError, match="holds mnist's files"):
        load_idx_set(raw, name="fashion-mnist", split=split)
    assert len(load_idx_set(raw, name="mnist", split=split)) == (60000 if split == "train" else 10000)


def test_class_folders_may_be_links_and_other_files_are_said(tmp_path):
    """A class folder that is a link to where the pictures live is read (it had been passed over, and called empty);
    a link back into the folder counts its pictures once; files of other formats are named in a warning."""
    store = tmp_path / "store"
    for name, value in (("red", 200), ("blue", 50)):
        (store / name).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((6, 6), value + i, np.uint8)).save(store / name / f"{i}.png")
    root = tmp_path / "linked"
    (root / "green").mkdir(parents=True)
    Image.fromarray(np.full((6, 6), 120, np.uint8)).save(root / "green" / "0.png")
    (root / "red").symlink_to(store / "red")
    (root / "blue").symlink_to(store / "blue")
    (root / "green" / "loop").symlink_to(root / "green")  # a link loop ends
    (root / "green" / "x.bmp").write_bytes(b"BM")
    with pytest.warns(SpecganWarning, match=r"passed over 1 file\(s\) not named as pictures \(1 \.bmp\); only \.jpeg"):
        data = load_image_folder(root)
    assert data.class_names == ("blue", "green", "red") and len(data) == 7
    assert data.labels.tolist() == [0, 0, 0, 1, 2, 2, 2]  # the walk's order: class folders by name, links or not
    assert data.images[3, 0, 0, 0].item() == pytest.approx(120 / 127.5 - 1)


def test_a_class_folder_linked_again_under_another_name_is_said_once_and_not_called_empty(tmp_path):
    """``crimson`` → ``red``: red's pictures count once, as red's, and crimson is named as the same folder, not
    among the folders that hold no images."""
    root = tmp_path / "classes"
    for name, value in (("red", 200), ("blue", 50)):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.full((6, 6), value, np.uint8)).save(root / name / "0.png")
    (root / "crimson").symlink_to(root / "red", target_is_directory=True)
    (root / "empty").mkdir()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_image_folder(root)
    assert data.class_names == ("blue", "red") and len(data) == 2
    assert sorted(str(w.message) for w in caught) == sorted([
        f"{root}: 1 folder(s) hold no images (empty), so they are no classes",
        f"{root / 'crimson'}: the same folder as {root / 'red'} (through a link), so its pictures count once, as "
        f"{root / 'red'}'s"])


def test_a_photo_is_read_upright_as_its_exif_orientation_says(tmp_path):
    """A phone stores a portrait photo as landscape pixels and an EXIF tag (6: turn 90° clockwise to view); the
    picture trains as a viewer shows it, so portrait and landscape photos of one size agree."""
    stored = np.zeros((4, 6, 3), np.uint8)        # 6 wide, 4 high as stored
    stored[0, 0] = (255, 255, 255)                # top-left as stored
    root = tmp_path / "photos"
    (root / "a").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(root / "a" / "portrait.jpg", exif=exif, quality=100)
    Image.fromarray(np.zeros((6, 4, 3), np.uint8)).save(root / "a" / "upright.jpg", quality=100)
    data = load_image_folder(root, channels=3)
    assert data.images.shape == (2, 3, 6, 4)      # 4 wide, 6 high: both pictures, as viewed
    portrait = (data.images[0].permute(1, 2, 0) + 1) * 127.5
    assert portrait[0, -1].min() > 200 and portrait[-1, 0].max() < 60  # the stored top-left is now top-right


def test_transparent_pixels_are_composited_onto_black_with_a_warning(tmp_path):
    """Converting alone drops the alpha, so a transparent pixel kept whatever colour it stores (here red)."""
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = (200, 10, 10)
    rgba[..., 3] = [[0] * 4, [255] * 4, [128] * 4, [255] * 4]
    root = tmp_path / "sprites"
    (root / "a").mkdir(parents=True)
    Image.fromarray(rgba, mode="RGBA").save(root / "a" / "see_through.png")
    opaque = rgba.copy()
    opaque[..., 3] = 255
    Image.fromarray(opaque, mode="RGBA").save(root / "a" / "opaque.png")
    with pytest.warns(SpecganWarning, match=r"1 image\(s\) have transparent pixels .*see_through.png.*onto black"):
        data = load_image_folder(root, channels=3)
    pixels = (data.images[1].permute(1, 2, 0) + 1) * 127.5  # see_through.png sorts after opaque.png
    expected = rgba[..., :3].astype(np.float64) * rgba[..., 3:] / 255
    assert np.abs(pixels.numpy() - expected).max() <= 1.0
    assert pixels[0].abs().max() == 0  # fully transparent: black, not red
    assert torch.allclose((data.images[0] + 1) * 127.5, torch.tensor([200., 10., 10.])[:, None, None].expand(3, 4, 4))
    with pytest.warns(SpecganWarning, match="transparent"):
        gray = load_image_folder(root)  # and the same in grayscale
    assert gray.images[1, 0, 0].max() == -1


def test_a_palette_image_with_a_transparent_entry_is_composited_too(tmp_path):
    root = tmp_path / "p"
    (root / "a").mkdir(parents=True)
    img = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    img.putpalette([255, 255, 255, 90, 90, 90] + [0] * 762)
    img.save(root / "a" / "x.png", transparency=0)  # entry 0 (white) is transparent
    with pytest.warns(SpecganWarning, match="transparent"):
        data = load_image_folder(root)
    assert ((data.images[0, 0] + 1) * 127.5).round().tolist() == [[0, 90], [90, 0]]


@pytest.mark.parametrize("label", [-1, 3])
def test_a_label_outside_the_datasets_domains_is_a_damaged_dataset(prepped, tmp_path, label):
    import shutil

    folder = tmp_path / "damaged"
    shutil.copytree(prepped, folder)
    _damage_array(folder, "labels", lambda a: np.where(np.arange(len(a)) == 0, label, a))  # 3 domains: 0, 1, 2
    with pytest.raises(DatasetError, match=r"damaged dataset \(\d+ chunks, \d+ labels, 3 domains\)"):
        load_spectrogram_data(folder)


def test_domains_without_chunks_are_a_dataset_error_naming_them(prepped, tmp_path):
    import shutil

    folder = tmp_path / "one-domain"
    shutil.copytree(prepped, folder)
    _damage_array(folder, "labels", np.zeros_like)  # every chunk "high": "low" and "mid" hold none
    with pytest.raises(DatasetError, match=r"holds no chunks of domains low, mid to train on$"):
        load_spectrogram_data(folder, domains=("low", "mid"))
