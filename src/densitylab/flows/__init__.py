"""Normalizing flows in PyTorch: transforms, the flow composition, and named builders.

Direction convention: ``to_latent`` is x -> z, ``to_data`` is z -> x; both return
``(output, log|det J|)`` of the direction they compute.
"""

from densitylab.flows.autoregressive import MaskedAutoregressive
from densitylab.flows.bases import GaussianMixtureBase, StandardNormal, standard_normal_log_prob
from densitylab.flows.builders import (
    BUILDERS,
    RECOMMENDED_FIT,
    RECOMMENDED_MODEL,
    RECOMMENDED_STEPS,
    build,
    cnf,
    glow,
    maf,
    nsf,
    realnvp,
    recommended,
    recommended_epochs,
    stack,
    standardized,
    unstack,
    with_mixture_base,
)
from densitylab.flows.continuous import ContinuousFlow, VectorField, function_evaluations
from densitylab.flows.dequantization import (
    UniformDequantization,
    VariationalDequantization,
    bits_per_dim,
    discrete_log_likelihood,
)
from densitylab.flows.flow import Flow
from densitylab.flows.image_builders import glow_image, realnvp_image
from densitylab.flows.image_flow import MultiScaleFlow
from densitylab.flows.images import (
    Conv1x1,
    ImageActNorm,
    ImageCoupling,
    ImageTransform,
    Logit,
    Rescale,
    Squeeze,
)
from densitylab.flows.splines import ElementwiseSpline, SplineCoupling
from densitylab.flows.transforms import (
    ActNorm,
    AffineCoupling,
    Coupling,
    InvertibleLinear,
    Permutation,
    Standardize,
    Transform,
    TriangularCoupling,
)

__all__ = [
    "BUILDERS",
    "RECOMMENDED_FIT",
    "RECOMMENDED_MODEL",
    "RECOMMENDED_STEPS",
    "ActNorm",
    "AffineCoupling",
    "Conv1x1",
    "ContinuousFlow",
    "Coupling",
    "Flow",
    "GaussianMixtureBase",
    "ImageActNorm",
    "ImageCoupling",
    "ImageTransform",
    "Logit",
    "MultiScaleFlow",
    "Rescale",
    "Squeeze",
    "UniformDequantization",
    "VariationalDequantization",
    "bits_per_dim",
    "discrete_log_likelihood",
    "glow_image",
    "realnvp_image",
    "StandardNormal",
    "InvertibleLinear",
    "MaskedAutoregressive",
    "Permutation",
    "ElementwiseSpline",
    "SplineCoupling",
    "Standardize",
    "Transform",
    "TriangularCoupling",
    "VectorField",
    "build",
    "cnf",
    "function_evaluations",
    "glow",
    "maf",
    "nsf",
    "realnvp",
    "recommended",
    "recommended_epochs",
    "stack",
    "standard_normal_log_prob",
    "standardized",
    "unstack",
    "with_mixture_base",
]
