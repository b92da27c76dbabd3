import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import PYTHON, ROOT, SHARED_DATASETS, cli_env, make_shape_images
from gan_ignite.config import load_config
from gan_ignite.data import ImageFiles, build_transform, collate_images, load_dataset
from gan_ignite.errors import ConfigError, DataError


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "gan_ignite.train", *args], capture_output=True, text=True,
                          env=cli_env(), cwd=cwd, timeout=300)


@pytest.mark.parametrize("name", ["celeba", "fashion_mnist", "cifar10"])
def test_shipped_configs_load(name):
    config = load_config(ROOT / "configs" / f"{name}.yaml")
    assert config.data.name == name


# "as `configs/X.yaml` ships them: 1,000 iterations x batch 64, 32x32, latent 100, widths 64, all 60,000 training images"
SHIPPED_SETTINGS = re.compile(r"as `(configs/\w+\.yaml)` ships them: ([\d,]+) iterations x batch (\d+), (\d+)x\d+, "
                              r"latent (\d+), widths (\d+), (all )?([\d,]+) training images")
BUDGET_KEYS = ("data.max_train_size", "data.image_size", "model.", "train.batch_size", "train.epoch_length",
               "train.max_epochs")


# the measured tables and the commands that measured them live in the documentation's recipes page
RECIPES_PAGE = ROOT / "docs" / "recipes.md"


def test_recipe_tables_state_the_settings_their_shipped_configs_hold():
    page = " ".join(RECIPES_PAGE.read_text().split())  # a statement may wrap over lines
    stated = SHIPPED_SETTINGS.findall(page)
    assert {name for name, *_ in stated} >= {"configs/fashion_mnist_plus.yaml", "configs/fashion_mnist_small.yaml"}
    for name, iterations, batch, size, latent, widths, everything, images in stated:
        config = load_config(ROOT / name)
        train, model = config.train, config.model
        assert train.max_epochs * train.epoch_length == int(iterations.replace(",", "")), name
        assert (train.batch_size, config.data.image_size, model.latent_dim) == (int(batch), int(size), int(latent)), name
        assert model.g_features == model.d_features == int(widths), name
        expected_subset = None if everything else int(images.replace(",", ""))
        assert config.data.max_train_size == expected_subset, name


def test_recipe_commands_do_not_override_the_budget_of_a_table_config():
    page = RECIPES_PAGE.read_text()
    tables = {name for name, *_ in SHIPPED_SETTINGS.findall(" ".join(page.split()))}
    commands = [line for line in page.splitlines() if "gan_ignite.sweep --config" in line]
    run = {name: [line for line in commands if f"--config {name}" in line] for name in tables}
    assert all(run.values()), run  # every table's config has the command that measured it
    for line in (line for lines in run.values() for line in lines):
        overrides = [word for word in line.split() if "=" in word and not word.startswith("--")]
        assert not [word for word in overrides if word.startswith(BUDGET_KEYS)], line


def test_celeba_config_is_the_seed_setup():
    config = load_config(ROOT / "configs" / "celeba.yaml")
    assert (config.data.root, config.data.image_size, config.train.batch_size) == ("data/celeba", 64, 128)
    assert (config.model.latent_dim, config.train.lr, config.train.beta1, config.train.beta2) == (150, 2e-4, 0.5, 0.999)
    assert (config.train.max_epochs, config.eval.num_samples) == (30, 3000)


def test_overrides_beat_the_file():
    config = load_config(ROOT / "configs" / "celeba.yaml", ["train.max_epochs=3", "eval.metrics=[fid,kid]"])
    assert config.train.max_epochs == 3 and list(config.eval.metrics) == ["fid", "kid"]


@pytest.mark.parametrize("override, words", [
    ("train.bacth_size=4", ["Unknown config key", "train.bacth_size"]),
    ("train.batch_size=four", ["Wrong type", "train.batch_size"]),
    ("train.batch_size=0", ["train.batch_size", "positive"]),
    ("train.lr=-0.1", ["train.lr", "positive"]),
    ("data.image_size=48", ["data.image_size", "48"]),
    ("eval.metrics=[fid,lpips]", ["eval.metrics", "lpips"]),
    ("train.loss=wasserstein", ["train.loss", "wasserstein", "bce, non_saturating, hinge"]),
    ("train.augment=mixup", ["train.augment", "mixup", "none, diffaugment, ada"]),
    ("train.ada_target=1.5", ["train.ada_target", "(0, 1)"]),
    ("train.ada_p=1.5", ["train.ada_p", "[0, 1]"]),
    ("train.ada_speed_images=0", ["train.ada_speed_images", "positive"]),
    ("train.ada_interval=0", ["train.ada_interval", "positive"]),
    ("train.ema_decay=1.0", ["train.ema_decay", "(0, 1)"]),
    ("train.ema_start=-1", ["train.ema_start", ">= 0"]),
    ("model.spectral_norm=maybe", ["Wrong type", "model.spectral_norm"]),
    ("eval.protocol=bilinear", ["eval.protocol", "tutorial, pytorch-fid, torch-fidelity, clean-fid"]),
    ("eval.reference_stats=fid_stats_cifar10_train.npz", ["eval.protocol", "explicitly", "torch-fidelity for TTUR"]),
])
def test_bad_config_values_name_the_key(override, words):
    with pytest.raises(ConfigError) as caught:
        load_config(ROOT / "configs" / "fashion_mnist.yaml", [override])
    for word in words:
        assert word in str(caught.value)


def test_protocol_default_and_a_declared_one():
    assert load_config(ROOT / "configs" / "fashion_mnist.yaml").eval.protocol == "torch-fidelity"
    declared = load_config(None, ["eval.reference_stats=stats.npz", "eval.protocol=clean-fid"])
    assert declared.eval.protocol == "clean-fid"


@pytest.mark.slow
def test_a_batch_the_processes_cannot_share_is_refused_before_any_work(tmp_path):
    result = run_cli("--config", "configs/fashion_mnist.yaml", f"output_dir={tmp_path / 'run'}", "dist.nproc_per_node=3")
    assert result.returncode == 2
    assert "train.batch_size" in result.stderr and "divisible" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_training_recipe_defaults_are_the_seed_recipe():
    train = load_config(None).train
    assert (train.loss, train.augment, train.ema_decay, train.ema_start) == ("bce", "none", None, 0)
    assert (train.ada_p, train.ada_target, train.ada_speed_images, train.ada_interval) == (0.0, 0.6, 500_000, 4)
    assert load_config(None).model.spectral_norm is False


def test_invalid_yaml_is_reported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.slow
def test_cli_rejects_unknown_key_before_any_work(tmp_path):
    result = run_cli("--config", "configs/fashion_mnist.yaml", f"output_dir={tmp_path / 'run'}", "model.depth=3")
    assert result.returncode == 2
    assert "model.depth" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_missing_data_root_names_path_and_readme(tmp_path):
    missing = tmp_path / "no_such_folder"
    result = run_cli("--config", "configs/fashion_mnist.yaml", f"output_dir={tmp_path / 'run'}",
                     "data.name=imagefolder", f"data.root={missing}", "data.channels=3")
    assert result.returncode == 2
    assert str(missing) in result.stderr and "docs/data.md" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_missing_torchvision_dataset_without_download(tmp_path):
    config = load_config(None, [f"data.root={tmp_path}", "data.download=false"])
    with pytest.raises(DataError, match="fashion_mnist") as caught:
        load_dataset(config.data)
    assert "data.download=false" in str(caught.value) and "FashionMNIST/" in str(caught.value)  # the offline way


def test_empty_folder_is_reported(tmp_path):
    (tmp_path / "class_a").mkdir()
    (tmp_path / "class_a" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="holds no image files"):
        ImageFiles(tmp_path, build_transform(32, 3))


def test_flat_folder_and_mixed_modes(tmp_path):
    for mode in ("L", "RGB", "RGBA", "P"):
        make_shape_images(tmp_path, 2, size=40, seed=len(mode), mode=mode)
        for path in tmp_path.glob("img_*.png"):
            path.rename(tmp_path / f"{mode}_{path.name}")
    sixteen_bit = np.linspace(0, 65535, 40 * 40).reshape(40, 40).astype(np.uint16)
    Image.fromarray(sixteen_bit).save(tmp_path / "I16_gradient.png")
    for channels in (1, 3):
        dataset = ImageFiles(tmp_path, build_transform(32, channels))
        images, skipped = collate_images([dataset[i] for i in range(len(dataset))])
        assert images.shape == (9, channels, 32, 32) and skipped == 0
        assert images.min() >= -1 and images.max() <= 1
        gradient = images[[p.name for p in dataset.files].index("I16_gradient.png")]
        assert gradient.max() > 0.9 and gradient.min() < -0.9  # scaled to 8 bits, not clipped at 255


def test_corrupt_image_is_skipped_or_named(tmp_path):
    make_shape_images(tmp_path, 3)
    corrupt = tmp_path / "img_0001.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    skipping = ImageFiles(tmp_path, build_transform(32, 3), skip_bad_images=True)
    images, skipped = collate_images([skipping[i] for i in range(len(skipping))])
    assert images.shape[0] == 2 and skipped == 1
    strict = ImageFiles(tmp_path, build_transform(32, 3), skip_bad_images=False)
    with pytest.raises(DataError, match="img_0001.png"):
        strict[1]


@pytest.mark.skipif(not (SHARED_DATASETS / "FashionMNIST" / "raw").is_dir(), reason="real Fashion-MNIST not available")
def test_real_fashion_mnist_loads_as_one_channel_images():
    config = load_config(ROOT / "configs" / "fashion_mnist.yaml", [f"data.root={SHARED_DATASETS}", "data.download=false"])
    dataset = load_dataset(config.data)
    assert len(dataset) == 60_000
    image = dataset[0]
    assert image.shape == (1, 32, 32) and image.min() >= -1 and image.max() <= 1


def test_celeba_reads_an_image_folder_or_says_where_to_put_it(image_folder, tmp_path):
    config = load_config(None, ["data.name=celeba", f"data.root={image_folder}", "data.channels=3"])
    dataset = load_dataset(config.data)
    assert len(dataset) == 48 and dataset[0].shape == (3, 32, 32)
    missing = load_config(None, ["data.name=celeba", f"data.root={tmp_path / 'celeba'}", "data.download=false"])
    with pytest.raises(DataError, match="img_align_celeba"):
        load_dataset(missing.data)
