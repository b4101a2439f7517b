"""3D tumour-spread snapshot (PNG) rendered offscreen with VTK, without any display.

Offscreen OpenGL: on Linux the render-window class is chosen once per process by probing each
candidate in a short-lived subprocess (a missing libOSMesa makes VTK crash, and a broken X server can
hang, so an in-process trial is not safe): the class named in ``VTK_DEFAULT_OPENGL_WINDOW`` if set,
X11 when ``DISPLAY`` is set, then EGL (Mesa's llvmpipe works without a GPU: Debian packages
``libegl1 libegl-mesa0 libgl1-mesa-dri``), then OSMesa (``libosmesa6``). The chosen class is then
instantiated directly in-process. When none works, ``RenderingUnavailableError`` says so; callers
can skip the picture.

Scene: tumour surfaces (flying edges on each lesion's bounding box, windowed-sinc smoothing, placed
in RAS with the label's affine) solid red or coloured by entropy; the lung field as a translucent
surface; RECIST long/short axes as tubes drawn on top. Two views: anterior (patient right on the
image left) and right lateral (anterior on the image right).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..core.errors import OutputError
from ..core.volume import Volume
from ..measurements.lesion_measurements import CaseMeasurements, find_lesions, lesion_mask
from .report import check_targets, write_bytes_atomic

TUMOUR_COLOR = (0.86, 0.12, 0.12)
LUNG_COLOR = (0.55, 0.75, 0.95)
LUNG_OPACITY = 0.18
LONG_AXIS_COLOR = (1.0, 0.85, 0.1)
SHORT_AXIS_COLOR = (0.2, 0.8, 1.0)
BACKGROUND = (0.08, 0.08, 0.1)
PROBE_TIMEOUT_S = 60.0
_LUNG_TARGET_MM = 2.5  # the lung surface is extracted on a grid of about this spacing
_SMOOTH_MM = 1.0  # Gaussian sigma applied to tumour masks before contouring (removes slice steps)

_PROBE = """
import sys
from vtkmodules import vtkRenderingOpenGL2 as gl
from vtkmodules.vtkRenderingCore import vtkRenderer, vtkWindowToImageFilter
from vtkmodules.util.numpy_support import vtk_to_numpy
window = getattr(gl, sys.argv[1])()
window.SetOffScreenRendering(1)
window.SetSize(16, 16)
renderer = vtkRenderer()
renderer.SetBackground(1.0, 0.0, 0.0)
window.AddRenderer(renderer)
window.Render()
grab = vtkWindowToImageFilter()
grab.SetInput(window)
grab.Update()
pixels = vtk_to_numpy(grab.GetOutput().GetPointData().GetScalars())
window.Finalize()
print("LUNGTUMORSEG-VTK-OK" if pixels[:, 0].min() > 200 and pixels[:, 1].max() < 50 else "BLANK")
"""


class RenderingUnavailableError(OutputError):
    """No offscreen OpenGL context can be created on this machine."""


def offscreen_window_class() -> str:
    """Name of the VTK render-window class used for offscreen rendering here.

    Raises:
        RenderingUnavailableError: no candidate produced a picture.
    """
    return _choose_window_class(
        os.environ.get("DISPLAY", ""), os.environ.get("VTK_DEFAULT_OPENGL_WINDOW", ""), sys.platform
    )


@functools.cache
def _choose_window_class(display: str, requested: str, platform: str) -> str:
    if not platform.startswith("linux"):
        return "vtkRenderWindow"  # Windows and macOS: VTK's default window renders offscreen natively
    candidates = [requested] if requested else []
    if display:
        candidates.append("vtkXOpenGLRenderWindow")
    candidates += ["vtkEGLRenderWindow", "vtkOSOpenGLRenderWindow"]
    failures = []
    for name in dict.fromkeys(candidates):
        problem = _probe(name)
        if problem is None:
            return name
        failures.append(f"{name}: {problem}")
    raise RenderingUnavailableError(
        "no offscreen OpenGL for the 3D snapshot (" + "; ".join(failures) + "); install Mesa EGL "
        "(apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri) or OSMesa (libosmesa6)"
    )


def _probe(name: str) -> str | None:
    """Render one frame with window class ``name`` in a subprocess; None on success, else why not."""
    env = {key: value for key, value in os.environ.items() if key != "VTK_DEFAULT_OPENGL_WINDOW"}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, name],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return str(exc)
    if "LUNGTUMORSEG-VTK-OK" in done.stdout:
        return None
    if done.returncode < 0:
        return f"crashed (signal {-done.returncode})"
    lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    return lines[-1][-160:] if lines else f"exit code {done.returncode}"


def snapshot_png(
    label: Volume,
    *,
    lung: Volume | None = None,
    entropy: Volume | None = None,
    case: CaseMeasurements | None = None,
    size: tuple[int, int] = (1200, 600),
) -> bytes:
    """Render the 3D snapshot and return PNG bytes.

    Args:
        label: tumour label (any value > 0.5).
        lung: lung-field mask on any grid (drawn translucent), optional.
        entropy: uncertainty (bits) on the label's grid; colours the tumour surface when given.
        case: measurements of ``label``; their RECIST axes are drawn as tubes.
        size: image width and height in pixels (two side-by-side views).

    Raises:
        RenderingUnavailableError: no offscreen OpenGL here.
        OutputError: empty label or ``entropy`` on another grid.
    """
    window_class = offscreen_window_class()
    import vtkmodules.vtkRenderingFreeType  # noqa: F401  (text rendering)
    import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (OpenGL implementations of the mappers)
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOImage import vtkPNGWriter
    from vtkmodules.vtkRenderingCore import vtkWindowToImageFilter

    if entropy is not None and not label.same_grid(entropy):
        raise OutputError("the entropy image is not on the label's grid; resample it first")
    components = find_lesions(lesion_mask(label.array))
    if not components:
        raise OutputError("the label is empty: there is no tumour to render")
    tumour = _tumour_actor(components, label, entropy)
    actors = [tumour]
    if lung is not None and lung_mask_any(lung):
        actors.append(_lung_actor(lung))
    overlays = _recist_actors(case) if case is not None else []
    focus = lung if lung is not None and lung_mask_any(lung) else None
    bounds = actors[-1].GetBounds() if focus is not None else tumour.GetBounds()
    window = _new_window(window_class)
    try:
        window.SetOffScreenRendering(1)
        window.SetSize(int(size[0]), int(size[1]))
        window.SetNumberOfLayers(2)
        window.SetMultiSamples(0)
        window.SetAlphaBitPlanes(1)
        views = (
            ((0.0, 0.0, 0.5, 1.0), (0.0, 1.0, 0.0), "Anterior view (patient right on the left)"),
            ((0.5, 0.0, 1.0, 1.0), (1.0, 0.0, 0.0), "Right lateral view (anterior on the right)"),
        )
        for viewport, direction, caption in views:
            _add_view(window, viewport, direction, caption, actors, overlays, bounds, entropy is not None)
        window.Render()
        grab = vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.SetInputBufferTypeToRGB()
        grab.ReadFrontBufferOff()
        grab.Update()
        writer = vtkPNGWriter()
        writer.SetInputConnection(grab.GetOutputPort())
        writer.WriteToMemoryOn()
        writer.Write()
        return bytes(vtk_to_numpy(writer.GetResult()).tobytes())
    finally:
        window.Finalize()


def write_snapshot_png(path: str | os.PathLike, label: Volume, *, overwrite: bool = False, **options) -> Path:
    """Render ``snapshot_png`` into ``path`` atomically; ``options`` go to ``snapshot_png``.

    Raises:
        OutputError: the file exists (and ``overwrite`` is false) or cannot be written.
        RenderingUnavailableError: no offscreen OpenGL here (nothing is written).
    """
    path = Path(path)
    check_targets([path], overwrite)
    return write_bytes_atomic(path, snapshot_png(label, **options))


def lung_mask_any(lung: Volume) -> bool:
    """True when the lung mask has any voxel."""
    return bool(lesion_mask(lung.array).any())


def _new_window(name: str):
    if name == "vtkRenderWindow":
        from vtkmodules.vtkRenderingCore import vtkRenderWindow

        return vtkRenderWindow()
    from vtkmodules import vtkRenderingOpenGL2

    return getattr(vtkRenderingOpenGL2, name)()


def _add_view(window, viewport, direction, caption, actors, overlays, bounds, with_scalar_bar) -> None:
    from vtkmodules.vtkRenderingCore import vtkRenderer, vtkTextActor

    base, top = vtkRenderer(), vtkRenderer()
    for renderer, layer in ((base, 0), (top, 1)):
        renderer.SetViewport(*viewport)
        renderer.SetLayer(layer)
        window.AddRenderer(renderer)
    base.SetBackground(*BACKGROUND)
    base.SetUseDepthPeeling(1)
    base.SetMaximumNumberOfPeels(6)
    for actor in actors:
        base.AddActor(actor)
    for actor in overlays:
        top.AddActor(actor)
    camera = base.GetActiveCamera()
    centre = np.array([(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2])
    camera.SetFocalPoint(*centre)
    camera.SetPosition(*(centre + 1000.0 * np.asarray(direction)))
    camera.SetViewUp(0.0, 0.0, 1.0)
    camera.ParallelProjectionOn()
    base.ResetCamera(bounds)
    camera.Zoom(1.1)
    top.SetActiveCamera(camera)
    text = vtkTextActor()
    text.SetInput(caption)
    text.GetTextProperty().SetFontSize(16)
    text.GetTextProperty().SetColor(1.0, 1.0, 1.0)
    text.SetPosition(10, 10)
    base.AddViewProp(text)
    if with_scalar_bar and direction[1] == 0.0:
        base.AddViewProp(_scalar_bar(actors[0]))


def _numpy_image(array: np.ndarray, origin, spacing=(1.0, 1.0, 1.0)):
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData

    image = vtkImageData()
    image.SetDimensions(*array.shape)
    image.SetOrigin(*(float(v) for v in origin))
    image.SetSpacing(*(float(v) for v in spacing))
    scalars = numpy_to_vtk(np.ascontiguousarray(array).ravel(order="F"), deep=True)
    scalars.SetName("values")
    image.GetPointData().SetScalars(scalars)
    return image


def _smoothed_surface(image, iterations: int, passband: float):
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D, vtkWindowedSincPolyDataFilter

    contour = vtkFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, 0.5)
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    smoother = vtkWindowedSincPolyDataFilter()
    smoother.SetInputConnection(contour.GetOutputPort())
    smoother.SetNumberOfIterations(iterations)
    smoother.SetPassBand(passband)
    smoother.NormalizeCoordinatesOn()
    smoother.BoundarySmoothingOff()
    smoother.FeatureEdgeSmoothingOff()
    smoother.NonManifoldSmoothingOn()
    smoother.Update()
    return smoother.GetOutput()


def _to_ras(polydata, affine: np.ndarray):
    """Transform polydata from voxel-index space to RAS and recompute outward normals."""
    from vtkmodules.vtkCommonTransforms import vtkTransform
    from vtkmodules.vtkFiltersCore import vtkPolyDataNormals
    from vtkmodules.vtkFiltersGeneral import vtkTransformPolyDataFilter

    transform = vtkTransform()
    transform.SetMatrix([float(v) for v in np.asarray(affine, dtype=np.float64).ravel()])
    moved = vtkTransformPolyDataFilter()
    moved.SetInputData(polydata)
    moved.SetTransform(transform)
    normals = vtkPolyDataNormals()
    normals.SetInputConnection(moved.GetOutputPort())
    normals.SplittingOff()
    normals.ConsistencyOn()
    normals.AutoOrientNormalsOn()
    normals.Update()
    return normals.GetOutput()


def _tumour_actor(components, label: Volume, entropy: Volume | None):
    from vtkmodules.vtkFiltersCore import vtkAppendPolyData, vtkProbeFilter
    from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper

    append = vtkAppendPolyData()
    sigma = np.maximum(_SMOOTH_MM, 0.75 * label.spacing) / label.spacing  # ~0.75 voxel along thick slices
    pad = int(np.ceil(3 * sigma.max())) + 1
    for component in components:
        offset = component.offset - pad
        field = ndimage.gaussian_filter(np.pad(component.mask, pad).astype(np.float32), sigma, truncate=3.0)
        if field.max() < 0.55:  # too small to survive the blur: contour the voxels themselves
            field = np.pad(component.mask, pad).astype(np.float32)
        surface = _smoothed_surface(_numpy_image(field, offset), 10, 0.1)
        if entropy is not None:
            slices = tuple(
                slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(component.slices, label.shape)
            )
            source = _numpy_image(entropy.array[slices].astype(np.float32), [s.start for s in slices])
            probe = vtkProbeFilter()
            probe.SetInputData(surface)
            probe.SetSourceData(source)
            probe.Update()
            surface = probe.GetOutput()
        append.AddInputData(_to_ras(surface, label.affine))
    append.Update()
    mapper = vtkPolyDataMapper()
    mapper.SetInputConnection(append.GetOutputPort())
    actor = vtkActor()
    actor.SetMapper(mapper)
    if entropy is not None:
        from vtkmodules.vtkCommonCore import vtkLookupTable

        table = vtkLookupTable()
        table.SetHueRange(0.0, 0.16)  # red (certain) to yellow (uncertain)
        table.SetSaturationRange(0.9, 0.9)
        table.SetValueRange(0.86, 1.0)
        table.Build()
        mapper.SetLookupTable(table)
        mapper.SetScalarRange(0.0, max(1.0, float(np.nanmax(entropy.array)) if entropy.array.size else 1.0))
        mapper.ScalarVisibilityOn()
    else:
        mapper.ScalarVisibilityOff()
        actor.GetProperty().SetColor(*TUMOUR_COLOR)
    actor.GetProperty().SetSpecular(0.2)
    actor.GetProperty().SetSpecularPower(20)
    return actor


def _lung_actor(lung: Volume):
    from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper

    mask = lesion_mask(lung.array)
    box = []
    for axis in range(3):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    crop = mask[tuple(box)]
    factors = [max(1, int(round(_LUNG_TARGET_MM / s))) for s in lung.spacing]
    padded_shape = [-(-n // f) * f for n, f in zip(crop.shape, factors)]
    padded = np.zeros(padded_shape, dtype=np.float32)
    padded[: crop.shape[0], : crop.shape[1], : crop.shape[2]] = crop
    shape = [n // f for n, f in zip(padded_shape, factors)]
    fraction = padded.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2]).mean(axis=(1, 3, 5))
    fraction = np.pad(fraction, 1)
    origin = np.array([b.start for b in box]) + (np.array(factors) - 1) / 2 - np.array(factors)
    surface = _smoothed_surface(_numpy_image(fraction, origin, factors), 15, 0.08)
    mapper = vtkPolyDataMapper()
    mapper.SetInputData(_to_ras(surface, lung.affine))
    mapper.ScalarVisibilityOff()
    actor = vtkActor()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*LUNG_COLOR)
    actor.GetProperty().SetOpacity(LUNG_OPACITY)
    return actor


def _recist_actors(case: CaseMeasurements) -> list:
    from vtkmodules.vtkFiltersCore import vtkTubeFilter
    from vtkmodules.vtkFiltersSources import vtkLineSource
    from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper

    actors = []
    for lesion in case.lesions:
        for (p1, p2), color in ((lesion.long_axis_ras, LONG_AXIS_COLOR), (lesion.short_axis_ras, SHORT_AXIS_COLOR)):
            line = vtkLineSource()
            line.SetPoint1(*p1)
            line.SetPoint2(*p2)
            tube = vtkTubeFilter()
            tube.SetInputConnection(line.GetOutputPort())
            tube.SetRadius(0.8)
            tube.SetNumberOfSides(12)
            tube.CappingOn()
            mapper = vtkPolyDataMapper()
            mapper.SetInputConnection(tube.GetOutputPort())
            actor = vtkActor()
            actor.SetMapper(mapper)
            actor.GetProperty().SetColor(*color)
            actor.GetProperty().LightingOff()
            actors.append(actor)
    return actors


def _scalar_bar(tumour_actor):
    from vtkmodules.vtkRenderingAnnotation import vtkScalarBarActor

    bar = vtkScalarBarActor()
    bar.SetLookupTable(tumour_actor.GetMapper().GetLookupTable())
    bar.SetTitle("entropy (bits)")
    bar.SetNumberOfLabels(3)
    bar.SetWidth(0.08)
    bar.SetHeight(0.4)
    bar.SetPosition(0.9, 0.3)
    return bar
