"""Image flows: every layer's round trip and log-determinant against autograd, squeeze,
dequantization and bits/dim against hand computations, ActNorm's one initialisation, and the
image data loaders with their errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import densitylab as dl
from densitylab.flows import (
    Conv1x1,
    ImageActNorm,
    ImageCoupling,
    Logit,
    MultiScaleFlow,
    Rescale,
    Squeeze,
    UniformDequantization,
    VariationalDequantization,
    bits_per_dim,
    discrete_log_likelihood,
)


def _perturbed(module: nn.Module, seed: int = 0, size: float = 0.3) -> nn.Module:
    """Random parameters, so zero-initialised layers are not the identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(size * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module.double().eval()


def _layers(shape):
    c = shape[0]
    layers = [Squeeze(shape), ImageActNorm(shape), Conv1x1(shape),
              ImageCoupling(shape, "checkerboard", hidden=4),
              ImageCoupling(shape, "checkerboard", flip=True, hidden=4),
              Rescale(math.prod(shape), 1 / 17), Logit(math.prod(shape), 0.05)]
    if c > 1:
        layers += [ImageCoupling(shape, "channel", hidden=4),
                   ImageCoupling(shape, "channel", flip=True, hidden=4)]
    return layers


def _jacobian_logdet(function, x: Tensor) -> Tensor:
    """``log|det J|`` of ``function`` (rows -> rows) at each row of ``x``, by autograd."""
    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda r: function(r[None])[0], row)
        out.append(torch.linalg.slogdet(jac)[1])
    return torch.stack(out)


@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 4, 4)])
def test_every_image_layer_inverts_and_has_the_autograd_logdet(shape):
    d = math.prod(shape)
    x = torch.rand(3, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for layer in _layers(shape):
        layer = _perturbed(layer)
        z, logdet = layer.to_latent(x)
        back, logdet_back = layer.to_data(z)
        assert (back - x).abs().max() < 1e-10, type(layer).__name__
        assert (logdet + logdet_back).abs().max() < 1e-10
        expected = _jacobian_logdet(lambda r, layer=layer: layer.to_latent(r)[0], x)
        assert (logdet - expected).abs().max() < 1e-8, type(layer).__name__


@pytest.mark.parametrize("builder", [dl.flows.glow_image, dl.flows.realnvp_image])
@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 4, 4)])
def test_multiscale_flows_invert_and_have_the_autograd_logdet(builder, shape):
    flow = _perturbed(builder(shape, levels=2, steps=2, hidden=4, pixel_levels=5,
                              learned_prior=True), size=0.1)
    x = 0.2 + 4.6 * torch.rand(2, *shape, generator=torch.Generator().manual_seed(2),
                               dtype=torch.float64)
    z, logdet = flow.to_latent(x)
    back, logdet_back = flow.to_data(z)
    assert (back.reshape(x.shape) - x).abs().max() < 1e-10
    assert (logdet + logdet_back).abs().max() < 1e-10
    expected = _jacobian_logdet(lambda r: flow.to_latent(r)[0], x.reshape(2, -1))
    assert (logdet - expected).abs().max() < 1e-8
    assert flow.scales == [(math.prod(shape) // 2, math.prod(shape)),
                           (0, math.prod(shape) // 2)]


def test_images_in_and_out_of_the_public_layer_api():
    layer = Squeeze((2, 4, 4))
    x = torch.arange(32.0).reshape(1, 2, 4, 4)
    z, logdet = layer.to_latent(x)
    assert z.shape == (1, 8, 2, 2) and logdet.item() == 0
    # channel 0 of the squeezed image holds the top-left pixel of every 2x2 block
    assert torch.equal(z[0, 0], x[0, 0, ::2, ::2])
    assert torch.equal(z[0, 3], x[0, 0, 1::2, 1::2])
    assert torch.equal(layer.to_data(z)[0], x)  # exact
    with pytest.raises(ValueError, match="images must have shape"):
        layer.to_latent(torch.zeros(1, 1, 4, 4))


def test_variational_dequantization_density_is_its_jacobian():
    shape = (1, 4, 4)
    quantizer = _perturbed(VariationalDequantization(shape, levels=5, steps=2, hidden=4))
    pixels = torch.randint(0, 5, (3, 16), generator=torch.Generator().manual_seed(0)).double()
    eps = torch.randn(3, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    u, log_q = quantizer(pixels, eps)
    assert ((u > 0) & (u < 1)).all()
    logdet = torch.stack([
        torch.linalg.slogdet(torch.autograd.functional.jacobian(
            lambda e, k=k: quantizer(pixels[k:k + 1], e[None])[0][0], eps[k]))[1]
        for k in range(3)])
    gaussian = -0.5 * (eps.square() + math.log(2 * math.pi)).sum(1)
    assert (log_q - (gaussian - logdet)).abs().max() < 1e-8


def test_discrete_probabilities_of_a_tiny_image_space_sum_to_one():
    # alpha=0: the logit maps the pixel cube onto all of R^4, so no mass leaks out of it
    # (alpha > 0 keeps the logit finite at the cube's faces but leaks some mass beyond them)
    levels, shape = 3, (1, 2, 2)
    flow = _perturbed(dl.flows.glow_image(shape, levels=1, steps=2, hidden=4,
                                          pixel_levels=levels, alpha=0.0), size=0.2)
    grid = torch.cartesian_prod(*[torch.arange(levels, dtype=torch.float64)] * 4)  # 81 images
    noise = torch.quasirandom.SobolEngine(4, scramble=True, seed=0).draw(4096,
                                                                        dtype=torch.float64)
    with torch.no_grad():
        density = torch.stack([flow(image.expand(1, len(noise), 4), noise[None])[0].exp()
                               for image in grid])
    probabilities = density.mean(dim=1)  # P(x) = integral of p(x + u) over the unit cube
    assert abs(probabilities.sum().item() - 1.0) < 0.01
    assert probabilities.min() > 0


class _Logistic(nn.Module):
    """Standard logistic base: with ``Logit(alpha=0)`` it makes the density uniform."""

    def log_prob(self, z: Tensor) -> Tensor:
        return (-z - 2 * nn.functional.softplus(-z)).sum(-1)


def test_bits_per_dim_equals_the_hand_computation_on_a_uniform_model():
    levels, d = 17, 64
    config = dict(shape=[1, 8, 8], pixel_levels=levels)
    flow = MultiScaleFlow([Rescale(d, 1 / levels), Logit(d, 0.0)], config,
                          UniformDequantization(), [(0, d)]).double()
    flow.base = _Logistic()
    images = torch.randint(0, levels, (5, d), generator=torch.Generator().manual_seed(0))
    for weighted in (True, False):
        ll = discrete_log_likelihood(flow, images.double(), draws=3, importance_weighted=weighted)
        # p is uniform on [0, 17)^64, so P(x) = 17^-64 for every image: log2(17) bits/dim
        assert torch.allclose(ll, torch.full((5,), -d * math.log(levels), dtype=ll.dtype))
        assert torch.allclose(bits_per_dim(ll, d), torch.full((5,), math.log2(levels),
                                                               dtype=ll.dtype))


def test_temperature_zero_gives_the_mode_path():
    flow = _perturbed(dl.flows.glow_image((1, 4, 4), levels=2, steps=1, hidden=4,
                                          pixel_levels=5), size=0.1)
    samples = flow.sample_images(4, temperature=0.0, seed=0)
    mode = flow.quantize(flow.decode(torch.zeros(1, 16, dtype=torch.float64)))
    assert torch.equal(samples, mode.expand_as(samples))
    hot = flow.sample_images(4, temperature=1.0, seed=0)
    assert hot.shape == (4, 1, 4, 4) and hot.min() >= 0 and hot.max() <= 4
    with pytest.raises(ValueError, match="temperature"):
        flow.sample_images(2, temperature=-1)


def test_actnorm_initialises_once_and_never_after_load(tmp_path):
    layer = ImageActNorm((2, 2, 2)).train()
    first = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)) * 3 + 1
    z, _ = layer.to_latent(first)
    assert bool(layer.initialized)
    per_channel = z.reshape(50, 2, 4)
    assert per_channel.mean(dim=(0, 2)).abs().max() < 1e-5
    assert (per_channel.std(dim=(0, 2)) - 1).abs().max() < 1e-3
    saved = [p.detach().clone() for p in layer.parameters()]
    layer.to_latent(first * 10)  # a second batch in training mode changes nothing
    assert all(torch.equal(a, b) for a, b in zip(saved, layer.parameters(), strict=True))

    flow = dl.flows.glow_image((1, 4, 4), levels=1, steps=1, hidden=4, pixel_levels=5)
    pixels = np.random.default_rng(0).integers(0, 5, (40, 16)).astype(float)
    fitted = dl.fit(flow, pixels, epochs=1, objective="dequantized", verbose=False).flow
    dl.save(fitted, tmp_path / "m")
    loaded = dl.load(tmp_path / "m").train()
    norm = next(m for m in loaded.modules() if isinstance(m, ImageActNorm))
    before = norm.bias.detach().clone()
    assert bool(norm.initialized)
    loaded(torch.as_tensor(pixels[None] * 0.5 + 7, dtype=torch.float32))
    assert torch.equal(norm.bias, before)
    rows = torch.as_tensor(pixels, dtype=torch.float32)
    assert torch.equal(discrete_log_likelihood(fitted, rows), discrete_log_likelihood(
        loaded.eval(), rows))


def test_builders_reject_nonsense():
    with pytest.raises(ValueError, match="multiples of 4"):
        dl.flows.glow_image((1, 6, 6), levels=2)
    with pytest.raises(ValueError, match="image shape"):
        dl.flows.realnvp_image((8, 8))
    with pytest.raises(ValueError, match="dequantization"):
        dl.flows.glow_image((1, 4, 4), dequantization="gaussian")
    with pytest.raises(ValueError, match="pixel_levels"):
        dl.flows.glow_image((1, 4, 4), pixel_levels=1)


# -- data ---------------------------------------------------------------------------------------
def test_digits_images_and_their_split():
    x, levels = dl.datasets.load_images("digits")
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.int64 and levels == 17
    assert x.min() == 0 and x.max() == 16
    train, val, test = dl.datasets.image_split(len(x))
    assert (len(train), len(val), len(test)) == (1260, 140, 397)
    order = np.random.default_rng(0).permutation(1797)
    assert np.array_equal(np.concatenate([train, val]), order[:1400])
    assert np.array_equal(test, order[1400:])


def test_user_arrays_and_png_folders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    plain = rng.integers(0, 4, (5, 4, 6))
    np.save(tmp_path / "a.npy", plain)
    x, levels = dl.datasets.load_images(tmp_path / "a.npy")
    assert x.shape == (5, 1, 4, 6) and levels == plain.max() + 1
    np.savez(tmp_path / "b.npz", images=rng.integers(0, 9, (3, 3, 4, 4)).astype(float))
    assert dl.datasets.load_images(tmp_path / "b.npz", levels=10)[1] == 10
    folder = tmp_path / "pngs"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(folder / f"{k}.png")
    x, levels = dl.datasets.load_images(folder)
    assert x.shape == (3, 1, 4, 4) and levels == 256


@pytest.mark.parametrize("case, message", [
    ("mixed", "mixed sizes"), ("floats", "floats outside"), ("empty", "no PNG files"),
    ("levels", "outside 3 levels"), ("shape", "shape"),
])
def test_bad_images_get_one_line_errors(tmp_path, case, message):
    from PIL import Image

    if case == "mixed":
        (tmp_path / "d").mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "d" / "a.png")
        Image.fromarray(np.zeros((5, 4), np.uint8)).save(tmp_path / "d" / "b.png")
        source, levels = tmp_path / "d", None
    elif case == "empty":
        (tmp_path / "d").mkdir()
        source, levels = tmp_path / "d", None
    else:
        array = {"floats": np.full((2, 4, 4), 0.5), "levels": np.full((2, 4, 4), 5),
                 "shape": np.zeros((4, 4))}[case]
        np.save(tmp_path / "a.npy", array)
        source, levels = tmp_path / "a.npy", 3 if case == "levels" else None
    with pytest.raises(ValueError, match=message) as err:
        dl.datasets.load_images(source, levels)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("builder", [dl.flows.glow_image, dl.flows.realnvp_image])
@pytest.mark.parametrize("dequantization", ["uniform", "variational"])
def test_gradients_of_the_dequantized_bound_reach_every_parameter(builder, dequantization):
    flow = _perturbed(builder((1, 4, 4), levels=2, steps=1, hidden=4, pixel_levels=5,
                              learned_prior=True, dequantization=dequantization), size=0.1)
    flow.train()
    rows = torch.randint(0, 5, (1, 8, 16), generator=torch.Generator().manual_seed(0)).double()
    noise = flow.dequantizer.noise(rows.shape, torch.Generator().manual_seed(1))
    (-flow(rows, noise).mean()).backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


IMAGE_WORKER = """
import sys
import torch
import densitylab as dl
from densitylab import distributed

def fit(use_ddp):
    pixels = dl.datasets.images("digits")[:150, :, :4, :4].reshape(150, -1).astype(float)
    flow = dl.flows.glow_image((1, 4, 4), levels=2, steps=1, hidden=4, pixel_levels=17,
                               dequantization="variational").double()
    return dl.fit(flow, pixels, epochs=2, batch_size=32, seed=1, objective="dequantized",
                  distributed=use_ddp, verbose=False)

if len(sys.argv) > 2:
    torch.save(fit(False).flow.state_dict(), sys.argv[1])
else:
    with distributed.process_group():
        state = fit(True).flow.state_dict()
        if distributed.rank() == 0:
            torch.save(state, sys.argv[1])
"""


@pytest.mark.slow
def test_two_processes_train_the_image_flow_one_process_trains(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(IMAGE_WORKER)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2"]
    done = subprocess.run([*torchrun, str(script), str(tmp_path / "parallel.pt")],
                          capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    alone = subprocess.run([sys.executable, str(script), str(tmp_path / "alone.pt"), "alone"],
                           capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    parallel, single = torch.load(tmp_path / "parallel.pt"), torch.load(tmp_path / "alone.pt")
    for name, value in single.items():  # ActNorm's init and the noise are shared as one batch
        torch.testing.assert_close(parallel[name], value, rtol=0, atol=1e-10, msg=name)
