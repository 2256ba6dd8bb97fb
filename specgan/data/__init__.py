"""Datasets: prepping audio into spectrogram chunks, and reading datasets for training."""
