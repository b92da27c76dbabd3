"""Shared fixtures."""

from __future__ import annotations

import os

# Under pytest-xdist (the default, see pyproject.toml) two test processes share the machine's cores:
# each, and every process it starts, computes with one thread, so the workers do not oversubscribe
# the cores (set before numpy or torch is imported; a plain serial run keeps torch's default).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import compileall
import json
import logging
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_ignite.run_dir import HistoryWriter

ROOT = Path(__file__).resolve().parents[1]
# a suite run inside a SLURM job (or under torchrun) must not see that job: the tests that need SLURM
# start processes with the environment srun would give them
for _name in [name for name in os.environ if name.startswith("SLURM_") or name == "GAN_IGNITE_SLURM_JOB_ID"]:
    del os.environ[_name]
# Real Fashion-MNIST for the tests that train on it: the repository's data/ folder (where the docs tell a
# user to put it: data/FashionMNIST/raw) or, on this project's own machines, ../shared/datasets; the
# first that holds it. Neither holding it: those tests skip.
DATASET_FOLDERS = (ROOT / "data", ROOT.parent / "shared" / "datasets")
SHARED_DATASETS = next((folder for folder in DATASET_FOLDERS if (folder / "FashionMNIST" / "raw").is_dir()),
                       DATASET_FOLDERS[0])
# The suite starts a few hundred Python processes that import the package; where
# PYTHONDONTWRITEBYTECODE is set (CI sets it) none of them caches its bytecode and each compiles
# the package again (~1.2 s per process on 2 cores). Compile it once here; the processes read it.
compileall.compile_dir(str(ROOT / "gan_ignite"), quiet=1)


# ----------------------------------------------------------------------------- application fixtures
def make_shape_images(folder: Path, count: int, size: int = 32, seed: int = 0, mode: str = "RGB") -> list[Path]:
    """Small images of coloured rectangles and discs on a gradient: structured, not pure noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    paths = []
    for index in range(count):
        image = np.zeros((size, size, 3), dtype=np.float64)
        image += (xx / size)[..., None] * rng.uniform(0, 255, 3)
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        r = rng.uniform(0.1, 0.3) * size
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r ** 2
        image[disc] = rng.uniform(0, 255, 3)
        x0, y0 = rng.integers(0, size // 2, 2)
        image[y0:y0 + size // 4, x0:x0 + size // 3] = rng.uniform(0, 255, 3)
        pil = Image.fromarray(image.clip(0, 255).astype(np.uint8))
        path = folder / f"img_{index:04d}.png"
        pil.convert(mode).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """48 RGB 32x32 PNGs in a class sub-folder, like an ImageFolder."""
    root = tmp_path_factory.mktemp("images")
    make_shape_images(root / "class_a", 48)
    return root


@pytest.fixture(scope="session")
def stats_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stats_cache")


def tiny_overrides(output_dir: Path, data_root: Path, stats_cache: Path, **extra) -> list[str]:
    """A run of a few iterations at 32x32 with random Inception weights on a couple dozen images."""
    values = {
        "output_dir": output_dir, "data.name": "imagefolder", "data.root": data_root, "data.image_size": 32,
        "data.channels": 3, "data.num_workers": 0, "model.latent_dim": 16, "model.g_features": 8,
        "model.d_features": 8, "train.batch_size": 8, "train.max_epochs": 2, "train.epoch_length": 3,
        "train.image_every": 2, "eval.every_epochs": 1, "eval.num_samples": 24, "eval.batch_size": 12,
        "eval.inception_weights": "random", "eval.metrics": "[fid,is]", "eval.is_splits": 2,
        "eval.stats_cache_dir": stats_cache,
    }
    values.update(extra)
    return [f"{key}={value}" for key, value in values.items()]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


PYTHON = sys.executable


# ----------------------------------------------------------------------------- running the CLI in a child process
TRAIN_ONLY = {"eval.every_epochs": 0, "train.epoch_length": "null", "train.image_every": 1000}


def train_records(run_dir: Path) -> list[dict]:
    return [r for r in HistoryWriter(run_dir / "history.jsonl").read() if r["kind"] == "train"]


def start(overrides: list[str], module: str = "gan_ignite.train", env: dict | None = None) -> subprocess.Popen:
    """The CLI in a child process; its stderr goes to a file (a pipe nobody reads would fill up and
    block the child), readable afterwards with :func:`stderr_of`."""
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    # a test run started in the background of a non-interactive shell (`bash .ci/run &`) passes on SIGINT
    # ignored, and Python then never raises KeyboardInterrupt: the child gets Ctrl-C's default back
    process = subprocess.Popen([PYTHON, "-m", module, *overrides], cwd=ROOT, env=env or cli_env(),
                               stdout=subprocess.DEVNULL, stderr=log, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    process.log_path = log.name
    return process


def stderr_of(process: subprocess.Popen) -> str:
    return Path(process.log_path).read_text()


def wait_for_iteration(process: subprocess.Popen, run_dir: Path, iteration: int, timeout: float = 240) -> bool:
    """Poll history.jsonl until it reaches ``iteration``; False if the process ended first."""
    deadline = time.monotonic() + timeout
    history = run_dir / "history.jsonl"
    while time.monotonic() < deadline:
        if history.exists():
            lines = history.read_text().splitlines()
            if lines and lines[-1].endswith("}") and json.loads(lines[-1]).get("iteration", 0) >= iteration:
                return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    raise TimeoutError(f"run did not reach iteration {iteration}")


def assert_same_losses(records: list[dict], reference: list[dict]) -> None:
    assert [r["iteration"] for r in records] == [r["iteration"] for r in reference]
    for got, expected in zip(records, reference):
        for key in ("Loss_G", "Loss_D"):
            assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), (got["iteration"], key)


# ----------------------------------------------------------------------------- metrics fixtures
# (owned by gan_ignite.metrics' tests: tests/test_metrics_*.py)
@pytest.fixture(scope="session")
def random_inception():
    """The deterministic random-init FID Inception (meaningless numbers, fine for comparisons)."""
    import warnings

    from gan_ignite.metrics.networks.inception import load_fid_inception

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_fid_inception("random", "cpu")


@pytest.fixture(scope="session")
def random_inception_weights(tmp_path_factory, random_inception) -> Path:
    """The random-init network saved as a state dict in pytorch-fid's file format."""
    import torch

    path = tmp_path_factory.mktemp("inception") / "random_fid_inception.pth"
    torch.save(random_inception.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def nvidia_torchscripts(tmp_path_factory):
    """NVIDIA's TorchScript FID Inception layout with seeded random weights (tests/nvidia_inception.py):
    ``(full_path, pool3_only_path, full_module)``."""
    from nvidia_inception import save_torchscripts

    return save_torchscripts(tmp_path_factory.mktemp("nvidia"))


@pytest.fixture(scope="session")
def inception_folders(tmp_path_factory) -> tuple[Path, Path]:
    """Two folders of 299x299 PNGs (no resizing anywhere): A = 16 colour shape images,
    B = 16 other shape images saved as grayscale, so FID(A, B) is clearly non-zero."""
    root = tmp_path_factory.mktemp("inception_folders")
    make_shape_images(root / "a", 16, size=299, seed=1)
    make_shape_images(root / "b", 16, size=299, seed=2, mode="L")
    return root / "a", root / "b"


def pytorch_fid_frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """pytorch-fid's ``calculate_frechet_distance`` as the reference. pytorch-fid 0.3.0 passes
    ``disp=False`` to ``scipy.linalg.sqrtm``, which SciPy 1.18 removed: adapt the call there."""
    import inspect
    import warnings

    import scipy.linalg
    from pytorch_fid import fid_score

    class _SqrtmWithoutDisp:
        @staticmethod
        def sqrtm(matrix, disp=True):
            root = scipy.linalg.sqrtm(matrix)
            return root if disp else (root, None)

    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("ignore")  # sqrtm: "Matrix is singular" for n < d, scipy deprecations
        if "disp" not in inspect.signature(scipy.linalg.sqrtm).parameters:
            patch.setattr(fid_score, "linalg", _SqrtmWithoutDisp)
        return float(fid_score.calculate_frechet_distance(mu1, sigma1, mu2, sigma2))


@pytest.fixture(autouse=True)
def _ignite_loggers_write_to_this_tests_stderr():
    """ignite's own loggers (the launcher's "Run ... in 1 processes") keep the stderr of the test that
    created them, which pytest closes afterwards; point them at this test's."""
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("ignite") and isinstance(logger, logging.Logger):
            for handler in logger.handlers:
                if type(handler) is logging.StreamHandler:
                    handler.stream = sys.stderr  # not setStream: it flushes the old, closed stream
    yield
