"""The derivations the source documents ask for, as (heading, prose, LaTeX) steps.

Kept apart from the report's HTML so the mathematics reads as mathematics. One direction
throughout, the package's: ``f`` is the normalizing map ``to_latent`` (x -> z) and its inverse
``to_data`` (z -> x); :data:`CONVENTION` translates it to the coursework's generative f. The report
typesets each formula to SVG (:mod:`densitylab.plots.typeset`) and links every coursework task
to its derivation through :data:`ANCHORS` and :data:`TASKS`.
"""

from __future__ import annotations

import re

Step = tuple[str, list[tuple[str, str]]]  # heading, [(prose, latex), ...]

CONVENTION = (
    "Direction, once for the whole page: f maps data to latent, z = f(x), through layers "
    "z_k = f_k(z_(k-1)) from z_0 = x to z_K = z. In one line, for the coursework, whose flow "
    "maps z to x: its f is our f^-1 and its layer f_i our f_(K+1-i)^-1, while its coupling "
    "y = f(x) of Tasks 2-6 runs our way (its y is our z)."
)

DERIVATIONS: list[Step] = [
    (
        "Change of variables",
        [
            (CONVENTION, ""),
            ("A flow is an invertible map f from data x to a latent z with a simple density "
             "(here the standard normal). The density of x follows from counting how f "
             "stretches volume around x:",
             r"\log p_X(x) = \log p_Z(f(x)) + \log\left|\det \frac{\partial f(x)}{\partial x}\right|"),
        ],
    ),
    (
        "The affine coupling layer and its inverse",
        [
            ("Split the coordinates by a mask into a conditioning part a and a transformed part "
             "b. The coupling leaves a alone and scales and shifts b by amounts that depend "
             "only on a:",
             r"z_a = x_a,\qquad z_b = x_b \odot \exp(s(x_a)) + t(x_a)"),
            ("Because z_a equals x_a, the inverse can recompute s and t from the output and undo "
             "the affine map element by element:",
             r"x_a = z_a,\qquad x_b = (z_b - t(z_a)) \odot \exp(-s(z_a))"),
            ("This is why a coupling is invertible by construction: s and t are never inverted, "
             "only evaluated, so they can be any neural networks at all; and exp(s) > 0 means "
             "no coordinate is ever scaled to zero.", ""),
        ],
    ),
    (
        "Its Jacobian is triangular",
        [
            ("Order the coordinates as (a, b). z_a does not depend on x_b, and each z_b,j "
             "depends on x_b only through x_b,j:",
             r"\frac{\partial z}{\partial x} = \begin{pmatrix} I & 0 \\ \dfrac{\partial z_b}{\partial x_a} & \operatorname{diag}(\exp(s(x_a))) \end{pmatrix}"),
            ("The matrix is block lower-triangular, so its determinant is the product of its "
             "diagonal; the complicated block below the diagonal never has to be computed.", ""),
        ],
    ),
    (
        "Log-determinants of both directions",
        [
            ("For the normalizing direction x -> z:",
             r"\log\left|\det \frac{\partial z}{\partial x}\right| = \sum_j s_j(x_a)"),
            ("For the generative direction z -> x the Jacobian is the inverse matrix, so its "
             "log-determinant is the negative, evaluated at the same point:",
             r"\log\left|\det \frac{\partial x}{\partial z}\right| = -\sum_j s_j(z_a)"),
        ],
    ),
    (
        "Composition",
        [
            ("For z_1 = f_1(x) and z = f_2(z_1) (the normalizing direction, as everywhere on "
             "this page), the chain rule multiplies Jacobians and determinants of products "
             "multiply, so log-determinants add:",
             r"\log\left|\det \frac{\partial z}{\partial x}\right| = \log\left|\det \frac{\partial z}{\partial z_1}\right| + \log\left|\det \frac{\partial z_1}{\partial x}\right|"),
            ("A K-layer flow therefore sums K cheap terms; alternating the mask lets every "
             "coordinate be transformed as often as the others.",
             r"\log p(x) = \log \mathcal{N}(z_K; 0, I) + \sum_{k=1}^{K} \log\left|\det \frac{\partial z_k}{\partial z_{k-1}}\right|,\quad z_0 = x"),
        ],
    ),
    (
        "The triangular modification",
        [
            ("Replace the identity on the conditioning part by a learned lower-triangular "
             "matrix A with a positive diagonal, keeping s and t functions of the untouched x_a:",
             r"z_a = A\,x_a,\qquad z_b = x_b \odot \exp(s(x_a)) + t(x_a)"),
            ("The Jacobian keeps its block lower-triangular shape with A in the top-left block, "
             "so the log-determinant only gains the log of A's diagonal:",
             r"\frac{\partial z}{\partial x} = \begin{pmatrix} A & 0 \\ \dfrac{\partial z_b}{\partial x_a} & \operatorname{diag}(\exp(s(x_a))) \end{pmatrix},\qquad \log\left|\det\frac{\partial z}{\partial x}\right| = \sum_i \log A_{ii} + \sum_j s_j(x_a)"),
            ("The inverse first solves the triangular system A x_a = z_a (forward substitution, "
             "O(D_a^2) per layer), then proceeds as the plain coupling. A mixes the conditioning "
             "coordinates, which the plain coupling never does; its off-diagonal entries, which "
             "do the mixing, do not enter the determinant at all. In 2-D, x_a is a single "
             "coordinate and A is one positive number; the triangular-coupling study measures "
             "the modification in 4 and 8 dimensions, with its cost.", ""),
        ],
    ),
    (
        "Glow's extra layers",
        [
            ("ActNorm scales and shifts each coordinate, z = (x + b) ⊙ exp(u), so its "
             "log-determinant is the sum of u. The invertible linear layer z = W x (Glow's "
             "1x1 convolution, for vectors) is kept as an LU factorisation: P a permutation "
             "fixed at initialisation, L unit lower-triangular (ones on its diagonal), U "
             "strictly upper-triangular (zeros on its diagonal), r a vector of signs (+1 or "
             "-1) fixed at initialisation, and v the learned log-magnitudes of the diagonal:",
             r"W = P\,L\,(U + \operatorname{diag}(r \odot e^{v})),\qquad \log|\det W| = \sum_i v_i"),
            ("Only L, U and v are learned; the determinant costs O(D) and the inverse two "
             "triangular solves. On images the same W mixes the channels at every pixel (a "
             "1x1 convolution), and a multi-scale architecture factors out half of the "
             "dimensions after each block, so later, costlier steps work on fewer of them.", ""),
        ],
    ),
    (
        "Why a flow leaks between modes",
        [
            ("With a Gaussian base, a flow's density is positive everywhere, so some mass "
             "between two modes is unavoidable; how much is set by how far the Jacobian can "
             "shrink there:",
             r"p(x) = \mathcal{N}(f(x); 0, I)\,\left|\det \frac{\partial f(x)}{\partial x}\right|"),
            ("To make p tiny on a gap between modes, f must either send the whole gap into "
             "the Gaussian's far tail, or make |det df/dx| tiny there while the modes on both "
             "sides keep it large. A coupling's determinant is exp of a sum of s(x_a), whose "
             "networks are smooth and trained at finite size, so |det| cannot jump between "
             "neighbouring points: the gap is thinned, never emptied. The sections measure "
             "how much is left as the share of samples off the support.", ""),
        ],
    ),
    (
        "Monte-Carlo log-likelihood",
        [
            ("The quantity a flow is trained and judged on is an expectation over the unknown "
             "law p, estimated by an average over samples of it (Monte Carlo). On N points "
             "x_n ~ p the mean negative log-likelihood is unbiased for the cross-entropy, "
             "whose excess over the entropy H(p) is the KL divergence:",
             r"\widehat{\mathrm{NLL}} = -\frac{1}{N}\sum_{n=1}^{N} \log q(x_n) \;\to\; \mathbb{E}_p[-\log q(x)] = H(p) + \mathrm{KL}(p \,\|\, q)"),
            ("Training minimises this estimate on minibatches (a stochastic gradient of the "
             "same expectation); the report evaluates it on 20,000 fresh points of each toy "
             "law with its standard error s/sqrt(N), and reports KL(true || model) = NLL - "
             "H(p), which the exact entropy of each toy law makes possible. Where log q is "
             "itself an integral (the VAE), it is estimated by Monte Carlo over the latent "
             "too, with importance sampling:",
             r"\log q(x) \approx \log \frac{1}{S}\sum_{s=1}^{S} \frac{q(x \mid z_s)\,p(z_s)}{r(z_s \mid x)},\qquad z_s \sim r(z \mid x)"),
        ],
    ),
    (
        "Continuous flows",
        [
            ("A continuous normalizing flow replaces the K layers by an ordinary differential "
             "equation dz/dt = v(z, t) (a Neural ODE); the log-determinant becomes the integral "
             "of the trace of the velocity's Jacobian, so v needs no triangular structure:",
             r"\log p_X(x) = \log p_Z(z(1)) + \int_0^1 \operatorname{tr}\frac{\partial v(z(t), t)}{\partial z}\,dt,\qquad z(0) = x"),
        ],
    ),
    (
        "Kernel density estimation",
        [
            ("With a bandwidth matrix H and a product of standard normal kernels K, the estimate "
             "is an average of N bumps, each of covariance H H^T:",
             r"\hat f(x) = \frac{1}{N\,|\det H|} \sum_{i=1}^{N} K(H^{-1}(x - x_i)),\qquad K(u) = \prod_j \frac{e^{-u_j^2/2}}{\sqrt{2\pi}}"),
            ("Small h follows the sample closely and is noisy (high variance); large h is smooth "
             "but blurs real structure (high bias). The KDE study measures that trade-off.", ""),
        ],
    ),
]


def anchor(heading: str) -> str:
    """The HTML id of a derivation: ``derivation-`` and its heading in lower-case words."""
    return "derivation-" + re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-")


# which derivation (by heading) answers which task of the source documents
ANCHORS: dict[str, str] = {heading: anchor(heading) for heading, _ in DERIVATIONS}
DIAGRAMS: dict[str, str] = {  # heading -> figure shown with it
    "The affine coupling layer and its inverse": "coupling-inverse",
}
# heading -> (experiment name, what it measures): linked when that study is in the build
STUDIES: dict[str, tuple[str, str]] = {
    "Glow's extra layers": ("images", "1x1 convolutions and the multi-scale design on images, "
                            "and the claim that RealNVP needs fewer coupling layers"),
    "Continuous flows": ("continuous-flows", "continuous normalizing flows on the toy laws"),
}

# Tasks 6 and 8 of the flow coursework, as code (the package's direction: layers map x -> z)
CODE: dict[str, str] = {
    "The affine coupling layer and its inverse": """\
def coupling_to_latent(x, mask, s_net, t_net):   # Task 6, forward: x -> z
    x_a = x * mask                                # the conditioning part, unchanged
    s, t = s_net(x_a) * (1 - mask), t_net(x_a) * (1 - mask)
    z = x_a + (1 - mask) * (x * torch.exp(s) + t)
    return z, s.sum(-1)                           # log|det dz/dx| = sum of s

def coupling_to_data(z, mask, s_net, t_net):     # Task 6, inverse: z -> x
    z_a = z * mask                                # equals x_a: s and t can be recomputed
    s, t = s_net(z_a) * (1 - mask), t_net(z_a) * (1 - mask)
    x = z_a + (1 - mask) * (z - t) * torch.exp(-s)
    return x, -s.sum(-1)                          # log|det dx/dz|""",
    "Composition": """\
def log_prob(x, layers):                          # Task 8: log p(x)
    log_det = 0
    for layer in layers:                          # x = z_0 -> z_1 -> ... -> z_K = z
        x, ld = layer.to_latent(x)
        log_det = log_det + ld
    base = -0.5 * (x**2).sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)
    return base + log_det

def sample(n, layers, dim):                       # Task 8: x ~ p(x), with log p(x)
    z = torch.randn(n, dim)
    log_p = -0.5 * (z**2).sum(-1) - 0.5 * dim * math.log(2 * math.pi)
    for layer in reversed(layers):                # z_K -> ... -> z_0 = x
        z, ld = layer.to_data(z)
        log_p = log_p - ld
    return z, log_p

def sample_each_step(n, layers, dim):             # Task 8: samples after every layer
    z = torch.randn(n, dim)
    steps = [z]                                   # the prior first: z_K
    for layer in reversed(layers):                # z_(K-1), ..., z_0 = x
        z, _ = layer.to_data(z)
        steps.append(z)
    return steps                                  # the data last""",
}

# (source document, task, what it asks, where the page answers it: "#id")
TASKS: list[tuple[str, str, str, str]] = [
    ("KDE coursework", "Part I, Task 1", "draw N=10000 samples of the three KDE laws",
     "#datasets"),
    ("KDE coursework", "Part I, Task 2", "a KDE with a separable Gaussian kernel",
     "#" + anchor("Kernel density estimation")),
    ("KDE coursework", "Part I, Task 3", "true against estimated density for h = 0.1, 0.5, 1",
     "#kde-bandwidth"),
    ("KDE coursework", "Part I, Task 4", "which law is easiest / hardest, and why",
     "#kde-bandwidth"),
    ("flow coursework", "Part II, Task 1", "draw N=1000 samples of the four toy laws",
     "#datasets"),
    ("flow coursework", "Task 2", "the inverse of the coupling, as a computational graph",
     "#" + anchor("The affine coupling layer and its inverse")),
    ("flow coursework", "Task 3", "the Jacobian and its structure",
     "#" + anchor("Its Jacobian is triangular")),
    ("flow coursework", "Tasks 4 and 5", "log-determinants of the layer and its inverse",
     "#" + anchor("Log-determinants of both directions")),
    ("flow coursework", "Task 7", "log-determinant of a composition",
     "#" + anchor("Composition")),
    ("flow coursework", "Task 9", "K=4 flows on four laws: density and layers",
     "#flows-per-dataset"),
    ("flow coursework", "Task 10", "depth K=2 against K=4", "#depth"),
    ("flow coursework", "Task 11", "N=1500 against N=3000", "#data-size"),
    ("flow coursework", "Task 12", "3 against 7 rotated Gaussians", "#complexity"),
    ("Jacobian write-up", "Problem 1", "the change of variables and the coupling's Jacobian",
     "#" + anchor("Change of variables")),
    ("Jacobian write-up", "modification z_a = A x_a", "its Jacobian, the determinant, the "
     "synthesis cost and the richness of samples",
     "#" + anchor("The triangular modification")),
    ("Jacobian write-up", "its three questions, measured", "the modification in D = 4 and 8: "
     "likelihood, determinant, cost, samples", "#triangular-coupling"),
    ("Jacobian write-up", "Problem 2", "1, 3, 5 layers with one hidden layer; hidden size",
     "#layers-1-3-5"),
    ("flow-architecture write-up", "deliverables", "z scatter, layers, which data set is "
     "easier, hidden size", "#layers-1-3-5"),
    ("coupling-layers project", "core tasks", "at least four couplings on the checkerboard",
     "#checkerboard"),
    ("coupling-layers project", "report", "log-det derivation and why a coupling is invertible",
     "#" + anchor("The affine coupling layer and its inverse")),
    ("coupling-layers project", "stretch goals", "Glow's layers; NumPy against PyTorch",
     "#numpy-vs-torch"),
    ("RealNVP/Glow project", "evaluation", "NLL curves, samples, convergence, diversity",
     "#realnvp-vs-glow"),
    ("RealNVP/Glow project", "motivation", "flows against GANs and VAEs",
     "#flows-vs-baselines"),
    ("flow coursework", "Tasks 6 and 8", "coupling forward / inverse and log-probability, "
     "as code", "#" + anchor("The affine coupling layer and its inverse")),
    ("coupling-layers project", "key concepts", "Monte-Carlo log-likelihood",
     "#" + anchor("Monte-Carlo log-likelihood")),
    ("RealNVP/Glow project", "architecture", "invertible (1x1) convolutions, multi-scale "
     "features", "#" + anchor("Glow's extra layers")),
    ("RealNVP/Glow project", "claim", "RealNVP needs fewer coupling layers", "#images"),
    ("flow coursework", "conclusion", "continuous normalizing flows (Neural ODEs)",
     "#continuous-flows"),
]
