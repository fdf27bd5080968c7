import pytest
import torch

from r3l.denoiser import Denoiser
from r3l.networks import R3N, ActorCritic, DnCNN

ARCHS = {
    "r3l": ({"name": "r3l", "channels": 1, "features": 8, "n_actions": 27, "action_step": 1.0, "steps": 2},
            lambda: ActorCritic(1, 27, 8)),
    "r3n": ({"name": "r3n", "channels": 1, "features": 8, "steps": 2}, lambda: R3N(1, 8, 2)),
    "dncnn": ({"name": "dncnn", "channels": 1, "features": 8, "depth": 6}, lambda: DnCNN(1, 8, 6)),
}


def make(name: str, tile: int) -> Denoiser:
    arch, build = ARCHS[name]
    torch.manual_seed(0)
    return Denoiser(build(), arch, "cpu", tile=tile)


def test_radius_is_the_receptive_field_of_all_passes():
    assert make("r3l", 64).radius == (1 + 2 + 3 + 4 + 3 + 2 + 1) * 2
    assert make("r3n", 64).radius == 16 * 2
    assert make("dncnn", 64).radius == 6


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("tile", [17, 32, 45])
@pytest.mark.parametrize("shape", [(121, 97), (64, 150)])
def test_tiled_output_equals_untiled(name, tile, shape):
    g = torch.Generator().manual_seed(1)
    noisy = torch.rand(2, 1, *shape, generator=g) + 0.1 * torch.randn(2, 1, *shape, generator=g)
    whole = make(name, tile=10_000)(noisy)
    tiled = make(name, tile=tile)(noisy)
    assert torch.equal(tiled, whole)


def test_a_margin_smaller_than_the_radius_would_change_the_output(monkeypatch):
    """The equality above is not vacuous: tiles without enough context give a different result."""
    g = torch.Generator().manual_seed(2)
    noisy = torch.rand(1, 1, 96, 96, generator=g)
    whole = make("r3n", tile=10_000)(noisy)
    monkeypatch.setattr(Denoiser, "radius", property(lambda self: 4))
    assert not torch.equal(make("r3n", tile=24)(noisy), whole)


def test_batching_same_size_images_matches_one_at_a_time():
    g = torch.Generator().manual_seed(3)
    batch = torch.rand(4, 1, 40, 36, generator=g)
    den = make("r3l", tile=10_000)
    together = den(batch)
    alone = torch.cat([den(batch[i : i + 1]) for i in range(4)])
    assert torch.equal(together, alone)
