"""The derivations the source documents ask for, as (heading, prose, LaTeX) steps.

Kept apart from the report's HTML so the mathematics reads as mathematics. Direction follows
the package: ``f`` is ``to_latent`` (x -> z) and its inverse ``to_data`` (z -> x).
"""

from __future__ import annotations

Step = tuple[str, list[tuple[str, str]]]  # heading, [(prose, latex), ...]

DERIVATIONS: list[Step] = [
    (
        "Change of variables",
        [
            ("A flow is an invertible map f from data x to a latent z with a simple density "
             "(here the standard normal). The density of x follows from counting how f "
             "stretches volume around x:",
             r"\log p_X(x) = \log p_Z\big(f(x)\big) + \log\left|\det \frac{\partial f(x)}{\partial x}\right|"),
        ],
    ),
    (
        "The affine coupling layer and its inverse",
        [
            ("Split the coordinates by a mask into a conditioning part a and a transformed part "
             "b. The coupling leaves a alone and scales and shifts b by amounts that depend "
             "only on a:",
             r"z_a = x_a,\qquad z_b = x_b \odot \exp\big(s(x_a)\big) + t(x_a)"),
            ("Because z_a equals x_a, the inverse can recompute s and t from the output and undo "
             "the affine map element by element:",
             r"x_a = z_a,\qquad x_b = \big(z_b - t(z_a)\big) \odot \exp\big(-s(z_a)\big)"),
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
             r"\frac{\partial z}{\partial x} = \begin{pmatrix} I & 0 \\ \dfrac{\partial z_b}{\partial x_a} & \operatorname{diag}\big(\exp(s(x_a))\big) \end{pmatrix}"),
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
            ("For y = f_1(z) and x = f_2(y), the chain rule multiplies Jacobians and "
             "determinants of products multiply, so log-determinants add:",
             r"\log\left|\det \frac{\partial x}{\partial z}\right| = \log\left|\det \frac{\partial x}{\partial y}\right| + \log\left|\det \frac{\partial y}{\partial z}\right|"),
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
             r"z_a = A\,x_a,\qquad z_b = x_b \odot \exp\big(s(x_a)\big) + t(x_a)"),
            ("The Jacobian keeps its block lower-triangular shape with A in the top-left block, "
             "so the log-determinant only gains the log of A's diagonal:",
             r"\frac{\partial z}{\partial x} = \begin{pmatrix} A & 0 \\ \dfrac{\partial z_b}{\partial x_a} & \operatorname{diag}\big(\exp(s(x_a))\big) \end{pmatrix},\qquad \log\left|\det\frac{\partial z}{\partial x}\right| = \sum_i \log A_{ii} + \sum_j s_j(x_a)"),
            ("The inverse first solves the triangular system A x_a = z_a (forward substitution, "
             "O(D_a^2)), then proceeds as the plain coupling. A mixes the conditioning "
             "coordinates, which the plain coupling never does, at a cost that stays small.", ""),
        ],
    ),
    (
        "Glow's extra layers",
        [
            ("ActNorm scales and shifts each coordinate, z = (x + b) ⊙ exp(u), so its "
             "log-determinant is the sum of u. The invertible linear layer z = W x is kept "
             "as an LU factorisation with a fixed permutation P:",
             r"W = P\,L\,\big(U + \operatorname{diag}(\sigma \odot e^{v})\big),\qquad \log|\det W| = \sum_i v_i"),
        ],
    ),
    (
        "Kernel density estimation",
        [
            ("With a bandwidth matrix H and a product of standard normal kernels K, the estimate "
             "is an average of N bumps, each of covariance H H^T:",
             r"\hat f(x) = \frac{1}{N\,|\det H|} \sum_{i=1}^{N} K\big(H^{-1}(x - x_i)\big),\qquad K(u) = \prod_j \frac{e^{-u_j^2/2}}{\sqrt{2\pi}}"),
            ("Small h follows the sample closely and is noisy (high variance); large h is smooth "
             "but blurs real structure (high bias). The KDE study measures that trade-off.", ""),
        ],
    ),
]
