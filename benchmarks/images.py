"""densitylab's multi-scale Glow against normflows' on the 8x8 digits and on random images.

Part 1 (digits): the fixed split (numpy default_rng(0) shuffle: first 1,400 train, the last
140 of them validation, the other 397 test), pixel values ``x = (pixel + u) / 17`` with uniform
``u``, the logit pre-processing (alpha 0.05, normflows' default, and 1e-3), 2 scales of K
steps with 64 hidden channels, Adam 1e-3, batches of 64 in the same order for both, at most E
epochs with early stopping (patience 10) on the validation bound. Both are scored by the same
importance-weighted bound (10 uniform draws) on the test images: bits/dim in pixel units, with
its standard error. The last row is densitylab's best configuration (Glow's learned prior and
variational dequantization, scored by importance weights over its own noise draws).
densitylab trains through its own driver; normflows through the loop below (its own
``MultiscaleFlow.log_prob``).

Part 2 (speed and memory): one epoch of the 1,260 training digits, and of 512 random images
of 28x28 (one channel) and 32x32x3 (256 levels), in batches of 64, each library in a fresh
process, the two alternating twice (the fastest epoch is kept: the machine is shared). Peak
resident memory is the process's high-water mark (``VmHWM``); "above the start" subtracts the
resident memory before the first training step (torch, the data and the model).

Usage: OMP_NUM_THREADS=1 python benchmarks/images.py [--steps K] [--epochs E] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import numpy as np
import torch

LEVELS = 17
PATIENCE = 10


def normflows_glow(shape: tuple[int, int, int], levels: int, steps: int, hidden: int,
                   alpha: float = 0.05):
    """normflows' multi-scale Glow as its own example builds it (unconditional base)."""
    import normflows as nf

    channels, side = shape[0], shape[1]
    q0, merges, flows = [], [], []
    for i in range(levels):
        blocks = [nf.flows.GlowBlock(channels * 2 ** (levels + 1 - i), hidden,
                                     split_mode="channel", scale=True) for _ in range(steps)]
        flows.append(blocks + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (channels * 2 ** (levels - i), side // 2 ** (levels - i),
                      side // 2 ** (levels - i))
        else:
            latent = (channels * 2 ** (levels + 1), side // 2 ** levels, side // 2 ** levels)
        q0.append(nf.distributions.GlowBase(latent))
    return nf.MultiscaleFlow(q0, flows, merges, transform=nf.transforms.Logit(alpha=alpha),
                             class_cond=False)


def normflows_log_prob(model, pixels: torch.Tensor, u: torch.Tensor, levels: int) -> torch.Tensor:
    """``log p(pixels + u)`` in pixel units (normflows models ``(pixels + u) / levels``)."""
    d = pixels[0].numel()
    return model.log_prob((pixels + u) / levels, None) - d * math.log(levels)


def iw_bits_per_dim(log_density, pixels: torch.Tensor, draws: int = 10, seed: int = 0):
    """Importance-weighted uniform-dequantization bound, bits/dim per image."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        values = torch.stack([log_density(pixels, torch.rand(pixels.shape, generator=generator))
                              for _ in range(draws)])
    ll = torch.logsumexp(values.double(), 0) - math.log(draws)
    return (-ll / (pixels[0].numel() * math.log(2))).numpy()


def train_normflows(model, train: torch.Tensor, val: torch.Tensor, epochs: int, seed: int,
                    levels: int) -> tuple[int, float, list[float]]:
    """Adam 1e-3, batches of 64 in the densitylab driver's order (same generator), early
    stopping on the validation bound with fixed draws; keeps the best weights."""
    import copy

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch, epoch_times = math.inf, None, 0, []
    with torch.no_grad():  # ActNorm's data-dependent initialisation on a first batch
        model.log_prob((train[:64] + 0.5) / levels, None)
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        model.train()
        for index in torch.randperm(len(train), generator=order_gen).split(64):
            batch = train[index]
            u = torch.rand(batch.shape, generator=noise_gen)
            loss = -normflows_log_prob(model, batch, u, levels).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            u = torch.rand(val.shape, generator=torch.Generator().manual_seed(seed + 1))
            score = float(-normflows_log_prob(model, val, u, levels).mean())
        epoch_times.append(time.perf_counter() - start)
        if score < best:
            best, best_state, best_epoch = score, copy.deepcopy(model.state_dict()), epoch
        elif epoch - best_epoch >= PATIENCE:
            break
    model.load_state_dict(best_state)
    return best_epoch, best, epoch_times


def digits(steps: int, epochs: int, quick: bool) -> dict:
    import densitylab as dl

    x = dl.datasets.images("digits")
    train_i, val_i, test_i = dl.datasets.image_split(len(x))
    if quick:
        train_i, val_i = train_i[:300], val_i[:50]
    pixels = {k: torch.as_tensor(x[i], dtype=torch.float32)
              for k, i in (("train", train_i), ("val", val_i), ("test", test_i))}
    rows = {}
    for alpha in (0.05, 1e-3):
        rows[f"densitylab Glow, alpha {alpha:g}"] = _densitylab_row(
            x, train_i, val_i, pixels["test"], steps, epochs, alpha=alpha, learned_prior=False)
        torch.manual_seed(0)  # normflows draws its initial weights from torch's global RNG
        model = normflows_glow((1, 8, 8), 2, steps, 64, alpha)
        best_epoch, _, seconds = train_normflows(model, pixels["train"], pixels["val"], epochs,
                                                 0, LEVELS)
        model.eval()
        bpd = iw_bits_per_dim(lambda p, u, model=model: normflows_log_prob(model, p, u, LEVELS),
                              pixels["test"])
        rows[f"normflows Glow, alpha {alpha:g}"] = _row(
            bpd, best_epoch, len(seconds), np.array(seconds),
            sum(p.numel() for p in model.parameters()))
    rows["densitylab Glow, alpha 0.001, learned prior, variational dequantization"] = \
        _densitylab_row(x, train_i, val_i, pixels["test"], steps, epochs, alpha=1e-3,
                        learned_prior=True, dequantization="variational")
    return rows


def _densitylab_row(x, train_i, val_i, test: torch.Tensor, steps: int, epochs: int,
                    **options) -> dict:
    import densitylab as dl

    est = dl.ImageFlow(model="glow", levels=2, steps=steps, hidden=64, pixel_levels=LEVELS,
                       epochs=epochs, patience=PATIENCE, random_state=0, threads=1, **options)
    est.fit(x[train_i], X_val=x[val_i])
    flow = est.flow_
    if flow.dequantizer.kind == "uniform":  # the same estimator code as for normflows
        bpd = iw_bits_per_dim(lambda p, u: flow(p.reshape(1, len(p), -1),
                                                u.reshape(1, len(p), -1).double())[0], test)
    else:  # variational: importance weights p / q over q's own draws
        bpd = est.score_samples(test.long().numpy())
    seconds = np.diff([0.0, *est.history_.seconds])
    return _row(bpd, est.best_epoch_, len(seconds), seconds,
                sum(p.numel() for p in flow.parameters()))


def _row(bpd: np.ndarray, best_epoch: int, epochs: int, seconds: np.ndarray,
         parameters: int) -> dict:
    return {"test_bpd": float(bpd.mean()), "se": float(bpd.std(ddof=1) / math.sqrt(len(bpd))),
            "best_epoch": best_epoch, "epochs": epochs,
            "seconds_per_epoch": float(np.median(seconds)), "parameters": parameters}


def speed_child(library: str, shape: tuple[int, int, int], steps: int) -> dict:
    """One epoch of 512 random 256-level images in batches of 64 (after one warm-up batch);
    for ``(1, 8, 8)``, the 1,260 training digits (17 levels) instead."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    levels = 256
    images = torch.randint(0, 256, (512, *shape), generator=generator).float()
    if shape == (1, 8, 8):
        import densitylab as dl

        x = dl.datasets.images("digits")
        levels, images = LEVELS, torch.as_tensor(x[dl.datasets.image_split(len(x))[0]]).float()
    if library == "densitylab":
        import densitylab as dl

        flow = dl.flows.glow_image(shape, levels=2, steps=steps, hidden=64,
                                   pixel_levels=levels, learned_prior=False)

        def loss(batch: torch.Tensor) -> torch.Tensor:
            rows = batch.reshape(1, len(batch), -1)
            return -flow(rows, torch.rand(rows.shape, generator=generator).double()).mean()
        model = flow
    else:
        model = normflows_glow(shape, 2, steps, 64)

        def loss(batch: torch.Tensor) -> torch.Tensor:
            u = torch.rand(batch.shape, generator=generator)
            return -normflows_log_prob(model, batch, u, levels).mean()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step(batch: torch.Tensor) -> None:
        value = loss(batch)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()

    baseline = _rss_mib()
    step(images[:64])
    start = time.perf_counter()
    for batch in images.split(64):
        step(batch)
    seconds = time.perf_counter() - start
    peak = _status_mib("VmHWM")
    return {"seconds_per_epoch": seconds, "peak_rss_mib": peak,
            "peak_above_start_mib": peak - baseline}


def _rss_mib() -> float:
    return _status_mib("VmRSS")


def _status_mib(field: str) -> float:
    """A memory field of this process (Linux ``/proc/self/status``: ``VmRSS`` now, ``VmHWM``
    the peak resident memory since it started), MiB."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def speed(steps: int, rounds: int = 2) -> dict:
    """Each (library, shape) in a fresh process, the libraries alternating, ``rounds`` times:
    the fastest epoch and the largest memory of the rounds (the machine is shared)."""
    rows: dict[str, dict] = {}
    for shape in ((1, 8, 8), (1, 28, 28), (3, 32, 32)):
        for _ in range(rounds):
            for library in ("densitylab", "normflows"):
                done = subprocess.run([sys.executable, __file__, "--child", library,
                                       ",".join(map(str, shape)), "--steps", str(steps)],
                                      capture_output=True, text=True, check=True)
                new = json.loads(done.stdout.strip().splitlines()[-1])
                old = rows.setdefault(f"{library} {shape}", new)
                old["seconds_per_epoch"] = min(old["seconds_per_epoch"], new["seconds_per_epoch"])
                for key in ("peak_rss_mib", "peak_above_start_mib"):
                    old[key] = max(old[key], new[key])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.child:
        shape = tuple(int(s) for s in args.child[1].split(","))
        print(json.dumps(speed_child(args.child[0], shape, args.steps)))
        return
    start = time.perf_counter()
    epochs = 3 if args.quick else args.epochs
    print(f"## Digits: 2 scales x {args.steps} steps, 64 hidden channels, at most {epochs} "
          f"epochs, patience {PATIENCE}, one thread")
    print("| model | test bits/dim | best epoch / run | s/epoch (median) | parameters |")
    print("|---|---|---|---|---|")
    for label, r in digits(args.steps, epochs, args.quick).items():
        print(f"| {label} | {r['test_bpd']:.3f} ± {r['se']:.3f} | {r['best_epoch']} / "
              f"{r['epochs']} | {r['seconds_per_epoch']:.2f} | {r['parameters']:,} |")
    print(f"\n## Speed: one epoch (digits: the 1,260 training images; random images: 512) in "
          f"batches of 64, 2 scales x {args.steps} steps, 64 hidden channels, one thread, a "
          "fresh process each, fastest of 2 alternating rounds")
    print("| library, shape | s/epoch | peak RSS (MiB) | peak above the start of training (MiB) |")
    print("|---|---|---|---|")
    for label, r in speed(args.steps).items():
        print(f"| {label} | {r['seconds_per_epoch']:.2f} | {r['peak_rss_mib']:.0f} | "
              f"{r['peak_above_start_mib']:.0f} |")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
