"""Conditional flow matching: train a continuous flow's vector field without solving the ODE.

A data point ``x1`` and a base draw ``x0 ~ N(0, I)`` are joined by the straight path
``x_t = (1 - t) x0 + t x1``, whose velocity is ``x1 - x0``; regressing the field on it,
``E || v(t, x_t) - (x1 - x0) ||^2`` over ``t ~ U(0, 1)``, trains a field whose flow carries the
base to the data (the marginal of the conditional paths). Each step costs one
network pass, not a solve: no function evaluations grow during training.
``"ot-flow-matching"`` first pairs each batch's base draws with its points by an optimal
assignment (squared distance), so the paths cross less and the learned flow is straighter:
fewer solver steps to evaluate it.

Transforms before the continuous one (the fitted standardisation) are fixed maps applied to the
data first; the base must be the standard normal.

References:
    Lipman, Chen, Ben-Hamu, Nickel & Le (2023), "Flow Matching for Generative Modeling", ICLR;
    Liu, Gong & Liu (2023), "Flow Straight and Fast", ICLR; Tong et al. (2024), "Improving
    and generalizing flow-based generative models with minibatch optimal transport", TMLR.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from densitylab.flows import ContinuousFlow, Flow, StandardNormal
from densitylab.training.objectives import OBJECTIVES, Likelihood

VAL_DRAWS = 4  # base draws and times per validation point: the same every epoch
PAIR_BLOCK = 128
"""Rows paired by one optimal assignment. The assignment costs the cube of its size: 3.4 ms
for 256 rows, 0.5 ms for 128, on one core; on 2spirals (batches of 1,024, 10,000 steps) blocks
of 128 trained in half the time of 256 to the same gap (0.064 against 0.063 nats)."""


class FlowMatching(Likelihood):
    """Conditional flow matching with straight paths between independent base draws and data
    points; validated by the same loss on fixed draws (so epochs compare fairly, recorded in
    the history), the last epoch's weights kept.

    Why the last and not the best validation epoch: the loss is mostly the irreducible
    variance of the path velocities given the point, so late epochs differ by less than its
    noise and "best" picks an early, noisy epoch; with the cosine schedule (which anneals the
    rate to 0) the last weights are the settled ones. Measured on 5,000 points, a (128, 128,
    128) field with 4 Fourier octaves, 10,000 steps: the last epoch against the best
    validation one, gap to the entropy 0.033 vs 0.059 nats on moons (see
    ``benchmarks/RESULTS.md``). Early stopping (``patience``) therefore does not apply."""

    train_columns = ("train_fm",)
    val_column = "val_fm"
    optimal_pairs = False
    keep_best = False
    # Measured, not adopted (benchmarks/cnf_screen.py, benchmarks/RESULTS.md), as keep_best:
    time_power = 1.0  # t = u ** (1 / p), density p t^(p - 1): p = 3 (draws near the data) took
    # 2spirals 0.13 to 0.09 nats, rings 0.37 to 0.17, but the smooth laws and short runs worse
    sigma_min = 0.0  # the path ends at N(x1, sigma_min^2): x_t = (1 - (1 - s) t) x0 + t x1

    def __init__(self, seeds: Sequence[int] = (0,), model: nn.Module | None = None) -> None:
        if model is not None:
            check_matchable(model)
        super().__init__(seeds, model)
        self.generators = [torch.Generator().manual_seed(s) for s in self.seeds]

    def point_losses(self, model: nn.Module, batch: Tensor) -> Tensor:
        return self._losses(model, batch, self.generators)

    def val_point_losses(self, model: nn.Module, points: Tensor) -> Tensor:
        fixed = [torch.Generator().manual_seed(s) for s in self.seeds]
        losses = self._losses(model, points.repeat(1, VAL_DRAWS, 1), fixed)
        return losses.reshape(points.shape[0], VAL_DRAWS, points.shape[1]).mean(dim=1)

    def _losses(self, model: nn.Module, rows: Tensor, generators: list[torch.Generator]
                ) -> Tensor:
        """Squared error of the field against the path velocity per point, ``(M, b)``."""
        if not isinstance(model, Flow):
            raise ValueError("flow matching trains in one process (distributed=False)")
        x, context = model._split_rows(rows)
        context = model._embed(context)
        with torch.no_grad():  # the fixed transforms in front (standardisation)
            for transform in model.transforms[:-1]:
                x = transform._to_latent(x, context)[0]
        _, b, d = x.shape
        x0 = torch.stack([torch.randn(b, d, generator=g, dtype=x.dtype) for g in generators])
        t = torch.stack([torch.rand(b, 1, generator=g, dtype=x.dtype) for g in generators])
        t = t ** (1.0 / self.time_power)
        x0, t = x0.to(x.device), t.to(x.device)
        if self.optimal_pairs:
            x0 = _paired(x0, x)
        shrink = 1.0 - self.sigma_min
        path = (1.0 - shrink * t) * x0 + t * x
        velocity = model.transforms[-1].field(t, path, context)
        return (velocity - (x - shrink * x0)).square().sum(-1)


class OptimalTransportFlowMatching(FlowMatching):
    """Flow matching whose base draws are paired with each batch's points by the assignment of
    least total squared distance (minibatch optimal transport): straighter learned paths."""

    optimal_pairs = True


def _paired(x0: Tensor, x1: Tensor, block_rows: int | None = None) -> Tensor:
    """``x0`` reordered per model so that row ``i`` goes to ``x1[i]`` by the assignment of least
    total squared distance (the Hungarian algorithm, scipy's), within consecutive blocks of
    ``block_rows`` rows (default :data:`PAIR_BLOCK`; the batch is already a random draw, so a
    block is a smaller minibatch of the same law)."""
    block_rows = block_rows or PAIR_BLOCK
    out = torch.empty_like(x0)
    for k in range(x0.shape[0]):
        for start in range(0, x0.shape[1], block_rows):
            block = slice(start, start + block_rows)
            cost = torch.cdist(x1[k, block].detach().double(), x0[k, block].double())
            columns = linear_sum_assignment(cost.square().cpu().numpy())[1]
            out[k, block] = x0[k, block][torch.from_numpy(np.asarray(columns))]
    return out


def check_matchable(model: nn.Module) -> None:
    """A one-line ``ValueError`` unless ``model`` is a flow whose last transform is continuous,
    whose other transforms have nothing to train, on a standard-normal base."""
    if not (isinstance(model, Flow) and isinstance(model.transforms[-1], ContinuousFlow)):
        raise ValueError("flow matching trains continuous flows (dl.flows.cnf); use the 'nll' "
                         "objective for other flows")
    fixed = all(not p.requires_grad for t in model.transforms[:-1] for p in t.parameters())
    if not fixed or not isinstance(model.base, StandardNormal):
        raise ValueError("flow matching needs a continuous flow on a standard-normal base, "
                         "with at most a fixed standardisation in front")


OBJECTIVES.update({"flow-matching": FlowMatching, "ot-flow-matching": OptimalTransportFlowMatching})
