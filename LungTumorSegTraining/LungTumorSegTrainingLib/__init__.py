"""LungTumorSeg training engine: MONAI training, DDP, checkpoints and bundle export (Slicer-free)."""

__version__ = "0.1.0"
