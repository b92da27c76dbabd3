"""Hostile files (issue 24): nothing a user hands in runs code, nothing written leaves its folder
through a link, no output destroys an input, no impossible or mislabelled number, and every bad
file is one paragraph with exit code 2 (never a traceback, never a hang)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PYTHON, ROOT, TRAIN_ONLY, cli_env, make_shape_images, tiny_overrides
from gan_ignite.errors import RunDirError
from gan_ignite.evaluate import main as evaluate_main
from gan_ignite.metrics.networks.classifier import FORMAT, DomainClassifier, save_classifier
from gan_ignite.metrics.cli import main as metrics_main
from gan_ignite.metrics.networks.images import find_image_files
from gan_ignite.metrics.scores.real_stats import RealStatistics, RealStatisticsError
from gan_ignite.io import append_text, atomic_write, load_torch_file, require_writable_folder
from gan_ignite.run_dir import HistoryWriter, write_text
from gan_ignite.sample import main as sample_main
from gan_ignite.train import main as train_main


class Payload:
    """Unpickled, it creates ``marker``: the proof that loading ran code from the file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant_payload(path: Path, marker: Path) -> None:
    """Add a payload to a file we wrote ourselves (read here trusting it)."""
    content = torch.load(path, map_location="cpu", weights_only=False)
    content["extra"] = Payload(marker)
    torch.save(content, path)


def one_paragraph(text: str) -> bool:
    return "Traceback" not in text and text.strip() != ""


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, image_folder, stats_cache) -> Path:
    """A run of 3 iterations without evaluation: config.yaml and checkpoints/checkpoint_3.pt."""
    run = tmp_path_factory.mktemp("hostile") / "run"
    overrides = tiny_overrides(run, image_folder, stats_cache, **{**TRAIN_ONLY, "train.max_epochs": 1,
                                                                   "train.epoch_length": 3})
    assert train_main(overrides) == 0
    assert (run / "checkpoints" / "checkpoint_3.pt").is_file()
    return run


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def train_args(run: Path, image_folder: Path, stats_cache: Path, **extra) -> list[str]:
    return tiny_overrides(run, image_folder, stats_cache, **{**TRAIN_ONLY, "train.max_epochs": 2,
                                                             "train.epoch_length": 3, **extra})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def stats_file(path: Path, dim: int = 8, count: int = 20, seed: int = 0, **meta) -> Path:
    features = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)
    RealStatistics.from_features(features, meta).save(path)
    return path


def raw_npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


# ----------------------------------------------------------------------------- 1. loading runs code
def test_sample_refuses_a_checkpoint_carrying_code_and_creates_no_output(run_copy, tmp_path, capsys):
    checkpoint, marker, out = run_copy / "checkpoints" / "checkpoint_3.pt", tmp_path / "MARKER", tmp_path / "out"
    plant_payload(checkpoint, marker)
    assert sample_main(["--checkpoint", str(checkpoint), "--out", str(out), "--num", "4", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert not out.exists()  # class 6: the checkpoint is checked before --out is created
    assert str(checkpoint) in err and "run code" in err and one_paragraph(err)


def test_evaluate_refuses_a_checkpoint_carrying_code(run_copy, tmp_path, capsys):
    checkpoint, marker = run_copy / "checkpoints" / "checkpoint_3.pt", tmp_path / "MARKER"
    plant_payload(checkpoint, marker)
    assert evaluate_main(["--checkpoint", str(checkpoint), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert not marker.exists() and "run code" in err and one_paragraph(err)
    assert not (run_copy / "evaluations.jsonl").exists()


def test_resume_refuses_a_checkpoint_carrying_code_and_leaves_the_run_untouched(run_copy, tmp_path, image_folder,
                                                                                stats_cache, capsys):
    checkpoint, marker = run_copy / "checkpoints" / "checkpoint_3.pt", tmp_path / "MARKER"
    plant_payload(checkpoint, marker)
    before = snapshot(run_copy)
    assert train_main(train_args(run_copy, image_folder, stats_cache, **{"train.resume_from": "auto"})) == 2
    err = capsys.readouterr().err
    assert not marker.exists() and "run code" in err and one_paragraph(err)
    assert snapshot(run_copy) == before


def test_fork_refuses_a_checkpoint_carrying_code(run_copy, tmp_path, image_folder, stats_cache, capsys):
    checkpoint, marker, fork = run_copy / "checkpoints" / "checkpoint_3.pt", tmp_path / "MARKER", tmp_path / "fork"
    plant_payload(checkpoint, marker)
    assert train_main(train_args(fork, image_folder, stats_cache, **{"train.resume_from": checkpoint})) == 2
    assert not marker.exists() and "run code" in capsys.readouterr().err
    assert not fork.exists()


@pytest.mark.parametrize("form", ["zip", "legacy", "raw_pickle"])
def test_payloads_in_every_torch_file_format_never_run(form, tmp_path):
    import pickle

    marker, path = tmp_path / "MARKER", tmp_path / "file.pt"
    content = {"weights": torch.zeros(2), "extra": Payload(marker)}
    if form == "raw_pickle":
        path.write_bytes(pickle.dumps(content, protocol=0))
    else:
        torch.save(content, path, _use_new_zipfile_serialization=form == "zip")
    with pytest.raises(RunDirError, match=str(path)):
        load_torch_file(path, "Checkpoint", "", RunDirError)
    assert not marker.exists()


def test_a_checkpoint_without_code_still_loads_as_data(trained_run, tmp_path, capsys):
    """The allow-list is enough for our own checkpoints (NumPy RNG states included)."""
    checkpoint = trained_run / "checkpoints" / "checkpoint_3.pt"
    content = load_torch_file(checkpoint, "Checkpoint", "")
    assert {"generator", "trainer", "run"} <= set(content)
    out = tmp_path / "samples"
    assert sample_main(["--checkpoint", str(checkpoint), "--out", str(out), "--num", "3", "--device", "cpu"]) == 0
    assert len(list(out.glob("*.png"))) == 3


def classifier_file(path: Path, **changes) -> Path:
    network = DomainClassifier(channels=3, num_classes=2, width=4, feature_dim=8, input_size=8)
    content = {"format": FORMAT, "arguments": network.arguments, "state_dict": network.state_dict(), **changes}
    torch.save(content, path)
    return path


def test_classifier_file_carrying_code_is_refused(image_folder, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    evil = classifier_file(tmp_path / "classifier.pt", extra=Payload(marker))
    code = metrics_main([str(image_folder), str(image_folder), "--feature-network", f"classifier:{evil}",
                         "--device", "cpu", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert str(evil) in err and "run code" in err


def test_a_classifier_file_written_by_us_loads(image_folder, tmp_path, capsys):
    network = DomainClassifier(channels=3, num_classes=2, width=4, feature_dim=8, input_size=8)
    path = save_classifier(tmp_path / "classifier.pt", network, classes=["a", "b"], test_accuracy=0.5)
    code = metrics_main([str(image_folder), str(image_folder), "--feature-network", f"classifier:{path}",
                         "--device", "cpu", "--num-workers", "0", "--metrics", "fid"])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("spec", ["inception", "dinov2"])
def test_network_weights_carrying_code_are_refused(spec, image_folder, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    evil = tmp_path / "weights.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 8), "extra": Payload(marker)}, evil)
    options = (["--inception-weights", str(evil)] if spec == "inception"
               else ["--feature-network", f"dinov2:{evil}"])
    code = metrics_main([str(image_folder), str(image_folder), *options, "--device", "cpu", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists() and "run code" in err and one_paragraph(err)


# ----------------------------------------------------------------------------- 2. writes that follow links
def test_a_symlinked_lock_is_refused_and_its_target_unchanged(tmp_path, image_folder, stats_cache, capsys):
    target, run = tmp_path / "precious.txt", tmp_path / "run"
    target.write_text("precious")
    run.mkdir()
    (run / ".lock").symlink_to(target)
    assert train_main(train_args(run, image_folder, stats_cache)) == 2
    err = capsys.readouterr().err
    assert target.read_text() == "precious"
    assert "symbolic link" in err and one_paragraph(err)


@pytest.mark.parametrize("name", ["evaluations.jsonl", "history.jsonl"])
def test_a_symlinked_log_gets_no_record_appended(name, tmp_path):
    target = tmp_path / "precious.jsonl"
    target.write_text('{"mine": 1}\n')
    run = tmp_path / "run"
    run.mkdir()
    (run / name).symlink_to(target)
    with pytest.raises(RunDirError, match="symbolic link"):
        if name == "history.jsonl":
            HistoryWriter(run / name).append([{"kind": "train", "iteration": 1}])
        else:
            append_text(run / name, '{"fid": 1.0}\n')
    assert target.read_text() == '{"mine": 1}\n'


def test_an_atomic_write_replaces_a_link_never_its_target(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    link = tmp_path / "run" / "config.yaml"
    link.parent.mkdir()
    link.symlink_to(target)
    write_text(link, "new: 1\n")
    assert target.read_text() == "precious"
    assert not link.is_symlink() and link.read_text() == "new: 1\n"


def test_a_planted_temporary_link_is_never_written_through(tmp_path, monkeypatch):
    """The temporary file is created with O_EXCL | O_NOFOLLOW: a link under its name is skipped."""
    import gan_ignite.io as safe_files

    target = tmp_path / "precious.txt"
    target.write_text("precious")
    names = iter(["00000000", "00000000", "11111111"])
    monkeypatch.setattr(safe_files.secrets, "token_hex", lambda _: next(names))
    (tmp_path / ".out.json.00000000.tmp").symlink_to(target)
    atomic_write(tmp_path / "out.json", lambda handle: handle.write(b"{}"))
    assert target.read_text() == "precious" and (tmp_path / "out.json").read_text() == "{}"


@pytest.mark.parametrize("option", ["--save-stats", "--json"])
def test_metrics_outputs_replace_a_link_and_leave_its_target(option, tmp_path, capsys):
    a, b = stats_file(tmp_path / "a.npz"), stats_file(tmp_path / "b.npz", seed=1)
    target = tmp_path / "precious.txt"
    target.write_text("precious")
    out = tmp_path / "out" / "result"
    out.parent.mkdir()
    out.symlink_to(target)
    assert metrics_main([str(a), str(b), option, str(out), "--metrics", "fid"]) == 0, capsys.readouterr().err
    assert target.read_text() == "precious"
    assert not out.is_symlink()


def test_sample_replaces_a_link_in_its_output_folder(trained_run, tmp_path, capsys):
    target, out = tmp_path / "precious.txt", tmp_path / "samples"
    target.write_text("precious")
    out.mkdir()
    (out / "000000.png").symlink_to(target)
    checkpoint = trained_run / "checkpoints" / "checkpoint_3.pt"
    assert sample_main(["--checkpoint", str(checkpoint), "--out", str(out), "--num", "2", "--device", "cpu"]) == 0
    assert target.read_text() == "precious" and not (out / "000000.png").is_symlink()


def test_the_writability_probe_never_writes_through_a_planted_link(tmp_path):
    target, folder = tmp_path / "precious.txt", tmp_path / "out"
    target.write_text("precious")
    folder.mkdir()
    (folder / ".gan_ignite_write_test").symlink_to(target)
    require_writable_folder(folder, "problem", "fix")
    assert target.read_text() == "precious"


def test_written_files_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        stats = stats_file(tmp_path / "stats.npz")
        atomic_write(tmp_path / "x.bin", lambda handle: handle.write(b"x"))
    finally:
        os.umask(old)
    assert stats.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o644


# ----------------------------------------------------------------------------- 3. an output that destroys an input
def test_save_stats_onto_an_input_is_refused_before_reading(tmp_path, capsys):
    a, b = stats_file(tmp_path / "a.npz"), stats_file(tmp_path / "b.npz", seed=1)
    before = b.read_bytes()
    assert metrics_main([str(a), str(b), "--save-stats", str(b)]) == 2
    err = capsys.readouterr().err
    assert b.read_bytes() == before
    assert "--save-stats" in err and str(b) in err and "FID" not in capsys.readouterr().out


@pytest.mark.parametrize("option", ["--save-stats", "--json"])
def test_an_output_that_is_an_input_through_a_link_is_refused(option, tmp_path, capsys):
    a, b = stats_file(tmp_path / "a.npz"), stats_file(tmp_path / "b.npz", seed=1)
    alias = tmp_path / "alias.npz"
    alias.symlink_to(a)
    before = a.read_bytes()
    assert metrics_main([str(a), str(b), option, str(alias)]) == 2
    assert a.read_bytes() == before and "destroy" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["parent_is_a_file", "a_directory", "no_permission"])
@pytest.mark.parametrize("option", ["--save-stats", "--json"])
def test_unwritable_outputs_are_refused_before_the_feature_pass(option, where, image_folder, tmp_path, monkeypatch,
                                                                 capsys):
    import gan_ignite.metrics.compare as cli

    if where == "no_permission" and os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    monkeypatch.setattr(cli, "folder_features", lambda *a, **k: pytest.fail("the feature pass ran"))
    blocker = tmp_path / "blocker"
    if where == "parent_is_a_file":
        blocker.write_text("x")
        out = blocker / "out.npz"
    elif where == "a_directory":
        out = tmp_path / "folder.npz"
        out.mkdir()
    else:
        blocker.mkdir()
        blocker.chmod(0o500)
        out = blocker / "out.npz"
    try:
        code = metrics_main([str(image_folder), str(image_folder), option, str(out), "--inception-weights", "random",
                             "--device", "cpu"])
    finally:
        if where == "no_permission":
            blocker.chmod(0o700)
    err = capsys.readouterr().err
    assert code == 2 and option in err and one_paragraph(err)


# ----------------------------------------------------------------------------- 4. impossible or mislabelled numbers
def non_psd_stats(path: Path, dim: int = 8) -> Path:
    sigma = np.eye(dim)
    sigma[0, 1] = sigma[1, 0] = 3.0  # symmetric, positive diagonal, eigenvalue -2
    return raw_npz(path, mu=np.zeros(dim), sigma=sigma)


def test_a_covariance_that_is_not_psd_never_gives_a_negative_fid(tmp_path, capsys):
    bad, good = non_psd_stats(tmp_path / "bad.npz"), stats_file(tmp_path / "good.npz")
    assert metrics_main([str(bad), str(good), "--metrics", "fid"]) == 2
    captured = capsys.readouterr()
    assert "positive semi-definite" in captured.err and str(bad) in captured.err
    assert "FID" not in captured.out


def test_training_refuses_a_non_psd_reference_before_any_work(tmp_path, image_folder, stats_cache, capsys):
    bad = non_psd_stats(tmp_path / "bad.npz", dim=2048)
    run = tmp_path / "run"
    code = train_main(tiny_overrides(run, image_folder, stats_cache, **{"eval.reference_stats": bad,
                                                                       "eval.protocol": "pytorch-fid"}))
    assert code == 2 and "positive semi-definite" in capsys.readouterr().err
    assert not (run / "checkpoints").exists()


def test_empty_reference_features_are_refused_before_training_starts(tmp_path, image_folder, stats_cache, capsys):
    empty = raw_npz(tmp_path / "empty.npz", mu=np.zeros(2048), sigma=np.eye(2048),
                    features=np.zeros((0, 2048), np.float32))
    run = tmp_path / "run"
    code = train_main(tiny_overrides(run, image_folder, stats_cache, **{"eval.reference_stats": empty,
                                                                       "eval.protocol": "pytorch-fid",
                                                                       "eval.metrics": "[fid,kid]"}))
    assert code == 2 and "features holds 0 images" in capsys.readouterr().err
    assert not (run / "checkpoints").exists()
    assert metrics_main([str(empty), str(empty)]) == 2


def test_a_cache_file_of_another_protocol_is_refused_as_reference(tmp_path, image_folder, stats_cache, capsys):
    """A stats-cache file records its protocol in its key_parts."""
    cache_file = tmp_path / "real_stats_cache.npz"
    features = np.random.default_rng(0).normal(size=(20, 2048)).astype(np.float32)
    RealStatistics.from_features(features, {"key_parts": {"feature_network": "inception-random-tutorial",
                                                          "protocol": "tutorial"}}).save(cache_file)
    assert RealStatistics.load(cache_file).recorded("protocol") == "tutorial"
    code = train_main(tiny_overrides(tmp_path / "run", image_folder, stats_cache,
                                     **{"eval.reference_stats": cache_file, "eval.protocol": "pytorch-fid"}))
    err = capsys.readouterr().err
    assert code == 2 and "protocol tutorial" in err and one_paragraph(err)


def test_evaluate_refuses_reference_stats_without_an_explicit_protocol(trained_run, tmp_path, capsys):
    reference = stats_file(tmp_path / "ref.npz", dim=2048, count=30)
    checkpoint = trained_run / "checkpoints" / "checkpoint_3.pt"
    assert evaluate_main(["--checkpoint", str(checkpoint), "--device", "cpu",
                          f"eval.reference_stats={reference}"]) == 2
    assert "protocol" in capsys.readouterr().err
    assert not (trained_run / "evaluations.jsonl").exists()


# ----------------------------------------------------------------------------- 5. one paragraph, never a hang
def huge_header_npz(path: Path) -> Path:
    """'mu' claims 10^7 x 10^7 float64 (728 TiB) but stores 16 bytes."""
    import io

    with zipfile.ZipFile(path, "w") as archive:
        for name, shape in (("mu", (10**7, 10**7)), ("sigma", (2, 2))):
            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
            buffer.write(np.eye(2).tobytes() if name == "sigma" else b"\0" * 16)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


MALFORMED = {
    "meta_is_a_list": lambda p: raw_npz(p, mu=np.zeros(4), sigma=np.eye(4), meta=np.array("[1, 2]")),
    "meta_is_null": lambda p: raw_npz(p, mu=np.zeros(4), sigma=np.eye(4), meta=np.array("null")),
    "meta_is_not_json": lambda p: raw_npz(p, mu=np.zeros(4), sigma=np.eye(4), meta=np.array("{oops")),
    "meta_protocol_is_a_number": lambda p: raw_npz(p, mu=np.zeros(4), sigma=np.eye(4),
                                                   meta=np.array('{"protocol": 3}')),
    "key_parts_is_a_list": lambda p: raw_npz(p, mu=np.zeros(4), sigma=np.eye(4), meta=np.array('{"key_parts": []}')),
    "num_is_a_vector": lambda p: raw_npz(p, mu=np.zeros(4), sigma=np.eye(4), num=np.array([1, 2])),
    "num_is_negative": lambda p: raw_npz(p, mu=np.zeros(4), sigma=np.eye(4), num=np.array(-3)),
    "num_disagrees_with_features": lambda p: raw_npz(p, mu=np.zeros(4), sigma=np.eye(4), num=np.array(7),
                                                     features=np.zeros((3, 4), np.float32)),
    "mu_is_text": lambda p: raw_npz(p, mu=np.array(["a", "b"]), sigma=np.eye(2)),
    "mu_is_empty": lambda p: raw_npz(p, mu=np.zeros(0), sigma=np.zeros((0, 0))),
    "sigma_not_finite": lambda p: raw_npz(p, mu=np.zeros(2), sigma=np.array([[1, np.nan], [np.nan, 1]])),
    "sigma_not_symmetric": lambda p: raw_npz(p, mu=np.zeros(2), sigma=np.array([[1, 0.5], [0, 1]])),
    "huge_header": huge_header_npz,
    "not_a_zip": lambda p: p.write_bytes(b"not an npz at all") and p,
    "damaged_zip": lambda p: p.write_bytes(stats_file(p.with_suffix(".ok.npz")).read_bytes()[:200]) and p,
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_statistics_files_exit_2_with_one_paragraph(case, tmp_path, capsys):
    bad = MALFORMED[case](tmp_path / "bad.npz")
    good = stats_file(tmp_path / "good.npz", dim=4)
    assert metrics_main([str(bad), str(good), "--metrics", "fid"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and one_paragraph(err) and len(err.strip().splitlines()) == 1
    with pytest.raises(RealStatisticsError):
        RealStatistics.load(bad)


@pytest.mark.slow
def test_a_fifo_named_npz_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "stats.npz"
    os.mkfifo(fifo)
    good = stats_file(tmp_path / "good.npz", dim=4)
    result = subprocess.run([PYTHON, "-m", "gan_ignite.metrics", str(fifo), str(good)], cwd=ROOT, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "FIFO" in result.stderr and "Traceback" not in result.stderr


def test_damaged_zip_as_inception_weights_is_one_paragraph(image_folder, tmp_path, capsys):
    good = tmp_path / "weights.pth"
    torch.save({"a": torch.zeros(3)}, good)
    damaged = tmp_path / "damaged.pth"
    data = bytearray(good.read_bytes())
    directory = data.index(b"PK\x01\x02")  # the central directory: the end record still says "a zip"
    data[directory:directory + 4] = b"XXXX"
    damaged.write_bytes(bytes(data))
    assert zipfile.is_zipfile(damaged)
    code = metrics_main([str(image_folder), str(image_folder), "--inception-weights", str(damaged),
                         "--device", "cpu", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and str(damaged) in err and one_paragraph(err)


@pytest.mark.parametrize("changes", [
    {"arguments": "channels=3"},
    {"arguments": {"channels": 3, "num_classes": 2, "width": "4", "feature_dim": 8, "input_size": 8}},
    {"arguments": {"channels": 3, "num_classes": 2, "width": 10**9, "feature_dim": 8, "input_size": 8}},
    {"state_dict": {"trunk.0.0.weight": torch.zeros(2, 2)}},
    {"state_dict": [1, 2]},
], ids=["arguments_text", "width_text", "width_huge", "wrong_architecture", "state_dict_list"])
def test_classifier_files_of_the_wrong_shape_or_types_exit_2(changes, image_folder, tmp_path, capsys):
    path = classifier_file(tmp_path / "classifier.pt", **changes)
    code = metrics_main([str(image_folder), str(image_folder), "--feature-network", f"classifier:{path}",
                         "--device", "cpu", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err and one_paragraph(err)


@pytest.mark.parametrize("state", [
    {"cls_token": [1, 2], "pos_embed": torch.zeros(1, 5, 8)},
    {"cls_token": torch.zeros(1, 1, 8), "pos_embed": torch.zeros(5)},
], ids=["cls_token_list", "pos_embed_flat"])
def test_dinov2_files_with_wrong_field_types_exit_2(state, image_folder, tmp_path, capsys):
    path = tmp_path / "dinov2.pth"
    torch.save(state, path)
    code = metrics_main([str(image_folder), str(image_folder), "--feature-network", f"dinov2:{path}",
                         "--device", "cpu", "--num-workers", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "not a DINOv2 checkpoint" in err and one_paragraph(err)


def test_a_subnormal_fd_inf_fraction_is_one_paragraph(tmp_path, image_folder, stats_cache, capsys):
    code = train_main(tiny_overrides(tmp_path / "run", image_folder, stats_cache,
                                     **{"eval.metrics": "[fid_inf]", "eval.fd_inf_min_fraction": "1e-320"}))
    err = capsys.readouterr().err
    assert code == 2 and "fd_inf" in err and one_paragraph(err)
    a, b = stats_file(tmp_path / "a.npz"), stats_file(tmp_path / "b.npz", seed=1)
    assert metrics_main([str(a), str(b), "--metrics", "fid_inf", "--fd-inf-min-fraction", "1e-320"]) == 2
    assert one_paragraph(capsys.readouterr().err)


@pytest.mark.parametrize("key", ["data.subset_seed", "eval.real_subset_seed"])
def test_a_subset_seed_beyond_64_bits_is_one_paragraph(key, tmp_path, image_folder, stats_cache, capsys):
    code = train_main(tiny_overrides(tmp_path / "run", image_folder, stats_cache,
                                     **{key: 2**64, "data.max_train_size": 10}))
    err = capsys.readouterr().err
    assert code == 2 and key in err and one_paragraph(err)


@pytest.mark.parametrize("run_field", [{"id": "${oc.env:HOME}"}, {"id": {"nested": 1}}, "a string", 7],
                         ids=["interpolation", "dict_id", "string", "number"])
def test_fork_of_a_checkpoint_with_a_malformed_run_field_exits_2(run_field, trained_run, tmp_path, image_folder,
                                                                   stats_cache, capsys):
    checkpoint = tmp_path / "checkpoint_3.pt"
    content = torch.load(trained_run / "checkpoints" / "checkpoint_3.pt", weights_only=False)
    content["run"] = run_field
    torch.save(content, checkpoint)
    fork = tmp_path / "fork"
    assert train_main(train_args(fork, image_folder, stats_cache, **{"train.resume_from": checkpoint})) == 2
    err = capsys.readouterr().err
    assert str(checkpoint) in err and "run" in err and one_paragraph(err)
    assert not fork.exists()


def test_a_metrics_run_where_every_metric_is_skipped_exits_2(tmp_path, capsys):
    a, b = stats_file(tmp_path / "a.npz", dim=4), stats_file(tmp_path / "b.npz", dim=6)
    assert metrics_main([str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "None of the metrics" in err and one_paragraph(err)


# ----------------------------------------------------------------------------- 6. smaller
def test_gif_files_are_named_when_skipped(tmp_path, caplog):
    make_shape_images(tmp_path / "images", 2)
    (tmp_path / "images" / "anim.gif").write_bytes(b"GIF89a")
    with caplog.at_level(logging.WARNING):
        files = find_image_files(tmp_path / "images")
    assert len(files) == 2
    assert "anim.gif" in caplog.text and ".gif" in caplog.text


def test_a_generator_that_does_not_fit_says_generator_once(run_copy, tmp_path, capsys):
    checkpoint = run_copy / "checkpoints" / "checkpoint_3.pt"
    content = torch.load(checkpoint, weights_only=False)
    content["generator"] = {"wrong.weight": torch.zeros(1)}
    torch.save(content, checkpoint)
    assert sample_main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Cannot load the generator from" in err and "generator generator" not in err


def test_resume_log_names_the_epoch_it_continues_in(run_copy, image_folder, stats_cache, capfd):
    overrides = train_args(run_copy, image_folder, stats_cache, **{"train.resume_from": "auto"})
    assert train_main(overrides) == 0
    assert "at iteration 3: 1 epoch(s) complete, continuing in epoch 2" in capfd.readouterr().err

