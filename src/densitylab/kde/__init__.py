"""Exact Gaussian kernel density estimation with bandwidth matrices.

:class:`KDE` is the estimator (scikit-learn contract); the bandwidth rules it names are in
``BANDWIDTH_RULES``, and :func:`leave_one_out_log_likelihood` is the criterion ``"cv"`` maximises.
Beside them: ``estimator`` (the class), ``engines`` (the kd-tree, dense and grid summations),
``kernels`` (their compiled loops), ``bandwidth`` (the rules, the ``"cv"`` kernel-shape search),
``loo`` (the leave-one-out scorer). The defensive component of ``"cv"`` is the one the flows
share, :mod:`densitylab.guard`.
"""

from densitylab.kde.bandwidth import BANDWIDTH_RULES
from densitylab.kde.estimator import KDE, leave_one_out_log_likelihood

__all__ = ["KDE", "BANDWIDTH_RULES", "leave_one_out_log_likelihood"]
