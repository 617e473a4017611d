"""Data sources, the decode cache, splits and synthetic faces."""
from fercore.data.dataset import FaceData, FaceSet, check_source, is_synthetic, load_data

__all__ = ["FaceData", "FaceSet", "check_source", "is_synthetic", "load_data"]
