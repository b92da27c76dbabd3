"""Compare recipes trained over several seeds: ``python scripts/compare_sweeps.py SWEEP_DIR[=LABEL] ... --out PNG``.

Each SWEEP_DIR is a folder of ``seed_S`` run directories (``python -m gan_ignite.sweep --out``) or one
run directory. One figure, one colour per recipe, three panels over the training iterations:

- FID at every evaluation: the mean over the seeds with a band of its 95% confidence interval
  (Student t), so where a recipe's FID turns upward (the discriminator overfitting) shows;
- D(x) - D(G(z)): the discriminator's mean probability on real images minus that on generated
  ones in its own step (``D_x - D_G_z1`` of ``history.jsonl``), a moving average per seed, then
  the mean over seeds. It grows towards 1 as D memorises its training images;
- ADA's augmentation probability p (mean over seeds), for the recipes that used ADA.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plot_curves import smooth  # noqa: E402

from gan_ignite.run_dir import RunDir  # noqa: E402

GAP_WINDOW = 100  # iterations of the moving average of D's gap


def run_dirs(folder: Path) -> list[Path]:
    """The seed runs of a sweep folder, or the folder itself when it is a run."""
    if (folder / "history.jsonl").is_file():
        return [folder]
    runs = sorted(path for path in folder.glob("seed_*") if (path / "history.jsonl").is_file())
    if not runs:
        raise SystemExit(f"error: '{folder}' holds no run (no history.jsonl in it or in seed_*/ below it).")
    return runs


def aligned(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(x, values [runs, points]) at the x every run has."""
    common = sorted(set.intersection(*(set(x.tolist()) for x, _ in series)))
    return np.array(common), np.array([[dict(zip(x.tolist(), y))[step] for step in common] for x, y in series])


def mean_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over runs and the half-width of its 95% t interval (0 for one run)."""
    runs = values.shape[0]
    if runs < 2:
        return values.mean(axis=0), np.zeros(values.shape[1])
    half = stats.t.ppf(0.975, runs - 1) * values.std(axis=0, ddof=1) / math.sqrt(runs)
    return values.mean(axis=0), half


def recipe_series(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """FID, D gap and ADA p of every seed run of ``folder``, aligned on common iterations."""
    fid, gap, ada = [], [], []
    for run in run_dirs(folder):
        records = RunDir(run).history.read()
        evals = [r for r in records if r.get("kind") == "eval" and "fid" in r]
        train = [r for r in records if r.get("kind") == "train"]
        if evals:
            fid.append((np.array([r["iteration"] for r in evals]), np.array([r["fid"] for r in evals])))
        if train:
            steps = np.array([r["iteration"] for r in train])
            gap.append((steps, smooth(np.array([r["D_x"] - r["D_G_z1"] for r in train]), GAP_WINDOW)))
            if all("ada_p" in r for r in train):
                ada.append((steps, np.array([r["ada_p"] for r in train])))
    return {name: aligned(series) for name, series in (("fid", fid), ("gap", gap), ("ada_p", ada)) if series}


def plot(recipes: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], out: Path) -> None:
    with_ada = any("ada_p" in series for series in recipes.values())
    panels = ["fid", "gap"] + (["ada_p"] if with_ada else [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.4 * len(panels)), sharex=True, squeeze=False)
    titles = {"fid": "FID (mean over seeds, 95% CI band)",
              "gap": f"D(x) - D(G(z)) in D's step (moving average of {GAP_WINDOW} iterations, mean over seeds)",
              "ada_p": "ADA augmentation probability p (mean over seeds)"}
    for ax, panel in zip(axes[:, 0], panels):
        for (label, series), color in zip(recipes.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
            if panel not in series:
                continue
            steps, values = series[panel]
            mean, half = mean_band(values)
            ax.plot(steps, mean, color=color, marker="o" if panel == "fid" else None, markersize=3,
                    label=f"{label} ({values.shape[0]} seed{'s' if values.shape[0] > 1 else ''})")
            if half.any():
                ax.fill_between(steps, mean - half, mean + half, color=color, alpha=0.2)
        ax.set_title(titles[panel])
        ax.grid(alpha=0.3)
        ax.legend()
    axes[-1, 0].set_xlabel("iterations")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweeps", nargs="+", metavar="SWEEP_DIR[=LABEL]")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args(argv)
    recipes = {}
    for item in args.sweeps:
        folder, _, label = item.partition("=")
        recipes[label or Path(folder).name] = recipe_series(Path(folder))
    plot(recipes, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
