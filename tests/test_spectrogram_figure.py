"""``convert --plot``'s figure: exact panels, frequency ticks on librosa's mel band centres, sensible time ticks."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch
from PIL import Image

from specgan.audio.params import AudioParams
from specgan.spectrogram_figure import ANCHORS, LEFT, MAX_TIME_TICKS, colour_table, figure_layout, frequency_ticks, \
    save_spectrogram_figure, time_ticks


def test_the_colour_map_runs_from_dark_to_bright_through_its_anchors():
    table = colour_table()
    assert table.shape == (256, 3) and table.dtype == np.uint8
    assert tuple(table[0]) == ANCHORS[0] and tuple(table[-1]) == ANCHORS[-1]
    brightness = table.astype(float) @ [0.299, 0.587, 0.114]   # loud must also read as bright in grey
    assert (np.diff(brightness) > 0).all()


@pytest.mark.parametrize("params", [{}, {"sample_rate": 22050, "f_min": 50.0, "f_max": 7600.0},
                                    {"sample_rate": 8000, "n_fft": 256, "n_mels": 40}])
def test_frequency_ticks_sit_where_librosas_band_centres_put_them(params):
    """Oracle: ``librosa.mel_frequencies`` (the band centres of its filters are points 1 … n_mels), whose mel values
    are evenly spaced, so a tick's fractional band index maps linearly onto them."""
    audio = AudioParams(**params)
    centres = librosa.mel_frequencies(n_mels=audio.n_mels + 2, fmin=audio.f_min, fmax=audio.mel_f_max)[1:-1]
    ticks = frequency_ticks(audio)
    assert ticks and all(audio.f_min <= hz <= audio.mel_f_max for hz, _ in ticks)
    for hz, band in ticks:
        expected = np.interp(librosa.hz_to_mel(hz), librosa.hz_to_mel(centres), np.arange(audio.n_mels))
        assert band == pytest.approx(expected, abs=1e-9)
    # Every tick value inside the band centres' range is there.
    assert {hz for hz, _ in ticks} == {f for f in (100, 250, 500, 1000, 2000, 4000, 8000, 16000)
                                       if centres[0] <= f <= centres[-1]}


@pytest.mark.parametrize("seconds,step", [(0.072, 0.01), (0.3, 0.05), (2.72, 0.5), (9.0, 1), (60.0, 10),
                                          (600.0, 120)])
def test_time_ticks_are_round_and_few(seconds, step):
    ticks = time_ticks(seconds)
    assert ticks == pytest.approx([i * step for i in range(len(ticks))])
    assert len(ticks) <= MAX_TIME_TICKS and ticks[-1] <= seconds < ticks[-1] + step


def test_panels_are_the_log_mels_enlarged_pixel_for_pixel(tmp_path):
    """Each panel is its log-mel through the colour table, low bands at the bottom, every band ``y_scale`` pixels
    high and every column ``x_scale`` wide; the figure is the layout's size."""
    audio = AudioParams()
    g = torch.Generator().manual_seed(0)
    logmels = [torch.rand(audio.n_mels, 37, generator=g) * 2 - 1 for _ in range(2)]
    logmels[0][:, 5] = 1.5                                   # out of range: drawn as the loudest colour
    path = save_spectrogram_figure([("input: a.wav", logmels[0]), ("converted to B", logmels[1])],
                                   tmp_path / "f.png", audio=audio, seconds_per_column=0.008)
    layout = figure_layout(columns=37, n_mels=audio.n_mels, panels=2)
    with Image.open(path) as image:
        assert image.size == layout.size and image.mode == "RGB"
        pixels = np.asarray(image)
    table = colour_table()
    for k, logmel in enumerate(logmels):
        levels = ((logmel.clamp(-1, 1) + 1) * 127.5).round().long().numpy()[::-1]
        expected = np.repeat(np.repeat(table[levels], layout.y_scale, axis=0), layout.x_scale, axis=1)
        top = layout.top(k)
        np.testing.assert_array_equal(pixels[top:top + layout.height, LEFT:LEFT + layout.width], expected)
    assert layout.x_scale > 1 and layout.y_scale == 3           # a short clip is widened; 80 bands, 240 pixels


def test_a_figure_replaces_an_older_one_whole(tmp_path):
    audio = AudioParams()
    path = tmp_path / "f.png"
    path.write_bytes(b"an older picture")
    save_spectrogram_figure([("x", torch.zeros(audio.n_mels, 600))], path, audio=audio, seconds_per_column=0.008)
    with Image.open(path) as image:
        assert image.size == figure_layout(columns=600, n_mels=audio.n_mels, panels=1).size
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]      # no temporary file left


def test_a_long_title_is_shortened_in_the_middle_to_fit():
    from PIL import ImageDraw, ImageFont

    from specgan.spectrogram_figure import _fitted
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = ImageFont.load_default()
    title = "input: " + "a_long_recording_name_" * 8 + "take3.wav"
    short = _fitted(title, draw=draw, font=font, width=300)
    assert draw.textlength(short, font=font) <= 300 < draw.textlength(title, font=font)
    head, tail = short.split("…")
    assert title.startswith(head) and title.endswith(tail) and tail.endswith("take3.wav")
    assert _fitted("converted to B", draw=draw, font=font, width=300) == "converted to B"



@pytest.mark.parametrize("columns", [9, 241, 376, 479, 480, 4096])
def test_panels_are_at_least_480_pixels_wide_in_whole_multiples(columns):
    layout = figure_layout(columns=columns, n_mels=80, panels=2)
    assert layout.width == columns * layout.x_scale >= 480
    assert (layout.x_scale == 1) == (columns >= 480) and (layout.x_scale - 1) * columns < 480


def test_characters_without_a_glyph_become_question_marks():
    """A file name in a script the font lacks drew boxes that looked like letters (even ü with Pillow's own font)."""
    from specgan.spectrogram_figure import _drawable, _font
    font = _font(12)
    assert _drawable("input: a-b_c 1.wav", font) == "input: a-b_c 1.wav"
    assert _drawable("x\U0010FFFDy", font) == "x?y"


def test_tick_marks_sit_on_their_band_centres_from_the_bottom_and_on_their_times(tmp_path):
    """Frequency ticks at their bands' centres counted up from the panel's bottom edge, none within 13 pixels of
    the one below; time ticks ``t / seconds_per_column`` columns from the left edge."""
    audio = AudioParams()
    path = save_spectrogram_figure([("x", torch.zeros(audio.n_mels, 200))], tmp_path / "f.png", audio=audio,
                                   seconds_per_column=0.01)
    layout = figure_layout(columns=200, n_mels=audio.n_mels, panels=1)
    with Image.open(path) as image:
        dark = np.asarray(image.convert("L")) < 128
    top, bottom = layout.top(0), layout.top(0) + layout.height
    expected, last = [], np.inf
    for _, band in frequency_ticks(audio):
        y = bottom - (band + 0.5) * layout.y_scale
        if last - y >= 13 and y - top >= 6.5:
            expected.append(int(y))
            last = y
    assert len(expected) >= 5 and len(expected) < len(frequency_ticks(audio))  # one crowded out
    assert sorted(top + np.nonzero(dark[top:bottom, LEFT - 3])[0]) == sorted(expected)
    assert list(np.nonzero(dark[bottom + 2])[0]) == [LEFT + round(t / 0.01) * layout.x_scale for t in time_ticks(2.0)]


@pytest.mark.parametrize("n_mels, y_scale", [(80, 3), (128, 2), (64, 4), (512, 1)])
def test_bands_are_scaled_to_the_nearest_whole_multiple_of_240_pixels(n_mels, y_scale):
    assert figure_layout(columns=600, n_mels=n_mels, panels=1).y_scale == y_scale
