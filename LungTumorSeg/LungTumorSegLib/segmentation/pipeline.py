"""The whole segmentation: CT Volume in, label/probability/entropy Volumes out on the same grid."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.device import device_description, resolve_device
from ..core.memory_limits import check_run_size
from ..core.orientation import Reorientation
from ..core.progress import ProgressReporter, StepProgress
from ..core.resampling import model_grid_shape, resample
from ..core.volume import Volume
from ..io.validation import validate_ct
from ..model.bundle import ModelBundle
from ..model.inference import InferenceSettings, predict_ensemble, tta_flips
from ..model.sensitivity_presets import SensitivityPreset
from .candidates import Candidate, CandidateSettings, describe_candidates, find_candidates
from .lungfield import lung_field
from .options import SegmentOptions, check_segment_options, resolve_preset
from .postprocess import PostprocessSettings, lesion_at_point, postprocess
from .preprocess import Box, box_around_point, crop, scale_hu

LUNG_MARGIN_MM = 15.0


@dataclass
class SegmentationResult:
    """Outputs on the input CT's grid, plus run information."""

    label: Volume
    probability: Volume
    entropy: Volume
    mutual_information: Volume | None  # None without an ensemble or flips to disagree (box prompts)
    lung_mask: Volume | None
    info: dict[str, Any] = field(default_factory=dict)
    candidates: Volume | None = None  # label map: value k is ``candidate_list[k - 1]``
    candidate_list: list[Candidate] = field(default_factory=list)


def segment(
    ct: Volume,
    bundle: ModelBundle,
    options: SegmentOptions | None = None,
    reporter: ProgressReporter | None = None,
    networks: list | None = None,
) -> SegmentationResult:
    """Segment lung tumours in a CT volume (HU) with a model bundle.

    Args:
        ct: the CT in Hounsfield units, any orientation.
        bundle: the model bundle (manifest read; weights loaded here unless ``networks`` is given).
        options: overrides of the bundle's defaults.
        reporter: progress sink.
        networks: already loaded ``bundle.load_networks(...)`` output, to reuse across cases.
    """
    options = options or SegmentOptions()
    check_segment_options(options)
    preset = resolve_preset(bundle.output, options, bundle.name)
    reporter = reporter or ProgressReporter("none")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    validate_ct(ct)
    device = resolve_device(options.device)

    reporter.update("pre-process", 0.02, "reorienting and finding the lung field")
    reorientation = Reorientation.for_volume(ct)
    ras = reorientation.apply(ct)
    field_ = lung_field(ras)
    box = _region_of_interest(ras, field_, options, reporter)
    region = crop(ras, box)
    grid = model_grid_shape(region.shape, region.spacing, bundle.spacing_mm)
    check_run_size(ct.shape, region.shape, grid)
    image = resample(scale_hu(region.array, bundle.input["hu_window"]), grid, "linear")
    timings["preprocess_s"] = time.perf_counter() - start

    reporter.update("load model", 0.08, bundle.name)
    tick = time.perf_counter()
    networks = networks or bundle.load_networks(device)
    timings["load_model_s"] = time.perf_counter() - tick

    tick = time.perf_counter()
    settings = InferenceSettings(
        patch_size=bundle.patch_size,
        overlap=float(options.overlap if options.overlap is not None else bundle.input.get("overlap", 0.25)),
        flips=tta_flips(int(options.tta or bundle.tta.get("flips", 1))),
        sw_batch_size=options.sw_batch_size,
        device=device,
    )
    output = predict_ensemble(
        image,
        networks,
        settings,
        progress=StepProgress(reporter, "inference", 0.10, 0.90),
        warn=lambda message: reporter.log("warning", message),
    )
    timings["inference_s"] = time.perf_counter() - tick

    reporter.update("post-process", 0.91, "resampling to the CT grid")
    tick = time.perf_counter()
    maps = resample(
        torch.stack([output.probability, output.entropy, output.mutual_information]), region.shape, "linear"
    )
    full = np.zeros((3, *ras.shape), dtype=np.float32)
    full[(slice(None), *box)] = maps.numpy()
    lung_ras = field_.full_resolution() if field_.found else None
    post = _postprocess_settings(bundle, options, preset)
    lung_box = None if lung_ras is None else lung_ras[box]
    label_ras = np.zeros(ras.shape, dtype=np.uint8)
    label_ras[box] = postprocess(full[0][box], ras.voxel_volume_ml, post, lung_box)
    candidates_ras = np.zeros(ras.shape, dtype=np.uint16)
    candidate_rows: list = []
    if options.point_ras is not None:
        label_ras = lesion_at_point(label_ras, ras.ras_to_voxel(np.asarray(options.point_ras, dtype=np.float64)))
    elif preset is not None:  # a seed-point run asks for one lesion: no candidate list
        listing = CandidateSettings(preset.candidate_min_peak, preset.max_candidates)
        candidates_ras[box], candidate_rows = find_candidates(
            full[0][box], label_ras[box], ras.voxel_volume_ml, post, listing, lung_box
        )
    candidates = reorientation.invert(candidates_ras)
    timings["postprocess_s"] = time.perf_counter() - tick
    timings["total_s"] = time.perf_counter() - start

    info = {
        "model": bundle.name,
        "model_version": bundle.manifest.get("version"),
        "device": device_description(torch.device(output.device_used)),
        "tta_flips": len(settings.flips),
        "overlap": settings.overlap,
        "model_grid": list(grid),
        "region_voxels": [[s.start, s.stop] for s in box],
        "lung_field_found": field_.found,
        "postprocess": vars(post),
        "sensitivity": preset.summary() if preset is not None else None,
        "candidates": len(candidate_rows),
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }
    reporter.update("post-process", 0.95, "done")
    return SegmentationResult(
        label=reorientation.invert(label_ras),
        probability=reorientation.invert(full[0]),
        entropy=reorientation.invert(full[1]),
        mutual_information=reorientation.invert(full[2]),
        lung_mask=None if lung_ras is None else reorientation.invert(lung_ras.astype(np.uint8)),
        info=info,
        candidates=candidates,
        candidate_list=describe_candidates(candidates, candidate_rows),
    )


def _region_of_interest(ras: Volume, field_, options: SegmentOptions, reporter: ProgressReporter) -> Box:
    """Seed-point cube, lung-field box, or the whole image."""
    if options.point_ras is not None:
        return box_around_point(ras, options.point_ras, options.roi_mm)
    whole = tuple(slice(0, n) for n in ras.shape)
    if not options.crop_to_lung:
        return whole  # type: ignore[return-value]
    box = field_.bounding_box(np.ceil(LUNG_MARGIN_MM / ras.spacing))
    if box is None:
        reporter.log(
            "info",
            "no lung field found (small field of view or a sub-volume?): segmenting the whole image, "
            "lesions not filtered by the lung field",
        )
        return whole  # type: ignore[return-value]
    return box


def _postprocess_settings(
    bundle: ModelBundle, options: SegmentOptions, preset: SensitivityPreset | None = None
) -> PostprocessSettings:
    """The options given, else the preset's confidence level, else the bundle's ``output`` settings."""
    spec = bundle.output
    if preset is not None:
        spec = {**spec, "min_peak_probability": preset.min_peak_probability}

    def pick(option: Any, key: str, default: Any) -> Any:
        return option if option is not None else spec.get(key, default)

    return PostprocessSettings(
        threshold=float(pick(options.threshold, "threshold", 0.5)),
        min_lesion_ml=float(pick(options.min_lesion_ml, "min_lesion_ml", 0.05)),
        restrict_to_lung=bool(pick(options.restrict_to_lung, "restrict_to_lung", True)),
        keep_largest=bool(pick(options.keep_largest, "keep_largest", False)),
        min_peak_probability=float(pick(options.min_peak_probability, "min_peak_probability", 0.0)),
    )
