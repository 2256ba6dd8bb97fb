"""Windows over the time axis and their cross-faded reassembly."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specgan.audio.chunks import WindowStitcher, crossfade_weights, window_starts


@given(n_frames=st.integers(8, 400), frames=st.integers(1, 64), hop=st.integers(1, 64))
def test_window_starts_cover_every_frame(n_frames, frames, hop):
    frames = min(frames, n_frames)
    hop = min(hop, frames)  # a hop longer than a window leaves gaps on purpose
    starts = window_starts(n_frames, frames=frames, hop=hop)
    covered = torch.zeros(n_frames, dtype=torch.bool)
    for s in starts:
        covered[s:s + frames] = True
    assert covered.all()
    assert starts[0] == 0 and starts[-1] == n_frames - frames
    assert all(0 < b - a <= hop for a, b in zip(starts, starts[1:]))


def test_window_starts_rejects_short_input():
    with pytest.raises(ValueError):
        window_starts(10, frames=11, hop=4)


def stitch(windows, starts, *, n_frames, fade, batch=None):
    stitcher = WindowStitcher(windows.shape[1:-1], n_frames=n_frames, frames=windows.shape[-1], fade=fade)
    batch = batch or len(starts)
    for i in range(0, len(starts), batch):
        stitcher.add(windows[i:i + batch], starts=starts[i:i + batch])
    return stitcher.result()


@settings(deadline=None, max_examples=50)
@given(n_frames=st.integers(16, 300), frames=st.integers(4, 64), hop_fraction=st.floats(0.1, 1.0),
       fade=st.integers(0, 32), seed=st.integers(0, 2**16), batch=st.integers(1, 9))
def test_windows_stitch_back_into_the_spectrogram_in_any_batches(n_frames, frames, hop_fraction, fade, seed, batch):
    frames = min(frames, n_frames)
    hop = max(1, int(frames * hop_fraction))
    fade = min(fade, frames // 2)
    spec = torch.rand(2, 8, n_frames, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    starts = window_starts(n_frames, frames=frames, hop=hop)
    windows = torch.stack([spec[..., s:s + frames] for s in starts])
    whole = stitch(windows, starts, n_frames=n_frames, fade=fade)
    torch.testing.assert_close(whole, spec, atol=1e-6, rtol=0)
    # Batches only change when each window arrives, not the sums: the same numbers, bit for bit.
    assert torch.equal(stitch(windows, starts, n_frames=n_frames, fade=fade, batch=batch), whole)


def test_stitch_crossfades_where_windows_disagree():
    # Two windows of constants 0 and 1 overlapping by 8 frames: the overlap ramps from 0 to 1, monotonically.
    windows = torch.stack([torch.zeros(1, 16), torch.ones(1, 16)])
    out = stitch(windows, [0, 8], n_frames=24, fade=8)[0]
    assert torch.all(out[:8] == 0) and torch.all(out[16:] == 1)
    overlap = out[8:16]
    assert torch.all(overlap[1:] > overlap[:-1]) and 0 < overlap[0] < 0.2 and 0.8 < overlap[-1] < 1


def test_crossfade_weights_are_positive_trapezoids():
    w = crossfade_weights(10, 3)
    assert torch.all(w > 0) and torch.all(w[3:7] == 1)
    torch.testing.assert_close(w, w.flip(0))


def test_crossfade_ramps_step_half_a_frame_in_from_each_end():
    # Ramp values (k + 0.5) / fade: overlapping ramps of two windows sum to exactly 1, and a fade of 1 still fades.
    torch.testing.assert_close(crossfade_weights(6, 2), torch.tensor([0.25, 0.75, 1, 1, 0.75, 0.25]))
    torch.testing.assert_close(crossfade_weights(3, 1), torch.tensor([0.5, 1, 0.5]))
    torch.testing.assert_close(crossfade_weights(4, 0), torch.ones(4))
