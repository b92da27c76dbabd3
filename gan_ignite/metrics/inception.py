"""The FID Inception network (pool3 features + logits from one forward pass).

This is the TensorFlow-ported Inception v3 used by pytorch-fid, torch-fidelity, clean-fid and
StyleGAN2-ADA: torchvision's ``Inception3`` topology with 1008 classes and the FID-specific
Mixed blocks from ``pytorch_fid.inception``. Its weights live in pytorch-fid's release file
``pt_inception-2015-12-05-6726825d.pth``.

Input contract of :meth:`FIDInception.forward`: a ``uint8`` tensor ``N x 3 x 299 x 299`` with
values 0..255 (use :func:`gan_ignite.metrics.preprocess.resize_for_inception` to get there). It
is scaled inside exactly as pytorch-fid scales it (``x / 255`` then ``2x - 1``), so features of a
299x299 image are bit-identical to pytorch-fid's.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path

import torch
from pytorch_fid.inception import (
    FID_WEIGHTS_URL,
    FIDInceptionA,
    FIDInceptionC,
    FIDInceptionE_1,
    FIDInceptionE_2,
)
from torch import nn
from torchvision.models.inception import Inception3

__all__ = [
    "FID_WEIGHTS_URL",
    "FIDInception",
    "InceptionWeightsError",
    "load_fid_inception",
    "weights_tag",
]

logger = logging.getLogger(__name__)

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_SHA256_PREFIX = "6726825d"
STANDARD_TAG = "pt_inception-2015-12-05"
RANDOM_TAG = "random"
RANDOM_SEED = 20151205
INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008


class InceptionWeightsError(ValueError):
    """The Inception weights could not be downloaded or loaded."""


class FIDInception(Inception3):
    """FID Inception v3 returning ``(pool3 features [N, 2048], logits [N, 1008])``.

    The logits are ``pool3 @ fc.weight.T`` *without* the fc bias: the published Inception Score
    code (openai/improved-gan) multiplies pool3 by the ``softmax/logits/MatMul`` weight only, and
    torch-fidelity reproduces that as its ``logits_unbiased`` feature for IS. We do the same so
    our IS matches torch-fidelity's.
    """

    def __init__(self) -> None:
        super().__init__(num_classes=NUM_CLASSES, aux_logits=False, init_weights=False)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7b = FIDInceptionE_1(1280)
        self.Mixed_7c = FIDInceptionE_2(2048)

    # cuDNN's default TF32 convolutions move pool3 features by ~1e-3 (relative) and FID with them;
    # full FP32 keeps GPU features within ~1e-6 of the CPU's at half the speed (~2000 img/s, H100).
    allow_tf32: bool = False
    # NHWC activations: 1.44x the img/s of NCHW on the 2-core CI CPU (14.7 vs 10.2 img/s at batch
    # 16; TorchScript freezing gave 1.36x, both together 1.39x), features within 5e-7 (relative to
    # their largest value) of the NCHW forward, i.e. of pytorch-fid's. See use_memory_format().
    memory_format: torch.memory_format = torch.contiguous_format

    def use_memory_format(self, memory_format: torch.memory_format) -> FIDInception:
        """Lay weights and activations out in ``memory_format`` (``torch.channels_last`` is the fast one)."""
        self.memory_format = memory_format
        return self.to(memory_format=memory_format)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        _check_input(images)
        if not images.is_cuda or self.allow_tf32:
            return self._features_and_logits(images)
        cudnn = torch.backends.cudnn
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=False):
            return self._features_and_logits(images)

    def _features_and_logits(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.float() / 255.0
        x = (2 * x - 1).contiguous(memory_format=self.memory_format)
        for block in self._trunk():
            x = block(x)
        features = torch.flatten(self.avgpool(x), 1).float()
        logits = features.double() @ self.fc.weight.double().T  # float64: immune to TF32 matmul settings
        return features, logits.float()

    def _trunk(self) -> list[nn.Module]:
        return [
            self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, self.maxpool1,
            self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, self.maxpool2,
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
            self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e,
            self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
        ]  # fmt: skip


def _check_input(images: torch.Tensor) -> None:
    expected = f"a uint8 tensor N x 3 x {INPUT_SIZE} x {INPUT_SIZE}"
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
        raise TypeError(f"FIDInception expects {expected} (values 0..255), got dtype {got}; "
                        "convert with gan_ignite.metrics.preprocess.to_uint8/resize_for_inception.")
    if images.dim() != 4 or tuple(images.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"FIDInception expects {expected}, got shape {tuple(images.shape)}; "
                         "resize with gan_ignite.metrics.preprocess.resize_for_inception.")


def load_fid_inception(weights: str | os.PathLike | None, device: str | torch.device = "cpu") -> FIDInception:
    """Build the FID Inception in eval mode with frozen parameters, in channels-last layout.

    ``weights``: ``None`` or ``""`` = pytorch-fid's file, downloaded once into the torch hub cache;
    a path = that file (``pt_inception-2015-12-05-6726825d.pth``); ``"random"`` = a deterministic
    random-init network for tests only (the metric values are meaningless).
    """
    with torch.random.fork_rng(devices=[]):  # building must not touch the caller's RNG stream
        torch.default_generator.manual_seed(RANDOM_SEED)  # CPU only: leaves CUDA RNG alone
        model = FIDInception()
        if _is_random(weights):
            _randomize(model)
    if not _is_random(weights):
        _load_state(model, _read_state_dict(weights))
    model.eval().requires_grad_(False)
    return model.use_memory_format(torch.channels_last).to(device)


def weights_tag(weights: str | os.PathLike | None) -> str:
    """A short name of the weights for cache keys and records."""
    if _is_random(weights):
        return RANDOM_TAG
    if not weights:
        return STANDARD_TAG
    digest = _sha256(Path(weights))
    return STANDARD_TAG if digest.startswith(FID_WEIGHTS_SHA256_PREFIX) else f"sha256-{digest[:12]}"


def _is_random(weights: str | os.PathLike | None) -> bool:
    return isinstance(weights, str) and weights.strip().lower() == RANDOM_TAG


def _sha256(path: Path) -> str:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError as error:
        raise InceptionWeightsError(_missing_file_message(path, error)) from None


def _randomize(model: FIDInception) -> None:
    """He-normal convolutions keep activations O(1) through the 20 conv layers, so random
    features are spread out (PyTorch's default init shrinks them towards 0)."""
    warnings.warn(
        "Using a RANDOM-INIT Inception (inception_weights='random'): FID/IS/KID/PR values are "
        "meaningless and only good for tests.",
        stacklevel=3,
    )
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    nn.init.normal_(model.fc.weight, std=(4.0 / NUM_FEATURES) ** 0.5)
    nn.init.zeros_(model.fc.bias)


def _read_state_dict(weights: str | os.PathLike | None) -> dict:
    if not weights:
        return _download_state_dict()
    path = Path(weights).expanduser()
    if not path.is_file():
        raise InceptionWeightsError(_missing_file_message(path, FileNotFoundError("no such file")))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise InceptionWeightsError(
            f"Could not read Inception weights from '{path}' ({type(error).__name__}: {_first_line(error)}). "
            f"Expected pytorch-fid's state dict file {FID_WEIGHTS_FILE} (download {FID_WEIGHTS_URL})."
        ) from None
    if not isinstance(state, dict):
        raise InceptionWeightsError(
            f"Inception weights file '{path}' holds a {type(state).__name__}, not a state dict. "
            f"Expected pytorch-fid's {FID_WEIGHTS_FILE} (download {FID_WEIGHTS_URL})."
        )
    return {"__path__": str(path), **state}


def _download_state_dict() -> dict:
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        state = torch.hub.load_state_dict_from_url(
            FID_WEIGHTS_URL, map_location="cpu", progress=True, check_hash=True, weights_only=True
        )
    except Exception as error:  # offline: URLError/OSError; bad download: RuntimeError
        raise InceptionWeightsError(
            f"Could not download the FID Inception weights from {FID_WEIGHTS_URL} "
            f"({type(error).__name__}: {_first_line(error)}). Download that file manually and pass it with "
            f"eval.inception_weights=/path/to/{FID_WEIGHTS_FILE} (or --inception-weights for "
            f"python -m gan_ignite.metrics), or put it into the torch hub checkpoints folder "
            f"{checkpoints} so it is found without downloading."
        ) from None
    return {"__path__": str(checkpoints / FID_WEIGHTS_FILE), **state}


def _load_state(model: FIDInception, state: dict) -> None:
    path = state.pop("__path__")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:600]
        raise InceptionWeightsError(
            f"Inception weights file '{path}' does not fit the FID Inception v3 (1008 classes, no "
            f"aux logits): {detail}. Expected pytorch-fid's {FID_WEIGHTS_FILE} "
            f"(download {FID_WEIGHTS_URL})."
        ) from None
    logger.info("Loaded FID Inception weights from %s", path)


def _first_line(error: Exception) -> str:
    """torch's load errors run over many lines; the first one says what went wrong."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def _missing_file_message(path: Path, error: Exception) -> str:
    return (
        f"Inception weights file '{path}' cannot be read ({error}). Pass the path of pytorch-fid's "
        f"{FID_WEIGHTS_FILE} (download {FID_WEIGHTS_URL}), leave the setting empty to download it "
        f"to the torch hub cache, or use 'random' for tests."
    )
