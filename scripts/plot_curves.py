"""Plot a run's curves: ``python scripts/plot_curves.py RUN_DIR``.

Writes RUN_DIR/plots/loss_curves.png (G and D loss per iteration, raw and smoothed; ADA's p
below them when the run used ADA), metrics.png (IS and FID per epoch on twin axes, plus KID,
precision/recall/density/coverage and one panel per other metric of the registry when recorded), real_vs_fake.png (real images beside the
latest fixed-noise grid) and training_progress.gif (the fixed-noise grids images/fixed_noise_iter_*.png
in iteration order, each labelled with its iteration; at most 100 frames, evenly spaced, first and
last always included; the last frame is held longer).
Safe to run while the run is still training: it reads whatever history.jsonl holds and takes no
lock. Damaged side files cost no plot: unreadable lines of history.jsonl and unreadable (e.g.
truncated) grid images are skipped and named on stderr. Each PNG / GIF is written atomically.
Reading the history needs neither torch nor ignite (``gan_ignite.run_dir``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from gan_ignite.errors import RunDirError  # noqa: E402
from gan_ignite.run_dir import RunDir, atomic_write  # noqa: E402

MAX_GIF_FRAMES = 100
FRAME_MS, LAST_FRAME_MS = 250, 1500
LABEL_HEIGHT = 16


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first points average what is there)."""
    if len(values) == 0:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(1, len(values) + 1) - counts]) / counts


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def save_figure(fig: Any, path: Path) -> None:
    atomic_write(path, lambda handle: fig.savefig(handle, format=path.suffix[1:], dpi=fig.dpi))
    plt.close(fig)


def plot_losses(train: list[dict], path: Path) -> None:
    """G and D losses; below them ADA's augmentation probability p when the run used ADA."""
    iterations = np.array([record["iteration"] for record in train])
    window = max(1, len(train) // 50)
    with_ada = any("ada_p" in record for record in train)
    fig, axes = plt.subplots(2 if with_ada else 1, 1, figsize=(10, 8 if with_ada else 5), squeeze=False,
                             sharex=True, gridspec_kw={"height_ratios": [3, 1] if with_ada else [1]})
    ax = axes[0, 0]
    for key, color in (("Loss_G", "tab:orange"), ("Loss_D", "tab:blue")):
        values = np.array([record[key] for record in train], dtype=float)
        ax.plot(iterations, values, color=color, alpha=0.25, linewidth=0.8, label=f"{key[-1]} (raw)")
        ax.plot(iterations, smooth(values, window), color=color, linewidth=1.8,
                label=f"{key[-1]} (moving average of {window})")
    ax.set_title("Generator and Discriminator Loss During Training")
    ax.set_xlabel("iterations")
    ax.set_ylabel("Loss")
    ax.legend()
    if with_ada:
        steps, p = _series(train, "ada_p", x="iteration")
        axes[1, 0].plot(steps, p, color="tab:green")
        axes[1, 0].set_ylabel("ADA p")
        axes[1, 0].set_xlabel("iterations")
        axes[1, 0].set_ylim(-0.02, 1.02)
    fig.set_dpi(120)
    fig.tight_layout()
    save_figure(fig, path)


def _series(records: list[dict], key: str, x: str = "epoch") -> tuple[np.ndarray, np.ndarray]:
    present = [record for record in records if is_number(record.get(key)) and is_number(record.get(x))]
    return (np.array([record[x] for record in present]),
            np.array([record[key] for record in present], dtype=float))


def plot_metrics(evals: list[dict], path: Path) -> None:
    from gan_ignite.metrics.scores.prdc import PRDC_KEYS  # the registry's keys (this import brings torch and ignite)

    panels: list[Any] = ["is_fid"]
    if any("kid" in record for record in evals):
        panels.append("kid")
    if any(key in record for record in evals for key in PRDC_KEYS):
        panels.append("prdc")
    panels += other_metric_panels(evals)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 4 * len(panels)), squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        if panel == "is_fid":
            _plot_is_fid(ax, evals)
        elif panel == "kid":
            epochs, kid = _series(evals, "kid")
            _, kid_std = _series(evals, "kid_std")
            ax.errorbar(epochs, kid, yerr=kid_std if len(kid_std) == len(kid) else None, marker="o", capsize=3)
            ax.set_xlabel("epochs")
            ax.set_ylabel("KID")
            ax.set_title("Kernel Inception Distance (mean ± std over subsets)")
        elif isinstance(panel, tuple):
            key, label = panel
            epochs, values = _series(evals, key)
            ax.plot(epochs, values, marker="o")
            ax.set_xlabel("epochs")
            ax.set_ylabel(label)
            ax.set_title(label)
        else:
            for key in PRDC_KEYS:
                epochs, values = _series(evals, key)
                if len(values):
                    ax.plot(epochs, values, marker="o", label=key)
            ax.set_xlabel("epochs")
            ax.set_title("Precision / recall / density / coverage")
            ax.legend()
    if any(record.get("inception_weights") == "random" for record in evals):
        fig.suptitle("WARNING: random-init Inception (test weights): values are meaningless", color="red")
    fig.set_dpi(120)
    fig.tight_layout()
    save_figure(fig, path)


def other_metric_panels(evals: list[dict]) -> list[tuple[str, str]]:
    """(record key, label) of every labelled value of the registry's other metrics (FD, CMMD, Vendi,
    AuthPct, FID_inf, ... and any metric registered later) that the records hold."""
    from gan_ignite.metrics.scores.factory import METRICS, feature_space

    spaces = {feature_space(str(record.get("feature_network") or "inception")) for record in evals}
    panels = []
    for name, spec in METRICS.items():
        if name in ("fid", "is", "kid", "prdc"):  # the panels above
            continue
        for template, label in spec.labels.items():
            for space in sorted(spaces):
                key = template.format(space=space)
                if any(is_number(record.get(key)) for record in evals):
                    panels.append((key, label.format(space=space)))
    return panels


def _plot_is_fid(ax, evals: list[dict]) -> None:
    """IS and FID per epoch on twin axes, as in PyTorch-Ignite's GAN evaluation tutorial."""
    ax.set_title("Evaluation Metric During Training")
    ax.set_xlabel("epochs")
    epochs, is_values = _series(evals, "is")
    if len(is_values):
        ax.plot(epochs, is_values, color="tab:red", marker="o")
        _, is_std = _series(evals, "is_std")
        if len(is_std) == len(is_values):
            ax.fill_between(epochs, is_values - is_std, is_values + is_std, color="tab:red", alpha=0.15)
    ax.set_ylabel("IS", color="tab:red")
    twin = ax.twinx()
    epochs, fid_values = _series(evals, "fid")
    if len(fid_values):
        twin.plot(epochs, fid_values, color="tab:blue", marker="s")
    twin.set_ylabel("FID", color="tab:blue")


def readable_image(path: Path, skipped: list[Path]) -> Image.Image | None:
    """The image in ``path`` as RGB, or None (and ``path`` added to ``skipped``) when it cannot be
    read, e.g. a grid cut short by a kill or a full disk."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        skipped.append(path)
        return None


def readable_grids(run_dir: RunDir, skipped: list[Path]) -> list[tuple[int, Image.Image]]:
    """The fixed-noise grids that can be read, as (iteration, image), in iteration order."""
    grids = [(iteration, readable_image(path, skipped)) for iteration, path in run_dir.grids()]
    return [(iteration, image) for iteration, image in grids if image is not None]


def real_vs_fake_figure(real: Image.Image, latest: Image.Image, iteration: int) -> Any:
    """Real images beside the latest fixed-noise grid, each panel titled. The constrained layout makes
    room for the titles (tight_layout did not count them with the axes turned off, and clipped them at
    the top edge)."""
    fig, axes = plt.subplots(1, 2, figsize=(15, 8), dpi=100, layout="constrained")
    panels = ((axes[0], real, "Real Images"), (axes[1], latest, f"Fake Images (iteration {iteration})"))
    for ax, image, title in panels:
        ax.imshow(np.asarray(image))
        ax.axis("off")
        ax.set_title(title, fontsize=14)
    return fig


def plot_real_vs_fake(real: Image.Image | None, grids: list[tuple[int, Image.Image]], path: Path) -> bool:
    if not grids or real is None:
        return False
    iteration, latest = grids[-1]
    save_figure(real_vs_fake_figure(real, latest, iteration), path)
    return True


def labelled_frame(grid: Image.Image, iteration: int) -> Image.Image:
    frame = Image.new("RGB", (grid.width, grid.height + LABEL_HEIGHT), "white")
    frame.paste(grid, (0, LABEL_HEIGHT))
    ImageDraw.Draw(frame).text((4, 2), f"iteration {iteration}", fill="black")
    return frame


def plot_training_progress(grids: list[tuple[int, Image.Image]], path: Path) -> bool:
    """An animated GIF of the fixed-noise grids; evenly thinned to MAX_GIF_FRAMES for long runs."""
    if not grids:
        return False
    if len(grids) > MAX_GIF_FRAMES:
        kept = np.unique(np.linspace(0, len(grids) - 1, MAX_GIF_FRAMES).round().astype(int))
        grids = [grids[index] for index in kept]
    frames = [labelled_frame(grid, iteration) for iteration, grid in grids]
    durations = [FRAME_MS] * (len(frames) - 1) + [LAST_FRAME_MS]
    atomic_write(path, lambda handle: frames[0].save(handle, format="GIF", save_all=True, append_images=frames[1:],
                                                     duration=durations, loop=0))
    return True


def write_plots(run_dir: RunDir) -> int:
    history = run_dir.history.lines()
    if history.bad_lines:
        print(f"note: {history.report()}", file=sys.stderr)
    train = [record for record in history.records if record.get("kind") == "train"
             and is_number(record.get("Loss_G")) and is_number(record.get("Loss_D"))]
    evals = [record for record in history.records if record.get("kind") == "eval"]
    skipped: list[Path] = []
    grids = readable_grids(run_dir, skipped)
    real_path = run_dir.images_dir / "real_samples.png"
    real = readable_image(real_path, skipped) if real_path.exists() else None
    if skipped:
        print(f"note: skipped {len(skipped)} unreadable image(s): {', '.join(str(path) for path in skipped)}",
              file=sys.stderr)
    plots, written = run_dir.plots_dir, []
    if train:
        plot_losses(train, plots / "loss_curves.png")
        written.append("loss_curves.png")
    if evals:
        plot_metrics(evals, plots / "metrics.png")
        written.append("metrics.png")
    if plot_real_vs_fake(real, grids, plots / "real_vs_fake.png"):
        written.append("real_vs_fake.png")
    if plot_training_progress(grids, plots / "training_progress.gif"):
        written.append("training_progress.gif")
    print(f"wrote {', '.join(written) or 'nothing (no records yet)'} to {run_dir.plots_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run directory (the output_dir of a training run)")
    args = parser.parse_args(argv)
    run_dir = RunDir(args.run_dir)
    if not run_dir.history.path.is_file():
        print(f"error: {run_dir.history.path} does not exist; pass the output_dir of a training run.", file=sys.stderr)
        return 2
    try:
        return write_plots(run_dir)
    except RunDirError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted by Ctrl-C; the plots written so far are complete.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
