"""Invertible transforms with exact log-determinants.

Direction, stated once for the whole package: ``to_latent`` maps data ``x`` to latent ``z``
(the normalizing direction) and ``to_data`` maps ``z`` back to ``x`` (the generative
direction). Each returns ``(output, logabsdet)`` where ``logabsdet`` is ``log|det J|`` of the
direction it computes, so the two are negatives of each other at corresponding points.

Shapes: a transform built for one model takes ``(n, D)`` and returns ``(n, D)``, ``(n,)``. A
transform holding a stack of ``M`` independent models (``n_models=M``; every parameter carries
a leading dimension ``M``) takes ``(M, n, D)`` (or ``(n, D)``, shared by all models) and returns
``(M, n, D)``, ``(M, n)``. Internally everything is computed on ``(M, n, D)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from densitylab._validation import column_statistics
from densitylab.flows.nets import StackedMLP

SCALINGS = ("factor", "tanh")


def as_input(x: Tensor, like: Tensor, dim: int, beyond_range: bool = False,
             stacked: bool = True) -> Tensor:
    """Check a public input (tensor or array) and return it as a tensor like ``like``:
    ``(n, dim)``, or also ``(M, n, dim)`` for ``stacked`` models.

    Finite values too large for ``like``'s dtype (1e300 for a float32 flow) are an error,
    unless ``beyond_range``: then they become infinite, for the caller to handle.
    """
    x = torch.as_tensor(x, device=like.device)
    if x.dim() not in ((2, 3) if stacked else (2,)) or x.shape[-1] != dim:
        shapes = f"(n, {dim}) or (M, n, {dim})" if stacked else f"(n, {dim})"
        raise ValueError(f"input must have shape {shapes}, got {tuple(x.shape)}")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise ValueError("input contains NaN or infinite values")
    x = x.to(like.dtype)
    if not beyond_range and not torch.isfinite(x).all():
        raise ValueError(f"input values exceed the range of this flow's dtype ({like.dtype})")
    return x


class Transform(nn.Module, ABC):
    """Base class: subclasses implement ``_to_latent`` and ``_to_data`` on ``(M, n, D)``.

    A conditional transform (``context_features = C > 0``) also reads a context ``(M, n, C)``
    (one row per point) in its conditioner; the others accept and ignore it.
    """

    context_features = 0

    def __init__(self, dim: int, n_models: int = 1) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.n_models = n_models
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x -> z; returns ``(z, log|det dz/dx|)``."""
        return self._public(self._to_latent, x, context)

    def to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z -> x; returns ``(x, log|det dx/dz|)``."""
        return self._public(self._to_data, z, context)

    def _public(self, method, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        x = as_input(x, self._anchor, self.dim)
        squeeze = x.dim() == 2 and self.n_models == 1
        c = as_context(context, self.context_features, x, self._anchor, self.n_models)
        out, logdet = method(lift(x, self.n_models), c)
        return (out[0], logdet[0]) if squeeze else (out, logdet)

    @abstractmethod
    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x -> z on ``(M, n, D)``."""

    @abstractmethod
    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z -> x on ``(M, n, D)``."""

    def _trace_to_data(self, z: Tensor, context: Tensor | None = None) -> list[Tensor]:
        """The points this transform passes on the way z -> x, its output last: one for a
        layer, snapshots along time for a continuous flow."""
        return [self._to_data(z, context)[0]]

    def _trace_to_latent(self, x: Tensor, context: Tensor | None = None) -> list[Tensor]:
        """The points this transform passes on the way x -> z, its output last."""
        return [self._to_latent(x, context)[0]]


def check_context(context: int) -> int:
    """The number of context columns a conditional transform reads (0: not conditional)."""
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"context must be a non-negative integer, got {context!r}")
    return context


def as_context(
    context: Tensor | None, features: int, x: Tensor, like: Tensor, n_models: int
) -> Tensor | None:
    """Check a public context against a transform or flow that reads ``features`` columns:
    one row per point of ``x``, lifted to ``(M, n, C)``; ``None`` where none is read."""
    if features == 0:
        if context is not None:
            raise ValueError("this flow is not conditional: it takes no context")
        return None
    if context is None:
        raise ValueError(f"this flow is conditional: pass a context of {features} column(s)")
    c = as_input(context, like, features)
    if c.shape[-2] != x.shape[-2]:
        raise ValueError(f"the context has {c.shape[-2]} rows for {x.shape[-2]} points")
    return lift(c, n_models)


def with_context(x: Tensor, context: Tensor | None) -> Tensor:
    """A conditioner's input: ``x`` with the context columns beside it."""
    return x if context is None else torch.cat([x, context], dim=-1)


def lift(x: Tensor, n_models: int) -> Tensor:
    """View ``(n, D)`` as ``(M, n, D)`` shared by all models; pass ``(M, n, D)`` through."""
    if x.dim() == 2:
        return x.unsqueeze(0).expand(n_models, -1, -1)
    if x.shape[0] != n_models:
        raise ValueError(f"input holds {x.shape[0]} model slices, the transform {n_models}")
    return x


class Coupling(Transform):
    """Base of coupling layers: a boolean mask splits ``x`` into the conditioning part ``x_a``
    (``True``), which passes unchanged, and the part ``x_b`` transformed given ``x_a``."""

    def __init__(self, mask: Sequence[bool] | Tensor, n_models: int = 1) -> None:
        mask = torch.as_tensor(mask, dtype=torch.bool, device="cpu")
        super().__init__(len(mask), n_models)
        if mask.all() or not mask.any():
            raise ValueError("a coupling mask needs both conditioning and transformed coordinates")
        cond, trans = mask.nonzero().flatten(), (~mask).nonzero().flatten()
        # index buffers follow .to(device) but are rebuilt from the mask, not saved
        self.register_buffer("cond_idx", cond, persistent=False)
        self.register_buffer("trans_idx", trans, persistent=False)
        self.register_buffer("merge_idx", torch.argsort(torch.cat([cond, trans])), persistent=False)
        # the usual masks are two contiguous blocks: then slicing replaces gathering (faster)
        self.blocks = _as_blocks(mask)

    def _conditioner(self, n_nets: int, out_features: int, context: int, **network) -> None:
        """The network(s) ``net`` computing the transform of ``x_b`` from ``x_a`` and, for a
        conditional flow, ``context`` more columns; ``network``: :class:`StackedMLP`'s
        ``hidden``, ``activation``, ``zero_init_output``, ``generator`` and ``fourier``."""
        self.context_features = check_context(context)
        self.net = StackedMLP(n_nets=n_nets, in_features=len(self.cond_idx) + context,
                              out_features=out_features, **network)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.blocks is None:
            return x.index_select(-1, self.cond_idx), x.index_select(-1, self.trans_idx)
        first, second = x.split(self.blocks[1], dim=-1)
        return (first, second) if self.blocks[0] else (second, first)

    def _merge(self, a: Tensor, b: Tensor) -> Tensor:
        if self.blocks is None:
            return torch.cat([a, b], dim=-1).index_select(-1, self.merge_idx)
        return torch.cat([a, b] if self.blocks[0] else [b, a], dim=-1)


class AffineCoupling(Coupling):
    """Affine coupling (RealNVP): the masked part passes unchanged, the rest is scaled and shifted.

    ``to_latent``: ``z_a = x_a``, ``z_b = x_b * exp(s(x_a)) + t(x_a)``, log-det ``sum(s)``;
    ``to_data``: ``x_b = (z_b - t(z_a)) * exp(-s(z_a))``, log-det ``-sum(s)``. The Jacobian is
    triangular (identity block, zero block, diagonal ``exp(s)``), hence the cheap log-det, and
    the inverse never needs to invert ``s`` or ``t``, hence invertible by construction.

    Args:
        mask: length-``D`` booleans; ``True`` marks the conditioning coordinates ``x_a``.
        hidden: widths of the hidden layers of each conditioner network.
        activation: ``"leaky_relu"``, ``"relu"`` or ``"tanh"``.
        separate_nets: separate s and t networks (the coursework) or one network with both outputs.
        scale: ``"factor"`` multiplies the raw scale by a learnable per-dimension factor
            initialised to 0 (the coursework); ``"tanh"`` bounds it as ``factor * tanh(s_raw)``
            with the factor initialised to 1.
        zero_init: zero the output layer so the coupling starts as the identity.
        fourier: octaves of Fourier features of ``x_a`` fed to the networks (0: none); helps
            them draw sharp edges.
        context: columns of a context ``c`` fed to the networks beside ``x_a`` (0: none), for
            a conditional density ``p(x | c)``.

    References:
        Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP", ICLR.
    """

    def __init__(
        self,
        mask: Sequence[bool] | Tensor,
        hidden: Sequence[int] = (32, 32),
        activation: str = "leaky_relu",
        separate_nets: bool = True,
        scale: str = "factor",
        zero_init: bool = False,
        n_models: int = 1,
        generator: torch.Generator | None = None,
        fourier: int = 0,
        context: int = 0,
    ) -> None:
        super().__init__(mask, n_models)
        if scale not in SCALINGS:
            raise ValueError(f"unknown scale {scale!r}; choose one of {list(SCALINGS)}")
        self.separate_nets = separate_nets
        self.scale = scale
        n_b = len(self.trans_idx)
        self._conditioner(n_models * (2 if separate_nets else 1),
                          n_b if separate_nets else 2 * n_b, context, hidden=hidden,
                          activation=activation, zero_init_output=zero_init, generator=generator,
                          fourier=fourier)
        start = 0.0 if scale == "factor" else 1.0
        self.scale_factor = nn.Parameter(torch.full((n_models, 1, n_b), start))

    def scale_and_shift(self, x_a: Tensor, context: Tensor | None = None
                        ) -> tuple[Tensor, Tensor]:
        """``s(x_a, c), t(x_a, c)`` for ``x_a`` of shape ``(M, n, D_a)``, each ``(M, n, D_b)``."""
        x_a = with_context(x_a, context)
        m, n, n_a = x_a.shape
        if self.separate_nets:
            both = x_a.unsqueeze(1).expand(m, 2, n, n_a).reshape(2 * m, n, n_a)
            raw_s, t = self.net(both).view(m, 2, n, -1).unbind(1)
        else:
            raw_s, t = self.net(x_a).chunk(2, dim=-1)
        if self.scale == "tanh":
            raw_s = torch.tanh(raw_s)
        return self.scale_factor * raw_s, t

    def _pass_to_latent(self, x_a: Tensor) -> tuple[Tensor, Tensor | None]:
        """The conditioning part's own map, x_a -> z_a (identity here)."""
        return x_a, None

    def _pass_to_data(self, z_a: Tensor) -> Tensor:
        return z_a

    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x_a, x_b = self._split(x)
        s, t = self.scale_and_shift(x_a, context)
        z_a, logdet_a = self._pass_to_latent(x_a)
        logdet = s.sum(-1) if logdet_a is None else s.sum(-1) + logdet_a
        return self._merge(z_a, x_b * torch.exp(s) + t), logdet

    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        z_a, z_b = self._split(z)
        x_a = self._pass_to_data(z_a)
        s, t = self.scale_and_shift(x_a, context)
        _, logdet_a = self._pass_to_latent(x_a)
        logdet = -s.sum(-1) if logdet_a is None else -(s.sum(-1) + logdet_a)
        return self._merge(x_a, (z_b - t) * torch.exp(-s)), logdet


def _as_blocks(mask: Tensor) -> tuple[bool, list[int]] | None:
    """``(conditioning_first, [first_width, second_width])`` if the mask is two contiguous
    blocks, else ``None``."""
    flips = int((mask[1:] != mask[:-1]).sum())
    if flips != 1:
        return None
    first = int(mask.long().argmin() if mask[0] else mask.long().argmax())
    return bool(mask[0]), [first, len(mask) - first]


class TriangularCoupling(AffineCoupling):
    """Affine coupling whose conditioning part is also mixed: ``z_a = A x_a``.

    ``A`` is lower-triangular with a positive diagonal ``exp(d)`` (learned, starting at the
    identity), so the full Jacobian stays block lower-triangular with blocks ``A`` and
    ``diag(exp(s))``: log-det ``sum(d) + sum(s)``. ``s`` and ``t`` still read the untouched
    ``x_a``, so the inverse first solves ``A x_a = z_a`` (a triangular solve), then proceeds as
    the plain coupling.
    """

    def __init__(self, mask: Sequence[bool] | Tensor, **kwargs) -> None:
        super().__init__(mask, **kwargs)
        n_a = len(self.cond_idx)
        self.lower = nn.Parameter(torch.zeros(self.n_models, n_a * (n_a - 1) // 2))
        self.log_diag = nn.Parameter(torch.zeros(self.n_models, n_a))

    def matrix(self) -> Tensor:
        """``A`` of shape ``(M, D_a, D_a)``."""
        lower = strictly_triangular(self.lower, self.log_diag.shape[-1])
        return lower + torch.diag_embed(torch.exp(self.log_diag))

    def _pass_to_latent(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        logdet = self.log_diag.sum(-1, keepdim=True).expand(x_a.shape[0], x_a.shape[1])
        return x_a @ self.matrix().transpose(-1, -2), logdet

    def _pass_to_data(self, z_a: Tensor) -> Tensor:
        solved = torch.linalg.solve_triangular(self.matrix(), z_a.transpose(-1, -2), upper=False)
        return solved.transpose(-1, -2)


def strictly_triangular(entries: Tensor, size: int, upper: bool = False) -> Tensor:
    """``(M, size, size)`` matrix with ``entries`` ``(M, size*(size-1)/2)`` below (or above)
    the diagonal and zeros elsewhere: only live entries are parameters."""
    rows, cols = torch.tril_indices(size, size, offset=-1, device=entries.device)
    if upper:
        rows, cols = cols, rows
    matrix = entries.new_zeros(entries.shape[0], size, size)
    matrix[:, rows, cols] = entries
    return matrix


def strictly_triangular_entries(matrix: Tensor, upper: bool = False) -> Tensor:
    """Inverse of :func:`strictly_triangular`: the live entries of ``(M, size, size)``."""
    rows, cols = torch.tril_indices(matrix.shape[-1], matrix.shape[-1], offset=-1)
    if upper:
        rows, cols = cols, rows
    return matrix[:, rows, cols]


class Permutation(Transform):
    """A fixed permutation of the coordinates (log-det 0): reversal, or random from a seed."""

    def __init__(self, permutation: Tensor) -> None:
        permutation = torch.as_tensor(permutation, dtype=torch.long)
        n_models, dim = (1, len(permutation)) if permutation.dim() == 1 else permutation.shape
        super().__init__(dim, n_models)
        self.register_buffer("perm", permutation.reshape(n_models, 1, dim).clone())
        self.register_buffer("inverse_perm", torch.argsort(self.perm, dim=-1))

    @classmethod
    def reverse(cls, dim: int, n_models: int = 1) -> Permutation:
        return cls(torch.arange(dim - 1, -1, -1).repeat(n_models, 1))

    @classmethod
    def random(
        cls, dim: int, n_models: int = 1, generator: torch.Generator | None = None
    ) -> Permutation:
        return cls(torch.stack([torch.randperm(dim, generator=generator) for _ in range(n_models)]))

    def _permute(self, x: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        out = x.gather(-1, index.expand_as(x))
        return out, x.new_zeros(x.shape[:-1])

    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._permute(x, self.perm)

    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._permute(z, self.inverse_perm)


class Standardize(Transform):
    """Fixed standardisation ``z = (x - mean) / std``, fitted once on training data.

    Training on standardised data is a change of units; putting this map inside the flow
    keeps its log-determinant ``-sum(log std)`` in every density, so ``log_prob`` is always
    in the user's own units. Its statistics are buffers: saved, never trained.
    """

    def __init__(self, dim: int, n_models: int = 1) -> None:
        super().__init__(dim, n_models)
        self.register_buffer("mean", torch.zeros(n_models, 1, dim))
        self.register_buffer("log_std", torch.zeros(n_models, 1, dim))

    @torch.no_grad()
    def fit(self, x: Tensor) -> Standardize:
        """Set mean and standard deviation per model from ``x`` of shape ``(M, n, D)``.

        The statistics are taken in float64 without any clamp, so data of any scale the dtype
        holds (1e-30 to 1e30 in float32) keep their exact units; a constant column is an error.
        """
        mean, std = column_statistics(x, dim=1)
        self.mean.copy_(mean)
        self.log_std.copy_(torch.log(std))
        return self

    def _logdet(self, x: Tensor) -> Tensor:
        return self.log_std.sum(-1).expand(x.shape[0], x.shape[1])

    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return (x - self.mean) * torch.exp(-self.log_std), -self._logdet(x)

    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z * torch.exp(self.log_std) + self.mean, self._logdet(z)


def _identity(tensor: Tensor) -> Tensor:
    return tensor


class ActNorm(Transform):
    """Per-coordinate affine normalisation ``z = (x + bias) * exp(log_scale)`` (Glow).

    Data-dependent initialisation: the first ``to_latent`` call in training mode sets bias and
    scale so that batch has zero mean and unit variance per coordinate. Whether that happened
    is the buffer ``initialized``, so a saved and reloaded model keeps its normalisation.

    References:
        Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions".
    """

    def __init__(self, dim: int, n_models: int = 1) -> None:
        super().__init__(dim, n_models)
        self.log_scale = nn.Parameter(torch.zeros(n_models, 1, dim))
        self.bias = nn.Parameter(torch.zeros(n_models, 1, dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        # sums the statistics over whatever holds the rest of the batch; the training loop
        # sets it under data-parallel training, where each process sees only its shard
        self.sum_statistics: Callable[[Tensor], Tensor] = _identity

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set bias and scale from a batch ``(M, n, D)``: zero mean, unit variance.

        Under data-parallel training the statistics are summed over all processes, so every
        process gets the initialisation a single process would compute from the whole batch.
        """
        total = self.sum_statistics
        count = total(torch.tensor(float(x.shape[1]), dtype=x.dtype, device=x.device))
        mean = total(x.sum(dim=1, keepdim=True)) / count
        squares = total((x - mean).square().sum(dim=1, keepdim=True))
        std = (squares / (count - 1)).sqrt()
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std.clamp_min(1e-6)))
        self.initialized.fill_(True)

    def _logdet(self, x: Tensor) -> Tensor:
        return self.log_scale.sum(-1).expand(x.shape[0], x.shape[1])

    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.training and not self.initialized:
            self.initialize(x)
        return (x + self.bias) * torch.exp(self.log_scale), self._logdet(x)

    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return z * torch.exp(-self.log_scale) - self.bias, -self._logdet(z)


class InvertibleLinear(Transform):
    """Glow's invertible 1x1 convolution for vectors: ``z = W x``, LU-parameterised.

    ``W = P L (U + diag(sign * exp(log_s)))`` with ``P`` a fixed permutation, ``L`` unit
    lower-triangular and ``U`` strictly upper-triangular, so ``log|det W| = sum(log_s)`` costs
    O(D) and the inverse is two triangular solves. Starts at a random rotation.

    References:
        Kingma & Dhariwal (2018), "Glow: Generative Flow with Invertible 1x1 Convolutions".
    """

    def __init__(
        self, dim: int, n_models: int = 1, generator: torch.Generator | None = None
    ) -> None:
        super().__init__(dim, n_models)
        gaussian = torch.randn(n_models, dim, dim, generator=generator, dtype=torch.float64)
        rotation, _ = torch.linalg.qr(gaussian)
        perm, lower, upper = torch.linalg.lu(rotation)
        diagonal = torch.diagonal(upper, dim1=-2, dim2=-1)
        self.register_buffer("perm", perm.float())
        self.register_buffer("sign", torch.sign(diagonal).float())
        self.lower = nn.Parameter(strictly_triangular_entries(lower).float())
        self.upper = nn.Parameter(strictly_triangular_entries(upper, upper=True).float())
        self.log_s = nn.Parameter(torch.log(diagonal.abs()).float())

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.dim, dtype=self.lower.dtype, device=self.lower.device)
        lower = strictly_triangular(self.lower, self.dim) + eye
        diagonal = torch.diag_embed(self.sign * torch.exp(self.log_s))
        upper = strictly_triangular(self.upper, self.dim, upper=True) + diagonal
        return lower, upper

    def weight(self) -> Tensor:
        """``W`` of shape ``(M, D, D)``."""
        lower, upper = self._factors()
        return self.perm @ lower @ upper

    def _logdet(self, x: Tensor) -> Tensor:
        return self.log_s.sum(-1, keepdim=True).expand(x.shape[0], x.shape[1])

    def _to_latent(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x @ self.weight().transpose(-1, -2), self._logdet(x)

    def _to_data(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        lower, upper = self._factors()
        rhs = self.perm.transpose(-1, -2) @ z.transpose(-1, -2)
        y = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
        x = torch.linalg.solve_triangular(upper, y, upper=True)
        return x.transpose(-1, -2), -self._logdet(z)
