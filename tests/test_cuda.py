"""The GPU path end to end: skipped without a CUDA device (``scripts/gpu_check.py`` runs the suite on
one). Everything else in the suite also runs on the GPU there: ``idist.device()`` picks CUDA."""

from __future__ import annotations

import pytest
import torch

from conftest import TRAIN_ONLY, assert_same_losses, tiny_overrides, train_records
from gan_ignite.train import main

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("switches", [["train.amp=true"], ["train.channels_last=true"],
                                      ["train.amp=true", "train.channels_last=true", "train.compile=true"]])
def test_speed_switches_train_and_evaluate_on_cuda(switches, tmp_path, image_folder, stats_cache):
    run_dir = tmp_path / "switched"
    assert main(tiny_overrides(run_dir, image_folder, stats_cache) + switches) == 0
    records = train_records(run_dir)
    evaluations = [line for line in (run_dir / "history.jsonl").read_text().splitlines() if '"kind": "eval"' in line]
    assert len(records) == 6 and all(abs(record["Loss_G"]) < 100 for record in records)
    assert len(evaluations) == 2


def test_deterministic_cuda_run_resumes_to_the_uninterrupted_losses(tmp_path, image_folder, stats_cache):
    deterministic = {**TRAIN_ONLY, "train.deterministic": "true", "train.max_epochs": 4}
    reference = tmp_path / "reference"
    assert main(tiny_overrides(reference, image_folder, stats_cache, **deterministic)) == 0
    resumed = tmp_path / "resumed"
    assert main(tiny_overrides(resumed, image_folder, stats_cache, **{**deterministic, "train.max_epochs": 2})) == 0
    assert main(tiny_overrides(resumed, image_folder, stats_cache,
                               **{**deterministic, "train.resume_from": "auto"})) == 0
    assert_same_losses(train_records(resumed), train_records(reference))
