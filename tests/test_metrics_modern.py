"""FD in any feature space, CMMD, Vendi, AuthPct and FID_inf / FD_inf: each against a reference
on fixed random features (the vendi-score package; the CMMD authors' and dgm-eval's formulas
re-derived on full matrices in plain numpy; the Fréchet distance on the sample moments with
scipy's sqrtm; the FID_inf authors' subset draws and least-squares line), on an ignite Engine,
through the metrics CLI, and in a 2-process gloo run."""

from __future__ import annotations

import json
from pathlib import Path

import ignite.distributed as idist
import numpy as np
import pytest
import scipy.linalg
import torch
from ignite.engine import Engine

from gan_ignite.config import load_config, metric_options
from gan_ignite.errors import ConfigError
from gan_ignite.metrics.scores.real_stats import RealStatistics
from gan_ignite.metrics.scores.authpct import authenticity_percentage
from gan_ignite.metrics.cli import main as metrics_cli
from gan_ignite.metrics.scores.cmmd import cmmd
from gan_ignite.metrics.scores.factory import METRICS, Scoring, compute_from_sets, create_metrics, feature_space
from gan_ignite.metrics.scores.fd_infinity import fd_infinity, fd_infinity_sizes
from gan_ignite.metrics.scores.vendi import vendi_score

NEW_METRICS = ["fd", "cmmd", "vendi", "authpct", "fid_inf", "fd_inf"]
OPTIONS = {"feature_space": "classifier", "fd_inf_points": 5, "fd_inf_min_fraction": 0.2, "seed": 3}


def _features(seed: int = 0, num_real: int = 90, num_fake: int = 70, dim: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(num_real, dim)).astype(np.float32)
    fake = (rng.normal(size=(num_fake, dim)) * 1.2 + 0.3).astype(np.float32)
    return real, fake


# -- references, re-derived on full matrices -----------------------------------------------------

def _reference_cmmd(x: np.ndarray, y: np.ndarray, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """google-research cmmd/distance.py: 1000 * (mean K_xx + mean K_yy - 2 mean K_xy), diagonals included."""
    x, y = x.astype(np.float64), y.astype(np.float64)

    def mean_kernel(a, b):
        squared = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return np.exp(-squared / (2 * sigma**2)).mean()

    return scale * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y))


def _reference_authpct(real: np.ndarray, fake: np.ndarray) -> float:
    """dgm-eval metrics/authpct.py: the nearest real sample of each fake one, and that real sample's
    own nearest other real sample; authentic when the latter is closer."""
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    real_distances = np.sqrt(((real[:, None] - real[None]) ** 2).sum(-1))
    np.fill_diagonal(real_distances, np.inf)
    fake_distances = np.sqrt(((real[:, None] - fake[None]) ** 2).sum(-1))  # [real, fake]
    nearest_real = fake_distances.argmin(axis=0)
    authentic = real_distances.min(axis=0)[nearest_real] < fake_distances.min(axis=0)
    return 100.0 * authentic.mean()


def _reference_fd(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b, sigma_a, sigma_b = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean))


# -- the metric functions against them -----------------------------------------------------------

@pytest.mark.parametrize("num_fake,dim", [(70, 12), (8, 12)])  # n > d: the d x d Gram form; n < d: the n x n one
def test_vendi_equals_the_vendi_score_package(num_fake, dim):
    from vendi_score import vendi

    _, fake = _features(num_fake=num_fake, dim=dim)
    ours = vendi_score(torch.from_numpy(fake))
    assert ours == pytest.approx(vendi.score_X(fake.astype(np.float64)), rel=1e-9)
    assert ours == pytest.approx(vendi.score_dual(fake.astype(np.float64)), rel=1e-9)
    assert 1.0 <= ours <= min(num_fake, dim)


def test_vendi_counts_distinct_samples():
    directions = np.eye(4, dtype=np.float32).repeat(25, axis=0)  # 4 orthogonal directions, 25 copies each
    assert vendi_score(torch.from_numpy(directions * 3.0)) == pytest.approx(4.0, rel=1e-12)


def test_cmmd_equals_the_authors_formula_and_is_computed_in_chunks():
    real, fake = _features()
    real, fake = real * 4, fake * 4  # distances of the order of sigma = 10: the kernel is not flat
    expected = _reference_cmmd(fake, real)
    assert expected > 1.0
    for chunk in (7, 1024):  # chunks that split the sets unevenly, and one chunk
        assert cmmd(torch.from_numpy(fake), torch.from_numpy(real), chunk=chunk) == pytest.approx(expected, rel=1e-10)
    assert cmmd(torch.from_numpy(real), torch.from_numpy(real)) == pytest.approx(0.0, abs=1e-12)


def test_authpct_equals_dgm_evals_definition():
    real, fake = _features()
    fake[:10] = real[:10] + 1e-3  # ten near-copies of training samples: never authentic
    expected = _reference_authpct(real, fake)
    assert 0 < expected < 100 - 10 * 100 / len(fake) + 1e-9
    assert authenticity_percentage(torch.from_numpy(fake), torch.from_numpy(real)) == pytest.approx(expected, abs=1e-12)


def test_fd_is_the_frechet_distance_of_the_sample_moments_in_the_configured_space():
    real, fake = _features()
    values = compute_from_sets(["fd"], RealStatistics.from_features(real), RealStatistics.from_features(fake), None,
                               Scoring(feature_space="classifier"))
    assert set(values) == {"fd_classifier"}
    assert values["fd_classifier"] == pytest.approx(_reference_fd(real, fake), rel=1e-8)


def test_fd_inf_reproduces_the_authors_subsets_and_line():
    from sklearn.linear_model import LinearRegression

    real, fake = _features(num_fake=200)
    stats = RealStatistics.from_features(real)
    fit = fd_infinity(torch.from_numpy(fake), stats.mu, stats.sigma, points=6, min_fraction=0.25, seed=11)
    sizes = np.linspace(50, 200, 6).astype(np.int32)  # the authors' np.linspace(5000, num_im, 15) scaled
    assert fd_infinity_sizes(200, 6, 0.25).tolist() == sizes.tolist()
    rng = np.random.RandomState(11)
    distances = [_reference_fd(real, fake[rng.permutation(200)[:size]]) for size in sizes]
    line = LinearRegression().fit(1 / sizes.reshape(-1, 1), np.array(distances))
    assert fit.value == pytest.approx(line.intercept_, rel=1e-8)
    assert fit.record("fid_inf") == {"fid_inf": fit.value, "fid_inf_min_n": 50, "fid_inf_max_n": 200}


def test_fd_inf_removes_the_small_sample_bias():
    """Samples of the reference Gaussian itself: FD_N is a positive bias ~ 1/N, FD_inf is near 0."""
    rng = np.random.default_rng(0)
    dim, num = 32, 1000
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim)
    sigma, mu = mixing @ mixing.T + np.eye(dim), rng.normal(size=dim)
    fake = rng.multivariate_normal(mu, sigma, size=num)
    fake_stats = RealStatistics.from_features(fake)
    biased = compute_from_sets(["fid"], RealStatistics(None, mu, sigma, 0), fake_stats, None, Scoring())["fid"]
    fit = fd_infinity(torch.from_numpy(fake), mu, sigma, seed=0)
    assert biased > 0.3
    assert abs(fit.value) < 0.3 * biased  # 0.04 against 0.53 here; over seeds |FD_inf| stays below 0.3 x FD_N
    assert fit.slope > 0


# -- on an Engine, in the CLI, in the config -----------------------------------------------------

def _engine_values(real: RealStatistics, fake: torch.Tensor, names: list[str], attach_as=None) -> dict:
    evaluator = Engine(lambda engine, batch: {"features": batch, "logits": None})
    for name, metric in create_metrics(names, real, **OPTIONS).items():
        metric.attach(evaluator, (attach_as or {}).get(name, name))
    evaluator.run(list(fake.split(16)), max_epochs=2)  # epoch 2 must not see epoch 1's samples
    return dict(evaluator.state.metrics)


def _expected(real: RealStatistics, fake: torch.Tensor) -> dict:
    return compute_from_sets(NEW_METRICS, real, RealStatistics.from_features(fake), None, Scoring(**OPTIONS))


def test_new_metrics_on_an_engine_write_their_registry_keys():
    real, fake = _features()
    stats, rows = RealStatistics.from_features(real), torch.from_numpy(fake)
    values = _engine_values(stats, rows, NEW_METRICS)
    keys = {key.format(space="classifier") for name in NEW_METRICS for key in METRICS[name].record_keys}
    assert set(values) == keys
    assert {"fd_classifier", "fd_inf_classifier", "fid_inf_min_n", "fd_inf_classifier_max_n"} <= keys
    assert values == pytest.approx(_expected(stats, rows), rel=1e-9)
    assert values["fid_inf_min_n"] == 14 and values["fid_inf_max_n"] == 70
    renamed = _engine_values(stats, rows, ["cmmd", "fid_inf"], {"cmmd": "cmmd_ema", "fid_inf": "fid_inf_ema"})
    assert set(renamed) == {"cmmd_ema", "fid_inf_ema", "fid_inf_ema_min_n", "fid_inf_ema_max_n"}


def test_the_feature_space_is_the_networks_name():
    assert feature_space("inception") == "inception"
    assert feature_space("classifier:/runs/classifier.pt") == "classifier"
    assert feature_space("classifier-sha256-0123abcd") == "classifier"  # a tag recorded in an .npz
    config = load_config(overrides=["eval.feature_network=classifier:/x.pt", "eval.fd_inf_points=7"])
    assert feature_space(str(config.eval.feature_network)) == "classifier"
    assert metric_options(config.eval).fd_inf_points == 7


@pytest.mark.parametrize("override,key", [("eval.fd_inf_points=1", "eval.fd_inf_points"),
                                          ("eval.fd_inf_min_fraction=1.5", "eval.fd_inf_min_fraction"),
                                          ("eval.num_samples=12", "eval.num_samples")])
def test_bad_fd_inf_settings_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=["eval.metrics=[fid,fid_inf]", override])


def test_cli_scores_statistics_files_with_the_new_metrics(tmp_path, capsys):
    real, fake = _features()
    for name, features in (("a", real), ("b", fake)):
        RealStatistics.from_features(features, {"feature_network": "classifier-sha256-0123"}).save(tmp_path / f"{name}.npz")
    argv = [str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--metrics", ",".join(NEW_METRICS), "--seed", "3",
            "--fd-inf-points", "5", "--fd-inf-min-fraction", "0.2", "--json", str(tmp_path / "r.json")]
    assert metrics_cli(argv) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    stats = RealStatistics.from_features(real)
    assert result == pytest.approx({**_expected(stats, torch.from_numpy(fake)), "num_a": 90, "num_b": 70}, rel=1e-9)
    printed = capsys.readouterr().out
    for label in ("FD (classifier): ", "CMMD: ", "Vendi: ", "AuthPct: ", "FID_inf: ", "FD_inf (classifier): "):
        assert label in printed
    assert metrics_cli([*argv[:3], "fid_inf", "--fd-inf-points", "80"]) == 2
    assert "FID_INF needs at least 80 images" in capsys.readouterr().err


def test_every_registered_metric_has_a_label_and_its_keys_in_the_registry():
    for name, spec in METRICS.items():
        assert spec.labels and set(spec.labels) <= set(spec.record_keys), name


# -- two gloo processes --------------------------------------------------------------------------

def _distributed_worker(local_rank: int, out_dir: str) -> None:
    real, fake = _features()
    rank, world = idist.get_rank(), idist.get_world_size()
    half = fake.shape[0] // world
    values = _engine_values(RealStatistics.from_features(real), torch.from_numpy(fake)[rank * half:(rank + 1) * half],
                            NEW_METRICS)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(values))


def run_two_gloo_processes(out_dir: str) -> None:
    """Run in a child process by the test below, so that a hung collective meets a timeout."""
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(_distributed_worker, out_dir)


@pytest.mark.slow
def test_two_gloo_processes_record_the_serial_values(tmp_path):
    import subprocess

    from conftest import PYTHON, ROOT, cli_env

    code = (f"import sys, warnings; sys.path.insert(0, {str(ROOT / 'tests')!r}); warnings.simplefilter('ignore'); "
            f"from test_metrics_modern import run_two_gloo_processes; run_two_gloo_processes({str(tmp_path)!r})")
    done = subprocess.run([PYTHON, "-c", code], env={**cli_env(), "CUDA_VISIBLE_DEVICES": ""}, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    real, fake = _features()
    expected = _expected(RealStatistics.from_features(real), torch.from_numpy(fake))
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == pytest.approx(expected, rel=1e-9)


# -- the plots and the sweep report find the new metrics in the registry -------------------------

def _eval_records() -> list[dict]:
    return [{"kind": "eval", "epoch": epoch, "iteration": 10 * epoch, "fid": 30.0 - epoch, "is": 2.0,
             "feature_network": "classifier:/x.pt", "fd_classifier": 5.0 - epoch, "cmmd": 0.5 / epoch,
             "vendi": 3.0 + epoch, "authpct": 80.0, "fid_inf": 28.0 - epoch, "fid_inf_min_n": 100,
             "fid_inf_max_n": 1000} for epoch in (1, 2)]


def test_the_metrics_plot_has_a_panel_per_recorded_registry_metric(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("plot_curves", Path(__file__).parents[1] / "scripts" / "plot_curves.py")
    plot_curves = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot_curves)
    evals = _eval_records()
    assert plot_curves.other_metric_panels(evals) == [("fd_classifier", "FD (classifier)"), ("cmmd", "CMMD"),
                                                      ("vendi", "Vendi"), ("authpct", "AuthPct"),
                                                      ("fid_inf", "FID_inf")]
    plot_curves.plot_metrics(evals, tmp_path / "metrics.png")
    assert (tmp_path / "metrics.png").stat().st_size > 0


def test_the_sweep_report_holds_the_recorded_registry_metrics(tmp_path):
    import csv
    from types import SimpleNamespace

    from gan_ignite.sweep import SeedSummary, markdown, write_csv

    summaries = [SeedSummary(seed, tmp_path / f"seed_{seed}", "finished", True,
                             [{**record, "cmmd": record["cmmd"] + seed} for record in _eval_records()])
                 for seed in (0, 1)]
    write_csv(summaries, tmp_path / "sweep.csv")
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [float(row["final_cmmd"]) for row in rows] == [0.25, 1.25]
    assert float(rows[0]["final_fd_classifier"]) == 3.0 and rows[0]["final_kid"] == ""
    report = markdown(SimpleNamespace(config_file="c.yaml", directory=tmp_path, overrides=[]), summaries, summaries, "")
    assert "| final CMMD | 2 | 0.75 |" in report
    assert "| final FD (classifier) | 2 | 3 |" in report
    assert "final FID_inf" in report and "final_min_n" not in report


def test_an_evaluation_with_the_domain_classifier_records_the_new_metrics_in_its_space(tmp_path):
    """setup_evaluation, as training and python -m gan_ignite.evaluate use it, on the classifier's features."""
    from conftest import make_shape_images
    from gan_ignite import data as data_module
    from gan_ignite.evaluation import setup_evaluation
    from gan_ignite.metrics.networks.classifier import DomainClassifier, save_classifier
    from gan_ignite.networks import build

    for index, name in enumerate(("a", "b")):
        make_shape_images(tmp_path / "images" / name, 15, seed=index)
    torch.manual_seed(0)
    classifier = save_classifier(tmp_path / "classifier.pt", DomainClassifier(3, 2, width=8, feature_dim=16),
                                 classes=["a", "b"], test_accuracy=0.5)
    values = {"data.name": "imagefolder", "data.root": tmp_path / "images", "data.channels": 3,
              "data.num_workers": 0, "eval.num_samples": 30, "eval.batch_size": 10, "model.g_features": 8,
              "eval.stats_cache_dir": tmp_path / "cache", "eval.feature_network": f"classifier:{classifier}",
              "eval.metrics": "[fid,fd,cmmd,vendi,authpct,fid_inf,fd_inf]", "eval.fd_inf_points": 4,
              "eval.fd_inf_min_fraction": 0.3}
    config = load_config(None, [f"{key}={value}" for key, value in values.items()])
    generator = build(config, "generator").eval()
    record = setup_evaluation(config, data_module.load_dataset(config.data), generator, torch.device("cpu")).run()
    assert record["fd_classifier"] == record["fid"] > 0
    assert record["fd_inf_classifier"] == record["fid_inf"]
    assert (record["fid_inf_min_n"], record["fid_inf_max_n"]) == (9, 30)
    assert record["cmmd"] > 0 and 1 <= record["vendi"] <= 16 and 0 <= record["authpct"] <= 100


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_new_metrics_on_cuda_give_the_cpu_values():
    real, fake = _features()
    stats, rows = RealStatistics.from_features(real), torch.from_numpy(fake)
    evaluator = Engine(lambda engine, batch: {"features": batch.cuda(), "logits": None})
    for name, metric in create_metrics(NEW_METRICS, stats, device="cuda", **OPTIONS).items():
        metric.attach(evaluator, name)
    evaluator.run(list(rows.split(16)))
    assert dict(evaluator.state.metrics) == pytest.approx(_expected(stats, rows), rel=1e-7)
