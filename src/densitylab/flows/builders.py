"""Named flow architectures, and stacking of same-shaped flows into one batched model.

Every builder records its arguments in ``flow.config`` so that ``build(**flow.config)``
recreates the architecture (used by save/load and by :func:`stack`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from densitylab._masks import half_mask as mask_array
from densitylab._validation import check_flow_dim, check_positive_int, check_widths
from densitylab.flows.autoregressive import MaskedAutoregressive
from densitylab.flows.bases import GaussianMixtureBase
from densitylab.flows.continuous import EXACT_MAX_DIM, ContinuousFlow
from densitylab.flows.flow import Flow
from densitylab.flows.image_builders import glow_image, realnvp_image
from densitylab.flows.nets import StackedMLP, check_activation
from densitylab.flows.splines import ElementwiseSpline, SplineCoupling
from densitylab.flows.transforms import (
    ActNorm,
    AffineCoupling,
    InvertibleLinear,
    Permutation,
    Standardize,
    Transform,
    TriangularCoupling,
)

MIXINGS = (None, "reverse", "permute")
NSF_MIXINGS = (None, "linear")


def half_mask(dim: int, flip: bool) -> torch.Tensor:
    """Conditioning mask on the first half of the coordinates (``flip``: the second half),
    a plain CPU tensor whatever the default device."""
    return torch.from_numpy(mask_array(dim, flip))


def _transform_context(context: int, embedding: Sequence[int] | None) -> int:
    """Context features the transforms read: the embedding's output width, or the raw ones."""
    if embedding is None:
        return context
    widths = check_widths(embedding)
    if len(widths) < 2 or not context:
        raise ValueError("embedding needs context=C columns and at least two widths, the "
                         f"hidden ones and the embedded size (e.g. (32, 8)); got {embedding!r}")
    return widths[-1]


def _conditional_flow(transforms: list[Transform], config: dict, context: int,
                      embedding: Sequence[int] | None, generator: torch.Generator,
                      n_models: int) -> Flow:
    """The flow, its context read through a small embedding network where one is asked for
    (widths: hidden layers, then the embedded size)."""
    if embedding is None:
        return Flow(transforms, config)
    widths = check_widths(embedding)
    net = StackedMLP(n_nets=n_models, in_features=context, hidden=widths[:-1],
                     out_features=widths[-1], generator=generator)
    return Flow(transforms, {**config, "embedding": list(widths)}, embedding=net)


def _check_common(
    dim: int, n_layers: int, hidden: Sequence[int], activation: str, minimum_dim: int = 2
) -> None:
    check_flow_dim(dim, minimum_dim)
    check_positive_int(n_layers, "n_layers")
    check_widths(hidden)
    check_activation(activation)


def realnvp(
    dim: int,
    n_layers: int = 4,
    hidden: Sequence[int] = (32, 32),
    *,
    activation: str = "leaky_relu",
    separate_nets: bool = True,
    scale: str = "factor",
    zero_init: bool = False,
    mixing: str | None = None,
    triangular: bool = False,
    fourier: int = 0,
    context: int = 0,
    embedding: Sequence[int] | None = None,
    seed: int = 0,
    n_models: int = 1,
) -> Flow:
    """RealNVP: ``n_layers`` affine couplings; defaults are the coursework's model.

    Without ``mixing`` the masks alternate between the two halves; with ``mixing="reverse"``
    or ``"permute"`` (a fixed random permutation) the mask stays and a permutation sits
    between consecutive couplings. ``triangular=True`` uses :class:`TriangularCoupling`.
    ``fourier=L`` feeds the s and t networks ``L`` octaves of Fourier features of their input.
    ``context=C`` makes it conditional: ``p(x | c)`` with ``C`` context columns fed to every
    conditioner network (``log_prob(x, c)``, ``sample(n, context=c)``); ``embedding=(32, 8)``
    first maps the context through a small network shared by all layers (hidden widths, then
    the embedded size), for contexts with many or raw columns. Every builder takes both.

    Example:
        >>> flow = realnvp(dim=2, n_layers=4, hidden=(32, 32))
    """
    _check_common(dim, n_layers, hidden, activation)
    if mixing not in MIXINGS:
        raise ValueError(f"unknown mixing {mixing!r}; choose one of {list(MIXINGS)}")
    generator = torch.Generator().manual_seed(seed)
    coupling = TriangularCoupling if triangular else AffineCoupling
    options = dict(hidden=hidden, activation=activation, separate_nets=separate_nets,
                   scale=scale, zero_init=zero_init, n_models=n_models, generator=generator,
                   fourier=fourier, context=_transform_context(context, embedding))
    transforms: list[Transform] = []
    for layer in range(n_layers):
        if layer > 0 and mixing == "reverse":
            transforms.append(Permutation.reverse(dim, n_models))
        elif layer > 0 and mixing == "permute":
            transforms.append(Permutation.random(dim, n_models, generator))
        flip = mixing is None and layer % 2 == 1
        transforms.append(coupling(half_mask(dim, flip), **options))
    config = dict(
        builder="realnvp", dim=dim, n_layers=n_layers, hidden=list(hidden),
        activation=activation, separate_nets=separate_nets, scale=scale, zero_init=zero_init,
        mixing=mixing, triangular=triangular, fourier=fourier, context=context, seed=seed,
    )
    return _conditional_flow(transforms, config, context, embedding, generator, n_models)


def glow(
    dim: int,
    n_layers: int = 4,
    hidden: Sequence[int] = (32, 32),
    *,
    activation: str = "leaky_relu",
    separate_nets: bool = True,
    scale: str = "factor",
    zero_init: bool = False,
    context: int = 0,
    embedding: Sequence[int] | None = None,
    seed: int = 0,
    n_models: int = 1,
) -> Flow:
    """Glow: ``n_layers`` steps of ActNorm -> InvertibleLinear -> AffineCoupling
    (conditional on ``context`` columns fed to the couplings' networks, as in :func:`realnvp`).

    References:
        Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions".
    """
    _check_common(dim, n_layers, hidden, activation)
    generator = torch.Generator().manual_seed(seed)
    options = dict(hidden=hidden, activation=activation, separate_nets=separate_nets,
                   scale=scale, zero_init=zero_init, n_models=n_models, generator=generator,
                   context=_transform_context(context, embedding))
    transforms: list[Transform] = []
    for _ in range(n_layers):
        transforms += [
            ActNorm(dim, n_models),
            InvertibleLinear(dim, n_models, generator),
            AffineCoupling(half_mask(dim, False), **options),
        ]
    config = dict(
        builder="glow", dim=dim, n_layers=n_layers, hidden=list(hidden), activation=activation,
        separate_nets=separate_nets, scale=scale, zero_init=zero_init, context=context,
        seed=seed,
    )
    return _conditional_flow(transforms, config, context, embedding, generator, n_models)


def identity_linear(
    dim: int, n_models: int = 1, generator: torch.Generator | None = None
) -> InvertibleLinear:
    """An :class:`InvertibleLinear` that starts as the identity (``P = L = U = I``)."""
    linear = InvertibleLinear(dim, n_models, generator)
    with torch.no_grad():
        linear.perm.copy_(torch.eye(dim).expand_as(linear.perm))
        linear.sign.fill_(1.0)
        for parameter in (linear.lower, linear.upper, linear.log_s):
            parameter.zero_()
    return linear


def nsf(
    dim: int,
    n_layers: int = 4,
    hidden: Sequence[int] = (64, 64),
    *,
    bins: int = 8,
    bound: float = 4.0,
    activation: str = "leaky_relu",
    fourier: int = 0,
    mixing: str | None = None,
    context: int = 0,
    embedding: Sequence[int] | None = None,
    seed: int = 0,
    n_models: int = 1,
) -> Flow:
    """Neural Spline Flow: ``n_layers`` rational-quadratic spline couplings with alternating
    masks, identity outside ``[-bound, bound]``; each starts as the identity. Train it on
    standardised data (``fit(..., standardize=True)``) so the data lie inside the bound.

    For ``dim=1`` there is nothing to condition on: the layers are elementwise splines with
    learned parameters (``hidden``, ``activation`` and ``fourier`` are then unused), or, with
    ``context=C``, splines whose knots a network computes from the context. ``context=C``
    makes any of them conditional, ``p(x | c)``, as in :func:`realnvp`.
    ``mixing="linear"`` puts an LU-parameterised :class:`InvertibleLinear` (Glow's 1x1
    convolution) before every coupling, starting at the identity, so the flow holds any
    full-covariance Gaussian and still starts axis-aligned (a random rotation at the start
    mixes odd marginals, such as uniform ones, into every coordinate: 19 nats worse on the
    dequantised digits of ``benchmarks/real_data.py``).

    References:
        Durkan, Bekasov, Murray & Papamakarios (2019), "Neural Spline Flows", NeurIPS.
    """
    _check_common(dim, n_layers, hidden, activation, minimum_dim=1)
    if mixing not in NSF_MIXINGS:
        raise ValueError(f"unknown mixing {mixing!r}; choose one of {list(NSF_MIXINGS)}")
    generator = torch.Generator().manual_seed(seed)
    inner = _transform_context(context, embedding)

    def layer(k: int) -> Transform:
        if dim > 1:
            return SplineCoupling(half_mask(dim, k % 2 == 1), hidden=hidden,
                                  activation=activation, bins=bins, bound=bound,
                                  n_models=n_models, generator=generator, fourier=fourier,
                                  context=inner)
        if context:  # a one-dimensional autoregressive spline reads only the context
            return MaskedAutoregressive(1, hidden=hidden, activation=activation,
                                        transform="spline", bins=bins, bound=bound,
                                        n_models=n_models, generator=generator, context=inner)
        return ElementwiseSpline(dim, bins=bins, bound=bound, n_models=n_models,
                                 generator=generator)

    transforms: list[Transform] = []
    for k in range(n_layers):
        if mixing == "linear" and dim > 1:
            transforms.append(identity_linear(dim, n_models, generator))
        transforms.append(layer(k))
    config = dict(builder="nsf", dim=dim, n_layers=n_layers, hidden=list(hidden), bins=bins,
                  bound=bound, activation=activation, fourier=fourier, context=context,
                  seed=seed)
    if mixing is not None:  # older saved models have no such key
        config["mixing"] = mixing
    return _conditional_flow(transforms, config, context, embedding, generator, n_models)


def maf(
    dim: int,
    n_layers: int = 5,
    hidden: Sequence[int] = (64, 64),
    *,
    transform: str = "affine",
    bins: int = 8,
    bound: float = 4.0,
    activation: str = "leaky_relu",
    inverse: bool = False,
    context: int = 0,
    embedding: Sequence[int] | None = None,
    seed: int = 0,
    n_models: int = 1,
) -> Flow:
    """Masked autoregressive flow: ``n_layers`` MADE-conditioned layers, affine or
    rational-quadratic spline (``transform``), the coordinate order reversed between layers;
    each starts as the identity. ``inverse=True`` builds the inverse autoregressive flow (IAF):
    one-pass sampling, ``dim`` sequential passes per density. Train splines on standardised
    data (``fit(..., standardize=True)``). ``context=C`` makes it conditional, ``p(x | c)``:
    every layer's network also reads the ``C`` context columns.

    References:
        Papamakarios, Pavlakou & Murray (2017), "Masked Autoregressive Flow for Density
        Estimation", NeurIPS.
    """
    _check_common(dim, n_layers, hidden, activation, minimum_dim=1)
    if not isinstance(inverse, bool):
        raise ValueError(f"inverse must be True or False, got {inverse!r}")
    generator = torch.Generator().manual_seed(seed)
    transforms: list[Transform] = [
        MaskedAutoregressive(dim, hidden=hidden, activation=activation, transform=transform,
                             bins=bins, bound=bound, inverse=inverse, reverse=layer % 2 == 1,
                             n_models=n_models, generator=generator,
                             context=_transform_context(context, embedding))
        for layer in range(n_layers)
    ]
    config = dict(builder="maf", dim=dim, n_layers=n_layers, hidden=list(hidden),
                  transform=transform, bins=bins, bound=bound, activation=activation,
                  inverse=inverse, context=context, seed=seed)
    return _conditional_flow(transforms, config, context, embedding, generator, n_models)


def cnf(
    dim: int,
    hidden: Sequence[int] = (64, 64),
    *,
    activation: str = "elu",
    frequencies: int = 3,
    fourier: int = 0,
    zero_init: bool = False,
    divergence: str | None = None,
    solver: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    steps: int = 20,
    adjoint: bool = False,
    snapshots: int = 8,
    train_tol: float | None = None,
    context: int = 0,
    embedding: Sequence[int] | None = None,
    seed: int = 0,
    n_models: int = 1,
) -> Flow:
    """Continuous normalizing flow: one :class:`~densitylab.flows.continuous.ContinuousFlow`,
    a vector field MLP ``v(t, x)`` (``hidden`` widths, smooth ``activation``, ``frequencies``
    sinusoids of time, ``fourier`` octaves of Fourier features of ``x`` for sharp structure,
    0 for none) integrated by torchdiffeq from the base (``t = 0``) to the data
    (``t = 1``). ``zero_init=True`` starts the field at 0 (its last layer zeroed), so the flow
    starts as the identity and its density as the base, which maximum-likelihood training
    moves from faster than from a random field (the ``cnf`` recipe's choice).

    ``solver`` is adaptive (``"dopri5"``, with ``rtol`` / ``atol``) or fixed-step (``"rk4"``,
    ``"midpoint"``, ``"euler"``, ``steps`` steps); ``adjoint=True`` computes gradients by the
    adjoint ODE (memory constant in the number of steps), with a smooth ``activation``
    (``"tanh"``, ``"softplus"``): the adjoint ODE differentiates the divergence again, and ELU's
    jumping second derivative makes its solver crawl (measured: 15,000 evaluations against 300
    with tanh for the same 20 points). The change of
    log-density uses the ``"exact"`` divergence (default up to
    :data:`~densitylab.flows.continuous.EXACT_MAX_DIM` columns) or ``"hutchinson"``'s
    estimate. ``snapshots`` is how many times along ``t`` :meth:`Flow.trace_to_data` records.
    Train it by maximum likelihood (``fit(flow, x)``) or by flow matching
    (``fit(flow, x, objective="flow-matching")``), on standardised data.

    Example:
        >>> flow = cnf(dim=2, hidden=(32, 32))
        >>> flow.log_prob(flow.sample(5, seed=0)).shape
        torch.Size([5])

    References:
        Grathwohl et al. (2019), "FFJORD: Free-form Continuous Dynamics for Scalable Reversible
        Generative Models", ICLR; Lipman et al. (2023), "Flow Matching for Generative
        Modeling", ICLR.
    """
    check_flow_dim(dim, minimum=1)
    check_widths(hidden)
    if divergence is None:
        divergence = "exact" if dim <= EXACT_MAX_DIM else "hutchinson"
    generator = torch.Generator().manual_seed(seed)
    transform = ContinuousFlow(
        dim, hidden, context=_transform_context(context, embedding), frequencies=frequencies,
        activation=activation, fourier=fourier, zero_init=zero_init, divergence=divergence,
        solver=solver, rtol=rtol, atol=atol, steps=steps, adjoint=adjoint, snapshots=snapshots,
        train_tol=train_tol, n_models=n_models, generator=generator, seed=seed)
    config = dict(builder="cnf", dim=dim, hidden=list(hidden), activation=activation,
                  frequencies=frequencies, fourier=fourier, zero_init=zero_init,
                  divergence=divergence, solver=solver, rtol=rtol, atol=atol, steps=steps,
                  adjoint=adjoint, snapshots=snapshots, train_tol=train_tol, context=context,
                  seed=seed)
    return _conditional_flow([transform], config, context, embedding, generator, n_models)


cnf.unsized_options = ("steps", "snapshots")  # solver counts, bounded by MAX_STEPS, not sizes


RECOMMENDED_MODEL = {"n_layers": 6, "hidden": (64, 64), "bins": 10, "bound": 4.0, "fourier": 3}
RECOMMENDED_FIT = {"batch_size": 256, "lr": 3e-3, "schedule": "cosine", "standardize": True}
RECOMMENDED_STEPS = 1000  # optimizer steps: 28 epochs of 10,000 points


def recommended(dim: int, seed: int = 0) -> Flow:
    """The recommended model: a Neural Spline Flow with 6 couplings, (64, 64) networks, 10 bins
    per coordinate and 3 octaves of Fourier features of the conditioner input
    (``RECOMMENDED_MODEL``). Train it with ``fit(flow, x, epochs=recommended_epochs(len(x)),
    **RECOMMENDED_FIT)``: batches of 256, Adam 3e-3 with a cosine schedule, standardised data,
    about ``RECOMMENDED_STEPS`` steps.

    Chosen by measurement (``benchmarks/RESULTS.md``, the ``limits`` experiment): on 10,000
    points it comes within 0.05 nats of the entropy on 11 of the 13 built-in distributions in
    under 30 s each on one core; the Fourier features halve the gap on sharp-edged shapes
    (checkerboard, spirals, rings) and cost at most 0.01 nats on smooth ones.
    """
    return nsf(dim, seed=seed, **RECOMMENDED_MODEL)


def recommended_epochs(
    n: int, val_fraction: float = 0.1, batch_size: int = RECOMMENDED_FIT["batch_size"],
    steps: int = RECOMMENDED_STEPS,
) -> int:
    """Epochs that give a model about ``steps`` (the recommended model's
    ``RECOMMENDED_STEPS``) optimizer steps on ``n`` points (of which ``val_fraction`` are held
    out): the budget is in steps, so small data sets get more epochs and large ones fewer."""
    check_positive_int(n, "n")
    check_positive_int(batch_size, "batch_size")
    train = max(1, n - round(val_fraction * n))
    steps_per_epoch = math.ceil(train / batch_size)
    return max(1, math.ceil(steps / steps_per_epoch))


BUILDERS: dict[str, Callable[..., Flow]] = {
    "realnvp": realnvp, "glow": glow, "nsf": nsf, "maf": maf, "cnf": cnf,
    "glow_image": glow_image, "realnvp_image": realnvp_image,
}
IMAGE_BUILDERS = ("glow_image", "realnvp_image")
"""Builders of image flows (``shape=(C, H, W)``, not ``dim``): trained by
:class:`densitylab.ImageFlow` or ``densitylab train IMAGES --model glow``, not as vector models."""


def build(builder: str, standardize: bool = False, mixture_base: int = 0, **config) -> Flow:
    """Build a flow by builder name, e.g. ``build("glow", dim=2, n_layers=3)``.

    ``standardize=True`` prepends a :class:`Standardize` transform (see :func:`standardized`);
    ``mixture_base=K`` gives it a Gaussian-mixture base of up to K components (see
    :func:`with_mixture_base`).
    """
    if builder not in BUILDERS:
        raise ValueError(f"unknown flow model {builder!r}; choose one of {sorted(BUILDERS)}")
    flow = BUILDERS[builder](**config)
    flow = with_mixture_base(flow, mixture_base) if mixture_base else flow
    return _with_standardize(flow) if standardize else flow


def with_mixture_base(flow: Flow, max_components: int = 10) -> Flow:
    """The same transforms on a :class:`GaussianMixtureBase` of up to ``max_components``
    components: training (:func:`densitylab.fit`) first fits it, components chosen by BIC, to
    the latent codes of the training data, so the flow starts as that Gaussian mixture and its
    transforms learn what the mixture misses. For multimodal data (clusters, classes)."""
    base = GaussianMixtureBase(flow.dim, max_components, flow.n_models)
    return Flow(list(flow.transforms), {**flow.config, "mixture_base": max_components},
                embedding=flow.embedding, base=base.to(dtype=flow.dtype, device=flow.device))


def standardized(flow: Flow) -> Flow:
    """The same flow behind a :class:`Standardize` transform (identity until fitted)."""
    if flow.config.get("standardize"):
        return flow
    return _with_standardize(flow)


def _with_standardize(flow: Flow) -> Flow:
    first = Standardize(flow.dim, flow.n_models).to(dtype=flow.dtype, device=flow.device)
    return Flow([first, *flow.transforms], {**flow.config, "standardize": True},
                embedding=flow.embedding, base=flow.base)


def stack(flows: Sequence[Flow]) -> Flow:
    """Stack flows of one architecture (seeds may differ) into one ``M``-model flow.

    The result computes all of them in one batched pass; :func:`unstack` takes them apart.
    """
    if not flows:
        raise ValueError("stack needs at least one flow")
    configs = [{k: v for k, v in f.config.items() if k != "seed"} for f in flows]
    if any(c != configs[0] for c in configs):
        raise ValueError("only flows of the same architecture can be stacked")
    stacked = build(**flows[0].config, n_models=sum(f.n_models for f in flows))
    stacked.to(dtype=flows[0].dtype, device=flows[0].device)
    states = [f.state_dict() for f in flows]
    merged = {key: _concat([s[key] for s in states]) for key in states[0]}
    stacked.load_state_dict(merged)
    stacked.config["seed"] = [seed for f in flows for seed in _as_list(f.config["seed"])]
    return stacked


def unstack(flow: Flow) -> list[Flow]:
    """Split an ``M``-model flow into ``M`` single flows (copies of the parameters)."""
    seeds = _as_list(flow.config["seed"])
    state = flow.state_dict()
    singles = []
    for m, seed in enumerate(seeds):
        single = build(**{**flow.config, "seed": seed}).to(dtype=flow.dtype, device=flow.device)
        single.load_state_dict({k: _slice(v, m, len(seeds)) for k, v in state.items()})
        singles.append(single)
    return singles


def _as_list(seed: int | list[int]) -> list[int]:
    return list(seed) if isinstance(seed, list) else [seed]


def _concat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Per-model tensors concatenate on their leading dimension; shared scalars stay."""
    if tensors[0].dim() == 0:
        return tensors[0].clone()
    return torch.cat(tensors, dim=0)


def _slice(tensor: torch.Tensor, m: int, n_models: int) -> torch.Tensor:
    """Model ``m``'s rows: a leading dimension of ``n_models * k`` holds ``k`` rows per model."""
    if tensor.dim() == 0:
        return tensor.clone()
    rows = tensor.shape[0] // n_models
    return tensor[m * rows : (m + 1) * rows].clone()
