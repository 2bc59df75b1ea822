"""Plots written beside a run's sample grids."""

from pathlib import Path


def plot_telemetry(summary: dict, title: str, path: Path) -> None:
    """Loss (unweighted, per bin), sampling density and each bin's share of the weighted loss vs ln σ; one PNG,
    written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dataio.image_io import save_figure_atomic

    x = summary["ln_sigma"]
    fig, (ax_loss, ax_density) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    pts = [(xi, li) for xi, li in zip(x, summary["loss"]) if li is not None]
    if pts:
        ax_loss.plot(*zip(*pts), "o-")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("unweighted loss ||D − y||²")
    ax_loss.set_title(title)
    ax_density.bar(x, summary["density"], width=(x[1] - x[0]) * 0.9, alpha=0.6, label="sampling density")
    # Where the objective's mass sits: density × weight × loss per bin (the weighted loss each bin contributes).
    share = [d * w * (l or 0.0) for d, w, l in zip(summary["density"], summary["weight"], summary["loss"])]
    total = sum(share) * (x[1] - x[0]) or 1.0
    ax_density.plot(x, [v / total for v in share], "r-", label="share of the weighted loss (normalised)")
    ax_density.set_xlabel("ln σ")
    ax_density.legend(fontsize=8)
    fig.tight_layout()
    save_figure_atomic(fig, path)
    plt.close(fig)
