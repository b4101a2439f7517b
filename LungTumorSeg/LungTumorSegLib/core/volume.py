"""The engine's image type: a 3D array with its voxel-to-RAS geometry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass
class Volume:
    """A 3D image in patient space.

    Attributes:
        array: voxel values indexed ``[i, j, k]`` (nibabel order, not Slicer's KJI).
        affine: 4x4 matrix mapping voxel indices ``(i, j, k, 1)`` to RAS millimetres.
    """

    array: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.array.ndim != 3:
            raise InputError(f"expected a 3D image, got {self.array.ndim}D with shape {tuple(self.array.shape)}")
        if self.affine.shape != (4, 4) or not np.all(np.isfinite(self.affine)):
            raise InputError("the image geometry (voxel-to-RAS matrix) is missing or not finite")
        spacing = self.spacing
        if np.any(spacing <= 1e-6):
            shown = ", ".join(f"{float(v):g}" for v in np.round(spacing, 4))
            raise InputError(f"voxel spacing must be > 0 mm, got ({shown})")
        if abs(np.linalg.det(self.affine[:3, :3])) < 1e-9:
            raise InputError("the image axes are degenerate (singular direction matrix)")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Number of voxels along i, j, k."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along i, j, k."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)

    def with_array(self, array: np.ndarray) -> Volume:
        """A volume on the same grid holding ``array``."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match grid {self.shape}")
        return Volume(array, self.affine.copy())

    def voxel_to_ras(self, ijk: np.ndarray) -> np.ndarray:
        """Map voxel coordinates (N, 3) or (3,) to RAS mm."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def ras_to_voxel(self, ras: np.ndarray) -> np.ndarray:
        """Map RAS mm (N, 3) or (3,) to continuous voxel coordinates."""
        ras = np.asarray(ras, dtype=np.float64)
        inverse = np.linalg.inv(self.affine)
        return ras @ inverse[:3, :3].T + inverse[:3, 3]

    def same_grid(self, other: Volume, atol: float = 1e-3) -> bool:
        """True when ``other`` has the same shape and geometry."""
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol)

    def grid_difference(self, other: Volume) -> str:
        """What differs between this grid and ``other``'s, for messages ("" when they are the same)."""

        def text(values: np.ndarray) -> str:
            return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"

        if self.shape != other.shape:
            return f"shape {self.shape} vs {other.shape}"
        if not np.allclose(self.spacing, other.spacing, atol=1e-3):
            return f"voxel spacing {text(self.spacing)} vs {text(other.spacing)} mm"
        directions = self.affine[:3, :3] / self.spacing
        if not np.allclose(directions, other.affine[:3, :3] / other.spacing, atol=1e-3):
            return "axis directions differ (the images are oriented differently)"
        offset = other.affine[:3, 3] - self.affine[:3, 3]
        if not np.allclose(offset, 0.0, atol=1e-3):
            origins = f"{text(self.affine[:3, 3])} vs {text(other.affine[:3, 3])}"
            return f"origin {origins} mm (shifted by {np.linalg.norm(offset):.3g} mm)"
        return ""
