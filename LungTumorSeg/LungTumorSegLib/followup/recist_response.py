"""RECIST 1.1 target-lesion response between a baseline and a follow-up scan, with the rule that decided it.

- Target lesions are chosen at baseline: measurable lesions (long axis >= 10 mm and >= 2 x slice
  thickness), longest first, at most 5 and at most 2 per organ. All lesions here are lung lesions and
  both lungs count as one organ, so there are at most 2 targets (``CaseMeasurements``'s strict selection).
- At follow-up each target takes the long axis of the lesion it matches; a split target the sum of its
  fragments; lesions that merged give the merged lesion's long axis to the group's first target and 0 to
  the others; a disappeared target counts 0 (RECIST 1.1, section 4.3 and appendix I).
- Category, first rule that holds: PD if an unequivocal new lesion appeared; PD if the sum grew by >= 20 %
  and >= 5 mm from the nadir (the baseline unless another is given); CR if every target disappeared;
  PR if the sum fell by >= 30 % from the baseline; SD otherwise. NE when there is no target at baseline.
- Volumes (per match and in total) are reported beside it; they are not part of RECIST 1.1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..measurements.lesion_measurements import CaseMeasurements
from .lesion_matching import LesionMatch

PR_DECREASE_PERCENT = 30.0
PD_INCREASE_PERCENT = 20.0
PD_INCREASE_MM = 5.0
NEW_LESION_MIN_MM = 5.0
CATEGORIES = {
    "CR": "complete response",
    "PR": "partial response",
    "SD": "stable disease",
    "PD": "progressive disease",
    "NE": "not evaluable",
}
_EPS = 1e-9


@dataclass
class TargetLesion:
    """One baseline target lesion and what it became.

    Attributes:
        number: target number (1 = longest at baseline).
        baseline_id: its baseline lesion id.
        followup_ids: the follow-up lesions its diameter comes from (empty when it disappeared or
            when a merged lesion's diameter went to another target).
        match_type: the type of its match.
        baseline_mm: baseline long axis.
        followup_mm: follow-up diameter counted for it.
    """

    number: int
    baseline_id: int
    followup_ids: list[int]
    match_type: str
    baseline_mm: float
    followup_mm: float

    @property
    def change_percent(self) -> float:
        """Change of this target's diameter, percent of the baseline."""
        return 100.0 * (self.followup_mm - self.baseline_mm) / self.baseline_mm

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return {**asdict(self), "change_percent": round(self.change_percent, 2)}


@dataclass
class Response:
    """The RECIST 1.1 target-lesion response and the non-RECIST volume change.

    Attributes:
        category: CR, PR, SD, PD or NE.
        rule: the rule that decided it, in words with the numbers.
        targets: the target lesions.
        baseline_sum_mm: sum of the targets' baseline long axes.
        followup_sum_mm: sum of their follow-up diameters.
        nadir_sum_mm: reference for progression (the baseline sum unless given).
        new_lesion_ids: follow-up lesions that are new and count for PD.
        equivocal_new_lesion_ids: new follow-up lesions below ``new_lesion_min_mm``, left to the reader.
        non_target_baseline_ids: baseline lesions that are not targets.
        baseline_volume_ml: total tumour volume at baseline (all lesions).
        followup_volume_ml: total tumour volume at follow-up (all lesions).
        new_lesion_min_mm: long axis from which a new lesion counts as unequivocal.
    """

    category: str
    rule: str
    targets: list[TargetLesion] = field(default_factory=list)
    baseline_sum_mm: float = 0.0
    followup_sum_mm: float = 0.0
    nadir_sum_mm: float = 0.0
    new_lesion_ids: list[int] = field(default_factory=list)
    equivocal_new_lesion_ids: list[int] = field(default_factory=list)
    non_target_baseline_ids: list[int] = field(default_factory=list)
    baseline_volume_ml: float = 0.0
    followup_volume_ml: float = 0.0
    new_lesion_min_mm: float = NEW_LESION_MIN_MM

    @property
    def change_mm(self) -> float:
        """Follow-up sum minus baseline sum."""
        return self.followup_sum_mm - self.baseline_sum_mm

    @property
    def change_percent(self) -> float | None:
        """Change of the sum, percent of the baseline sum (None without targets)."""
        return 100.0 * self.change_mm / self.baseline_sum_mm if self.baseline_sum_mm > 0 else None

    @property
    def volume_change_percent(self) -> float | None:
        """Change of the total tumour volume, percent of the baseline (None when the baseline is empty)."""
        if self.baseline_volume_ml <= 0:
            return None
        return 100.0 * (self.followup_volume_ml - self.baseline_volume_ml) / self.baseline_volume_ml

    def to_dict(self) -> dict:
        """JSON-ready dictionary (the ``"response"`` field of comparison.json)."""
        change = self.change_percent
        volume_change = self.volume_change_percent
        return {
            "criteria": "RECIST 1.1, target lesions",
            "category": self.category,
            "category_name": CATEGORIES[self.category],
            "rule": self.rule,
            "baseline_sum_mm": round(self.baseline_sum_mm, 3),
            "followup_sum_mm": round(self.followup_sum_mm, 3),
            "change_mm": round(self.change_mm, 3),
            "change_percent": None if change is None else round(change, 2),
            "nadir_sum_mm": round(self.nadir_sum_mm, 3),
            "thresholds": {
                "partial_response_decrease_percent": PR_DECREASE_PERCENT,
                "progression_increase_percent": PD_INCREASE_PERCENT,
                "progression_increase_mm": PD_INCREASE_MM,
                "new_lesion_min_mm": self.new_lesion_min_mm,
            },
            "targets": [target.to_dict() for target in self.targets],
            "new_lesion_ids": self.new_lesion_ids,
            "equivocal_new_lesion_ids": self.equivocal_new_lesion_ids,
            "non_target_baseline_ids": self.non_target_baseline_ids,
            "volume_not_recist": {
                "note": "volumetric change, an addition that is not part of RECIST 1.1",
                "baseline_total_ml": round(self.baseline_volume_ml, 4),
                "followup_total_ml": round(self.followup_volume_ml, 4),
                "change_percent": None if volume_change is None else round(volume_change, 2),
            },
            "left_to_the_reader": [
                "non-target lesions (present, absent, or unequivocal progression)",
                "lymph nodes (RECIST measures them by the short axis: >= 15 mm target, < 10 mm normal)",
                "whether a new lesion is unequivocal",
                "lesions outside the lungs and the overall response",
            ],
        }


def target_ids(baseline: CaseMeasurements) -> list[int]:
    """Baseline target lesions: measurable, longest first, at most 5 and 2 per organ (both lungs one organ)."""
    return list(baseline.target_lesion_ids_recist_strict)


def assess_response(
    baseline: CaseMeasurements,
    followup: CaseMeasurements,
    matches: list[LesionMatch],
    *,
    nadir_sum_mm: float | None = None,
    new_lesion_min_mm: float = NEW_LESION_MIN_MM,
) -> Response:
    """The RECIST 1.1 target-lesion response from the two cases' measurements and their lesion matches.

    Args:
        baseline: baseline measurements (lesion ids 1..n).
        followup: follow-up measurements.
        matches: ``lesion_matching.match_lesions`` result.
        nadir_sum_mm: smallest sum of diameters recorded so far, for progression (default: the baseline sum).
        new_lesion_min_mm: new lesions with a shorter long axis are listed as equivocal and do not decide PD.
    """
    long_axis = {
        "baseline": {lesion.lesion_id: lesion.long_axis_mm for lesion in baseline.lesions},
        "followup": {lesion.lesion_id: lesion.long_axis_mm for lesion in followup.lesions},
    }
    chosen = target_ids(baseline)
    targets = []
    for number, lesion_id in enumerate(chosen, start=1):
        match = next(m for m in matches if lesion_id in m.baseline_ids)
        first_target = next(i for i in chosen if i in match.baseline_ids)
        counted = match.followup_ids if lesion_id == first_target else []
        diameter = float(sum(long_axis["followup"][i] for i in counted))
        targets.append(
            TargetLesion(number, lesion_id, counted, match.match_type, long_axis["baseline"][lesion_id], diameter)
        )
    new = [i for m in matches if m.match_type == "new" for i in m.followup_ids]
    unequivocal = [i for i in new if long_axis["followup"][i] + _EPS >= new_lesion_min_mm]
    baseline_sum = float(sum(t.baseline_mm for t in targets))
    followup_sum = float(sum(t.followup_mm for t in targets))
    nadir = baseline_sum if nadir_sum_mm is None else float(nadir_sum_mm)
    category, rule = classify(baseline_sum, followup_sum, nadir, unequivocal, len(targets), long_axis["followup"])
    return Response(
        category=category,
        rule=rule,
        targets=targets,
        baseline_sum_mm=baseline_sum,
        followup_sum_mm=followup_sum,
        nadir_sum_mm=nadir,
        new_lesion_ids=unequivocal,
        equivocal_new_lesion_ids=[i for i in new if i not in unequivocal],
        non_target_baseline_ids=[lesion.lesion_id for lesion in baseline.lesions if lesion.lesion_id not in chosen],
        baseline_volume_ml=baseline.total_volume_ml,
        followup_volume_ml=followup.total_volume_ml,
        new_lesion_min_mm=new_lesion_min_mm,
    )


def classify(
    baseline_sum: float,
    followup_sum: float,
    nadir_sum: float,
    new_lesion_ids: list[int],
    target_count: int,
    followup_long_axis: dict[int, float] | None = None,
) -> tuple[str, str]:
    """The RECIST 1.1 category and the rule that decided it.

    Args:
        baseline_sum: sum of the targets' baseline diameters (mm).
        followup_sum: sum of their follow-up diameters (mm).
        nadir_sum: smallest sum so far (mm), the reference for progression.
        new_lesion_ids: unequivocal new lesions at follow-up.
        target_count: number of target lesions.
        followup_long_axis: follow-up long axis by lesion id, to name the new lesions' sizes.
    """
    if new_lesion_ids:
        sizes = followup_long_axis or {}
        named = ", ".join(f"{i} ({sizes[i]:.1f} mm)" if i in sizes else str(i) for i in new_lesion_ids)
        return "PD", f"new lesion(s) at follow-up: {named}"
    if target_count == 0:
        return "NE", "no measurable lesion (long axis >= 10 mm) at baseline, so no target lesion to follow"
    increase = followup_sum - nadir_sum
    if nadir_sum > 0 and increase >= PD_INCREASE_MM - _EPS and increase >= PD_INCREASE_PERCENT / 100 * nadir_sum - _EPS:
        return "PD", (
            f"sum of diameters {followup_sum:.1f} mm is {100 * increase / nadir_sum:+.1f} % (>= +20 %) and "
            f"{increase:+.1f} mm (>= +5 mm) from the {'baseline' if nadir_sum == baseline_sum else 'nadir'} "
            f"{nadir_sum:.1f} mm"
        )
    if followup_sum <= _EPS:
        return "CR", f"all {target_count} target lesion(s) disappeared (sum of diameters 0 mm)"
    change = 100 * (followup_sum - baseline_sum) / baseline_sum
    if change <= -PR_DECREASE_PERCENT + _EPS:
        return "PR", (
            f"sum of diameters {followup_sum:.1f} mm is {change:+.1f} % from the baseline {baseline_sum:.1f} mm "
            f"(a decrease of >= 30 %)"
        )
    return "SD", (
        f"sum of diameters {followup_sum:.1f} mm is {change:+.1f} % from the baseline {baseline_sum:.1f} mm: "
        f"neither a 30 % decrease nor a 20 % and 5 mm increase"
    )
