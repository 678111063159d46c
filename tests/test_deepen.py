"""A deepened UNet computes what the trained one does (worldmodel.deepen), and the new layers can learn."""

import pytest
import torch

from worldmodel.config import from_preset
from worldmodel.deepen import deepen, deepen_unet
from worldmodel.model import SlowFastVGen


def _trained_like_unet(seed: int = 0):
    """The tiny preset's UNet with every parameter moved off its init (diffusers zero-inits some output layers,
    which would hide a wrong mapping)."""
    torch.manual_seed(seed)
    model = SlowFastVGen(from_preset("tiny"), text_model=torch.nn.Identity())
    with torch.no_grad():
        for p in model.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _forward(unet, seed: int = 1) -> torch.Tensor:
    unet.eval()  # the temporal convs' dropout
    g = torch.Generator().manual_seed(seed)
    cfg = unet.config
    x = torch.randn(2, cfg.in_channels, 4, 8, 8, generator=g)
    cond = torch.randn(2, 3, cfg.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor([10, 700]), encoder_hidden_states=cond).sample


@pytest.mark.parametrize("layers", [2, 3])
def test_deepened_unet_gives_the_same_output_and_its_new_layers_learn(layers):
    model = _trained_like_unet()
    before = _forward(model.unet)
    deep = deepen_unet(model.unet, layers)
    assert deep.config.layers_per_block == layers and len(deep.down_blocks[0].resnets) == layers
    assert len(deep.up_blocks[-1].resnets) == layers + 1
    grown = sum(p.numel() for p in deep.parameters()) - sum(p.numel() for p in model.unet.parameters())
    assert grown > 0
    torch.testing.assert_close(_forward(deep), before, rtol=1e-4, atol=1e-5)
    # the new layers are not dead: one gradient step on them changes the output
    new_conv = deep.up_blocks[-1].resnets[1].conv2
    new_conv.weight.grad = None
    x = _forward(deep)
    with torch.no_grad():
        new_conv.weight.add_(0.1 * torch.randn_like(new_conv.weight))
    assert not torch.allclose(_forward(deep), x, atol=1e-4)


def test_deepen_updates_the_config_and_refuses_to_shrink():
    model = _trained_like_unet()
    before = _forward(model.unet)
    deepen(model, 2)
    assert model.config.unet_layers_per_block == 2 and model.unet.config.layers_per_block == 2
    torch.testing.assert_close(_forward(model.unet), before, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="must grow"):
        deepen_unet(model.unet, 2)


def test_deepen_script_writes_a_model_that_loads_and_matches(tmp_path):
    from experiments import deepen as script

    model = _trained_like_unet()
    model.eval()
    model.save_pretrained(tmp_path / "src")
    (tmp_path / "src" / "heads").mkdir()
    (tmp_path / "src" / "heads" / "fit.json").write_text("{}")
    out = script.main(["--model", str(tmp_path / "src"), "--layers-per-block", "2", "--out", str(tmp_path / "deep"),
                       "--dtype", "float32"])
    deep = SlowFastVGen.from_pretrained(out)
    assert deep.config.unet_layers_per_block == 2 and (out / "heads" / "fit.json").is_file()
    torch.testing.assert_close(_forward(deep.unet), _forward(model.unet), rtol=1e-4, atol=1e-5)
