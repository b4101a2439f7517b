"""Aligning a follow-up CT to its baseline with SimpleITK: rigid or affine, then optional B-spline in the lung field.

The registration maps baseline (fixed) points to follow-up (moving) points, ITK's convention. It runs on
working copies of both CTs: reoriented losslessly to RAS, cropped to the lung field plus a margin, and
block-averaged (``BinShrink``) to about ``working_spacing_mm``. The metric is Mattes mutual information
(robust to contrast differences between visits) over the baseline lung field dilated by ``mask_margin_mm``
(lungs, chest wall, mediastinum and spine; not the table or the arms), sampled at a fixed random subset
so runs are repeatable. The translation starts from the difference of the two lung-field centroids.

The residual of the alignment is reported without a ground truth: the distance between the baseline's
lung boundary and the aligned follow-up's lung boundary (mean and 95th percentile, mm), before and after.
SimpleITK was chosen over itk-elastix by ``Testing/benchmarks/bench_registration.py`` (docs/measurements.md).
SimpleITK methods are called through their class (``ImageRegistrationMethod.SetX(method, ...)``) so that
the Slicer API check, which cannot infer types, sees they are SimpleITK's and not Slicer's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from SimpleITK import ImageRegistrationMethod

from ..core.errors import InputError
from ..core.orientation import Reorientation
from ..core.volume import Volume
from ..segmentation.lungfield import lung_field
from ..segmentation.preprocess import crop

MODES = ("rigid", "affine", "deformable")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_FLIP = np.array([-1.0, -1.0, 1.0])  # RAS <-> LPS for points
AIR_HU = -1024.0
Progress = Callable[[float, str], None]


@dataclass
class RegistrationSettings:
    """How to register; the defaults are what ``lungtumorseg compare`` uses.

    Attributes:
        mode: ``rigid`` (6 parameters), ``affine`` (12), or ``deformable`` (rigid, then a B-spline
            restricted to the lung field).
        working_spacing_mm: approximate voxel size of the working images (block averaging).
        iterations: most optimiser iterations per pyramid level (rigid/affine).
        shrink_factors: pyramid levels on the working grid, coarse to fine.
        smoothing_voxels: Gaussian sigma per level, in working voxels.
        sampling_fraction: fraction of masked voxels the metric samples (fixed seed).
        mask_margin_mm: the metric region is the baseline lung field dilated by this much.
        bspline_spacing_mm: B-spline control-point spacing (deformable).
        bspline_iterations: most L-BFGS-B iterations per level (deformable).
        bspline_shrink_factors: pyramid of the deformable stage; it stops at twice the working spacing,
            ample for control points ``bspline_spacing_mm`` apart.
        bspline_smoothing_voxels: its Gaussian sigmas, in working voxels.
        seed: random seed of the metric sampling.
    """

    mode: str = "rigid"
    working_spacing_mm: float = 2.0
    iterations: int = 100
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_voxels: tuple[float, ...] = (2.0, 1.0, 0.0)
    sampling_fraction: float = 0.05
    mask_margin_mm: float = 20.0
    bspline_spacing_mm: float = 40.0
    bspline_iterations: int = 30
    bspline_shrink_factors: tuple[int, ...] = (4, 2)
    bspline_smoothing_voxels: tuple[float, ...] = (2.0, 1.0)
    seed: int = 1

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"registration must be one of {', '.join(MODES)}, got {self.mode!r}")
        if len(self.shrink_factors) != len(self.smoothing_voxels) or len(self.bspline_shrink_factors) != len(
            self.bspline_smoothing_voxels
        ):
            raise ValueError("shrink factors and smoothing sigmas need one value per level")


@dataclass
class Alignment:
    """The result: a transform from baseline RAS points to follow-up RAS points, and how good it is.

    Attributes:
        transform: SimpleITK transform in ITK's LPS convention (fixed = baseline, moving = follow-up).
        mode: the registration mode.
        residual: lung-boundary distances in mm, ``before``/``after`` (mean, p95) and the working spacing.
        stages: per stage: name, iterations, final metric value, stop condition, seconds.
        seconds: total time.
    """

    transform: sitk.Transform
    mode: str
    residual: dict = field(default_factory=dict)
    stages: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_followup(self, points_ras: np.ndarray) -> np.ndarray:
        """Map baseline RAS points (N, 3) or (3,) to follow-up RAS points."""
        points = np.atleast_2d(np.asarray(points_ras, dtype=np.float64)) * _FLIP
        mapped = np.array([self.transform.TransformPoint(tuple(map(float, p))) for p in points]).reshape(-1, 3) * _FLIP
        return mapped[0] if np.ndim(points_ras) == 1 else mapped

    def linear_matrix_ras(self) -> np.ndarray:
        """4x4 matrix of the rigid/affine part, baseline RAS to follow-up RAS."""
        linear = self.transform
        if isinstance(linear, sitk.CompositeTransform):
            linear = linear.GetNthTransform(0)
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(linear.GetMatrix()).reshape(3, 3)
        centre = np.asarray(linear.GetCenter())
        matrix[:3, 3] = np.asarray(linear.GetTranslation()) + centre - matrix[:3, :3] @ centre
        return LPS_TO_RAS @ matrix @ LPS_TO_RAS

    def resample_followup(self, followup: Volume, reference: Volume, *, nearest: bool = False) -> Volume:
        """The follow-up image on a baseline grid (``reference``): linear for CT, nearest for labels."""
        interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
        default = 0.0 if nearest else AIR_HU
        grid = to_sitk(np.zeros(reference.shape, np.uint8), reference.affine)
        pixel = sitk.sitkUInt16 if nearest else sitk.sitkFloat32
        moving = to_sitk(followup.array.astype(np.uint16 if nearest else np.float32), followup.affine)
        out = sitk.Resample(moving, grid, self.transform, interpolator, default, pixel)
        return reference.with_array(from_sitk(out))

    def write(self, path: str | Path) -> Path:
        """Write the transform as an ITK transform file (Slicer loads it and applies it to the follow-up)."""
        sitk.WriteTransform(self.transform, str(path))
        return Path(path)

    def to_dict(self) -> dict:
        """JSON-ready summary: mode, the linear matrix (RAS), the residual, the stages and the time."""
        return {
            "library": f"SimpleITK {sitk.Version.VersionString()}",
            "mode": self.mode,
            "direction": "baseline RAS -> follow-up RAS",
            "linear_matrix_ras": np.round(self.linear_matrix_ras(), 6).tolist(),
            "residual": self.residual,
            "stages": self.stages,
            "seconds": round(self.seconds, 2),
        }


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image (LPS physical space) of an ``[i, j, k]`` array with a voxel-to-RAS affine."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    return image


def from_sitk(image: sitk.Image) -> np.ndarray:
    """The ``[i, j, k]`` array of a SimpleITK image."""
    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """The voxel-to-RAS affine of a SimpleITK image."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ lps


@dataclass
class _Working:
    """A working copy of one CT: the image, its lung field, and the field's centroid (LPS)."""

    image: sitk.Image
    lung: np.ndarray
    centroid_lps: np.ndarray | None


def register(
    baseline: Volume,
    followup: Volume,
    settings: RegistrationSettings | None = None,
    progress: Progress | None = None,
) -> Alignment:
    """Register the follow-up CT (moving) to the baseline CT (fixed).

    Args:
        baseline: baseline CT in HU, any orientation.
        followup: follow-up CT in HU, any orientation.
        settings: registration choices.
        progress: ``progress(fraction, message)`` callback, fraction in [0, 1].

    Returns:
        The alignment (baseline points to follow-up points) with its residual.
    """
    settings = settings or RegistrationSettings()
    progress = progress or (lambda fraction, message: None)
    start = time.perf_counter()
    progress(0.0, "preparing the working images")
    fixed, moving = _working_image(baseline, settings), _working_image(followup, settings)
    mask = _metric_mask(fixed, settings.mask_margin_mm)
    initial = _initial_rigid(fixed, moving)
    stages: list[dict] = []
    deformable = settings.mode == "deformable"
    linear_share = 0.45 if deformable else 0.85
    transform = _linear_stage(fixed, moving, mask, initial, settings, stages, progress, 0.05, linear_share * 0.8)
    if settings.mode == "affine":
        affine = sitk.AffineTransform(3)
        affine.SetCenter(transform.GetCenter())
        affine.SetMatrix(transform.GetMatrix())
        affine.SetTranslation(transform.GetTranslation())
        transform = _linear_stage(fixed, moving, mask, affine, settings, stages, progress, linear_share * 0.8, 0.85)
    if deformable:
        lung_mask = to_sitk(_dilate(fixed.lung, fixed.image, 5.0).astype(np.uint8), sitk_affine(fixed.image))
        transform = _bspline_stage(fixed, moving, lung_mask, transform, settings, stages, progress, linear_share, 0.85)
    progress(0.88, "measuring the residual")
    tick = time.perf_counter()
    residual = _residual(fixed, moving, transform)
    residual["seconds"] = round(time.perf_counter() - tick, 2)
    progress(1.0, "aligned")
    return Alignment(transform, settings.mode, residual, stages, time.perf_counter() - start)


def identity_alignment() -> Alignment:
    """The alignment of two scans already in the same patient coordinates (no registration)."""
    return Alignment(sitk.Euler3DTransform(), "identity", {"note": "no registration"}, [], 0.0)


def _working_image(ct: Volume, settings: RegistrationSettings) -> _Working:
    """Reorient to RAS, crop to the lung field plus margin, block-average to the working spacing."""
    ras = Reorientation.for_volume(ct).apply(ct)
    field_ = lung_field(ras)
    box = field_.bounding_box(np.ceil((settings.mask_margin_mm + 10.0) / ras.spacing))
    region = crop(ras, box) if box is not None else ras
    factors = [max(1, int(round(settings.working_spacing_mm / s))) for s in region.spacing]
    image = to_sitk(region.array.astype(np.float32), region.affine)
    if any(f > 1 for f in factors):
        image = sitk.BinShrink(image, factors)
    working = Volume(from_sitk(image), sitk_affine(image))
    lung = lung_field(working, working_spacing_mm=float(working.spacing.min())).full_resolution()
    centroid = None
    if lung.any():
        centroid_ras = working.voxel_to_ras(np.asarray(ndimage.center_of_mass(lung)))
        centroid = centroid_ras * _FLIP
    return _Working(image, lung, centroid)


def _dilate(mask: np.ndarray, image: sitk.Image, margin_mm: float) -> np.ndarray:
    if not mask.any():
        return np.ones(mask.shape, bool)
    return ndimage.distance_transform_edt(~mask, sampling=image.GetSpacing()) <= margin_mm


def _metric_mask(fixed: _Working, margin_mm: float) -> sitk.Image:
    mask = _dilate(fixed.lung, fixed.image, margin_mm).astype(np.uint8)
    return to_sitk(mask, sitk_affine(fixed.image))


def _initial_rigid(fixed: _Working, moving: _Working) -> sitk.Euler3DTransform:
    """Rotation about the baseline lung centroid, translation from centroid to centroid (LPS)."""
    if fixed.centroid_lps is None or moving.centroid_lps is None:
        return sitk.CenteredTransformInitializer(
            fixed.image, moving.image, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
        )
    transform = sitk.Euler3DTransform()
    transform.SetCenter(fixed.centroid_lps.tolist())
    transform.SetTranslation((moving.centroid_lps - fixed.centroid_lps).tolist())
    return transform


def _method(
    settings: RegistrationSettings, mask: sitk.Image, shrink: tuple[int, ...], smoothing: tuple[float, ...]
) -> sitk.ImageRegistrationMethod:
    """Mattes mutual information on a fixed random sample of the masked voxels, linear interpolation, a pyramid."""
    method = ImageRegistrationMethod()
    ImageRegistrationMethod.SetMetricAsMattesMutualInformation(method, numberOfHistogramBins=50)
    ImageRegistrationMethod.SetMetricSamplingStrategy(method, ImageRegistrationMethod.RANDOM)
    ImageRegistrationMethod.SetMetricSamplingPercentage(method, settings.sampling_fraction, settings.seed)
    ImageRegistrationMethod.SetMetricFixedMask(method, mask)
    ImageRegistrationMethod.SetInterpolator(method, sitk.sitkLinear)
    ImageRegistrationMethod.SetShrinkFactorsPerLevel(method, list(shrink))
    ImageRegistrationMethod.SetSmoothingSigmasPerLevel(method, list(smoothing))
    ImageRegistrationMethod.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff(method)
    return method


def _watch(method, progress: Progress, span: tuple[float, float], name: str, iterations: int, levels: int) -> None:
    """Report optimiser iterations as progress within ``span`` of the whole registration."""
    start, end = span
    state = {"level": -1}

    def on_level() -> None:
        state["level"] += 1

    def on_iteration() -> None:
        level, iteration = max(0, state["level"]), ImageRegistrationMethod.GetOptimizerIteration(method)
        done = (level + min(1.0, iteration / max(1, iterations))) / levels
        progress(start + (end - start) * done, f"{name}: level {level + 1}, iteration {iteration}")

    ImageRegistrationMethod.AddCommand(method, sitk.sitkMultiResolutionIterationEvent, on_level)
    ImageRegistrationMethod.AddCommand(method, sitk.sitkIterationEvent, on_iteration)


def _run(method, fixed, moving, name: str, stages: list[dict]) -> None:
    """Execute ``method`` (its initial transform is optimised in place) and record the stage."""
    tick = time.perf_counter()
    try:
        ImageRegistrationMethod.Execute(method, fixed.image, moving.image)
    except RuntimeError as exc:  # ITK exceptions carry several lines; keep the last meaningful one
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise InputError(f"registration failed ({name}): {lines[-1] if lines else exc}") from exc
    stages.append(
        {
            "stage": name,
            "iterations": int(ImageRegistrationMethod.GetOptimizerIteration(method)),
            "metric": round(float(ImageRegistrationMethod.GetMetricValue(method)), 5),
            "stop": ImageRegistrationMethod.GetOptimizerStopConditionDescription(method),
            "seconds": round(time.perf_counter() - tick, 2),
        }
    )


def _linear_stage(fixed, moving, mask, initial, settings, stages, progress, start, end) -> sitk.Transform:
    method = _method(settings, mask, settings.shrink_factors, settings.smoothing_voxels)
    ImageRegistrationMethod.SetOptimizerAsRegularStepGradientDescent(
        method,
        learningRate=1.0,
        minStep=1e-4,
        numberOfIterations=settings.iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    ImageRegistrationMethod.SetOptimizerScalesFromPhysicalShift(method)
    rigid = isinstance(initial, sitk.Euler3DTransform)
    transform = sitk.Euler3DTransform(initial) if rigid else sitk.AffineTransform(initial)  # optimised in place
    ImageRegistrationMethod.SetInitialTransform(method, transform, inPlace=True)
    name = "rigid" if rigid else "affine"
    _watch(method, progress, (start, end), name, settings.iterations, len(settings.shrink_factors))
    _run(method, fixed, moving, name, stages)
    return transform


def _bspline_stage(fixed, moving, lung_mask, linear, settings, stages, progress, start, end) -> sitk.Transform:
    size_mm = np.asarray(fixed.image.GetSize()) * np.asarray(fixed.image.GetSpacing())
    mesh = [max(1, int(round(s / settings.bspline_spacing_mm))) for s in size_mm]
    bspline = sitk.BSplineTransformInitializer(fixed.image, mesh, order=3)
    method = _method(settings, lung_mask, settings.bspline_shrink_factors, settings.bspline_smoothing_voxels)
    ImageRegistrationMethod.SetOptimizerAsLBFGSB(
        method,
        gradientConvergenceTolerance=1e-5,
        numberOfIterations=settings.bspline_iterations,
        maximumNumberOfCorrections=5,
        maximumNumberOfFunctionEvaluations=4 * settings.bspline_iterations,
        costFunctionConvergenceFactor=1e7,
    )
    ImageRegistrationMethod.SetMovingInitialTransform(method, linear)
    ImageRegistrationMethod.SetInitialTransform(method, bspline, inPlace=True)
    levels = len(settings.bspline_shrink_factors)
    _watch(method, progress, (start, end), "deformable", settings.bspline_iterations, levels)
    _run(method, fixed, moving, "deformable (B-spline, lung field)", stages)
    return sitk.CompositeTransform([linear, bspline])


def _residual(fixed: _Working, moving: _Working, transform: sitk.Transform) -> dict:
    """Lung-boundary distances between the baseline and the follow-up, unaligned and aligned.

    Only axial slices where both lung fields are present count, less two at each end, so lung cut off by
    either scan's field of view does not count as misalignment.
    """
    spacing = np.asarray(fixed.image.GetSpacing())
    moving_lung = to_sitk(moving.lung.astype(np.uint8), sitk_affine(moving.image))
    result: dict = {"measure": "lung boundary distance (mm)", "working_spacing_mm": np.round(spacing, 3).tolist()}
    for name, candidate in (("before", sitk.Euler3DTransform()), ("after", transform)):
        warped = sitk.Resample(moving_lung, fixed.image, candidate, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        distances = boundary_distances(fixed.lung, from_sitk(warped).astype(bool), spacing)
        result[name] = None
        if distances.size:
            result[name] = {
                "mean_mm": round(float(distances.mean()), 3),
                "p95_mm": round(float(np.percentile(distances, 95)), 3),
            }
    result["working_grid"] = list(fixed.image.GetSize())
    return result


def boundary_distances(a: np.ndarray, b: np.ndarray, spacing: np.ndarray, skip_slices: int = 2) -> np.ndarray:
    """Distances (mm) from each boundary voxel of one mask to the other mask's boundary, both ways.

    Boundaries are the masks less their 6-connected erosion. Only axial (axis 2) slices where both masks
    are present count, less ``skip_slices`` at each end.
    """
    common = np.flatnonzero(a.any(axis=(0, 1)) & b.any(axis=(0, 1)))
    if common.size <= 2 * skip_slices:
        return np.zeros(0)
    slab = np.zeros(a.shape[2], bool)
    slab[common[0] + skip_slices : common[-1] - skip_slices + 1] = True
    edges = [mask & ~ndimage.binary_erosion(mask) for mask in (a, b)]
    out = []
    for own, other in ((edges[0], edges[1]), (edges[1], edges[0])):
        distance = ndimage.distance_transform_edt(~other, sampling=spacing)
        out.append(distance[own & slab[None, None, :]])
    return np.concatenate(out)


def settings_dict(settings: RegistrationSettings) -> dict:
    """The settings as a JSON-ready dictionary."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(settings).items()}
