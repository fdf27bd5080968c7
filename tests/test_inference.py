import pytest
import torch

from r3l.inference.denoiser import Denoiser
from r3l.models.networks import R3N, ActorCritic, DnCNN

ARCHS = {
    "r3l": ({"name": "r3l", "channels": 1, "features": 8, "n_actions": 27, "action_step": 1.0, "steps": 2},
            lambda: ActorCritic(1, 27, 8)),
    "r3n": ({"name": "r3n", "channels": 1, "features": 8, "steps": 2}, lambda: R3N(1, 8, 2)),
    "dncnn": ({"name": "dncnn", "channels": 1, "features": 8, "depth": 6}, lambda: DnCNN(1, 8, 6)),
}


def make(name: str, tile: int = Denoiser.TILE, **options) -> Denoiser:
    """A CPU denoiser with the same seeded weights for every call, in PyTorch (tests/test_engines.py has
    onnxruntime's)."""
    arch, build = ARCHS[name]
    torch.manual_seed(0)
    return Denoiser(build(), arch, "cpu", tile=tile, **{"engine": "torch", **options})


def test_radius_is_the_receptive_field_of_all_passes():
    assert make("r3l", 64).radius == (1 + 2 + 3 + 4 + 3 + 2 + 1) * 2
    assert make("r3n", 64).radius == 16 * 2
    assert make("dncnn", 64).radius == 6


def test_the_registry_entry_gives_the_radius_of_a_pass():
    """R3L's entry leaves out the value head, which inference does not run; an entry without a radius counts every
    convolution in a chain, which is never too small."""
    from r3l.models.spec import Architecture, ArchOptions, architecture, conv_radius

    net = ActorCritic(1, 27, 8)
    assert architecture("r3l").pass_radius(net) == 16
    assert Architecture(lambda s: net, ArchOptions, "ppo", policy=True).pass_radius(net) == 16 + 6
    assert conv_radius(DnCNN(1, 8, 6)) == 6


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


@pytest.mark.parametrize("name", list(ARCHS))
def test_bf16_inference_stays_close_to_fp32(name):
    g = torch.Generator().manual_seed(4)
    noisy = torch.rand(2, 1, 48, 40, generator=g)
    exact = make(name, tile=10_000)(noisy)
    den = make(name, tile=10_000)
    den.precision = "bf16"
    fast = den(noisy)
    assert fast.dtype == torch.float32 and fast.shape == exact.shape
    # R3L: where bf16 rounding flips a greedy action (near-ties, frequent in an untrained network) the pixel
    # moves by another residual; everywhere else the output is the fp32 output exactly.
    if name == "r3l":
        differing = (fast != exact).float().mean().item()
        assert 0 < differing < 0.1 and (fast - exact).abs().mean() < 0.005
    else:
        assert (fast - exact).abs().max() < 0.02


def test_channels_last_layout_gives_the_same_output():
    g = torch.Generator().manual_seed(5)
    noisy = torch.rand(1, 1, 40, 44, generator=g)
    plain = make("r3l")(noisy)
    out = make("r3l", channels_last=True)(noisy)
    assert out.is_contiguous() and (out != plain).float().mean() < 0.01


def test_unknown_precision_is_a_clear_error():
    from r3l.errors import R3LError

    with pytest.raises(R3LError, match="precision 'int8'"):
        make("dncnn", precision="int8")


def test_compiled_inference_matches_eager():
    g = torch.Generator().manual_seed(6)
    noisy = torch.rand(2, 1, 30, 26, generator=g)
    compiled = make("dncnn", compile=True)
    assert torch.allclose(compiled(noisy), make("dncnn")(noisy), atol=1e-5)
    other = noisy[:1, :, :20, :17]  # another shape: recompiled, still the same function
    assert torch.allclose(compiled(other), make("dncnn")(other), atol=1e-5)


def test_evaluation_batches_are_smaller_for_a_cpu_denoiser(tmp_path):
    """Same-size images go through together: up to 2^19 pixels for a Denoiser on the CPU (bounded memory),
    2^22 for anything else."""
    import numpy as np

    from conftest import smooth_image
    from r3l.evaluation.protocol import evaluate
    from r3l.io.data import load_images
    from r3l.io.images import write_image

    rng = np.random.default_rng(0)
    for i in range(6):
        write_image(tmp_path / f"im{i}.png", smooth_image(rng, 300, 300))  # 90,000 pixels: 5 fit in 2^19
    images = load_images(tmp_path, 1, "data")  # a Path works as well as a str

    class Recorder:
        def __init__(self, device):
            self.device, self.sizes = device, []

        def __call__(self, batch):
            self.sizes.append(batch.shape[0])
            return batch

    cpu, other = Recorder(torch.device("cpu")), Recorder(None)
    for recorder in (cpu, other):
        evaluate(recorder, images, [25.0], progress=False)
    assert cpu.sizes == [5, 1] and other.sizes == [6]
