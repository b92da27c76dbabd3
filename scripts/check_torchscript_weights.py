"""Check that NVIDIA's TorchScript FID Inception, loaded into our network, gives the file's own features.

    python scripts/check_torchscript_weights.py inception-2015-12-05.pt IMAGE_FOLDER [--count 8]

Runs ``--count`` images of IMAGE_FOLDER (torch-fidelity protocol: NVIDIA's ``(x - 128) / 128``
scaling) through the TorchScript module itself (``layers``, as clean-fid calls it) and through
``load_fid_inception(path)``, in our channels-last layout and in the standard NCHW one, and prints
the largest difference of the pool3 features relative to the largest feature.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gan_ignite.metrics.networks.folder import list_images  # noqa: E402
from gan_ignite.metrics.networks.images import load_image_rgb  # noqa: E402
from gan_ignite.metrics.networks.inception import load_fid_inception  # noqa: E402
from gan_ignite.metrics.networks.preprocess import prepare_for_inception  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights")
    parser.add_argument("images")
    parser.add_argument("--count", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    images = torch.stack([load_image_rgb(path) for path in list_images(args.images)[: args.count]])
    inputs = prepare_for_inception(images, "torch-fidelity").contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch >= 2.9 marks TorchScript deprecated
        script = torch.jit.load(args.weights, map_location="cpu").eval()
    theirs = getattr(script, "net", script).layers(inputs).reshape(-1, 2048)
    ours = load_fid_inception(args.weights)
    print(f"logits layer: {'yes' if ours.has_logits else 'no (pool3 only: no Inception Score)'}")
    for layout, network in (("channels-last (ours)", ours),
                            ("NCHW", copy.deepcopy(ours).use_memory_format(torch.contiguous_format))):
        features, _ = network(inputs)
        relative = ((features - theirs).abs().max() / theirs.abs().max()).item()
        print(f"{layout}: largest |ours - TorchScript| / largest feature = {relative:.2e} ({len(images)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
