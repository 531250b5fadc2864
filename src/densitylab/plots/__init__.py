"""Every figure of densitylab. A figure function takes data and returns a matplotlib ``Figure``;
saving is the caller's job. Submodules: ``datasets``, ``kde``, ``flows``."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
