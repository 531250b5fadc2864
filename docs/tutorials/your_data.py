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
# # Your own data: fit, compare, sample, score, save
#
# The path a practitioner takes with a table of measurements: load a CSV file, fit a KDE and
# a normalizing flow, compare them on held-out points (the honest way to choose), draw new
# samples, score new points (low density = unusual), and save the model to load it elsewhere.
#
# Our "own data" here is a three-column file we write first (into a scratch folder, so the
# notebook runs anywhere and leaves nothing behind); replace the paths with yours.

# %%
import os
import tempfile
from pathlib import Path

import numpy as np

import densitylab as dl

QUICK = os.environ.get("DENSITYLAB_DOCS_QUICK") == "1"
N = 1_200 if QUICK else 4_000
folder = Path(tempfile.mkdtemp(prefix="densitylab-tutorial-"))

# %%
rng = np.random.default_rng(0)
a = rng.normal(size=N)
b = 0.5 * a**2 + 0.3 * rng.normal(size=N)  # curved dependence on a
c = np.sin(2 * a) + 0.25 * rng.normal(size=N)  # wiggly dependence on a
csv_file = folder / "measurements.csv"
np.savetxt(csv_file, np.column_stack([a, b, c]), delimiter=",", header="a,b,c", comments="",
           fmt="%.6f")
print(csv_file.read_text()[:120])

# %% [markdown]
# ## Load and split
#
# `dl.datasets.load` reads `.csv` (a header row is recognised and skipped), `.npy` and `.npz`
# files into an `(n, d)` float array, with errors that name the row and column of a bad cell.
# We keep a fifth of the points aside: every comparison below is made on points no model has
# seen.

# %%
x = dl.datasets.load(csv_file)
order = np.random.default_rng(1).permutation(len(x))
test, train = x[order[: len(x) // 5]], x[order[len(x) // 5:]]
print(f"{x.shape[1]} columns, {len(train)} training and {len(test)} test points")

# %% [markdown]
# ## Fit a KDE and a flow
#
# - `dl.KDE(bandwidth="cv")`: a Gaussian KDE whose bandwidth matrix follows the data's
#   covariance, scaled by leave-one-out cross-validation.
# - `dl.FlowDensity(model="recommended")`: a spline flow with a training recipe that scales
#   with the data; both follow scikit-learn's estimator contract (`fit`, `score_samples`,
#   `sample`), so they also work in pipelines and `GridSearchCV`.

# %%
kde = dl.KDE(bandwidth="cv").fit(train)
flow = dl.FlowDensity(model="recommended", epochs=10 if QUICK else None,
                      random_state=0).fit(train)
models = {"KDE (cv bandwidth)": kde, "spline flow": flow}

# %% [markdown]
# ### AutoDensity
#
# `dl.AutoDensity` chooses between flows, KDEs and mixtures by cross-validated likelihood.
# It is new; where your densitylab has it, the next cell adds it to the comparison,
# otherwise it says so and the tutorial goes on with the two models above.

# %%
if hasattr(dl, "AutoDensity"):
    models["AutoDensity"] = dl.AutoDensity(random_state=0).fit(train)
else:
    print("this densitylab has no AutoDensity yet; comparing the KDE and the flow")

# %% [markdown]
# ## Compare held-out log-likelihoods
#
# The average log-density of the test points (higher is better) with its standard error: a
# difference smaller than a couple of standard errors is not a difference.

# %%
for name, model in models.items():
    nll, se = dl.metrics.nll_with_error(model.score_samples(test))
    print(f"{name:20s} held-out log-likelihood {-nll:7.3f} ± {se:.3f} nats per point")

# %% [markdown]
# ## Look at the fits
#
# In three dimensions a pairs plot shows every 1-D marginal (diagonal), every 2-D marginal
# density (below) and the data against samples of the model (above). The KDE's marginals are
# exact; the flow's are estimated from its samples.

# %%
dl.plots.pairs(kde, test, names=["a", "b", "c"],
               title="KDE: marginals, and test data against samples")

# %%
dl.plots.pairs(flow, test, names=["a", "b", "c"],
               title="Spline flow: marginals, and test data against samples")

# %% [markdown]
# The training curve of the flow (train and validation negative log-likelihood per epoch):

# %%
dl.plots.loss(flow)

# %% [markdown]
# ## Sample and score
#
# `sample(n, random_state)` draws new points; `score_samples` gives the log-density of any
# point. A point far from the data's curved shape gets a much lower score than a typical one,
# which is the basis of density-based anomaly detection.

# %%
new = flow.sample(5, random_state=0)
print("five new points:\n", np.round(new, 3))
points = np.array([[0.0, 0.0, 0.0],  # on the curve: b ~ a^2/2, c ~ sin(2a)
                   [0.0, 2.0, -1.0]])  # off the curve
for name, model in models.items():
    print(f"{name:20s} log-density of typical / unusual point:",
          np.round(model.score_samples(points), 2))

# %% [markdown]
# ## Save and load
#
# `dl.save` writes a directory with the weights (safetensors) and a JSON description, never a
# pickle, so loading a file from someone else cannot run code. The loaded model gives the same
# scores.

# %%
dl.save(flow, folder / "my_flow")
loaded = dl.load(folder / "my_flow")
print(sorted(p.name for p in (folder / "my_flow").iterdir()))
print("same scores after loading:",
      np.allclose(loaded.score_samples(test), flow.score_samples(test)))

# %% [markdown]
# The command line does the same in one step each: `densitylab train measurements.csv
# --model recommended --out run/` (a run directory with metrics, the model and figures,
# including the pairs plot), `densitylab kde measurements.csv --bandwidth cv --out kde/`,
# then `densitylab sample run/ -n 1000 --out new.csv` and `densitylab score run/ points.csv
# --out scores.csv`.
