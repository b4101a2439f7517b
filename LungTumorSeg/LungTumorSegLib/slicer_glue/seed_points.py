"""Seed clicks as markups control points: read the clicked point, and take its marker away when its run ends.

A click's marker stays while its run is queued or running (what is still to come is visible) and is removed when
the run ends, whatever the outcome, so markers never pile up. Qt-free (slicer-core in pytest).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import mrml_nodes as nodes


@dataclass(frozen=True)
class SeedClick:
    """One click: the point in the CT's own frame (where the engine works) and its control point's ID."""

    pointRas: tuple[float, float, float]
    controlPointId: str


def last_click(markupsNode, volumeNode) -> SeedClick | None:
    """The last placed control point of ``markupsNode`` as a seed on ``volumeNode`` (None when there is none)."""
    count = markupsNode.GetNumberOfControlPoints()
    if count == 0:
        return None
    world = [0.0, 0.0, 0.0]
    markupsNode.GetNthControlPointPositionWorld(count - 1, world)
    local = nodes.world_to_volume(volumeNode, world)
    return SeedClick(tuple(float(v) for v in local), markupsNode.GetNthControlPointID(count - 1))


def remove_click(markupsNode, click: SeedClick) -> bool:
    """Remove the click's marker (if the user has not removed it already); True when one was removed."""
    if markupsNode is None or not nodes.in_scene(markupsNode):
        return False
    index = markupsNode.GetNthControlPointIndexByID(click.controlPointId)
    if index < 0:
        return False
    markupsNode.RemoveNthControlPoint(index)
    return True
