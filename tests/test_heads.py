"""Reward / success / termination heads: learn a known reward, use the instruction, persist."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.synthetic import random_episodes
from worldmodel.heads import (HeadsConfig, RewardHeads, examples_from_episodes, examples_from_items,
                              instruction_features, train_heads)

SIDES = {"look at the left half": slice(0, 8), "look at the right half": slice(8, 16)}




def labelled_episodes(num: int, seed: int) -> list[dict]:
    """Synthetic episodes whose chunk reward is a known function of the chunk's last frame and the
    instruction: the brightness of the half the instruction names. Success: reward above 0.35."""
    episodes = random_episodes(num, 4, seed=seed, frame_size=16, chunk_len=2)
    rng = np.random.default_rng(seed)
    for ep in episodes:
        text = list(SIDES)[int(rng.integers(2))]
        last = ep["frames"][2::2]  # chunk k ends at frame 2 + 2k
        ep["reward"] = (last[:, :, SIDES[text]].mean(axis=(1, 2, 3)) / 255.0).astype(np.float32)
        ep["success"] = ep["reward"] > 0.35
        ep["attrs"] = {**ep["attrs"], "instruction": text, "task_success": bool(ep["success"][-1])}
    return episodes


def test_heads_learn_a_known_reward_that_depends_on_the_instruction():
    train = examples_from_episodes(labelled_episodes(120, seed=1), num_frames=1)
    test = examples_from_episodes(labelled_episodes(40, seed=2), num_frames=1)
    assert len(train) == 480 and train.frames.shape == (480, 1, 16, 16, 3)
    assert train.terminated.sum() == sum(1 for k in range(480) if k % 4 == 3 and train.success[k])
    torch.manual_seed(0)
    heads = RewardHeads(HeadsConfig(frame_size=16, num_frames=1, channels=(16, 32), text_dim=32, hidden=64))
    history = train_heads(heads, train, steps=400, batch_size=32, lr=3e-3)
    assert np.mean(history[-20:]) < 0.5 * np.mean(history[:20])
    pred = heads.predict(test.frames, test.instructions)
    resid = pred["reward"] - test.reward
    r2 = 1 - resid.var() / test.reward.var()
    assert r2 > 0.8, r2
    assert np.mean((pred["success"] > 0.5) == test.success) > 0.85
    # the same frames under the other instruction get the other half's brightness
    other = [next(t for t in SIDES if t != s) for s in test.instructions]
    swapped = heads.predict(test.frames, other)["reward"]
    truth = np.array([test.frames[i, -1][:, SIDES[o]].mean() / 255 for i, o in enumerate(other)])
    assert np.corrcoef(swapped, truth)[0, 1] > 0.8


def test_heads_save_load_and_bad_input(tmp_path):
    heads = RewardHeads(HeadsConfig(frame_size=8, channels=(4,), text_dim=8, hidden=4))
    frames = np.random.default_rng(0).integers(0, 256, (3, 2, 16, 16, 3), dtype=np.uint8)  # resized to 8x8
    before = heads.predict(frames, ["a", "b", None])
    heads.save_pretrained(tmp_path / "heads")
    loaded = RewardHeads.from_pretrained(tmp_path / "heads")
    after = loaded.predict(frames, ["a", "b", None])
    for key in ("reward", "success", "terminated", "to_go"):
        np.testing.assert_array_equal(before[key], after[key])
    # heads saved before the to_go output existed load without it, and `with_to_go` adds it at 0, all else kept
    import json

    old = RewardHeads(HeadsConfig(frame_size=8, channels=(4,), text_dim=8, hidden=4, to_go=False))
    old.save_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "heads.json").read_text())
    del config["to_go"]
    (tmp_path / "old" / "heads.json").write_text(json.dumps(config))
    old = RewardHeads.from_pretrained(tmp_path / "old")
    assert not old.config.to_go and "to_go" not in old.predict(frames, ["a", "b", None])
    grown = old.with_to_go()
    assert grown.config.to_go and grown.with_to_go() is grown
    was, now = old.predict(frames, ["a", "b", None]), grown.predict(frames, ["a", "b", None])
    for key in was:
        np.testing.assert_allclose(was[key], now[key], atol=1e-6)
    assert (now["to_go"] == 0).all()
    with pytest.raises(FileNotFoundError, match="heads.json"):
        RewardHeads.from_pretrained(tmp_path / "missing")
    with pytest.raises(TypeError, match="uint8"):
        heads.predict(frames.astype(np.float32), ["a", "b", "c"])
    with pytest.raises(ValueError, match="instructions"):
        heads.predict(frames, ["a"])
    feats = instruction_features(["open the drawer", "Open the  drawer", "", None], 64)
    assert torch.equal(feats[0], feats[1]) and feats[2].abs().sum() == 0 and feats[0].norm() == pytest.approx(1.0)
    items = [{"target": frames[i], "reward": float(i), "text": "go", "success": i > 0} for i in range(3)]
    ex = examples_from_items(items, num_frames=2)
    assert ex.frames.shape == (3, 2, 16, 16, 3) and ex.instructions == ["go"] * 3 and ex.success.tolist() == [0, 1, 1]


def test_scene_labels_judge_every_task_on_the_recorded_state():
    """A play episode teaches its own instruction and each task 1-5's; a task episode is labelled by its state
    (the goal reached one chunk before the recorded end is done there too); frames are stored once."""
    from agents.heads import scene_labels
    from envs.real.tasks import RELABEL_TASKS, get_task

    task1 = get_task("task1_open").build(np.random.default_rng(0))
    goal1 = task1.task_info["goal"]
    K, L = 3, 2
    state = np.zeros((1 + K * L, 8), np.float32)
    state[:, :3] = goal1["block_xyzs"][0]
    state[:, 5:7] = goal1["button_states"]
    state[L * 2:, 3] = goal1["drawer_pos"]  # drawer open from chunk 1's end on
    state[L * 2:, 4] = goal1["window_pos"]  # window too: task 1's goal from chunk 1 on
    frames = np.random.default_rng(0).integers(0, 255, (1 + K * L, 8, 8, 3), dtype=np.uint8)
    play = dict(frames=frames, reward=np.full(K, -3.0, np.float32), success=np.ones(K, bool), sim_state=state,
                attrs=dict(chunk_len=L, task="play", instruction="play with the drawer", task_success=False))
    ex = examples_from_episodes([play], num_frames=1, labels=scene_labels)
    assert len(ex) == K * (1 + len(RELABEL_TASKS)) and len(ex.frames) == K  # one copy of each chunk's frames
    by_text = {t: (ex.reward[i:i + K], ex.terminated[i:i + K]) for i, t in enumerate(ex.instructions) if i % K == 0}
    assert not by_text["play with the drawer"][1].any()  # its own labels, as recorded
    reward, done = by_text[task1.instruction]
    assert done.tolist() == [False, True, True] and reward.tolist() == [-2.0, 0.0, 0.0]
    task4 = get_task("task4_put_in_drawer").build(np.random.default_rng(0)).instruction
    assert not by_text[task4][1].any() and (by_text[task4][0] < 0).all()  # the cube is on the table
    np.testing.assert_array_equal(ex.frames_of(np.arange(K, 2 * K)), ex.frames_of(np.arange(K)))

    task_ep = dict(play, attrs=dict(play["attrs"], task="task1_open", instruction=task1.instruction,
                                    task_success=True))
    sets = scene_labels(task_ep)
    assert len(sets) == len(RELABEL_TASKS)  # its own instruction once, labelled by the state
    own = [s for s in sets if s[0] == task1.instruction]
    assert len(own) == 1 and own[0][2].tolist() == [False, True, True]
    no_state = {k: v for k, v in play.items() if k != "sim_state"}
    assert [s[0] for s in scene_labels(no_state)] == ["play with the drawer"]

    # the drawer memory tasks: an instruction with random distractors, the same on every call; their goal (the
    # cube in the open drawer, window shut, buttons unlocked) judged on the state
    memory = [t for t in by_text if t.startswith(("hide the cube in the drawer and close it",
                                                   "hide the cube in the drawer, close and lock it"))]
    assert len(memory) == 2 and all(", then " in t for t in memory) and not any(by_text[t][1].any() for t in memory)
    assert [s[0] for s in scene_labels(play)] == [s[0] for s in scene_labels(play)]
    goal = get_task("memory_drawer").build(np.random.default_rng(0)).task_info["goal"]
    hidden = state.copy()
    hidden[:, 3:7] = goal["drawer_pos"], goal["window_pos"], *goal["button_states"]
    hidden[L * 3:, 7] = 1.0  # the cube in the drawer at the last chunk's end
    mem_ep = dict(play, sim_state=hidden, attrs=dict(play["attrs"], task="memory_drawer", instruction="hide it"))
    sets = {s[0]: s for s in scene_labels(mem_ep)}
    # the goal scene reached without hiding the cube first (put into the open drawer): not done, as the success
    # judge says; hidden in the shut drawer first, then reopened: done
    assert len(sets) == len(RELABEL_TASKS) and sets["hide it"][2].tolist() == [False, False, False]
    assert sets["hide it"][1].tolist() == [-1.0, -1.0, 0.0]
    reopened = hidden.copy()
    reopened[1:, 7] = 1.0  # the cube in the drawer from the start
    reopened[1:L + 1, 3] = 0.0  # the drawer shut over it during chunk 0, open again from chunk 1 on
    sets_reopened = {s[0]: s for s in scene_labels(dict(mem_ep, sim_state=reopened))}
    assert sets_reopened["hide it"][2].tolist() == [False, True, True]

    # judged per task: heads that call every chunk done miss nothing and call every not-done pair done
    from agents.heads import HeadsFit, judge_heads

    class AllDone:
        config = HeadsConfig(frame_size=8, num_frames=1)

        def predict(self, frames, texts):
            ones = np.ones(len(texts), np.float32)
            return {"reward": 0 * ones, "success": ones, "terminated": ones, "to_go": 0 * ones}

    fit = judge_heads(AllDone(), [play, mem_ep, dict(mem_ep, sim_state=reopened)], HeadsFit(0, 0, 0.0, 0.0, 0.0, 0.0))
    assert list(fit.hindsight_per_task) == list(RELABEL_TASKS)
    assert sum(v["pairs"] for v in fit.hindsight_per_task.values()) + K == fit.hindsight_chunks  # + play's own
    memory = fit.hindsight_per_task["memory_drawer"]
    # skills to go, memory_drawer, through its memory part: play [4, 4, 4] (open the drawer / shut the window, put the
    # cube in, close the drawer, open it), the memory episode that never hid the cube [3, 3, 2], the one that hid it
    # and reopened the drawer [1, 0, 0]; heads that say 0 are off by their mean; 2 done pairs (the reopened drawer)
    assert sets["hide it"][3].tolist() == [3, 3, 2] and sets_reopened["hide it"][3].tolist() == [1, 0, 0]
    assert memory == {"pairs": 3 * K, "done_pairs": 2, "false_done": 1.0, "missed_done": 0.0,
                      "to_go_mae": pytest.approx(21 / 9)}


def test_next_skills_are_the_skills_one_closer_to_the_goal():
    """Task 4 from its start scene (drawer shut and locked, cube on the table): only "press the left button" helps;
    then "open the drawer"; then the cube into the open drawer; then "close the drawer"; at the goal, none."""
    from envs.real.objects import SIM_STATE_FIELDS
    from envs.real.skills import SKILLS
    from envs.real.tasks import get_task, next_skills, skills_to_go

    goal = get_task("task4_put_in_drawer").build(np.random.default_rng(0)).task_info["goal"]
    base = dict(cube_x=0.35, cube_y=0.05, cube_z=0.02, drawer=0.0, window=goal["window_pos"], left_button=0,
                right_button=goal["button_states"][1], cube_in_drawer=0)
    steps = [{}, dict(left_button=1), dict(left_button=1, drawer=-0.16),
             dict(left_button=1, drawer=-0.16, cube_in_drawer=1), dict(left_button=1, cube_in_drawer=1)]
    rows = np.array([[{**base, **s}[f] for f in SIM_STATE_FIELDS] for s in steps], np.float32)
    nexts = next_skills("task4_put_in_drawer", rows)
    names = [[SKILLS[k] for k in np.flatnonzero(row)] for row in nexts]
    assert skills_to_go("task4_put_in_drawer", rows).tolist() == [4, 3, 2, 1, 0]
    assert names == [["press the left button"], ["open the drawer"], ["pick up the cube and put it in the drawer"],
                     ["close the drawer"], []], names
    # part-way: a drawer 6-10 cm from either end is neither open nor shut, so the skill under way is the one to finish;
    # a cube skill under way (``held``) leaves the cube "in the drawer" only once it is let go
    part = [dict(left_button=1, drawer=-0.10), dict(left_button=1, drawer=-0.06, cube_in_drawer=1),
            dict(left_button=1, drawer=-0.16, cube_in_drawer=1)]
    rows = np.array([[{**base, **s}[f] for f in SIM_STATE_FIELDS] for s in part], np.float32)
    held = np.array([False, False, True])
    names = [[SKILLS[k] for k in np.flatnonzero(row)] for row in next_skills("task4_put_in_drawer", rows, held=held)]
    assert names == [["open the drawer"], ["close the drawer"], ["pick up the cube and put it in the drawer"]], names
    assert skills_to_go("task4_put_in_drawer", rows, held).tolist() == [3, 1, 2]
    assert skills_to_go("task4_put_in_drawer", rows).tolist() == [3, 1, 1]  # let go: one skill (close) to go


def test_a_memory_tasks_labels_go_through_its_memory_part():
    """memory_drawer's goal scene (the cube in the open drawer) counts only after the cube was hidden in the shut
    drawer (`agents.real_scene.memory_part_done`, the success judge's rule): before that, the cube put in the open
    drawer is two skills from the goal ("close the drawer", then "open the drawer"), after it, none."""
    from agents.real_scene import memory_part_done
    from envs.real.objects import SIM_STATE_FIELDS
    from envs.real.skills import SKILLS
    from envs.real.tasks import fixed_spec, next_skills, skills_to_go

    goal = fixed_spec("memory_drawer").task_info["goal"]
    base = dict(cube_x=0.33, cube_y=-0.24, cube_z=0.066, drawer=-0.16, window=goal["window_pos"],
                left_button=goal["button_states"][0], right_button=goal["button_states"][1], cube_in_drawer=1)
    steps = [dict(cube_x=0.35, cube_y=0.05, cube_z=0.02, cube_in_drawer=0), {}, dict(drawer=0.0), {}]
    rows = np.array([[{**base, **s}[f] for f in SIM_STATE_FIELDS] for s in steps], np.float32)
    memory = memory_part_done("memory_drawer", rows)
    assert memory.tolist() == [False, False, True, True]
    assert skills_to_go("memory_drawer", rows, memory_done=memory).tolist() == [3, 2, 1, 0]
    assert skills_to_go("memory_drawer", rows).tolist() == [1, 0, 1, 0]  # the goal scene alone, the part ignored
    names = [[SKILLS[k] for k in np.flatnonzero(r)] for r in next_skills("memory_drawer", rows, memory_done=memory)]
    assert names == [["pick up the cube and put it in the drawer"], ["close the drawer"], ["open the drawer"], []]
    assert memory_part_done("task1_open", rows).all()  # no memory part


def test_cube_return_is_labelled_against_its_own_start():
    """memory_cube_return's goal is the scene its episode started in, and it counts only after the cube lay on the
    slot its instruction names (`MILESTONES`): its own episodes get labels judged against their first state (to go:
    2 at the start, 1 away, 0 back), done only once back, never after another slot; a start without the cube on a
    slot gets a clear error."""
    from agents.heads import scene_labels
    from envs.real.objects import SIM_STATE_FIELDS
    from envs.real.skills import CUBE_SLOTS, SKILLS
    from envs.real.tasks import RELABEL_TASKS, get_task

    spec = get_task("memory_cube_return").build(np.random.default_rng(1))  # starts on the left, away: the middle
    start, away = CUBE_SLOTS["left"], CUBE_SLOTS["middle"]
    assert np.allclose(spec.task_info["init"]["block_xyzs"][0], start)
    base = dict(drawer=spec.task_info["init"]["drawer_pos"], window=spec.task_info["init"]["window_pos"],
                left_button=1, right_button=1, cube_in_drawer=0)
    K, L = 3, 2
    cubes = [start] * L + [away] * (2 * L) + [start]  # ends of chunks 0, 1, 2: away, away, back
    state = np.array([[{**base, **dict(zip(("cube_x", "cube_y", "cube_z"), c))}[f] for f in SIM_STATE_FIELDS]
                      for c in cubes], np.float32)
    frames = np.zeros((1 + K * L, 8, 8, 3), np.uint8)
    ep = dict(frames=frames, reward=np.zeros(K, np.float32), success=np.ones(K, bool), sim_state=state,
              skill_ids=np.array([8, 0, 7]), attrs=dict(chunk_len=L, task="memory_cube_return",
                                                       instruction=spec.instruction, task_success=True))
    sets = scene_labels(ep)
    assert len(sets) == 1 + len(RELABEL_TASKS) and sets[0][0] == spec.instruction
    _, reward, done, to_go, nexts = sets[0]
    assert reward.tolist() == [-1.0, -1.0, 0.0] and done.tolist() == [False, False, True]
    assert to_go.tolist() == [1, 1, 0]
    back = "put the cube on the left of the table"
    assert [[SKILLS[k] for k in np.flatnonzero(row)] for row in nexts] == [[back], [back], []]
    wrong = state.copy()  # to the right slot, not the middle the instruction names, and back: not done
    wrong[L:-1, :3] = CUBE_SLOTS["right"]
    _, reward, done, to_go, nexts = scene_labels(dict(ep, sim_state=wrong))[0]
    assert reward.tolist() == [-1.0, -1.0, 0.0] and not done.any() and to_go.tolist() == [2, 2, 2]
    assert [SKILLS[k] for k in np.flatnonzero(nexts[0])] == ["put the cube in the middle of the table"]
    stayed = dict(ep, sim_state=np.repeat(state[:1], len(state), 0))  # never left its slot: its goal, not done
    _, reward, done, to_go, _ = scene_labels(stayed)[0]
    assert reward.tolist() == [0.0] * K and not done.any() and to_go.tolist() == [2] * K
    off = state.copy()
    off[0, :2] = 0.5, 0.5
    with pytest.raises(ValueError, match="cube on a table slot"):
        scene_labels(dict(ep, sim_state=off))


def test_heads_learn_the_next_skill_from_hindsight_labels():
    """A next-skill output learns labels that depend on the frame and the instruction, and `with_next_skill` adds it
    to trained heads without changing their other outputs."""
    from worldmodel.heads import HeadExamples

    rng = np.random.default_rng(0)
    n = 256
    frames = rng.integers(0, 60, (n, 1, 16, 16, 3), dtype=np.uint8)
    bright = rng.random(n) < 0.5
    frames[bright] += 150  # the state: a bright or a dark frame
    texts = [list(SIDES)[i % 2] for i in range(n)]
    labels = np.zeros((n, 4), bool)
    for i in range(n):  # skill = 2 * instruction + state; a quarter of the rows unlabelled (all False)
        if i % 4 != 3:
            labels[i, 2 * (i % 2) + int(bright[i])] = True
    data = HeadExamples(frames, texts, np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool),
                        next_skill=labels)
    torch.manual_seed(0)
    old = RewardHeads(HeadsConfig(frame_size=16, num_frames=1, channels=(8,), text_dim=16, hidden=32))
    heads = old.with_next_skill(4)
    assert heads.config.skills == 4 and heads.config.to_go and heads.with_next_skill(4) is heads
    before = heads.predict(frames[:8], texts[:8])
    np.testing.assert_allclose(before["next_skill"], 0.25, atol=1e-6)  # new logits start uniform
    np.testing.assert_allclose(before["reward"], old.predict(frames[:8], texts[:8])["reward"], atol=1e-6)
    train_heads(heads, data, steps=300, batch_size=32, lr=3e-3)
    test = np.flatnonzero(labels.any(1))
    guess = heads.predict(frames[test], [texts[i] for i in test])["next_skill"].argmax(1)
    assert np.mean(labels[test, guess]) > 0.9
    with pytest.raises(ValueError, match="next skills"):
        heads.with_next_skill(5)


def remembered_episodes(num: int, seed: int) -> list[dict]:
    """Synthetic episodes of 3 chunks whose last chunk ends on the same grey frame whatever happened, and whose task
    is done there only if the first chunk's end showed a white square: one chunk cannot tell, the episode can (task 4's
    cube shut in the drawer against a cube the model lost on the way)."""
    rng = np.random.default_rng(seed)
    episodes = random_episodes(num, 3, seed=seed, frame_size=16, chunk_len=2)
    for ep in episodes:
        frames = ep["frames"]  # 7 frames: start, then chunk k's frames 1 + 2k, 2 + 2k
        stored = bool(rng.integers(2))
        frames[2, 4:12, 4:12] = 255 if stored else 0  # chunk 0's end: the square shows or is black
        frames[5:] = 128  # the last chunk ends on one grey frame (both its frames grey)
        ep["reward"] = np.zeros(3, np.float32)
        ep["success"] = np.ones(3, bool)
        ep["attrs"] = {**ep["attrs"], "instruction": "put the square away", "task_success": stored}
    return episodes


@pytest.mark.parametrize("history", [True, False])
def test_heads_with_history_tell_a_stored_square_from_a_lost_one(history):
    train = examples_from_episodes(remembered_episodes(64, seed=1), num_frames=1, history=history)
    test = examples_from_episodes(remembered_episodes(32, seed=2), num_frames=1, history=history)
    if history:  # chunk k sees frames 0, 2, ..., 2k (start, earlier chunk ends)
        np.testing.assert_array_equal(train.history_span[:3], [[0, 1], [0, 2], [0, 3]])
        np.testing.assert_array_equal(train.history_frames[1], remembered_episodes(64, seed=1)[0]["frames"][2])
    torch.manual_seed(0)
    heads = RewardHeads(HeadsConfig(frame_size=16, num_frames=1, channels=(8, 16), text_dim=8, hidden=16,
                                    history=history))
    train_heads(heads, train, steps=300, batch_size=32, lr=3e-3)
    last = np.arange(2, len(test), 3)  # the grey last chunks: done or not by what chunk 0 showed
    from worldmodel.heads import predict_examples

    done = predict_examples(heads, test)["terminated"][last] > 0.5
    accuracy = np.mean(done == test.terminated[last])
    if history:
        assert accuracy == 1.0, accuracy
    else:  # one frame cannot tell: a guess
        assert accuracy < 0.75, accuracy


def test_heads_history_in_an_episode_is_what_the_heads_learnt_from():
    """`HeadsHistory` judging an episode chunk by chunk (reset on the start frame, each chunk joining after it is
    judged) gives the heads exactly the history `examples_from_episodes` gave them in training; forks carry it."""
    from worldmodel.heads import HeadsHistory, predict_examples

    torch.manual_seed(0)
    heads = RewardHeads(HeadsConfig(frame_size=16, num_frames=2, channels=(4,), text_dim=8, hidden=8, history=True))
    episodes = remembered_episodes(3, seed=3)
    ex = examples_from_episodes(episodes, num_frames=2, history=True)
    want = predict_examples(heads, ex)["terminated"].reshape(3, 3)
    seen = HeadsHistory(heads, 6)
    seen.reset([0, 1, 2], [e["frames"][:1] for e in episodes])
    got = np.zeros((3, 3), np.float32)
    for k in range(3):
        chunk = np.stack([e["frames"][1 + 2 * k:3 + 2 * k] for e in episodes])
        if k == 1:  # envs 3-5 branch off 0-2 before chunk 1, and go on as they would
            seen.fork([0, 1, 2], [3, 4, 5])
            branch = seen.predict([3, 4, 5], chunk, ["put the square away"] * 3)["terminated"]
        got[:, k] = seen.predict([0, 1, 2], chunk, ["put the square away"] * 3)["terminated"]
        if k == 1:
            np.testing.assert_allclose(branch, got[:, 1], rtol=1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="episode so far"):
        heads.predict(ex.frames[:2], ["a", "b"])


def test_with_history_starts_as_the_heads_it_grows_from():
    torch.manual_seed(0)
    old = RewardHeads(HeadsConfig(frame_size=16, num_frames=1, channels=(4,), text_dim=8, hidden=8))
    grown = old.with_history()
    assert grown.config.history and grown.with_history() is grown and not old.config.history
    ex = examples_from_episodes(remembered_episodes(2, seed=4), num_frames=1, history=True)
    was = old.predict(ex.frames, ex.instructions)
    from worldmodel.heads import predict_examples

    now = predict_examples(grown, ex)
    for key in was:
        np.testing.assert_allclose(was[key], now[key], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no history"):
        old.predict(ex.frames, ex.instructions, torch.zeros(len(ex), 8))
