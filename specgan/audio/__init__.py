"""The audio half of specgan: waveform ↔ normalised log-mel.

``params``: the spectrogram definition; ``io``: reading and writing files; ``features``: waveform → log-mel;
``inverse``: log-mel → waveform (mel → linear, Griffin-Lim); ``chunks``: fixed-width windows and their stitching.
"""
