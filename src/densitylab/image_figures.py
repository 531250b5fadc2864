"""The standard figures of a fitted :class:`~densitylab.ImageFlow`: computed here (samples,
latents, noise, layer outputs), drawn by :mod:`densitylab.plots.images`."""

from __future__ import annotations

import numpy as np
import torch

from densitylab.plots import images as image_plots

TEMPERATURES = (0.5, 0.7, 1.0)


def temperature_grids(estimator, data: np.ndarray, n: int = 36, seed: int = 0,
                      title: str = "Test images and samples by temperature"):
    """Test images beside samples at temperatures 0.5, 0.7 and 1.0."""
    panels = {"test images": data[:n]}
    panels |= {f"T = {t}": estimator.sample(n, temperature=t, random_state=seed)
               for t in TEMPERATURES}
    return image_plots.grids(panels, title, estimator.pixel_levels_)


def image_figures(estimator, data: np.ndarray, seed: int = 0) -> dict:
    """``{name: Figure}``: temperature grids, an interpolation between two test images, what
    each scale encodes, the dequantization noise (learned or uniform) and one image layer by
    layer."""
    flow, levels = estimator.flow_, estimator.pixel_levels_
    first, second = (torch.as_tensor(data[k]) for k in (0, 1))
    with torch.no_grad():
        line = flow.interpolate(first, second, steps=10).numpy()
        scales = {"image": data[:1]}
        for k in range(len(flow.scales)):
            scales[f"scales 1..{k + 1} resampled"] = flow.resample_scales(
                first, k, 8, temperature=0.7, seed=seed).numpy()
        views = [(name, array.numpy()) for name, array in flow.layer_images(first)]
    every = max(1, len(views) // 11)
    picked = views[::every][:11] + ([views[-1]] if views[-1] is not views[::every][:11][-1]
                                    else [])
    return {
        "samples": temperature_grids(estimator, data, seed=seed),
        "interpolation": image_plots.strips({"first half": line[:5], "second half": line[5:]},
                                            "From one test image to another in the latent",
                                            levels),
        "scales": image_plots.strips(scales, "What each scale encodes (finest first, "
                                     "T = 0.7)", levels),
        "dequantization": dequantization_noise(estimator, data, seed),
        "layers": image_plots.layer_views(picked, "One test image through the flow, x -> z"),
    }


def dequantization_noise(estimator, data: np.ndarray, seed: int = 0):
    """Eight test images, one draw of their dequantization noise ``u`` (learned, for variational
    dequantization) and ``x + u``."""
    flow = estimator.flow_
    rows = torch.as_tensor(data[:8].reshape(8, -1), dtype=flow.dtype)
    with torch.no_grad():
        noise = flow.dequantizer.noise(rows.shape, torch.Generator().manual_seed(seed))
        u = flow.dequantizer(rows, noise.to(flow.dtype))[0].reshape(data[:8].shape).numpy()
    kind = flow.dequantizer.kind
    return image_plots.grids({"images": data[:8], f"{kind} noise u": u, "x + u": data[:8] + u},
                             f"Dequantization noise ({kind}) of eight test images", None)
