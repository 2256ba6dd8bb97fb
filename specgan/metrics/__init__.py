"""Measurements of generated images and audio."""
