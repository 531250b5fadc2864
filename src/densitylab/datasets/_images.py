"""Images as integer arrays ``(N, C, H, W)``: scikit-learn's 8x8 digits (built in, offline),
a user's ``.npy`` / ``.npz`` array, or a folder of PNG files; the number of grey levels, and the
fixed train / validation / test split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

BUILT_IN_IMAGES = {"digits": 17}  # name -> grey levels (scikit-learn's digits take 0..16)


def images(source: str | os.PathLike = "digits", levels: int | None = None) -> np.ndarray:
    """Integer images ``(N, C, H, W)``: ``"digits"`` (1,797 of shape (1, 8, 8), 17 levels), or
    a path to an ``.npy`` / ``.npz`` integer array ``(N, H, W)`` or ``(N, C, H, W)`` or a folder
    of PNG files (all the same size). :func:`image_levels` gives the levels.

    Example:
        >>> x = images("digits")
        >>> x.shape, x.dtype.kind, image_levels(x)
        ((1797, 1, 8, 8), 'i', 17)
    """
    return load_images(source, levels)[0]


def load_images(source: str | os.PathLike = "digits", levels: int | None = None
                ) -> tuple[np.ndarray, int]:
    """``(images, levels)``: the images as :func:`images` loads them, and their number of grey
    levels: ``levels`` if given (every pixel must lie below it), else 17 for the digits, 256
    for 8-bit PNG files, or the largest pixel value + 1 of an array."""
    if isinstance(source, str) and source in BUILT_IN_IMAGES:
        from sklearn.datasets import load_digits

        pixels = load_digits().images.astype(np.int64)[:, None]
        default = BUILT_IN_IMAGES[source]
    else:
        path = Path(source)
        if path.is_dir():
            pixels, default = _png_folder(path)
        elif path.suffix in (".npy", ".npz") and path.is_file():
            pixels, default = _array_file(path), None
        else:
            raise ValueError(f"{source}: not a built-in image set {sorted(BUILT_IN_IMAGES)}, "
                             "an .npy/.npz file or a folder of PNG files")
    return pixels, _levels(pixels, levels, default)


def image_levels(pixels: np.ndarray) -> int:
    """Grey levels detected from integer images: the largest value + 1 (17 for the digits)."""
    return int(np.max(pixels)) + 1


def _levels(pixels: np.ndarray, given: int | None, default: int | None) -> int:
    if given is not None:
        if isinstance(given, bool) or not isinstance(given, int | np.integer) or given < 2:
            raise ValueError(f"levels must be an integer >= 2, got {given!r}")
        if pixels.max() >= given:
            raise ValueError(f"pixel values reach {int(pixels.max())}, outside {given} levels")
        return int(given)
    levels = default if default is not None else image_levels(pixels)
    return max(levels, 2)


def check_images(array: np.ndarray, where: str = "images") -> np.ndarray:
    """Integer images ``(N, C, H, W)`` from ``(N, H, W)`` or ``(N, C, H, W)``; floats only if
    they are whole numbers; a one-line error for anything else."""
    array = np.asarray(array)
    if array.dtype.kind not in "iuf" or array.dtype.kind == "b":
        raise ValueError(f"{where}: pixel values must be integers, got dtype {array.dtype}")
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4 or min(array.shape) < 1:
        raise ValueError(f"{where}: images must have shape (N, H, W) or (N, C, H, W), "
                         f"got {array.shape}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: pixel values contain NaN or infinity")
        if not np.array_equal(array, np.round(array)):
            raise ValueError(f"{where}: pixel values are floats outside the integer levels "
                             "(e.g. 0.5); images need whole pixel values")
    if array.min() < 0:
        raise ValueError(f"{where}: pixel values must be >= 0, got {array.min()}")
    return array.astype(np.int64)


def _array_file(path: Path) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable NumPy file ({err})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if len(loaded.files) != 1:
                raise ValueError(f"{path}: an .npz of images must hold one array, "
                                 f"found {loaded.files}")
            loaded = loaded[loaded.files[0]]
    return check_images(loaded, str(path))


def _png_folder(path: Path) -> tuple[np.ndarray, int]:
    """The PNG files of a folder in name order, as ``(N, C, H, W)``; 256 levels (8 bits)."""
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise ValueError(f"{path}: the folder holds no PNG files")
    arrays = []
    for file in files:
        try:
            with Image.open(file) as image:
                if image.mode not in ("L", "RGB"):
                    image = image.convert("RGB" if "A" in image.mode or image.mode == "P"
                                          else "L")
                array = np.asarray(image)
        except (OSError, UnidentifiedImageError) as err:
            raise ValueError(f"{file}: not a readable PNG ({err})") from None
        array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
        if arrays and array.shape != arrays[0].shape:
            raise ValueError(f"{path}: images of mixed sizes ({files[0].name} is "
                             f"{arrays[0].shape}, {file.name} is {array.shape})")
        arrays.append(array)
    return check_images(np.stack(arrays), str(path)), 256


def image_split(n: int, n_train: int | None = None, val_fraction: float = 0.1,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed ``(train, validation, test)`` indices: shuffle with ``default_rng(seed)``, the
    first ``n_train`` (default 1,400 of the 1,797 digits' share, 78%) train and validation
    (the last ``val_fraction`` of them validation), the rest test.

    Example:
        >>> train, val, test = image_split(1797)
        >>> len(train), len(val), len(test)
        (1260, 140, 397)
    """
    if n < 3:
        raise ValueError(f"an image split needs at least 3 images, got {n}")
    n_train = round(n * 1400 / 1797) if n_train is None else n_train
    if not 2 <= n_train < n:
        raise ValueError(f"n_train must leave images for test, got {n_train} of {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, round(n_train * val_fraction)), n_train - 1)
    fit = order[:n_train]
    return fit[: n_train - n_val], fit[n_train - n_val :], order[n_train:]
