"""World model core: masked chunk diffusion, generation, persistence, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from envs.synthetic import panning_episode
from worldmodel.config import PRESETS, TempLoRAConfig, WorldModelConfig, from_preset
from worldmodel.diffusion import masked_mse, unet_input
from worldmodel.model import SlowFastVGen


def _eval_loss(model: SlowFastVGen, dataset, n: int = 4) -> float:
    """Diffusion loss with fixed noise and timesteps, so two calls are comparable."""
    model.eval()
    torch.manual_seed(1234)
    batch = torch.utils.data.default_collate([dataset[i] for i in range(0, 16 * n, n)])
    with torch.no_grad():
        return float(np.mean([model.training_loss(batch).item() for _ in range(n)]))


def _action(text: str, vector=None) -> dict:
    return {"text": text, "vector": np.zeros((2, 5), np.float32) if vector is None else vector}


def test_presets_build_and_validate():
    assert set(PRESETS) == {"tiny", "small", "crafter", "base", "modelscope"}
    assert from_preset("tiny").latent_size == 8
    assert from_preset("small").frame_size == 64
    with pytest.raises(ValueError, match="unknown preset"):
        from_preset("huge")
    with pytest.raises(ValueError, match="Temp-LoRA variant"):
        TempLoRAConfig(variant="global")
    with pytest.raises(ValueError, match="32-frame"):
        from_preset("tiny", context_frames=20, new_frames=16)


def test_modelscope_preset_has_1_4b_unet_params():
    with torch.device("meta"):
        model = SlowFastVGen(from_preset("modelscope", action_type="vector"))
    n = sum(p.numel() for p in model.unet.parameters())
    assert 1.3e9 < n < 1.5e9, n
    assert model.unet.config.block_out_channels == (320, 640, 1280, 1280)


def test_loss_ignores_context_frame_predictions():
    b, c, f, h, w = 2, 4, 5, 8, 8
    given = torch.tensor([[True, True, False, False, False]] * b)
    pred = torch.randn(b, c, f, h, w, requires_grad=True)
    target = torch.randn(b, c, f, h, w)
    masked_mse(pred, target, given).backward()
    assert torch.all(pred.grad[:, :, :2] == 0)
    assert torch.all(pred.grad[:, :, 2:].abs().sum(dim=(1, 3, 4)) > 0)
    # and the UNet sees given frames clean, with a mask channel
    x, lat = torch.randn(b, c, f, h, w), torch.randn(b, c, f, h, w)
    inp = unet_input(x, lat, given)
    assert inp.shape == (b, 2 * c + 1, f, h, w)
    assert torch.equal(inp[:, :c, :2], lat[:, :, :2]) and torch.equal(inp[:, :c, 2:], x[:, :, 2:])
    assert torch.all(inp[:, 2 * c, :2] == 1) and torch.all(inp[:, 2 * c, 2:] == 0)


def test_training_halves_new_frame_loss(trained_tiny, chunk_dataset):
    path, history = trained_tiny
    fresh = SlowFastVGen.from_pretrained(path)
    trained_loss = _eval_loss(fresh, chunk_dataset)
    torch.manual_seed(0)
    untrained = SlowFastVGen.from_pretrained(path)
    untrained.unet = SlowFastVGen.from_preset("tiny").unet  # same VAE, untrained denoiser
    initial_loss = _eval_loss(untrained, chunk_dataset)
    assert trained_loss < 0.5 * initial_loss, (initial_loss, trained_loss)
    assert history[-1]["loss"] < history[0]["loss"]


def test_action_changes_the_chunk(trained_tiny):
    model = SlowFastVGen.from_pretrained(trained_tiny[0])
    # The context stands still, so only the action can say where the camera goes next.
    ep = panning_episode(777, ["stay", "pan right"], frame_size=32, chunk_len=2, speed=8)
    frames = torch.from_numpy(ep["frames"])
    context = frames[1:3]
    outs = {}
    for text, dx in (("pan right", 1.0), ("pan left", -1.0)):
        vec = np.zeros((2, 5), np.float32)
        vec[:, 0] = dx
        outs[text] = model.generate_chunk(context, _action(text, vec), generator=torch.Generator().manual_seed(0)).frames[0]
    vec_right = np.zeros((2, 5), np.float32)
    vec_right[:, 0] = 1.0
    diff = (outs["pan right"].float() - outs["pan left"].float()).abs().mean()
    same = model.generate_chunk(context, _action("pan right", vec_right), generator=torch.Generator().manual_seed(0))
    assert torch.equal(same.frames[0], outs["pan right"]), "same action, same noise: same chunk"
    assert diff > 1.0, diff  # a short CPU run: the action moves ~0.75% of the intensity range on average


def test_generation_is_deterministic_and_shaped(trained_tiny):
    model = SlowFastVGen.from_pretrained(trained_tiny[0])
    ep = panning_episode(5, ["stay"] * 4, frame_size=32, chunk_len=2)
    first = ep["frames"][:1]
    actions = [_action(t) for t in ["pan right", "pan left", "stay"]]
    v1, _ = model.rollout(first, actions, generator=torch.Generator().manual_seed(3))
    v2, _ = model.rollout(first, actions, generator=torch.Generator().manual_seed(3))
    assert v1.shape == (1 + 3 * 2, 32, 32, 3) and v1.dtype == torch.uint8
    assert torch.equal(v1, v2)
    for sampler in ("ddim", "dpm"):
        model.config.sampler = sampler
        chunk = model.generate_chunk(first, _action("stay"), steps=2, guidance_scale=2.0)
        assert chunk.frames.shape == (1, 2, 32, 32, 3)


def test_save_load_round_trip_is_exact(trained_tiny, tmp_path):
    model = SlowFastVGen.from_pretrained(trained_tiny[0])
    model.save_pretrained(tmp_path / "copy")
    again = SlowFastVGen.from_pretrained(tmp_path / "copy")
    assert again.config == model.config
    first = panning_episode(9, ["stay"], frame_size=32)["frames"][:2]
    a = model.generate_chunk(first, _action("pan left"), generator=torch.Generator().manual_seed(0))
    b = again.generate_chunk(first, _action("pan left"), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.frames, b.frames)
    for f in (tmp_path / "copy").glob("*.safetensors"):
        assert f.stat().st_size < 16 * 2**20


def test_missing_and_truncated_weights_raise_clear_errors(trained_tiny, tmp_path):
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(trained_tiny[0], copy)
    shard = sorted(copy.glob("*.safetensors"))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated weights file"):
        SlowFastVGen.from_pretrained(copy)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match="weights file missing"):
        SlowFastVGen.from_pretrained(copy, restore_hint="Run `git checkout` to restore it.")
    (copy / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        SlowFastVGen.from_pretrained(copy)


def test_bad_input_raises_clear_errors():
    model = SlowFastVGen.from_preset("tiny")
    good = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match=r"shape \(T, 32, 32, 3\)"):
        model.generate_chunk(np.zeros((2, 64, 64, 3), np.uint8), _action("stay"))
    with pytest.raises(TypeError, match="uint8"):
        model.generate_chunk(good.astype(np.float32), _action("stay"))
    with pytest.raises(TypeError, match="empty action"):
        model.generate_chunk(good, {})
    with pytest.raises(TypeError, match="action must be"):
        model.generate_chunk(good, 3)
    with pytest.raises(ValueError, match="action vector has shape"):
        model.generate_chunk(good, {"text": "stay", "vector": np.zeros((3, 7))})
    with pytest.raises(ValueError, match="NaN"):
        model.generate_chunk(good, {"text": "stay", "vector": np.full((2, 5), np.nan)})
    text_only = SlowFastVGen(from_preset("tiny", action_type="text"))
    with pytest.raises(TypeError, match="not action vectors"):
        text_only.generate_chunk(good, {"text": "stay", "vector": np.zeros((2, 5))})
    vector_only = SlowFastVGen(from_preset("tiny", action_type="vector"))
    with pytest.raises(TypeError, match="not language instructions"):
        vector_only.generate_chunk(good, "stay")
    with pytest.raises(ValueError, match="unknown config keys"):
        WorldModelConfig.from_dict({"frame_size": 32, "wings": 2})
    for taught in ("8", 0, True):
        with pytest.raises(ValueError, match="distilled_from must be the teacher's passes"):
            WorldModelConfig.from_dict({"frame_size": 32, "distilled_from": taught})


def test_from_modelscope_loads_a_tiny_diffusers_folder(tmp_path):
    from diffusers import UNet3DConditionModel
    from transformers import BertConfig, BertModel

    from worldmodel.action import minilm_path
    from worldmodel.model import build_unet, build_vae

    cfg = from_preset("tiny", action_type="text", cross_attention_dim=32)
    unet = build_unet(cfg)
    ms_unet = UNet3DConditionModel.from_config({**unet.config, "in_channels": 4})
    ms_unet.save_pretrained(tmp_path / "unet")
    build_vae(cfg).save_pretrained(tmp_path / "vae")
    text = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                vocab_size=30522))
    text.save_pretrained(tmp_path / "text_encoder")
    import shutil

    shutil.copytree(minilm_path(), tmp_path / "tokenizer", ignore=shutil.ignore_patterns("*.safetensors"))
    model = SlowFastVGen.from_modelscope(tmp_path, frame_size=32, new_frames=2, context_frames=2, max_text_tokens=8)
    assert model.unet.conv_in.weight.shape[1] == 2 * 4 + 1
    # the widened UNet ignores the new channels at load: it is the pretrained text-to-video UNet
    x = torch.randn(1, 4, 4, 8, 8)
    cond = model.encode_action("open the drawer", 1)
    extra = torch.randn(1, 5, 4, 8, 8)
    with torch.no_grad():
        ours = model.unet(torch.cat([x, extra], 1), 10, encoder_hidden_states=cond).sample
        theirs = ms_unet(x, 10, encoder_hidden_states=cond).sample
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    model.save_pretrained(tmp_path / "ours")
    again = SlowFastVGen.from_pretrained(tmp_path / "ours")
    first = np.zeros((2, 32, 32, 3), np.uint8)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(model.generate_chunk(first, "open the drawer", generator=g()).frames,
                       again.generate_chunk(first, "open the drawer", generator=g()).frames)
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["text_encoder"] == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="vae/ is missing"):
        shutil.rmtree(tmp_path / "vae")
        SlowFastVGen.from_modelscope(tmp_path)


def test_from_pretrained_overrides_keep_weights_and_merge_temp_lora(tmp_path):
    model = SlowFastVGen.from_preset("tiny")
    model.save_pretrained(tmp_path / "m")
    one = SlowFastVGen.from_pretrained(tmp_path / "m", context_frames=1, temp_lora={"lr": 1e-3})
    assert one.config.context_frames == 1 and one.config.temp_lora.lr == 1e-3
    assert one.config.temp_lora.rank == model.config.temp_lora.rank  # the rest of Temp-LoRA's config is kept
    assert torch.equal(one.unet.conv_in.weight, model.unet.conv_in.weight)
    with pytest.raises(ValueError, match="do not match"):
        SlowFastVGen.from_pretrained(tmp_path / "m", unet_block_out_channels=(16, 32))
