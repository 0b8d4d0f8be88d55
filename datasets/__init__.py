"""Saliency datasets of 360-degree videos.

``datasets.data``: ground-truth maps from gaze points and the loaders; ``datasets.synthetic``: a generator of
synthetic videos in the same layout (import it from there: it also runs as ``python -m datasets.synthetic``).
"""

from datasets.data import VRVideo, VRVideoLSTM, center_prior, fixation_map, gaze_heatmap, load_vinfo

__all__ = ["VRVideo", "VRVideoLSTM", "center_prior", "fixation_map", "gaze_heatmap", "load_vinfo"]
