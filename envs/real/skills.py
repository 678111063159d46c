"""The language skill vocabulary of the OGBench scene (light module: no simulator import).

The learned world-model env imports :data:`SKILLS`, so ids and strings here are part of the data
contract: append new skills at the end, never reorder.
"""

from __future__ import annotations

from dataclasses import dataclass

# Cube resting places on the table (x, y, z in metres). Image right is world +y, so "left" is -y.
# They coincide with OGBench scene task positions, so a placed cube meets those tasks' goals.
CUBE_SLOTS: dict[str, tuple[float, float, float]] = {
    "left": (0.40, -0.05, 0.02),
    "middle": (0.35, 0.05, 0.02),
    "right": (0.40, 0.15, 0.02),
}
# Centre of the opened drawer, where OGBench's own data puts the cube.
DRAWER_CENTER: tuple[float, float, float] = (0.33, -0.24, 0.066)
DRAWER_OPEN, DRAWER_CLOSED = -0.16, 0.0
WINDOW_OPEN, WINDOW_CLOSED = 0.2, 0.0


@dataclass(frozen=True)
class Skill:
    """One language skill: which oracle runs it and its target.

    ``kind`` is ``drawer``/``window`` (``target`` = joint position), ``button`` (``target`` = button
    index: 0 is the left one, which locks the drawer; 1 the right one, which locks the window),
    ``cube`` (``target`` = xyz) or ``cube_drawer`` (``target`` = xyz of the open drawer's centre).
    """

    text: str
    kind: str
    target: float | tuple[float, float, float]


SKILL_SPECS: tuple[Skill, ...] = (
    Skill("open the drawer", "drawer", DRAWER_OPEN),
    Skill("close the drawer", "drawer", DRAWER_CLOSED),
    Skill("open the window", "window", WINDOW_OPEN),
    Skill("close the window", "window", WINDOW_CLOSED),
    Skill("press the left button", "button", 0),
    Skill("press the right button", "button", 1),
    Skill("pick up the cube and put it in the drawer", "cube_drawer", DRAWER_CENTER),
    Skill("put the cube on the left of the table", "cube", CUBE_SLOTS["left"]),
    Skill("put the cube in the middle of the table", "cube", CUBE_SLOTS["middle"]),
    Skill("put the cube on the right of the table", "cube", CUBE_SLOTS["right"]),
)
SKILLS: tuple[str, ...] = tuple(s.text for s in SKILL_SPECS)
SKILL_IDS: dict[str, int] = {text: i for i, text in enumerate(SKILLS)}


def skill_id(text: str) -> int:
    """Id of a skill string (case and surrounding spaces ignored); ValueError lists valid skills."""
    key = " ".join(str(text).lower().split())
    if key not in SKILL_IDS:
        valid = "\n  ".join(SKILLS)
        raise ValueError(f"unknown skill {text!r}; valid skills are:\n  {valid}")
    return SKILL_IDS[key]


def slot_phrase(slot: str) -> str:
    """How skills and instructions name a table slot: "on the left of the table", ..."""
    return f"{'in the' if slot == 'middle' else 'on the'} {slot} of the table"


def cube_slot_skill(slot: str) -> int:
    """Skill id that puts the cube on table slot ``slot`` (left/middle/right)."""
    return skill_id(f"put the cube {slot_phrase(slot)}")

