"""specgan: audio style transfer with GANs on mel-spectrogram images."""

__version__ = "0.1.0"
