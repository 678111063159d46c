"""experiments.demo: each skill of the plan runs until the success head sees it done, at most skill_chunks chunks."""

import numpy as np

from experiments import demo


class _Env:
    """A stand-in env: 2-frame chunks whose pixel value counts the steps; the success head sees a skill done on its
    ``done_after``-th chunk in a row (None: no ``success`` at all, as a model without heads)."""

    def __init__(self, done_after: int | None):
        self.done_after, self.steps, self.run, self.last = done_after, 0, 0, None

    def reset(self, seed=None):
        return np.zeros((8, 8, 3), np.uint8), {}

    def step(self, skill):
        self.run = self.run + 1 if skill == self.last else 1
        self.last, self.steps = skill, self.steps + 1
        info = {"frames": np.full((2, 8, 8, 3), self.steps, np.uint8)}
        if self.done_after is not None:
            info["success"] = self.run >= self.done_after
            self.run = 0 if info["success"] else self.run  # a repeated skill after a done one starts again
        return info["frames"][-1], 0.0, False, False, info

    def close(self):
        pass


def test_skills_repeat_until_done_and_the_shorter_column_holds(monkeypatch):
    envs = iter([_Env(done_after=2), _Env(done_after=None)])  # with Temp-LoRA: 2 chunks a skill; without: no heads
    monkeypatch.setattr(demo.gym, "make", lambda *a, **k: next(envs))
    videos, captions, times = demo.play("memory_drawer", "tiny", steps=1, seed=0, skill_chunks=3)
    skills = len(times["without Temp-LoRA"])  # one chunk per skill without heads
    plan = [c.split("] ", 1)[1] for c in captions[1][:skills]]
    assert skills >= 5 and len(times["with Temp-LoRA"]) == 2 * skills and len(times["without Temp-LoRA"]) == skills
    assert captions[0] == [f"[{k + 1}/{skills}] {s}" for k, s in enumerate(plan) for _ in range(2)]
    assert captions[1][skills:] == [captions[1][skills - 1] + " (done)"] * skills  # held to the longer column
    assert videos[0].shape == videos[1].shape == (1 + 2 * 2 * skills, 8, 8, 3)
    assert (videos[1][1 + 2 * skills:] == videos[1][2 * skills]).all() and videos[1][2 * skills, 0, 0, 0] == skills

    envs = iter([_Env(done_after=100), _Env(done_after=100)])  # never done: skill_chunks chunks each
    monkeypatch.setattr(demo.gym, "make", lambda *a, **k: next(envs))
    _, captions, _ = demo.play("memory_drawer", "tiny", steps=1, seed=0, skill_chunks=3)
    assert len(captions[0]) == len(captions[1]) == 3 * skills


def test_a_named_rule_reaches_the_memory_env_alone(monkeypatch):
    """``--temp-lora recall``: the env with memory gets the named rule, the one without stays without."""
    made = []

    def make(*args, **kwargs):
        made.append(kwargs["temp_lora"])
        return _Env(done_after=1)

    monkeypatch.setattr(demo.gym, "make", make)
    _, _, times = demo.play("memory_drawer", "tiny", steps=1, seed=0, skill_chunks=1, temp_lora="recall")
    assert made == ["recall", False] and list(times) == ["with Temp-LoRA (recall)", "without Temp-LoRA"]
    made.clear()
    demo.play("memory_drawer", "tiny", steps=1, seed=0, skill_chunks=1)
    assert made == [True, False]
