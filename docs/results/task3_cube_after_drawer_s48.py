"""Task 3's scenes 4800-4819 in the real scene: does "put the cube on the right of the table" (skill 9, up to three
chunks) move the cube when the drawer was opened first (skill 0), and when not? (session 48, issue 17's task-3
planner losses; CPU: MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa PYTHONPATH=. python
docs/results/task3_cube_after_drawer_s48.py)
Also prints where each stalled grasp descent stood when the cube oracle turned it (`envs.real.oracle._Cube`).
"""

import numpy as np

from agents.real_scene import SceneSpec, make_scene, run_real_episode
from envs.real.oracle import _Cube

turns = []
select_action = _Cube.select_action


def traced(self, ob, info):
    before = self._prefer
    action = select_action(self, ob, info)
    if before is None and self._prefer is not None:  # this step's stalled descent turned the grasp
        effector, cube = np.asarray(info["proprio/effector_pos"]), np.asarray(info["privileged/block_0_pos"])
        turns.append(f"effector {np.round(effector, 3).tolist()}, cube {np.round(cube, 3).tolist()} "
                     f"({np.linalg.norm(effector - cube):.3f} m apart), grasp yaw turned to {self._prefer:.3f} rad")
    return action


_Cube.select_action = traced


class Fixed:
    """Plays a fixed skill list, then stops; logs (skill, achieved) per chunk."""

    name = "fixed"

    def __init__(self, skills):
        self.skills, self.num_episodes = skills, 1

    def reset_episode(self, b, frame, info):
        self.k, self.log = 0, []

    def act_batch(self, ids):
        skill = self.skills[self.k] if self.k < len(self.skills) else None
        self.k += 1
        return [skill]

    def observe_batch(self, ids, skills, frames, infos):
        self.log.append((skills[0], bool(infos[0]["success"])))


env = make_scene(SceneSpec(render_backend="osmesa"), 64, "task3_rearrange_medium")
for name, skills in [("drawer first", [0, 9, 9, 9]), ("cube first", [9, 9, 9])]:
    ok = []
    for seed in range(4800, 4820):
        agent = Fixed(skills)
        turns.clear()
        run_real_episode(agent, env, "task3_rearrange_medium", seed)
        for turn in turns:
            print(f"  {name}, seed {seed}: {turn}")
        ok.append(any(s == 9 and good for s, good in agent.log))
    print(f"{name}: the cube skill achieved within 3 tries in {sum(ok)} of 20 scenes; not in",
          [4800 + i for i, good in enumerate(ok) if not good], flush=True)
