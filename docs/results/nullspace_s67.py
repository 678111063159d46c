"""Θ kept off the inputs Φ sees every day: does it disturb other chunks less, and still store the cube? (session 67)

    PYTHONPATH=. python docs/results/nullspace_s67.py OUT.json --data DATA --episodes N --typical DATA:N
        --energy 0,0.9,0.99 [--first K] [--threads T]

Issue 15's interference bound (+2% fast loss on other chunks) is far off for the `recall` rule (+32% on other episodes'
chunks, session 66). A write changes a target layer's output by x A B for every input x; if A's columns are kept
orthogonal to the subspace that holds most of the layer's input energy on ordinary scene chunks (GPM-style gradient
projection; here A itself is projected after its init and after each of Adam's steps), Θ moves what the layer does
only along input directions ordinary chunks seldom use. Measured on the CPU, Φ the shipped default, the `recall`
rule's fields, with `--energy` the share of each layer's input energy (second moment, over the `--typical`
episodes' first 8 chunks at the 8-pass timesteps, null action) whose eigenvectors A must avoid (0: the rule as it is).
Per learned reopen episode, Θ learns its real chunks in order up to the reopen chunk (teacher-forced, the rule's
event gate choosing the writes), then, Θ against Φ alone at fixed (t, noise) draws (the 8-pass timesteps, two noises):
- ``cube``: the loss on the latent cells within one cell of the cube in the reopen chunk's new frames where it shows
  (visible >= 0.2): a proxy of what recall needs, the hidden cube drawn where the drawer opens;
- ``reopen``: the reopen chunk's whole loss; ``later``: the 3 chunks after it (never learned);
- ``other``: the first 4 chunks of 3 other episodes (interference, as `experiments.fast_update`'s column).
"""

import argparse
import dataclasses
import json
import sys
import time

import numpy as np
import torch

from experiments.reopen_oracle import hiding_chunk, last_hidden_frame, reopen_episodes, teacher_chunks
from worldmodel.chunk import Chunk
from worldmodel.diffusion import diffusion_loss
from worldmodel.memory import BatchedTempLoRA
from worldmodel.memory.rule import fast_timesteps, given_frames

NOISES = 2
ROWS = 2048  # input rows per layer and forward that the second moment is estimated from


def losses(model, timesteps, chunk: Chunk, key: int, memory=None, weights=None) -> float:
    t = timesteps.repeat(NOISES)
    m = len(t)
    latents = chunk.latents[:1].expand(m, -1, -1, -1, -1)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(key))
    given = given_frames(model.config.temp_lora, m, latents.shape[2], chunk.num_context, latents.device)
    null = model.action_encoder.null(m)
    w = None if weights is None else weights.expand(m, -1, -1, -1, -1)
    with torch.no_grad():
        if memory is None:
            return float(diffusion_loss(model.unet, model.scheduler, latents, given, null, noise, t, weights=w))
        with memory.applied([0]):
            return float(diffusion_loss(model.unet, model.scheduler, latents, given, null, noise, t, weights=w))


def cube_weights(episode, chunk: int, new_frames: int, latent: int, size: int) -> torch.Tensor | None:
    """(1, 1, 1, h, w): 1 on the cells within one of the cube where the reopen chunk's new frames show it."""
    w = torch.zeros(1, 1, 1, latent, latent)
    start = 1 + chunk * new_frames
    for x, y, visible in episode.cube["cube_pixel"][start: start + new_frames][:, [4, 5, 3]]:
        if visible >= 0.2:
            cx, cy = int(x * latent / size), int(y * latent / size)
            w[..., max(cy - 1, 0): cy + 2, max(cx - 1, 0): cx + 2] = 1
    return w if w.sum() else None


def typical_bases(model, config, episodes, energies: list[float]) -> dict[float, list[torch.Tensor]]:
    """Per target layer and energy share q, the top eigenvectors (d_in, k) of its input second moment holding q."""
    memory = BatchedTempLoRA(model, 1, config)
    layers = [layer for _, layer in memory._dispatch.layers]
    patches = memory._dispatch.patches
    moments = [torch.zeros(lay.d_in, lay.d_in, dtype=torch.float64) for lay in memory.layout]
    sampler = torch.Generator().manual_seed(0)

    def hook(index):
        def grab(module, args, output):
            x = args[0]
            if patches[index] is not None:
                x = torch.nn.functional.unfold(x, **patches[index]).transpose(1, 2)
            elif isinstance(module, torch.nn.Conv2d):
                x = x.movedim(1, -1)
            x = x.reshape(-1, x.shape[-1]).float()
            if x.shape[0] > ROWS:  # a random sample of the positions: the moment's estimate, at a bearable cost
                x = x[torch.randperm(x.shape[0], generator=sampler)[:ROWS]]
            moments[index].add_((x.t() @ x).double())
        return grab

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    t = fast_timesteps(dataclasses.replace(config, timesteps=8), model)
    try:
        for k, e in enumerate(episodes):
            for j, chunk in enumerate(teacher_chunks(model, e, range(8))):
                losses(model, t, chunk, 10**7 + 100 * k + j)
    finally:
        for h in handles:
            h.remove()
    bases = {q: [] for q in energies}
    for g in moments:
        values, vectors = torch.linalg.eigh(g)
        values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
        share = values.cumsum(0) / values.sum()
        for q in energies:
            k = int((share < q).sum()) + 1 if q > 0 else 0
            bases[q].append(vectors[:, :k].float())
    return bases


def projected(bases: list[torch.Tensor]):
    """Patch BatchedTempLoRA so that A's columns stay orthogonal to each layer's basis (after reset and each step)."""
    reset, adam = BatchedTempLoRA.reset, BatchedTempLoRA._adam

    def project(memory, envs):
        r = memory.config.rank
        with torch.no_grad():
            for lay, u in zip(memory.layout, bases):
                if u.shape[1] == 0:
                    continue
                for e in envs:
                    a = memory.theta[e, lay.a_offset: lay.b_offset].view(lay.d_in, r)
                    a -= u @ (u.t() @ a)

    def patched_reset(self, ids=None, generators=None):
        reset(self, ids, generators)
        project(self, self._ids(ids))

    def patched_adam(self, envs, grad, meta=False, masks=None):
        out = adam(self, envs, grad, meta, masks)
        project(self, envs)
        return out

    BatchedTempLoRA.reset, BatchedTempLoRA._adam = patched_reset, patched_adam
    return lambda: setattr(BatchedTempLoRA, "reset", reset) or setattr(BatchedTempLoRA, "_adam", adam)


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--data", required=True)
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--first", type=int, default=0, help="skip this many reopen episodes of --data")
    ap.add_argument("--typical", required=True, help="DATA:N episodes whose chunks define ordinary inputs")
    ap.add_argument("--energy", default="0,0.9,0.99")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", default=None, help="a file for the typical bases (reused when it holds --energy)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from worldmodel.loading import load_model

    model, _ = load_model("default", device="cpu")
    model.eval()
    config = model.config.temp_lora.with_rule("recall")
    energies = [float(q) for q in args.energy.split(",")]
    data, _, n = args.typical.rpartition(":")
    start = time.perf_counter()
    try:  # the bases of these typical episodes, computed before (about 4 minutes on 2 cores)
        bases = torch.load(args.cache)
        assert all(q in bases for q in energies)
    except (FileNotFoundError, TypeError, AssertionError):
        bases = typical_bases(model, config, reopen_episodes(data, int(n)), energies)
        if args.cache:
            torch.save(bases, args.cache)
    dims = {q: [int(u.shape[1]) for u in b] for q, b in bases.items()}
    print(f"bases in {time.perf_counter() - start:.0f} s; directions kept off per layer: "
          + "; ".join(f"{q}: median {int(np.median(d))} of median d_in "
                      f"{int(np.median([lay.d_in for lay in BatchedTempLoRA(model, 1, config).layout]))}"
                      for q, d in dims.items()), flush=True)
    episodes = reopen_episodes(args.data, args.first + args.episodes + 3)
    learn, others = episodes[args.first: args.first + args.episodes], episodes[-3:]
    tn, size = model.config.new_frames, model.config.frame_size
    latent = size // 2 ** (len(model.config.vae_block_out_channels) - 1)
    t = fast_timesteps(dataclasses.replace(config, timesteps=8), model)
    other_chunks = [c for e in others for c in teacher_chunks(model, e, range(4))]
    phi_other = [losses(model, t, c, 10**6 + j) for j, c in enumerate(other_chunks)]
    report = dict(command="PYTHONPATH=. python docs/results/nullspace_s67.py " + " ".join(argv), settings={},
                  directions_kept_off=dims)
    for q in energies:
        undo = projected(bases[q])
        try:
            rows = []
            for k, e in enumerate(learn):
                reopen, hide = last_hidden_frame(e) // tn, hiding_chunk(e, tn)
                chunks = teacher_chunks(model, e, range(reopen + 4))
                memory = BatchedTempLoRA(model, 1, config)
                gen = torch.Generator().manual_seed(k)
                memory.reset(generators=[gen])
                tick = time.perf_counter()
                for c in chunks[:reopen]:
                    memory.update(c, generators=[gen])
                w = cube_weights(e, reopen, tn, latent, size)
                row = dict(episode=args.first + k, hiding_chunk=hide, reopen_chunk=reopen,
                           events=memory.events[0].count,
                           seconds=round(time.perf_counter() - tick, 1))
                for name, chunk, weights in (("cube", chunks[reopen], w), ("reopen", chunks[reopen], None)):
                    if weights is None and name == "cube":
                        continue
                    phi, theta = (losses(model, t, chunk, 10**5 + k, m, weights) for m in (None, memory))
                    row[name] = theta / phi - 1
                if len(chunks) > reopen + 1:  # the episode goes on after the reopen
                    row["later"] = float(np.mean([losses(model, t, c, 10**5 + k + 10 * j, memory)
                                                  / losses(model, t, c, 10**5 + k + 10 * j) - 1
                                                  for j, c in enumerate(chunks[reopen + 1: reopen + 4], 1)]))
                other = [losses(model, t, c, 10**6 + j, memory) / phi_other[j] - 1
                         for j, c in enumerate(other_chunks)]
                row["other"], row["other_max"] = float(np.mean(other)), float(np.max(other))
                print(q, row, flush=True)
                rows.append(row)
        finally:
            undo()
        mean = {key: float(np.mean([r[key] for r in rows if key in r])) for key in ("cube", "reopen", "later", "other")
                if any(key in r for r in rows)}
        report["settings"][str(q)] = dict(rows=rows, mean=mean)
        print(q, "mean", mean, flush=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
