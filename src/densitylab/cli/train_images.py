"""``densitylab train`` for images: a multi-scale flow (:class:`densitylab.ImageFlow`) on the
built-in digits (``digits-images``), a user's ``.npy``/``.npz`` array or a PNG folder; writes
config, metrics (test bits/dim with its standard error), history, the model and figures."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import typer

IMAGE_SETS = {"digits-images": "digits"}  # CLI name -> datasets.images name


def is_image_data(data: str, images: bool) -> bool:
    """Whether ``train DATA`` trains an image flow: a built-in image set, a folder, or a
    file with ``--images``."""
    return images or data in IMAGE_SETS or Path(data).is_dir()


def train_images(data: str, out: Path, model: str, steps: int | None, hidden: int | None,
                 epochs: int | None, batch_size: int | None, lr: float | None, seed: int,
                 val_fraction: float, patience: int, pixel_levels: int | None,
                 dequantization: str, scales: int, device: str, threads: int,
                 quiet: bool, environment: dict, distributed: bool = False) -> None:
    """Fit, evaluate on the fixed test split, and write the run directory in one swap;
    ``environment`` (versions) goes into ``config.json``. ``distributed``: data-parallel
    training under torchrun, rank 0 evaluates and writes."""
    from contextlib import nullcontext

    import numpy as np

    from densitylab import datasets, plots
    from densitylab import distributed as parallel
    from densitylab._files import check_output, output_directory
    from densitylab.image_estimator import IMAGE_MODELS, ImageFlow
    from densitylab.image_figures import image_figures
    from densitylab.io import save
    from densitylab.runtime import resolve_device

    if model not in IMAGE_MODELS:
        raise ValueError(f"image data trains an image model: --model one of {sorted(IMAGE_MODELS)}")
    resolve_device(device)
    writer = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 writes OUT
    if writer:
        check_output(out, "train")
    x, levels = datasets.load_images(IMAGE_SETS.get(data, data), pixel_levels)
    train, val, test = datasets.image_split(len(x), seed=0, val_fraction=val_fraction)
    est = ImageFlow(model=model, levels=scales, steps=steps or 4, hidden=hidden or 64,
                    pixel_levels=levels, dequantization=dequantization, epochs=epochs or 200,
                    batch_size=batch_size or 64, lr=lr or 1e-3, patience=patience or None,
                    random_state=seed, threads=threads, device=device,
                    verbose=False if quiet else None, distributed=distributed)
    group = parallel.process_group(resolve_device(device)) if distributed else nullcontext()
    with group:
        est.fit(x[train], X_val=x[val])
    if not writer:  # every process holds the same model; rank 0 evaluates and writes it
        return
    bpd = est.score_samples(x[test])
    train_bpd = est.score_samples(x[train])
    history = est.history_
    metrics = {"test_bits_per_dim": float(bpd.mean()),
               "test_bits_per_dim_se": float(bpd.std(ddof=1) / np.sqrt(len(bpd))),
               "train_bits_per_dim": float(train_bpd.mean()), "n_test": len(test),
               "bound": "importance-weighted dequantization bound: an upper bound on bits/dim",
               "trained": est.best_epoch_ > 0, "best_epoch": est.best_epoch_,
               "epochs_run": len(history.val_nll), "wall_time": est.wall_time_,
               "seconds_per_epoch": est.wall_time_ / max(len(history.val_nll), 1)}
    config = {"command": "train", "data": data, "kind": "images", "model": model,
              "pixel_levels": levels, "image_shape": list(x.shape[1:]),
              "split": {"train": len(train), "validation": len(val), "test": len(test),
                        "shuffle": "numpy default_rng(0)"},
              "params": est.get_params(), "flow": est.flow_.config, "environment": environment}
    figures = image_figures(est, x[test], seed=seed)
    figures["loss"] = plots.loss({"flow": history}, title="Dequantized NLL per epoch (nats)")
    with output_directory(out, "train") as staging:
        (staging / "config.json").write_text(json.dumps(config, indent=2, default=str))
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2))
        with open(staging / "history.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, ["epoch", "train_nll", "val_nll", "seconds"])
            writer.writeheader()
            writer.writerows(history.rows())
        save(est, staging / "model")
        plots.save_figures(staging / "figures", figures)
    typer.echo(f"wrote {out}: test {metrics['test_bits_per_dim']:.3f} ± "
               f"{metrics['test_bits_per_dim_se']:.3f} bits/dim ({levels} levels), best epoch "
               f"{est.best_epoch_}, {est.wall_time_:.1f} s")
