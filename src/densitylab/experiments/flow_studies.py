"""The flow studies of the source documents, as data: which runs, which figures, which findings."""

from __future__ import annotations

from densitylab.experiments.findings import (
    Metrics,
    describe,
    easiest_and_hardest,
    overfit,
    pairwise,
    ranked,
)
from densitylab.experiments.spec import Budget, Data, FlowExperiment, Model, Run

COURSEWORK = Model("realnvp", layers=4, hidden=(32, 32))


def _per_dataset(metrics: Metrics) -> str:
    return (
        easiest_and_hardest(metrics)
        + " "
        + " ".join(
            f"{label} stopped improving on validation at epoch {m['best_epoch']} of {m['epochs']}."
            for label, m in metrics.items()
        )
    )


def _depth(metrics: Metrics) -> str:
    return pairwise(metrics, "K=4", "K=2", "depth") + (
        " Each extra coupling lets every coordinate be transformed again, conditioned on the "
        "other; the table's KL and the layer plots show what the extra layers bought."
    )


def _data_size(metrics: Metrics) -> str:
    small, large = metrics["N=1500"], metrics["N=3000"]
    return pairwise(metrics, "N=3000", "N=1500", "the training-set size") + (
        f" The final validation-minus-training NLL, a sign of overfitting when positive, is "
        f"{overfit(small):+.3f} with 1500 points and {overfit(large):+.3f} with 3000."
    )


def _complexity(metrics: Metrics) -> str:
    order = ranked(metrics)
    return (
        " ".join(describe(label, metrics[label]) + "." for label, _ in order)
        + f" Measured by the gap to the entropy, {order[0][0]} is fitted better "
        f"by {order[-1][1] - order[0][1]:.3f} nats: more modes to separate with the same "
        "four couplings is the harder problem."
    )


def _layers_135(metrics: Metrics) -> str:
    sentences = []
    for data in ("moons", "circles"):
        depth_runs = {k: metrics[f"{data} K={k}"] for k in (1, 3, 5)}
        listing = ", ".join(f"K={k}: {m['test_nll']:.3f}" for k, m in depth_runs.items())
        sentences.append(f"On {data} the test NLL by depth was {listing}.")
    moons = sum(metrics[f"moons K={k}"]["entropy_gap"] for k in (1, 3, 5)) / 3
    circles = sum(metrics[f"circles K={k}"]["entropy_gap"] for k in (1, 3, 5)) / 3
    # standard error of each three-run average, from the runs' test-NLL standard errors
    se = max(
        sum(metrics[f"{data} K={k}"]["test_nll_se"] ** 2 for k in (1, 3, 5)) ** 0.5 / 3
        for data in ("moons", "circles")
    )
    if abs(moons - circles) < 2 * se:
        verdict = (f"a difference within two standard errors ({2 * se:.3f}), so the two "
                   "were about equally hard for these flows")
    else:
        verdict = f"so {'moons' if moons < circles else 'circles'} was the easier data set here"
    sentences.append(
        f"Averaged over depths the gap to the entropy was {moons:.3f} nats on moons and "
        f"{circles:.3f} on circles: {verdict}."
    )
    widths = {m["hidden"][0]: m for lb, m in metrics.items() if lb.startswith("moons K=5")}
    if len(widths) > 1:
        best = min(widths, key=lambda h: widths[h]["test_nll"])
        listing = ", ".join(f"{h}: {widths[h]['test_nll']:.3f}" for h in sorted(widths))
        sentences.append(
            f"Hidden-size sweep on moons with K=5 (width: test NLL): {listing}; best width {best}."
        )
    return " ".join(sentences)


def _realnvp_vs_glow(metrics: Metrics) -> str:
    r, g = metrics["RealNVP"], metrics["Glow"]
    speed = g["train_seconds"] / max(r["train_seconds"], 1e-9)
    return pairwise(metrics, "Glow", "RealNVP", "the architecture") + (
        f" Glow trained in {g['train_seconds']:.1f} s against RealNVP's {r['train_seconds']:.1f} s "
        f"({speed:.2f}x), with best validation epochs {g['best_epoch']} and {r['best_epoch']}."
    )


def _checkerboard(metrics: Metrics) -> str:
    m = metrics["checkerboard K=8"]
    return describe("The 8-coupling flow", m) + (
        f". Its KL(true || model) on the grid is {m['grid']['kl']:.3f} and it puts "
        f"{m['grid']['model_mass']:.3f} of its mass inside the plotted box; the latent codes of "
        f"test points have mean max-deviation {m['latent_normality']['max_abs_mean']:.3f} from 0."
    )


def _triangular(metrics: Metrics) -> str:
    order = ranked(metrics)
    return pairwise(metrics, order[0][0], order[1][0], "the triangular mixing of x_a") + (
        " In two dimensions x_a is a single coordinate, so A is one positive scale per layer; "
        "the modification matters more when D_a > 1."
    )


def _run(label, data, model=COURSEWORK, **budget) -> Run:
    return Run(label, data, model, Budget(**budget))


ROT5 = {"num_gaussians": 5}
HIDDEN_512 = Model("realnvp", layers=1, hidden=(512,))

FLOW_STUDIES = (
    FlowExperiment(
        name="flows-per-dataset",
        title="RealNVP on four toy distributions",
        question="Coursework Task 9: a K=4 coupling flow trained on circles, moons, the Gaussian "
        "grid and five rotated Gaussians (N=1500): its density on a 100x100 grid and the "
        "samples after every layer.",
        runs=(
            _run("circles", Data("circles"), epochs=500),
            _run("moons", Data("moons"), epochs=1000),
            _run("gaussians-grid", Data("gaussians-grid"), epochs=500),
            _run("gaussians-rot(5)", Data("gaussians-rot", ROT5), epochs=500),
        ),
        figures=("loss", "density", "layers"),
        findings=_per_dataset,
        cost=4,
    ),
    FlowExperiment(
        name="depth",
        title="Effect of depth: K=2 against K=4",
        question="Coursework Task 10: does a deeper flow fit five rotated Gaussians better "
        "(N=1500, 250 epochs)?",
        runs=(
            _run("K=2", Data("gaussians-rot", ROT5), Model("realnvp", 2), epochs=250),
            _run("K=4", Data("gaussians-rot", ROT5), epochs=250),
        ),
        findings=_depth,
        cost=0.7,
    ),
    FlowExperiment(
        name="data-size",
        title="Effect of training-set size: N=1500 against N=3000",
        question="Coursework Task 11: does more data help a K=4 flow on five rotated Gaussians "
        "(400 epochs)?",
        runs=(
            _run("N=1500", Data("gaussians-rot", ROT5, n=1500), epochs=400),
            _run("N=3000", Data("gaussians-rot", ROT5, n=3000), epochs=400),
        ),
        findings=_data_size,
        cost=1.4,
    ),
    FlowExperiment(
        name="complexity",
        title="Effect of data complexity: 3 against 7 rotated Gaussians",
        question="Coursework Task 12: which is fitted better by a K=4 flow in 250 epochs, "
        "three or seven rotated Gaussians?",
        runs=(
            _run("3 Gaussians", Data("gaussians-rot", {"num_gaussians": 3}), epochs=250),
            _run("7 Gaussians", Data("gaussians-rot", {"num_gaussians": 7}), epochs=250),
        ),
        findings=_complexity,
        cost=0.8,
    ),
    FlowExperiment(
        name="layers-1-3-5",
        title="One, three and five coupling layers with one-hidden-layer networks",
        question="The flow-architecture write-ups: 1-, 3- and 5-layer flows whose s and t "
        "networks have one hidden layer, on moons and circles with a train/test split; the "
        "latent codes of the test set, test data against generated points, and a hidden-size "
        "sweep; which data set is easier?",
        runs=tuple(
            _run(
                f"{data} K={k}",
                Data(data, n=2000, test_fraction=0.2),
                Model("realnvp", k, (512,)),
                epochs=300,
                val_fraction=0.1,
            )
            for data in ("moons", "circles")
            for k in (1, 3, 5)
        )
        + tuple(
            _run(
                f"moons K=5 h={h}",
                Data("moons", n=2000, test_fraction=0.2),
                Model("realnvp", 5, (h,)),
                epochs=300,
            )
            for h in (64, 1024)
        ),
        figures=("loss", "latent", "samples"),
        findings=_layers_135,
        cost=9,
    ),
    FlowExperiment(
        name="realnvp-vs-glow",
        title="RealNVP against Glow on a mixture of Gaussians",
        question="The RealNVP/Glow project: 1000 points of a Gaussian mixture, 80/20 split, "
        "standardised, 1000 epochs: NLL curves, samples against data, test NLL and training time.",
        runs=(
            _run(
                "RealNVP",
                Data("gaussians-grid", n=1000, test_fraction=0.2),
                epochs=1000,
                standardize=True,
            ),
            _run(
                "Glow",
                Data("gaussians-grid", n=1000, test_fraction=0.2),
                Model("glow", 4, (32, 32)),
                epochs=1000,
                standardize=True,
            ),
        ),
        figures=("loss", "samples", "density"),
        findings=_realnvp_vs_glow,
        cost=4,
    ),
    FlowExperiment(
        name="checkerboard",
        title="Checkerboard with alternating-mask couplings",
        question="The coupling-layers project: at least four couplings with alternating masks on "
        "the checkerboard; data to latent and latent to data, and the likelihood curves.",
        runs=(
            _run(
                "checkerboard K=8",
                Data("checkerboard", n=3000),
                Model("realnvp", 8, (64, 64)),
                epochs=300,
                batch_size=128,
                lr=2e-3,
                schedule="cosine",
            ),
        ),
        figures=("loss", "density", "latent", "samples", "layers"),
        findings=_checkerboard,
        cost=2.1,
    ),
    FlowExperiment(
        name="triangular-coupling",
        title="Triangular coupling (z_a = A x_a) against the plain coupling",
        question="The Jacobian derivation's modification: replace the identity on x_a by a "
        "learned lower-triangular A; same data and budget as the plain coupling.",
        runs=(
            _run("plain coupling", Data("gaussians-rot", ROT5), epochs=300),
            _run(
                "triangular coupling",
                Data("gaussians-rot", ROT5),
                Model("realnvp", 4, (32, 32), {"triangular": True}),
                epochs=300,
            ),
        ),
        figures=("loss", "density"),
        findings=_triangular,
        cost=1.9,
    ),
)
