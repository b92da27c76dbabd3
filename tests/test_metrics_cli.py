"""``python -m gan_ignite.metrics`` on image folders, against pytorch-fid on the same files."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
from conftest import PYTHON, cli_env, make_shape_images, pytorch_fid_frechet_distance
from pytorch_fid import fid_score
from pytorch_fid import inception as pytorch_fid_inception

from gan_ignite.metrics.cli import main
from gan_ignite.metrics.scores.factory import METRIC_NAMES, METRICS

# every key of every registered metric: a metric added to the registry appears here without another list
ALL_KEYS = {key.format(space="inception") for spec in METRICS.values() for key in spec.record_keys} | {"num_a", "num_b"}
SMALL_SET_OPTIONS = ["--is-splits", "2", "--kid-subsets", "10", "--kid-subset-size", "8", "--nearest-k", "3",
                     "--fd-inf-points", "4", "--fd-inf-min-fraction", "0.25", "--num-workers", "0", "--batch-size", "10"]


@pytest.fixture(scope="session")
def pytorch_fid_stats(inception_folders, random_inception_weights):
    """pytorch-fid's own mu/sigma/FID of the two folders, its Inception loading our weights file."""
    state = torch.load(random_inception_weights, weights_only=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pytorch_fid_inception, "load_state_dict_from_url", lambda *args, **kwargs: state)
        model = pytorch_fid_inception.InceptionV3([3]).eval()
        stats = [fid_score.compute_statistics_of_path(str(folder), model, 16, 2048, "cpu", num_workers=0)
                 for folder in inception_folders]
    return {"a": stats[0], "b": stats[1], "fid": pytorch_fid_frechet_distance(*stats[0], *stats[1])}


@pytest.fixture(scope="session")
def cli_run(inception_folders, random_inception_weights, tmp_path_factory):
    """One CLI run with every metric, --json and --save-stats (Inception runs are the slow part)."""
    out = tmp_path_factory.mktemp("cli")
    argv = [str(inception_folders[0]), str(inception_folders[1]), "--inception-weights",
            str(random_inception_weights), "--protocol", "pytorch-fid", "--device", "cpu",
            "--json", str(out / "result.json"), "--save-stats", str(out / "a_stats.npz"),
            "--metrics", ",".join(METRIC_NAMES), *SMALL_SET_OPTIONS]
    code = main(argv)
    return code, json.loads((out / "result.json").read_text()), out / "a_stats.npz"


@pytest.mark.slow
def test_fid_on_299_folders_equals_pytorch_fid(cli_run, pytorch_fid_stats):
    code, result, _ = cli_run
    assert code == 0
    assert np.isfinite(result["fid"]) and result["fid"] > 1.0
    assert result["fid"] == pytest.approx(pytorch_fid_stats["fid"], rel=1e-4)


def test_without_metrics_the_cli_computes_the_four_the_field_reports(cli_run, tmp_path):
    """Not the O(n^2) ones, which take minutes at 50k: those only when asked for."""
    _, _, stats = cli_run
    assert main([str(stats), str(stats), "--json", str(tmp_path / "r.json"), *SMALL_SET_OPTIONS]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert {"fid", "kid", "precision"} <= set(result) and not {"cmmd", "authpct", "vendi"} & set(result)


def test_json_holds_every_metric_and_the_counts(cli_run, capsys):
    _, result, _ = cli_run
    assert set(result) == ALL_KEYS
    assert result["num_a"] == result["num_b"] == 16
    assert result["is"] >= 1.0 and 0 <= result["precision"] <= 1


def test_saved_stats_are_pytorch_fids_stats_of_path_a(cli_run, pytorch_fid_stats):
    _, _, stats_path = cli_run
    mu, sigma = fid_score.compute_statistics_of_path(str(stats_path), None, 1, 2048, "cpu")
    # our channels-last forward rounds differently from pytorch-fid's NCHW one: within 1e-5 of the scale
    for ours, theirs in ((mu, pytorch_fid_stats["a"][0]), (sigma, pytorch_fid_stats["a"][1])):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())


@pytest.mark.slow
def test_saved_stats_replace_a_folder(cli_run, inception_folders, random_inception_weights, tmp_path, capsys):
    _, result, stats_path = cli_run
    argv = [str(stats_path), str(inception_folders[1]), "--inception-weights", str(random_inception_weights),
            "--device", "cpu", "--json", str(tmp_path / "again.json"), "--metrics", ",".join(METRIC_NAMES),
            *SMALL_SET_OPTIONS]
    assert main(argv) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    numbers = [{key: value for key, value in values.items() if value is not None} for values in (again, result)]
    assert again.keys() == result.keys() and numbers[0] == pytest.approx(numbers[1], rel=1e-9)  # nulls alike too
    assert "FID: " in capsys.readouterr().out


def test_statistics_without_features_cannot_give_kid(tmp_path, capsys):
    for name in ("a", "b"):
        np.savez(tmp_path / f"{name}.npz", mu=np.zeros(4), sigma=np.eye(4))
    assert main([str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--metrics", "fid,kid"]) == 2
    assert "KID needs per-image features" in capsys.readouterr().err
    assert main([str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text()) == {"fid": 0.0, "num_a": 0, "num_b": 0}


def test_bad_inputs_exit_2_with_the_path_named(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    make_shape_images(broken, 3, size=16)
    (broken / "img_0001.png").write_bytes(b"not a png")
    for argv, expected in (([str(tmp_path / "missing"), str(empty)], str(tmp_path / "missing")),
                           ([str(empty), str(broken)], f"Folder '{empty}' contains no images"),
                           ([str(broken), str(broken)], str(broken / "img_0001.png")),
                           ([str(broken), str(broken), "--metrics", "fid,lpips"], "lpips")):
        assert main([*argv, "--inception-weights", "random", "--num-workers", "0"]) == 2
        assert expected in capsys.readouterr().err


@pytest.mark.slow
def test_module_entry_point_reports_errors_without_traceback(tmp_path):
    done = subprocess.run([PYTHON, "-m", "gan_ignite.metrics", str(tmp_path / "nope"), str(tmp_path)],
                          capture_output=True, text=True, env=cli_env(), timeout=120)
    assert done.returncode == 2
    assert str(tmp_path / "nope") in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_numbers(cli_run, inception_folders, random_inception_weights, tmp_path):
    _, result, _ = cli_run
    argv = [str(inception_folders[0]), str(inception_folders[1]), "--inception-weights", str(random_inception_weights),
            "--protocol", "pytorch-fid", "--device", "cuda", "--json", str(tmp_path / "cuda.json"), *SMALL_SET_OPTIONS]
    assert main(argv) == 0
    on_cuda = json.loads((tmp_path / "cuda.json").read_text())
    assert on_cuda["fid"] == pytest.approx(result["fid"], rel=1e-4)
    assert on_cuda["is"] == pytest.approx(result["is"], rel=1e-5)


def _stats_file(path, meta=None):
    """Statistics as TTUR / pytorch-fid / clean-fid publish them (mu, sigma), or ours (with meta)."""
    features = np.random.default_rng(len(str(path))).random((12, 4))
    arrays = {"mu": features.mean(0), "sigma": np.cov(features, rowvar=False)}
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    return str(path)


def test_protocol_of_statistics_files_must_be_known_and_agree(tmp_path, capsys):
    folder = tmp_path / "images"
    make_shape_images(folder, 2, size=8)
    published = _stats_file(tmp_path / "fid_stats_published.npz")
    tutorial = _stats_file(tmp_path / "ours_tutorial.npz", {"protocol": "tutorial"})
    for argv, expected in (([published, str(folder)], "does not record how its images were preprocessed"),
                           ([tutorial, str(folder), "--protocol", "clean-fid"], "computed with protocol tutorial")):
        assert main([*argv, "--inception-weights", "random", "--num-workers", "0"]) == 2
        message = capsys.readouterr().err
        assert expected in message and "--protocol" in message, argv
    # two files need no network; the published one takes the protocol the other records
    assert main([tutorial, published, "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["fid"] > 0


def test_weights_without_logits_refuse_a_requested_inception_score(tmp_path, nvidia_torchscripts, capsys):
    _, pool3_only, _ = nvidia_torchscripts
    folder = tmp_path / "images"
    make_shape_images(folder, 2, size=8)
    argv = [str(folder), str(folder), "--inception-weights", str(pool3_only), "--is-splits", "1", "--num-workers", "0"]
    assert main([*argv, "--metrics", "fid,is"]) == 2
    assert "IS needs class logits" in capsys.readouterr().err
