"""How often does the library's event gate (`TempLoRAConfig.write="events"`) pick the chunk that hides the cube, and
how many other chunks? (session 61)

    python docs/results/event_gate_s61.py OUT.json DATA:EPISODES [DATA:EPISODES ...]

Runs the memory's own gate (`worldmodel.memory.rule.is_event` over `rule.chunk_change`, through
`experiments.reopen_oracle.event_chunks`) over the real frames of each drawer reopen up to the reopen chunk (the chunks
a teacher-forced memory sees before it), for the ratio gate (``event_gate``, a chunk's change over the mean change
before it) and the rank gate (``event_top``), and counts the reopens whose hiding chunk (`reopen_oracle.hiding_chunk`)
is an event and the events an episode (each a write, with replay a write of every earlier event again). Frames only:
no model is loaded.
"""

import json
import sys

from experiments.reopen_oracle import event_chunks, hiding_chunk, last_hidden_frame, reopen_episodes
from worldmodel.config import TempLoRAConfig

GATES = {**{f"ratio {g}": dict(event_gate=g) for g in (1.1, 1.2, 1.3)},
         **{f"top {k}": dict(event_top=k) for k in (1, 2, 3)}}
NEW_FRAMES = 4  # the shipped model's chunk


def main(out: str, sources: list[str]) -> dict:
    report = dict(command="python docs/results/event_gate_s61.py " + " ".join([out, *sources]), sources={})
    for source in sources:
        data, _, count = source.rpartition(":")
        episodes = reopen_episodes(data, int(count))
        rows = {}
        for name, gate in GATES.items():
            config = TempLoRAConfig(write="events", **gate)
            chosen = [event_chunks(e, last_hidden_frame(e) // NEW_FRAMES, NEW_FRAMES, config.event_gate,
                                   config.event_top) for e in episodes]
            hit = sum(hiding_chunk(e, NEW_FRAMES) in c for e, c in zip(episodes, chosen))
            rows[name] = dict(hiding_an_event=hit, events_per_episode=round(sum(map(len, chosen)) / len(episodes), 2))
            print(f"{source} {name}: hiding chunk an event in {hit} of {len(episodes)}, "
                  f"{rows[name]['events_per_episode']} events an episode")
        report["sources"][source] = dict(reopens=len(episodes), gates=rows)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
