"""model.dropout and data.jitter: the layers, the shifts, and what they leave unchanged when off."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from lossbench import models
from lossbench.data import shift_images


def mlp(dropout: float, hidden=(32, 16)):
    return models.build(OmegaConf.create({"name": "mlp", "hidden": list(hidden), "init_scale": 1.0,
                                          "dropout": dropout}), (1, 28, 28), 10)


def cnn(dropout: float):
    return models.build(OmegaConf.create({"name": "cnn", "channels": [4, 8], "hidden": 16, "init_scale": 1.0,
                                          "dropout": dropout}), (1, 28, 28), 10)


@pytest.mark.parametrize("build", [mlp, cnn])
def test_dropout_off_is_the_model_as_before_and_on_keeps_every_weights_name(build):
    torch.manual_seed(0)
    plain = build(0.0)
    torch.manual_seed(0)
    dropped = build(0.5)
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())
    n_hidden = 2 if build is mlp else 1
    assert sum(isinstance(m, models.Dropout) for m in dropped.modules()) == n_hidden
    assert list(plain.state_dict()) == list(dropped.state_dict())  # a checkpoint loads into either
    for (na, a), (nb, b) in zip(plain.state_dict().items(), dropped.state_dict().items(), strict=True):
        assert na == nb and torch.equal(a, b)  # the same initial weights: dropout draws nothing at build time
    x = torch.randn(8, 1, 28, 28)
    dropped.eval()
    torch.testing.assert_close(dropped(x), plain(x), rtol=0, atol=0)  # eval mode: no dropout


def test_dropout_masks_come_from_the_run_generator_and_scale_the_kept_units():
    model = mlp(0.5)
    layer = next(m for m in model.modules() if isinstance(m, models.Dropout))
    h = torch.ones(1000, 64)
    models.use_generator(model, torch.Generator().manual_seed(3))
    a = layer(h)
    models.use_generator(model, torch.Generator().manual_seed(3))
    torch.testing.assert_close(layer(h), a, rtol=0, atol=0)  # same generator state, same mask
    assert set(a.unique().tolist()) == {0.0, 2.0}  # inverted dropout: kept units x 1 / (1 - p)
    assert 0.45 < (a == 0).float().mean().item() < 0.55
    models.use_generator(model, torch.Generator().manual_seed(4))
    assert not torch.equal(layer(h), a)


def test_jitter_shifts_each_image_by_at_most_n_pixels_repeating_the_edge():
    x = torch.zeros(200, 1, 28, 28)
    x[:, 0, 10:18, 12:16] = torch.arange(1, 33, dtype=torch.float32).view(8, 4)  # a patch away from the border
    y = shift_images(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    seen = set()
    for k in range(len(x)):
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(y[k], torch.roll(x[k], (dy, dx), dims=(1, 2)))]
        assert len(found) == 1, k  # exactly one shift in -2..2 x -2..2 reproduces it (the background is 0)
        seen.add(found[0])
    assert len(seen) == 25  # every shift occurs in 200 draws
    assert torch.equal(shift_images(x, 2, torch.Generator().manual_seed(0)), y)  # the generator decides
    # the gap left by a shift repeats the edge pixels: a constant background stays that constant
    bg = torch.full((4, 1, 28, 28), -0.4242)
    torch.testing.assert_close(shift_images(bg, 3, torch.Generator().manual_seed(1)), bg, rtol=0, atol=0)


def test_jitter_of_a_multichannel_batch_moves_channels_together():
    x = torch.randn(16, 3, 12, 12)
    x[:, :, :3], x[:, :, -3:], x[:, :, :, :3], x[:, :, :, -3:] = 0, 0, 0, 0
    y = shift_images(x, 1, torch.Generator().manual_seed(2))
    for k in range(16):
        assert any(torch.equal(y[k], torch.roll(x[k], (dy, dx), dims=(1, 2))) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
