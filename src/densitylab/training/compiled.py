"""The compiled engine: whole epochs in one numba call, for the flows whose mathematics has
compiled kernels (RealNVP couplings in :mod:`~densitylab.training.compiled_realnvp`, spline
couplings in :mod:`~densitylab.training.compiled_spline`); every rule around the epoch is the
driver's."""

from __future__ import annotations

import math

import numpy as np
import torch

from densitylab import compiling
from densitylab.flows import Flow
from densitylab.training import compiled_realnvp, compiled_spline
from densitylab.training.autograd import TorchEngine


def supports(flow: Flow) -> bool:
    """Whether compiled kernels exist for this flow."""
    return compiled_realnvp.supports(flow) or compiled_spline.supports(flow)


class CompiledEngine(TorchEngine):
    """Epochs run by the compiled kernels on a flat copy of the parameters.

    The torch model is refreshed after every epoch, so validation, the kept weights and
    checkpoints are the autograd engine's; Adam's state lives here as NumPy arrays.
    """

    name = "compiled"

    def __init__(self, model: Flow, objective, x_train, x_val, options, threads: int = 1) -> None:
        super().__init__(model, objective, x_train, x_val, options)
        self.threads = threads
        spline = compiled_spline.supports(model)
        compiling.announce("spline" if spline else "realnvp")
        self.stack = (compiled_spline.CompiledSplineStack if spline
                      else compiled_realnvp.CompiledStack)(model)
        self.theta = self.stack.pack()
        self.adam = self.stack.new_adam()
        x = x_train.detach().double().cpu().numpy()
        self.x = self.stack.standardized(x)
        self.x_val_standardized = self.stack.standardized(x_val.detach().double().cpu().numpy())
        self.offset = self.stack.log_det_offset()  # NLL(x) = NLL(standardised x) - offset

    def _new_optimizers(self) -> list:
        return []

    def train_epoch(self, order, step: int, total_steps: int, active) -> np.ndarray:
        """One compiled epoch per active model (stopped ones are skipped), ``threads`` models
        at a time."""
        options = self.options
        sums = self.stack.run_epoch(
            self.theta, self.adam, self.x, order.numpy(), options.batch_size, options.lr,
            total_steps, step, int(options.schedule == "cosine"), options.clip_grad or 0.0,
            self.bad_steps, active, self.threads,
        )
        self.stack.unpack(self.theta)
        n_batches = math.ceil(self.x.shape[1] / options.batch_size)
        return (sums - n_batches * self.offset)[:, None]

    def validate(self) -> np.ndarray:
        """Validation NLL per model; for spline flows by the compiled forward pass of the
        weights the torch model holds (the moving average's, while the driver swaps it in),
        three times faster than torch's."""
        if not isinstance(self.stack, compiled_spline.CompiledSplineStack):
            return super().validate()
        log_p = self.stack.log_prob(self.stack.pack(), self.x_val_standardized)
        loss = -(log_p.astype(np.float64).mean(axis=1) + self.offset)
        return np.nan_to_num(loss, nan=np.inf)

    def load_state(self, state) -> None:
        super().load_state(state)
        self.theta = self.stack.pack()

    def optimizer_state(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in self.adam.items()}

    def load_optimizer_state(self, tensors) -> None:
        self.adam = {k: tensors[k].numpy().copy() for k in self.adam}
