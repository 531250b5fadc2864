"""The autograd engine: any torch model, any device, data-parallel over processes.

It runs the batches of one epoch for the driver. A batch is an index into tensors that already
hold the data, never a per-sample loader. ``M`` stacked models (every parameter with a leading
model dimension) train in one computation: the loss is the *sum* of the per-model mean losses,
which gives every model exactly the gradient it would get alone, and Adam is element-wise, so
each model follows its own trajectory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from densitylab import distributed as distributed_
from densitylab.training.objectives import Objective
from densitylab.training.options import Options


class TorchEngine:
    """Adam steps on a (stacked) torch model for an objective; state per model has length M."""

    name = "torch"

    def __init__(
        self, model: nn.Module, objective: Objective, x_train: Tensor, x_val: Tensor,
        options: Options, distributed: bool = False,
    ) -> None:
        self.model, self.objective, self.options = model, objective, options
        self.x_train, self.x_val = x_train, x_val
        self.n_models = x_train.shape[0]
        # data-parallel: gradients are averaged over processes by DDP (parameters are
        # broadcast from rank 0 on construction); None trains in this process alone
        self.ddp = _data_parallel(model) if distributed else None
        self.forward_model = self.ddp or model
        self.groups = objective.parameter_groups(model)
        self.optimizers = self._new_optimizers()
        self.bad_steps = np.zeros(self.n_models, dtype=np.int64)
        self.lr = options.lr
        self._finite_step = torch.ones(self.n_models, dtype=torch.bool)

    def _new_optimizers(self) -> list[torch.optim.Optimizer]:
        # fused Adam: one kernel per step instead of dozens of small ops
        return [torch.optim.Adam(group, lr=self.options.lr, betas=self.objective.betas,
                                 fused=True) for group in self.groups]

    # -- what the driver calls ---------------------------------------------------------------
    def train_epoch(self, order: Tensor, step: int, total_steps: int,
                    active: np.ndarray) -> np.ndarray:
        """Steps over batches of the shuffled indices ``order`` ``(M, n)``; returns the
        per-model sums of the objective's training columns, ``(M, k)``. Stacked models step
        together, stopped ones too (what they learn is ignored)."""
        sums = np.zeros((self.n_models, len(self.objective.train_columns)))
        self.model.train()
        for i, index in enumerate(order.to(self.x_train.device).split(self.options.batch_size,
                                                                       dim=1)):
            self.lr = self.options.learning_rate(step + i, total_steps)
            self._finite_step = torch.ones(self.n_models, dtype=torch.bool)
            sums += self.objective.train_step(self, self._batch(index)).double().cpu().numpy()
            finite = self._finite_step.numpy()
            self.bad_steps = np.where(finite, 0, self.bad_steps + 1)
        return sums

    @torch.no_grad()
    def validate(self) -> np.ndarray:
        self.model.eval()
        loss = self.objective.validate(self)
        self.model.train()
        return loss.double().cpu().numpy()

    def weights(self) -> list[Tensor]:
        """The trainable parameters (what a moving average averages)."""
        return [p for group in self.groups for p in group]

    def state(self) -> dict[str, Tensor]:
        return self.model.state_dict()

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.model.load_state_dict(state)

    @torch.no_grad()
    def weights_finite(self) -> np.ndarray:
        finite = torch.ones(self.n_models, dtype=torch.bool)
        for p in self.weights():
            finite &= torch.isfinite(self._per_model(p)).all(dim=1).cpu()
        return finite.numpy()

    def optimizer_state(self) -> dict[str, Tensor]:
        tensors = {}
        for g, optimizer in enumerate(self.optimizers):
            for index, state in optimizer.state_dict()["state"].items():
                tensors |= {f"{g}.{index}.{name}": value for name, value in state.items()}
        return tensors

    def load_optimizer_state(self, tensors: dict[str, Tensor]) -> None:
        for g, optimizer in enumerate(self.optimizers):
            state = optimizer.state_dict()
            mine = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".")[0] == str(g)}
            state["state"] = {
                int(i): {name: mine[f"{i}.{name}"] for name in ("step", "exp_avg", "exp_avg_sq")}
                for i in {key.split(".")[0] for key in mine}
            }
            optimizer.load_state_dict(state)

    # -- what objectives call ----------------------------------------------------------------
    def batch_mean(self, point_losses: Tensor) -> tuple[Tensor, Tensor]:
        """From per-point losses ``(M, b)`` of this process's batch (or shard): the per-model
        loss to differentiate and the per-model mean over the global batch, detached.

        Data-parallel, each process scores a shard and DDP averages gradients over the
        processes, so scaling the shard's sum by world_size / batch gives the global mean's
        gradient."""
        if self.ddp is None:
            mean = point_losses.mean(dim=1)
            return mean, mean.detach()
        shard_sum = point_losses.sum(dim=1)
        loss = shard_sum * (distributed_.world_size() / self._global_batch)
        return loss, distributed_.all_reduce_sum(shard_sum.detach()) / self._global_batch

    def mean_over_validation(self, point_losses: Callable[[Tensor], Tensor]) -> Tensor:
        """Per-model mean of ``point_losses`` over the validation points, in float64;
        data-parallel, each process scores a shard."""
        total = point_losses(distributed_.shard(self.x_val, dim=1)).double().sum(dim=1)
        return (distributed_.all_reduce_sum(total) / self.x_val.shape[1]).cpu()

    def descend(self, loss: Tensor, reported: Tensor, group: int = 0) -> Tensor:
        """One Adam step of parameter group ``group`` on the per-model ``loss`` ``(M,)``;
        models whose loss or gradient is not finite keep their parameters. Returns which
        models stepped."""
        optimizer, params = self.optimizers[group], self.groups[group]
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward(inputs=params)
        finite = self._finite(reported, params)
        for param_group in optimizer.param_groups:
            param_group["lr"] = self.lr
        if bool(finite.all()):
            optimizer.step()
        else:
            self._step_finite_models_only(finite, params, optimizer)
        self._finite_step &= finite
        return finite

    @property
    def global_batch_size(self) -> int:
        """Points in the current batch over all processes (this process holds a shard)."""
        return self._global_batch

    # -- internals ---------------------------------------------------------------------------
    def _batch(self, index: Tensor) -> Tensor:
        """The points of a batch ``(M, b, D)``; data-parallel, this process's shard of it."""
        self._global_batch = index.shape[1]
        if self.ddp is not None:
            index = distributed_.shard(index, dim=1)
        return self.x_train.gather(1, index.unsqueeze(-1).expand(-1, -1, self.x_train.shape[2]))

    def _per_model(self, tensor: Tensor) -> Tensor:
        """View a parameter-shaped tensor as ``(M, -1)``: rows are grouped by model."""
        return tensor.reshape(self.n_models, -1)

    def _finite(self, loss: Tensor, params: list[nn.Parameter]) -> Tensor:
        """Models whose loss and gradient are finite; clips gradients per model if asked.

        The common case costs one fused norm over all gradients; per-model norms are only
        computed when clipping or when something is not finite.
        """
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        if self.options.clip_grad is None:
            total = torch.nn.utils.get_total_norm(grads, foreach=True)
            if bool(torch.isfinite(total)) and bool(torch.isfinite(loss).all()):
                return torch.ones(self.n_models, dtype=torch.bool)
        norms = sum(self._per_model(g).double().square().sum(dim=1) for g in grads).sqrt()
        if self.options.clip_grad is not None:
            factor = (self.options.clip_grad / (norms + 1e-6)).clamp(max=1.0)
            for g in grads:
                self._per_model(g).mul_(factor.to(g.dtype).unsqueeze(1))
        return torch.isfinite(loss).cpu() & torch.isfinite(norms).cpu()

    @torch.no_grad()
    def _step_finite_models_only(self, finite: Tensor, params, optimizer) -> None:
        """Skip the update for models whose loss or gradient is not finite."""
        for p in params:
            if p.grad is not None:
                self._per_model(p.grad)[~finite] = 0.0
        saved = [self._per_model(p)[~finite].clone() for p in params]
        optimizer.step()
        for p, old in zip(params, saved, strict=True):
            self._per_model(p)[~finite] = old


def _data_parallel(model: nn.Module) -> torch.nn.parallel.DistributedDataParallel:
    """Wrap ``model`` for data-parallel training on its device (one GPU or the CPU)."""
    device = next(model.parameters()).device
    device_ids = [device] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
