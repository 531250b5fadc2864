# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Coupling flows, step by step
#
# A normalizing flow is an invertible map $f$ from data $x$ to a latent $z$ whose density we
# know, here the standard normal. The change-of-variables formula gives the exact density of
# the data:
#
# $$\log p_X(x) = \log \mathcal N\big(f(x); 0, I\big)
#   + \log\left|\det \frac{\partial f(x)}{\partial x}\right|.$$
#
# Two things must be cheap: inverting $f$ (to sample) and the log-determinant (to train).
# *Coupling layers* get both. We build one, check its inverse and its log-determinant
# numerically, stack several into a flow, train it on the two moons, and look at what every
# layer does.
#
# densitylab's direction words: `to_latent` is $x \to z$, `to_data` is $z \to x$; both return
# the output and the log-determinant of the direction they compute.

# %%
import os

import torch

import densitylab as dl
from densitylab.flows import AffineCoupling, Flow, Permutation

QUICK = os.environ.get("DENSITYLAB_DOCS_QUICK") == "1"
EPOCHS = 40 if QUICK else 400
torch.set_num_threads(1)  # tiny networks: one thread is fastest

# %% [markdown]
# ## One affine coupling layer
#
# Split $x = (x_a, x_b)$ with a mask. The layer leaves $x_a$ alone and scales and shifts $x_b$
# by amounts computed *from $x_a$* by two small networks $s$ and $t$:
#
# $$z_a = x_a, \qquad z_b = x_b \odot e^{s(x_a)} + t(x_a).$$
#
# Its Jacobian is triangular (the block $\partial z_a / \partial x_b$ is zero), so
# $\log|\det J| = \sum s(x_a)$; and since $x_a = z_a$ is known when inverting,
# $x_b = (z_b - t(z_a))\, e^{-s(z_a)}$ needs no inversion of the networks.
#
# `scale="tanh"` bounds $s$ and starts it away from zero, so the freshly built layer is not
# the identity and the checks below have something to check.

# %%
layer = AffineCoupling(mask=[True, False], hidden=(16,), scale="tanh",
                       generator=torch.Generator().manual_seed(0)).double()
x = torch.as_tensor(dl.datasets.get("moons").sample(5, seed=0))
with torch.no_grad():  # no gradients needed to evaluate
    z, logdet = layer.to_latent(x)
    x_back, logdet_back = layer.to_data(z)
print("first coordinate unchanged:", torch.equal(z[:, 0], x[:, 0]))
print("round trip error max |x - f^-1(f(x))|:", float((x_back - x).abs().max()))
print("log-dets of the two directions cancel:", float((logdet + logdet_back).abs().max()))

# %% [markdown]
# ### The log-determinant, checked against autograd
#
# For each point, autograd computes the full $2 \times 2$ Jacobian of $x \mapsto z$ and
# `slogdet` its log-determinant; the layer's cheap formula must agree to float64 rounding.

# %%
def autograd_logdet(transform, points: torch.Tensor) -> torch.Tensor:
    """log|det dz/dx| at each point, from the full Jacobian computed by autograd."""
    values = []
    for point in points:
        jacobian = torch.autograd.functional.jacobian(
            lambda p: transform.to_latent(p[None])[0][0], point)
        values.append(torch.linalg.slogdet(jacobian).logabsdet)
    return torch.stack(values)


print("layer's formula:", logdet.numpy())
print("autograd:       ", autograd_logdet(layer, x).detach().numpy())

# %% [markdown]
# ## Stacking layers into a flow
#
# One layer never changes $x_a$, so layers alternate which half they transform (here with a
# reversal between them). Composition keeps everything exact: the log-determinants add up.
# `Flow` composes transforms; `log_prob` is the formula at the top of this page.

# %%
generator = torch.Generator().manual_seed(1)
transforms = []
for k in range(4):
    if k > 0:
        transforms.append(Permutation.reverse(2))
    transforms.append(AffineCoupling([True, False], hidden=(16,), scale="tanh",
                                     generator=generator))
flow = Flow(transforms).double()
with torch.no_grad():
    z, logdet = flow.to_latent(x)
    print("flow round trip error:", float((flow.to_data(z)[0] - x).abs().max()))
print("flow log-det vs autograd:",
      float((logdet - autograd_logdet(flow, x).detach()).abs().max()))

# %% [markdown]
# A density must integrate to one. On a fine grid covering the mass, the sum of
# $p(x) \times$ cell area should be close to 1 even for this untrained flow:

# %%
grid = dl.grids.make_grid(((-8, 8), (-8, 8)), 300)
with torch.no_grad():
    density = flow.log_prob(torch.as_tensor(grid.points)).exp()
print(f"integral of p over the box: {float(density.sum()) * grid.cell_area:.4f}")

# %% [markdown]
# ## Training on the two moons
#
# Maximum likelihood: minimise the average $-\log p(x)$ of the training points. `dl.fit` runs
# mini-batch Adam, keeps a validation split and returns the best model by validation NLL.
# Here we use the library's builder for the same architecture, `dl.flows.realnvp` (the
# coursework's: 4 couplings of two-layer networks). `engine="torch"` uses PyTorch's autograd
# loop; the default `"auto"` may pick a faster compiled engine for such small networks, at
# the cost of a one-minute compilation the first time.

# %%
moons = dl.datasets.get("moons")
x_train, x_test = moons.sample(1500, seed=0), moons.sample(5000, seed=1)
realnvp = dl.flows.realnvp(dim=2, n_layers=4, hidden=(32, 32), seed=0)
result = dl.fit(realnvp, x_train, epochs=EPOCHS, batch_size=64, lr=3e-3, seed=8,
                engine="torch", verbose=False)
with torch.no_grad():
    test_nll = -float(result.flow.log_prob(torch.as_tensor(x_test, dtype=torch.float32)).mean())
print(f"best epoch {result.best_epoch}, test NLL {test_nll:.3f} nats, "
      f"entropy of the moons {moons.entropy():.3f} nats, {result.wall_time:.1f} s")

# %% [markdown]
# The entropy is the lowest expected NLL any model can reach, so the gap between the two
# lines in the loss curve is how far the flow is from the true density (the KL divergence).

# %%
dl.plots.loss(result, entropy=moons.entropy())

# %% [markdown]
# ## What the trained flow learned
#
# Its density beside the true one (same colour scale), and its samples over the test data:

# %%
dl.plots.density(result, truth=moons)

# %%
dl.plots.samples(result, x_test, n=2000)

# %% [markdown]
# ### Layer by layer
#
# Sampling runs the flow backwards: start from Gaussian noise and apply the inverse layers one
# by one. Each panel shows the same points after one more layer, so you can watch the
# Gaussian being bent into two moons; each coupling moves only one coordinate.

# %%
dl.plots.layers(result, n=1500)

# %% [markdown]
# The other direction: test points pushed to the latent space should look like a standard
# normal (39%, 86% and 99% inside the 1-, 2- and 3-sigma circles).

# %%
with torch.no_grad():
    z_test = result.flow.to_latent(torch.as_tensor(x_test[:2000], dtype=torch.float32))[0]
dl.plots.flows.latent_codes(z_test.double().numpy(), "Test points mapped to the latent space")

# %% [markdown]
# **Things to try.** Change `n_layers` (1, 3, 5: a single layer can only shear the Gaussian),
# the hidden width, or the data set (`dl.datasets.names()`). The tutorial on flow families
# compares RealNVP with Glow and spline flows and measures what depth, width and data size do.
