"""``python -m gan_ignite.metrics PATH_A [PATH_B]``: the registry's metrics (FID, IS, KID, PRDC, FD,
CMMD, Vendi, AuthPct, FID_inf, ...) of two image sets.

PATH_A is the reference (real) set, PATH_B the set under test; IS is computed on PATH_B. A path
is a folder of images (recursive; any size and mode, converted to RGB, resized and scaled by
``--protocol`` like the evaluator's images) or an ``.npz`` of statistics (ours, or the ``mu`` /
``sigma`` files of TTUR, pytorch-fid and clean-fid: say with ``--protocol`` which protocol such a
file was computed with). ``--save-stats OUT.npz`` saves PATH_A's statistics (with features, so
KID/PRDC work from it later, and the protocol and weights); with only PATH_A given it just saves them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import fields

from gan_ignite.command import main_for
from gan_ignite.metrics.options import (DEFAULT_PROTOCOL, DEFAULT_SEED, MetricName, MetricOptions, Precision,
                                        ProtocolName)

LOG_LEVEL = logging.WARNING
INTERRUPTED = "Interrupted by Ctrl-C; nothing was written."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="PATH_A (reference) and PATH_B (under test)")
    parser.add_argument("--metrics", default=None,
                        help=f"comma-separated subset of {','.join(map(str, MetricName))} (default: those of "
                             f"fid,is,kid,prdc the inputs allow)")
    parser.add_argument("--feature-network", default="inception",
                        help="inception (default) or classifier:PATH (a classifier from python -m "
                             "gan_ignite.train_classifier)")
    parser.add_argument("--inception-weights", default="",
                        help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth or NVIDIA's TorchScript "
                             "inception-2015-12-05.pt, empty = download pytorch-fid's, 'random' = tests only")
    parser.add_argument("--protocol", choices=[str(name) for name in ProtocolName], default=None,
                        help=f"how images become the Inception's input, reproducing that implementation's FID "
                             f"(default {DEFAULT_PROTOCOL}; required with an .npz that does not record it)")
    parser.add_argument("--precision", choices=[str(name) for name in Precision], default="fp32",
                        help="the FID Inception's precision: fp32 (default), or tf32 on a GPU (cuDNN's TF32 "
                             "convolutions: what pytorch-fid, torch-fidelity and clean-fid compute there, features "
                             "within ~1e-3)")
    parser.add_argument("--batch-size", type=int, default=50, help="images per forward pass of the feature network")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--num-workers", type=int, default=None,
                        help="image loader workers (default: the CPU count, at most 4)")
    for option in fields(MetricOptions):
        parser.add_argument("--" + option.name.replace("_", "-"), type=type(option.default), default=option.default,
                            help=option.metadata["help"])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the IS shuffle and KID subsets")
    parser.add_argument("--save-stats", metavar="OUT.npz", help="save the statistics of PATH_A")
    parser.add_argument("--json", metavar="OUT.json", help="write the results as JSON")


def run(args: argparse.Namespace) -> int:
    from gan_ignite.metrics.compare import compare

    if args.num_workers is None:  # resolved here: the parser (and its documentation) is the same on every machine
        args.num_workers = min(4, os.cpu_count() or 1)
    return compare(args)


main = main_for(__name__)

if __name__ == "__main__":
    sys.exit(main())
