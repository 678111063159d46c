"""Is the chunk that hides the cube one the model finds surprising? (session 59, issue 15 / 16)

    python docs/results/hiding_chunk_loss_s59.py DATA EPISODES OUT.json [THREADS]

A fast rule that writes Θ hard only on surprising chunks would cost a fraction of the phases rule, if the hiding chunk
(`experiments.reopen_oracle.hiding_chunk`, the one whose windows the `around` probe writes) stood out. For every
teacher-forced chunk before the reopen (chunks 1 .. free_from - 1 of `reopen_oracle`'s drawer-memory episodes) this
takes Φ's action-conditioned denoising loss, at Θ's t on the 8-pass grid with noise fixed per chunk, and the mean
absolute pixel change of its new frames from the last context frame (`reopen_oracle.chunk_change`, the measure its
``change:`` setting ranks by); it prints the hiding chunk's rank (1 = the highest) among the episode's chunks by each,
and writes every chunk's values to OUT.json.
"""

import dataclasses
import json
import sys

import numpy as np
import torch

from evaluation.rollout import model_action
from experiments.reopen_oracle import chunk_change, hiding_chunk, last_hidden_frame, reopen_episodes
from worldmodel.diffusion import diffusion_loss
from worldmodel.loading import load_model
from worldmodel.memory.rule import fast_timesteps


def rank(values: list[float], index: int) -> int:
    """1-based rank of values[index] from the highest."""
    return int(np.where(np.argsort(values)[::-1] == index)[0][0]) + 1


def main() -> None:
    data, count, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 2)
    model, _ = load_model("worldmodel/weights/default", device="cpu")
    model.eval()
    cf, tn = model.config.context_frames, model.config.new_frames
    t = fast_timesteps(dataclasses.replace(model.config.temp_lora, timesteps=8), model)
    rows = []
    for e in reopen_episodes(data, count):
        free_from, hide = last_hidden_frame(e) // tn, hiding_chunk(e, tn)
        losses, change = [], []
        for c in range(1, free_from):
            start = 1 + c * tn
            window = e.frames[start - cf : start + tn]
            text, vector = e.chunk_action(c, tn)
            m = len(t)
            with torch.no_grad():
                latents = model.encode_frames(torch.as_tensor(window[None])).expand(m, -1, -1, -1, -1)
                cond = model.encode_action(model_action(model, [text] * m, np.stack([vector] * m)), m)
                given = torch.zeros(m, latents.shape[2], dtype=torch.bool)
                given[:, :cf] = True
                noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(1000 + c))
                losses.append(float(diffusion_loss(model.unet, model.scheduler, latents, given, cond, noise, t).mean()))
            change.append(chunk_change(e, c, tn))
        row = dict(episode=e.name, hiding_chunk=hide, free_from=free_from, chunks=len(losses),
                   loss_rank=rank(losses, hide - 1), change_rank=rank(change, hide - 1), loss=losses, change=change)
        rows.append(row)
        print(f"{e.name}: hiding chunk {hide}, rank by loss {row['loss_rank']}, by pixel change "
              f"{row['change_rank']} of {len(losses)}", flush=True)
    top = [sum(r[k] <= 3 for r in rows) for k in ("loss_rank", "change_rank")]
    print(f"{len(rows)} episodes: the hiding chunk among the 3 highest by loss in {top[0]}, by pixel change in "
          f"{top[1]}; mean rank / chunks by loss {np.mean([r['loss_rank'] / r['chunks'] for r in rows]):.2f}")
    json.dump(dict(command="python " + " ".join(sys.argv), t=t.tolist(), episodes=rows), open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
