"""Base distributions: the Gaussian-mixture base is scikit-learn's mixture density, a flow on it
is still a normalised density, and training starts from the mixture fitted to the data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

import densitylab as dl
from densitylab import flows


def clusters(n: int, seed: int) -> np.ndarray:
    """Three tight, well separated clusters in 2-D: a hard shape for one Gaussian."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]])
    return centres[rng.integers(3, size=n)] + 0.3 * rng.normal(size=(n, 2))


@pytest.mark.parametrize("kind", ["full", "tied", "diag", "spherical"])
def test_mixture_base_is_scikit_learns_mixture_density(kind):
    x = clusters(600, 0)
    mixture = GaussianMixture(3, covariance_type=kind, random_state=0).fit(x)
    base = flows.GaussianMixtureBase(2, max_components=5).double()
    base._set(0, mixture)
    points = clusters(50, 1)
    ours = base.log_prob(torch.as_tensor(points)[None])[0]
    np.testing.assert_allclose(ours.numpy(), mixture.score_samples(points), rtol=1e-10)


def test_flow_on_a_mixture_base_is_a_normalised_density_and_samples_it():
    flow = flows.with_mixture_base(flows.nsf(2, n_layers=2, hidden=(16,), bins=5, seed=0)).double()
    flow.base.fit(torch.as_tensor(clusters(600, 0))[None], seeds=[0])
    with torch.no_grad():
        for p in flow.parameters():  # not the identity: the transforms matter too
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1),
                                      dtype=p.dtype))
    edges = torch.linspace(-9.0, 9.0, 451, dtype=torch.float64)
    centres = (edges[1:] + edges[:-1]) / 2
    xx, yy = torch.meshgrid(centres, centres, indexing="xy")
    grid = torch.stack([xx.ravel(), yy.ravel()], 1)
    with torch.no_grad():
        mass = flow.log_prob(grid).exp().sum().item() * (18 / 450) ** 2
        x, log_p = flow.sample_with_log_prob(2000, seed=0)
    assert mass == pytest.approx(1.0, abs=3e-3)
    torch.testing.assert_close(log_p, flow.log_prob(x), atol=1e-9, rtol=0)
    z, _ = flow.to_latent(x)  # the codes of samples come from the mixture's three clusters
    component = torch.cdist(z, flow.base.means[0, :3]).argmin(1)
    shares = torch.bincount(component, minlength=3).double() / len(z)
    np.testing.assert_allclose(shares.numpy(), flow.base.log_weights[0, :3].exp().numpy(),
                               atol=0.04)


def test_training_starts_from_the_mixture_fitted_to_the_training_data(tmp_path):
    x, test = clusters(900, 0), clusters(3000, 1)
    options = dict(epochs=8, batch_size=128, lr=2e-3, standardize=True, verbose=False, seed=3)
    make = [lambda: flows.nsf(2, n_layers=2, hidden=(32,), bins=8, bound=5.0, seed=0).double(),
            lambda: flows.with_mixture_base(
                flows.nsf(2, n_layers=2, hidden=(32,), bins=8, bound=5.0, seed=0)).double()]
    plain, mixture = (dl.fit(m(), x, **options) for m in make)
    assert int(torch.isfinite(mixture.flow.base.log_weights).sum()) == 3  # BIC: three clusters
    nll = {name: -r.flow.log_prob(test).mean().item()
           for name, r in (("plain", plain), ("mixture", mixture))}
    assert nll["mixture"] < nll["plain"] - 0.3
    dl.save(mixture.flow, tmp_path / "model")
    torch.testing.assert_close(dl.load(tmp_path / "model").log_prob(test[:20]).double(),
                               mixture.flow.log_prob(test[:20]))
    config_file = tmp_path / "model" / "config.json"
    config = json.loads(config_file.read_text())
    assert config["config"]["mixture_base"] == 10
    config_file.write_text(config_file.read_text().replace('"mixture_base": 10',
                                                           '"mixture_base": -1'))
    with pytest.raises(ValueError, match="mixture_base"):
        dl.load(tmp_path / "model")
    # stacked: each model's base is fitted to its own data and seed, as alone
    together = dl.fit_many([make[1](), make[1]()], [x, clusters(900, 2)], **options)
    torch.testing.assert_close(together[0].flow.log_prob(test[:50]),
                               mixture.flow.log_prob(test[:50]))
