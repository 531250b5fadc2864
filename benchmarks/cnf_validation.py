"""Does the flow-matching validation loss pick the epoch the validation NLL would pick?

A (64, 64) CNF trained by flow matching (5,000 points, batches of 256, 20 steps per epoch,
Adam 3e-3 cosine); after every epoch both the flow-matching loss on fixed draws (what
``objective="flow-matching"`` validates by) and the NLL (an ODE solve) of 2,000 held-out points
are measured. Printed: their rank correlation over epochs, the NLL of the epoch the flow-matching
loss picks against the best NLL, and the seconds each validation cost in all. The loop is the
measurement's own (it must score both losses every epoch); densitylab trains in its driver.

    python benchmarks/cnf_validation.py moons 60
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from scipy.stats import spearmanr

import densitylab as dl
from densitylab.training.flow_matching import FlowMatching


def main(name: str, epochs: int) -> None:
    torch.set_num_threads(1)
    law = dl.datasets.get(name)
    x, x_val = law.sample(5000, seed=0), law.sample(2000, seed=5)
    flow = dl.flows.standardized(dl.flows.cnf(2, (64, 64)))
    rows = torch.as_tensor(x, dtype=torch.float32).unsqueeze(0)
    val_rows = torch.as_tensor(x_val, dtype=torch.float32).unsqueeze(0)
    flow.transforms[0].fit(rows)
    objective = FlowMatching([0], flow)
    optimizer = torch.optim.Adam(flow.parameters(), 3e-3)
    generator = torch.Generator().manual_seed(0)
    fm, nll, fm_seconds, nll_seconds, step, total = [], [], 0.0, 0.0, 0, epochs * 20
    for _ in range(epochs):
        for _ in range(20):
            for group in optimizer.param_groups:
                group["lr"] = 3e-3 * 0.5 * (1 + np.cos(np.pi * step / total))
            step += 1
            batch = rows[:, torch.randint(len(x), (256,), generator=generator)]
            loss = objective.point_losses(flow, batch).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            start = time.perf_counter()
            fm.append(objective.val_point_losses(flow, val_rows).mean().item())
            fm_seconds += time.perf_counter() - start
            start = time.perf_counter()
            nll.append(-flow.log_prob(x_val).mean().item())
            nll_seconds += time.perf_counter() - start
    fm, nll = np.array(fm), np.array(nll)
    print(f"{name}, {epochs} epochs: spearman(fm, nll) = {spearmanr(fm, nll)[0]:.2f}; NLL at the "
          f"epoch flow matching picks ({fm.argmin() + 1}) {nll[fm.argmin()]:.4f}, best NLL "
          f"{nll.min():.4f} (epoch {nll.argmin() + 1}); validation seconds: flow matching "
          f"{fm_seconds:.2f}, NLL {nll_seconds:.2f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
