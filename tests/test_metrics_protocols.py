"""Each FID protocol against its own implementation, end to end: the same small image files in
(28x28 grayscale and 32x32 RGB PNGs, so every protocol resizes), the same random-init weights, the
same numbers out, from ``python -m gan_ignite.metrics --protocol P`` and from pytorch-fid,
torch-fidelity and clean-fid reading the folders themselves."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torch_fidelity
from cleanfid import features as cleanfid_features
from cleanfid import fid as cleanfid_fid
from cleanfid.inception_torchscript import InceptionV3W
from conftest import make_shape_images, pytorch_fid_frechet_distance, sqrtm_accepting_disp
from pytorch_fid import fid_score
from pytorch_fid import inception as pytorch_fid_inception
from torch import nn

from gan_ignite.metrics.cli import main
from gan_ignite.metrics.inception import weights_tag
from gan_ignite.metrics.real_stats import RealStatistics

PARITY = 1e-5  # relative
COUNT = 10  # images per folder
SUBSET = 6  # KID subset size
SEED = 2020  # torch-fidelity's default seed (IS shuffle, KID subsets), ours too


@pytest.fixture(scope="module")
def small_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol_folders")
    make_shape_images(root / "real", COUNT, size=32, seed=3)
    make_shape_images(root / "fake", COUNT, size=28, seed=4, mode="L")
    return root / "real", root / "fake"


def pytorch_fid_network(weights, **options) -> nn.Module:
    """pytorch-fid's own InceptionV3 (pool3) holding our random test weights."""
    state = torch.load(weights, weights_only=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pytorch_fid_inception, "load_state_dict_from_url", lambda *args, **kwargs: state)
        return pytorch_fid_inception.InceptionV3([3], **options).eval()


def ours(protocol: str, folders, weights, tmp_path, metrics: str, kid_subset_size: int = SUBSET) -> dict:
    """Our CLI's results; it also saves the real folder's statistics to ``tmp_path / "real.npz"``."""
    out = tmp_path / f"{protocol}.json"
    argv = [str(folders[0]), str(folders[1]), "--protocol", protocol, "--inception-weights", str(weights),
            "--metrics", metrics, "--is-splits", "2", "--kid-subsets", "100", "--kid-subset-size", str(kid_subset_size),
            "--num-workers", "0", "--batch-size", str(COUNT), "--device", "cpu", "--json", str(out),
            "--save-stats", str(tmp_path / "real.npz")]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_pytorch_fid_protocol_gives_pytorch_fids_fid(small_folders, random_inception_weights, tmp_path):
    result = ours("pytorch-fid", small_folders, random_inception_weights, tmp_path, "fid")
    network = pytorch_fid_network(random_inception_weights)
    with torch.no_grad():
        stats = [fid_score.compute_statistics_of_path(str(folder), network, COUNT, 2048, "cpu", num_workers=0)
                 for folder in small_folders]
    reference = pytorch_fid_frechet_distance(*stats[0], *stats[1])
    assert result["fid"] > 1 and result["fid"] == pytest.approx(reference, rel=PARITY)


def test_torch_fidelity_protocol_gives_torch_fidelitys_fid_kid_and_is(small_folders, random_inception_weights,
                                                                       tmp_path):
    result = ours("torch-fidelity", small_folders, random_inception_weights, tmp_path, "fid,kid,is")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = torch_fidelity.calculate_metrics(
            input1=str(small_folders[1]), input2=str(small_folders[0]), fid=True, kid=True, isc=True, cuda=False,
            cache=False, verbose=False, feature_extractor_weights_path=str(random_inception_weights),
            batch_size=COUNT, kid_subsets=100, kid_subset_size=SUBSET, isc_splits=2, rng_seed=SEED)
    assert result["fid"] > 1 and result["fid"] == pytest.approx(reference["frechet_inception_distance"], rel=PARITY)
    assert result["kid"] == pytest.approx(reference["kernel_inception_distance_mean"], rel=PARITY)
    assert result["kid_std"] == pytest.approx(reference["kernel_inception_distance_std"], rel=PARITY)
    assert result["is"] > 1 and result["is"] == pytest.approx(reference["inception_score_mean"], rel=PARITY)
    assert result["is_std"] == pytest.approx(reference["inception_score_std"], rel=PARITY)


class _Pool3(nn.Module):
    """pytorch-fid's network as the ``layers`` of clean-fid's TorchScript wrapper: [N, 2048, 1, 1]."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[0]


def test_clean_fid_protocol_gives_clean_fids_fid_and_kid_and_clean_fid_reads_our_statistics(
        small_folders, random_inception_weights, tmp_path, monkeypatch):
    # clean-fid's KID draws subsets of min(1000, both set sizes) images: all of them here
    result = ours("clean-fid", small_folders, random_inception_weights, tmp_path, "fid,kid", kid_subset_size=COUNT)
    network = pytorch_fid_network(random_inception_weights, resize_input=False, normalize_input=False)

    class LocalInceptionV3W(InceptionV3W):  # clean-fid's wrapper (its forward: (x - 128) / 128), offline weights
        def __init__(self, path, download=True, resize_inside=False):
            nn.Module.__init__(self)
            self.layers, self.resize_inside = _Pool3(network), resize_inside

    extracted = {}
    extract = cleanfid_fid.get_folder_features

    def extract_once(fdir, *args, **kwargs):  # its FID and KID read the same features: extract them once
        if fdir not in extracted:
            extracted[fdir] = extract(fdir, *args, **kwargs)
        return extracted[fdir]

    monkeypatch.setattr(cleanfid_features, "InceptionV3W", LocalInceptionV3W)
    monkeypatch.setattr(cleanfid_fid, "get_folder_features", extract_once)
    options = {"mode": "clean", "num_workers": 0, "batch_size": COUNT, "device": torch.device("cpu"),
               "use_dataparallel": False, "verbose": False}
    real, fake = (str(folder) for folder in small_folders)
    with sqrtm_accepting_disp(cleanfid_fid), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference_fid = cleanfid_fid.compute_fid(real, fake, **options)
        np.random.seed(SEED)  # clean-fid draws its KID subsets from numpy's global generator
        reference_kid = cleanfid_fid.compute_kid(real, fake, **options)
        # --save-stats wrote real.npz: clean-fid's loader of "custom" statistics reads it unchanged
        # (only the download helper is pointed at it) and scores the fake folder against it
        monkeypatch.setattr(cleanfid_features, "check_download_url", lambda local_folder, url: str(tmp_path / "real.npz"))
        against_our_stats = cleanfid_fid.compute_fid(fake, dataset_name="ours", dataset_res="na",
                                                     dataset_split="custom", **options)
    assert result["fid"] > 1 and result["fid"] == pytest.approx(reference_fid, rel=PARITY)
    assert result["kid"] == pytest.approx(reference_kid, rel=PARITY)
    assert against_our_stats == pytest.approx(result["fid"], rel=PARITY)
    assert {"protocol": "clean-fid", "inception_weights": weights_tag(str(random_inception_weights))}.items() <= \
        RealStatistics.load(tmp_path / "real.npz").meta.items()
