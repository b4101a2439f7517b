"""LungTumorSeg engine: Slicer-free lung tumour segmentation, uncertainty and measurements.

Never imports slicer, qt or ctk; works in plain Python and inside 3D Slicer.
"""

__version__ = "0.1.0"
