"""How far a model's 1-pass sample lies from the teacher's 8-pass one, on held-out windows (session 41, issue 16): the
distillation's own objective, measured where it was not trained.

    PYTHONPATH=. python docs/results/distill_gap_s41.py TEACHER STUDENT DATA [WINDOWS] [OUT.json] [PASSES]

For WINDOWS (64) chunk windows spread over DATA's episodes, one initial noise each (seeded), the teacher's 8-pass DDIM
sample of the new frames' latents and each model's sample in each of PASSES (comma-separated, default 1) from the same
noise; prints and writes the mean squared distance in latent space, and the uint8 frames' PSNR of each sample against
the 8-pass one after decoding. (Session 44 added PASSES, for a student distilled to 2 passes and run at 1 and 2.)
"""
import json
import sys
import time

import torch
from torch.utils.data import Subset

from envs.data import ChunkDataset
from worldmodel.diffusion import sample_new_frames
from worldmodel.latent_cache import LatentCache, encode_cached_action
from worldmodel.loading import load_model

teacher_path, student_path, data = sys.argv[1:4]
count = int(sys.argv[4]) if len(sys.argv) > 4 else 64
pass_counts = [int(p) for p in sys.argv[6].split(",")] if len(sys.argv) > 6 else [1]
torch.set_num_threads(2)
teacher, _ = load_model(teacher_path, "cpu")
student, _ = load_model(student_path, "cpu")
mc = teacher.config
chunks = ChunkDataset(data, mc.context_frames, mc.new_frames)
windows = Subset(chunks, [int(i) for i in torch.linspace(0, len(chunks) - 1, count).long()])
cache = LatentCache.build(teacher, windows, "cpu", batch_size=16)
tc, result = mc.context_frames, {}
batch = cache.batch(torch.arange(len(cache)))
noise = torch.randn(batch.latents[:, :, tc:].shape, generator=torch.Generator().manual_seed(0))
context = batch.latents[:, :, :tc]


def sample(model, passes: int) -> torch.Tensor:
    """The model's DDIM sample of the windows' new latents from ``noise`` in ``passes`` passes."""
    cond = encode_cached_action(model.action_encoder, batch.text_emb, batch.vectors, None, len(cache))
    return sample_new_frames(model.unet, model.sampler(), context, noise.shape[2], cond, passes, noise=noise)


with torch.no_grad():
    eight = sample(teacher, 8)
    ref_frames = teacher.decode_latents(eight)
    for passes in pass_counts:
        for who, model in (("teacher", teacher), ("student", student)):
            name = f"{who} at {passes} pass{'es' if passes > 1 else ''}"
            x = sample(model, passes)
            frames = model.decode_latents(x)
            mse = float(((frames.float() - ref_frames.float()) ** 2).mean())
            result[name] = {"latent_mse_to_8_passes": float(((x - eight) ** 2).mean()),
                            "frame_psnr_to_8_passes_db": 10 * torch.log10(torch.tensor(255.0**2 / mse)).item()}
            print(name, result[name])
out = {"command": "PYTHONPATH=. python docs/results/distill_gap_s41.py " + " ".join(sys.argv[1:]),
       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "windows": len(cache), "result": result}
if len(sys.argv) > 5:
    with open(sys.argv[5], "w") as f:
        json.dump(out, f, indent=1)
