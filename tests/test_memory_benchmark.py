"""Scene memory benchmark (issue 15): random cube colours, distractor chunks, per-frame simulator
records, and the cube-recall probe judged on real rendered frames."""

import numpy as np
import pytest

from envs.episodes import read_episode, validate_episode, write_episodes
from envs.real.objects import CUBE_COLOR_NAMES, CUBE_PIXEL_FIELDS, SIM_STATE_FIELDS, project
from envs.real.skills import SKILLS
from envs.real.tasks import get_task
from evaluation.memory_probe import (
    COLOR_NAMES,
    NO_CUBE,
    REFERENCE_HUES,
    chance_level,
    classify_frame,
    control_pairs,
    cube_recall,
    cube_window,
    frame_chunks,
    pixel_labels,
    probe_episode,
    reopen_frames,
    summarize,
)

VIS = CUBE_PIXEL_FIELDS.index("visible")
IN_DRAWER = SIM_STATE_FIELDS.index("cube_in_drawer")


@pytest.fixture(scope="module")
def memory_episode():
    """One real memory_drawer episode rendered at the model's 64x64 (two frames per chunk)."""
    from envs.real import RealSceneEnv, run_episode

    env = RealSceneEnv(task="memory_drawer", width=64, height=64, chunk_len=2, frame_skip=16,
                       min_distractors=1, max_distractors=1)
    try:
        yield run_episode(env, seed=4, task="memory_drawer")
    finally:
        env.close()


def _recolour(frames: np.ndarray, masks: np.ndarray, degrees: float) -> np.ndarray:
    """A copy whose pixels in ``masks`` have their hue turned by ``degrees`` (lightness and chroma
    kept): a cube of another colour at the same place."""
    out = frames.copy()
    rgb = out[masks].astype(np.float64)
    m = rgb.mean(-1)
    a = rgb[:, 0] - 0.5 * (rgb[:, 1] + rgb[:, 2])
    b = np.sqrt(3) / 2 * (rgb[:, 1] - rgb[:, 2])
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    a, b = c * a - s * b, s * a + c * b
    new = np.stack([m + 2 * a / 3, m - a / 3 + b / np.sqrt(3), m - a / 3 - b / np.sqrt(3)], -1)
    out[masks] = np.clip(np.rint(new), 0, 255).astype(np.uint8)
    return out


def test_distractor_plans_restore_the_scene():
    task = get_task("memory_drawer")
    base = task.build(np.random.default_rng(0))
    assert base.distractors == 0 and len(base.plan) == 8  # the fixed plan by default
    counts = set()
    for seed in range(40):
        spec = task.build(np.random.default_rng(seed), distractors=(1, 3))
        texts = [SKILLS[i] for i in spec.plan]
        counts.add(spec.distractors)
        assert 1 <= spec.distractors <= 5 and len(spec.plan) == 8 + spec.distractors
        assert texts[:7] == [SKILLS[i] for i in base.plan[:7]] and texts[-1] == "open the drawer"
        window_open, unlocked = False, True  # replay the distractors: valid, and the window ends as it was
        for text in texts[7:-1]:
            if text == "press the right button":
                unlocked = not unlocked
            elif text == "open the window":
                assert unlocked and not window_open
                window_open = True
            else:  # closes an open, unlocked window or moves the arm to a closed one and away
                assert text == "close the window" and (unlocked or not window_open)
                window_open = False
        assert not window_open and unlocked
        assert spec.task_info["goal"] == base.task_info["goal"] and text_in(spec.instruction, texts[7:-1])
    assert {1, 2, 3} <= counts  # odd totals too: the arm-only move
    locked = get_task("memory_drawer_locked").build(np.random.default_rng(1), distractors=(2, 2))
    assert [SKILLS[i] for i in locked.plan][-2:] == ["press the left button", "open the drawer"]
    assert locked.distractors >= 2 and get_task("task1_open").build(np.random.default_rng(0), (1, 3)).distractors == 0
    with pytest.raises(ValueError, match="distractors"):
        task.build(np.random.default_rng(0), distractors=(2, 1))


def text_in(instruction: str, texts: list[str]) -> bool:
    return all(t in instruction for t in texts)


def test_probe_colours_on_synthetic_patches():
    row = np.array([8.0, 8.0, 2.0, 1.0, 8.0, 8.0])  # cube_pixel: centre (8, 8), half-size 2, fully visible
    rendered = {"red": (255, 20, 20), "orange": (255, 156, 0), "yellow": (255, 255, 16), "green": (24, 255, 82),
                "blue": (39, 78, 255)}  # measured on rendered cubes (lit top faces); the scene's colours below too
    background = {"navy floor": (54, 63, 88), "drawer": (225, 255, 255), "bluish scene 99th pct": (77, 92, 121),
                  "bluish scene max": (160, 192, 250), "purple arm": (93, 63, 199), "grey": (128, 128, 128)}
    for name, rgb in {**rendered, **background}.items():
        frame = np.full((16, 16, 3), 60, np.uint8)
        frame[6:10, 6:10] = rgb
        assert classify_frame(frame, row) == (name if name in rendered else NO_CUBE), name
        assert classify_frame(frame, row + np.array([6, 6, 0, 0, 6, 6])) == NO_CUBE  # elsewhere: not seen


def test_episode_records_state_colour_and_projection(memory_episode, tmp_path):
    ep = memory_episode
    T = len(ep["frames"])
    assert ep["attrs"]["task_success"] and ep["attrs"]["distractors"] == 1
    assert ep["attrs"]["cube_color"] in CUBE_COLOR_NAMES
    assert ep["sim_state"].shape == (T, len(SIM_STATE_FIELDS)) and ep["cube_pixel"].shape == (T, len(CUBE_PIXEL_FIELDS))
    # the stored camera maps the recorded cube position onto the recorded pixel centre
    np.testing.assert_allclose(project(ep["camera"], ep["sim_state"][:, :3]), ep["cube_pixel"][:, :2], atol=1e-3)
    # on a real rendered frame the projected centre lies on the cube: frame 0, cube on the table
    x, y = ep["cube_pixel"][0, :2].astype(int)
    label = int(pixel_labels(ep["frames"][0][y, x]))
    assert label >= 0 and CUBE_COLOR_NAMES[label] == ep["attrs"]["cube_color"]
    # hidden in the closed drawer somewhere in the middle, visible on the table at the start
    hidden = (ep["sim_state"][:, IN_DRAWER] > 0.5) & (ep["cube_pixel"][:, VIS] == 0)
    assert hidden.sum() >= 8 and ep["cube_pixel"][0, VIS] == 1.0
    write_episodes(tmp_path / "a.h5", {"e": ep})
    back = read_episode(tmp_path / "a.h5", "e")
    for field in ("sim_state", "cube_pixel", "camera"):
        np.testing.assert_array_equal(back[field], ep[field])
    assert back["attrs"]["cube_color"] == ep["attrs"]["cube_color"]
    assert back["attrs"]["sim_state_fields"].split(",") == list(SIM_STATE_FIELDS)
    bad = dict(ep, cube_pixel=ep["cube_pixel"][1:])
    with pytest.raises(ValueError, match="cube_pixel shape"):
        validate_episode(bad)


def test_probe_recalls_real_reopen_and_rejects_painted_out_cube(memory_episode):
    ep = memory_episode
    frames, pixels, states, color = ep["frames"], ep["cube_pixel"], ep["sim_state"], ep["attrs"]["cube_color"]
    reopen = reopen_frames(states, pixels)
    assert len(reopen) >= 1 and reopen.min() > np.flatnonzero(pixels[:, VIS] == 0).max()
    chunks = frame_chunks(reopen, 2)  # the final "open the drawer" chunk(s)
    assert chunks[-1] == len(ep["skill_ids"]) - 1 and {ep["language"][k] for k in chunks} == {"open the drawer"}
    real = probe_episode(frames, ep)
    assert real["correct"] and real["label"] == color and real["frame_accuracy"] == 1.0
    # every visible frame shows the cube's colour; every hidden frame shows none
    for t in range(len(frames)):
        if pixels[t, VIS] >= 0.2:
            assert classify_frame(frames[t], pixels[t]) == color, t
        elif pixels[t, VIS] == 0:
            assert classify_frame(frames[t], pixels[t]) == NO_CUBE, t

    windows = np.stack([cube_window(frames.shape[1:], pixels[t]) for t in range(len(frames))])
    painted = frames.copy()  # cube area filled with the drawer's own colour around it
    for t in reopen:
        ring = cube_window(frames.shape[1:], pixels[t] + np.array([0, 0, 3, 0, 0, 0])) & ~windows[t]
        painted[t][windows[t]] = np.median(frames[t][ring], axis=0).astype(np.uint8)
    gone = probe_episode(painted, ep)
    assert not gone["correct"] and gone["label"] == NO_CUBE and set(gone["labels"]) == {NO_CUBE}
    other = COLOR_NAMES[(COLOR_NAMES.index(color) + 1) % len(COLOR_NAMES)]
    cube = windows & (pixel_labels(frames) == COLOR_NAMES.index(color))  # the cube's own pixels
    recoloured = probe_episode(_recolour(frames, cube, REFERENCE_HUES[other] - REFERENCE_HUES[color]), ep)
    assert not recoloured["correct"] and recoloured["label"] == other

    # at half the resolution (e.g. a model at 32x32) the recorded location is rescaled
    small = frames[:, ::2, ::2]
    assert cube_recall(small, pixels, states, color, recorded_width=64)["frames"].tolist() == reopen.tolist()
    s = summarize([real, gone, recoloured])
    assert s["episodes"] == 3 and s["recall"] == pytest.approx(1 / 3) and s["no_cube_rate"] == pytest.approx(1 / 3)
    assert s["chance"] == chance_level() == 1 / len(CUBE_COLOR_NAMES)


def test_control_pairs_separate_memory_from_in_context(memory_episode):
    ep = memory_episode
    pairs = control_pairs(ep["revisits"], ep["sim_state"], ep["cube_pixel"])
    assert len(pairs) == len(ep["revisits"]) >= 2
    kinds = {p["kind"] for p in pairs}
    assert "cube_hidden" in kinds and kinds & {"window", "button"}
    for p in pairs:
        assert p["memory"] == (p["kind"] == "cube_hidden")
        if p["memory"]:  # the cube shows at both ends and lay hidden in between
            vis = ep["cube_pixel"][p["first"] : p["revisit"] + 1, VIS]
            assert vis[0] > 0 and vis[-1] > 0 and (vis == 0).any()
