"""Each FID protocol against its own implementation, end to end: the same small image files in
(28x28 grayscale and 32x32 RGB PNGs, so every protocol resizes), the same random-init weights file, the
same numbers out, from ``python -m gan_ignite.metrics --protocol P`` and from pytorch-fid,
torch-fidelity and clean-fid reading the folders themselves (``scripts/fid_peers.py``)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from cleanfid import features as cleanfid_features
from conftest import PYTHON, ROOT, cli_env, make_shape_images

from gan_ignite.metrics.cli import main
from gan_ignite.metrics.networks.inception import weights_tag
from gan_ignite.metrics.scores.real_stats import RealStatistics

PARITY = 1e-5  # relative
COUNT = 8  # images per folder
OPTIONS = {"kid-subsets": "100", "kid-subset-size": "5", "is-splits": "2", "seed": "2020", "batch-size": str(COUNT),
           "num-workers": "0"}


@pytest.fixture(scope="module")
def small_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol_folders")
    make_shape_images(root / "real", COUNT, size=32, seed=3)
    make_shape_images(root / "fake", COUNT, size=28, seed=4, mode="L")
    return root / "real", root / "fake"


def _options(**changes: str) -> list[str]:
    return [item for key, value in {**OPTIONS, **changes}.items() for item in (f"--{key}", value)]


def ours(protocol: str, folders, weights, tmp_path, metrics: str, **changes: str) -> dict:
    """Our CLI's results; it also saves the real folder's statistics to ``tmp_path/real.npz``."""
    argv = [str(folders[0]), str(folders[1]), "--protocol", protocol, "--inception-weights", str(weights),
            "--metrics", metrics, "--device", "cpu", "--json", str(tmp_path / "ours.json"),
            "--save-stats", str(tmp_path / "real.npz"), *_options(**changes)]
    assert main(argv) == 0
    return json.loads((tmp_path / "ours.json").read_text())


def peer(name: str, folders, weights, tmp_path, *extra: str, **changes: str) -> dict:
    """The package's own numbers, in its own process, fed the same weights file."""
    done = subprocess.run([PYTHON, "scripts/fid_peers.py", name, str(folders[0]), str(folders[1]), "--weights",
                           str(weights), "--json", str(tmp_path / "peer.json"), *extra, *_options(**changes)],
                          capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "peer.json").read_text())


@pytest.mark.slow
def test_pytorch_fid_protocol_gives_pytorch_fids_fid(small_folders, random_inception_weights, tmp_path):
    result = ours("pytorch-fid", small_folders, random_inception_weights, tmp_path, "fid")
    reference = peer("pytorch-fid", small_folders, random_inception_weights, tmp_path)
    assert result["fid"] > 1 and result["fid"] == pytest.approx(reference["fid"], rel=PARITY)


@pytest.mark.slow
def test_torch_fidelity_protocol_gives_torch_fidelitys_fid_kid_and_is(small_folders, random_inception_weights,
                                                                       tmp_path):
    result = ours("torch-fidelity", small_folders, random_inception_weights, tmp_path, "fid,kid,is")
    reference = peer("torch-fidelity", small_folders, random_inception_weights, tmp_path, "--kid", "--is")
    assert result["fid"] > 1 and result["kid_std"] > 0 and result["is"] > 1
    for key in ("fid", "kid", "kid_std", "is", "is_std"):
        assert result[key] == pytest.approx(reference[key], rel=PARITY), key


@pytest.mark.slow
def test_clean_fid_protocol_gives_clean_fids_fid_and_kid_and_clean_fid_reads_our_statistics(
        small_folders, random_inception_weights, tmp_path, monkeypatch):
    # clean-fid's KID draws subsets of min(1000, both set sizes) images: all of them here
    result = ours("clean-fid", small_folders, random_inception_weights, tmp_path, "fid,kid",
                  **{"kid-subset-size": str(COUNT)})
    reference = peer("clean-fid", small_folders, random_inception_weights, tmp_path, "--kid")
    assert result["fid"] > 1 and result["fid"] == pytest.approx(reference["fid"], rel=PARITY)
    assert result["kid"] == pytest.approx(reference["kid"], rel=PARITY)
    # --save-stats wrote real.npz: clean-fid's own loader of "custom" reference statistics reads it
    # unchanged (only its download helper is pointed at the file), with the protocol and weights beside
    saved = RealStatistics.load(tmp_path / "real.npz")
    monkeypatch.setattr(cleanfid_features, "check_download_url", lambda local_folder, url: str(tmp_path / "real.npz"))
    mu, sigma = cleanfid_features.get_reference_statistics("ours", "na", mode="clean", split="custom")
    assert np.array_equal(mu, saved.mu) and np.array_equal(sigma, saved.sigma)
    assert {"protocol": "clean-fid", "inception_weights": weights_tag(str(random_inception_weights))}.items() <= \
        saved.meta.items()
