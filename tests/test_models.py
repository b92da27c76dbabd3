import tempfile
from pathlib import Path

import pytest
import torch
from ignite.engine import Events

from gan_ignite.engines import create_trainer, make_training_step
from gan_ignite.handlers import TrainingLog
from gan_ignite.run_dir import HistoryWriter
from gan_ignite.networks.dcgan import Discriminator, Generator


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_parameter_counts_match_the_seed_notebook():
    # The tutorial baseline's torchsummary totals (printed twice there because of DataParallel) halved.
    assert count_parameters(Generator(latent_dim=150, channels=3, image_size=64, features=64)) == 3_986_304
    assert count_parameters(Discriminator(channels=3, image_size=64, features=64)) == 2_765_568


@pytest.mark.parametrize("image_size", [32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_output_ranges(image_size, channels):
    generator = Generator(latent_dim=16, channels=channels, image_size=image_size, features=8)
    discriminator = Discriminator(channels=channels, image_size=image_size, features=8)
    images = generator(torch.randn(3, 16, 1, 1))
    assert images.shape == (3, channels, image_size, image_size)
    assert images.min() >= -1 and images.max() <= 1
    logits = discriminator(images)
    assert logits.shape == (3, 1)
    assert torch.isfinite(logits).all()


def test_discriminator_returns_logits_not_probabilities():
    torch.manual_seed(0)
    discriminator = Discriminator(channels=1, image_size=32, features=8)
    with torch.no_grad():
        discriminator.model[-1].weight.mul_(1000)  # a confident D: logits far outside (0, 1)
    logits = discriminator(torch.rand(8, 1, 32, 32) * 2 - 1)
    assert logits.abs().max() > 1
    assert not any(isinstance(module, torch.nn.Sigmoid) for module in discriminator.modules())


def conv_weights(discriminator: Discriminator) -> list[torch.Tensor]:
    return [m.weight for m in discriminator.modules() if isinstance(m, torch.nn.Conv2d)]


def largest_singular_value(weight: torch.Tensor) -> float:
    return torch.linalg.matrix_norm(weight.detach().reshape(weight.shape[0], -1), ord=2).item()


def test_spectral_norm_bounds_each_convolution_and_replaces_batchnorm():
    torch.manual_seed(0)
    discriminator = Discriminator(channels=3, image_size=32, features=8, spectral_norm=True).train()
    assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in discriminator.modules())
    with torch.no_grad():  # weights far from norm 1, as after many optimizer steps
        for layer in discriminator.model:
            if isinstance(layer, torch.nn.Conv2d):
                layer.parametrizations.weight.original.normal_(0, 3)
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    for _ in range(30):  # one power iteration per forward pass in train mode
        discriminator(images)
    values = [largest_singular_value(weight) for weight in conv_weights(discriminator)]
    assert len(values) == 4
    assert values == pytest.approx([1.0] * 4, abs=0.02)
    plain = Discriminator(channels=3, image_size=32, features=8)
    assert any(abs(largest_singular_value(weight) - 1) > 0.1 for weight in conv_weights(plain))


def test_spectral_norm_checkpoint_round_trips_through_state_dict(tmp_path):
    torch.manual_seed(0)
    trained = Discriminator(channels=3, image_size=32, features=8, spectral_norm=True).train()
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    for _ in range(3):
        trained(images)
    torch.save({"discriminator": trained.state_dict()}, tmp_path / "checkpoint.pt")
    torch.manual_seed(1)
    restored = Discriminator(channels=3, image_size=32, features=8, spectral_norm=True)
    restored.load_state_dict(torch.load(tmp_path / "checkpoint.pt")["discriminator"])
    for model in (trained, restored):
        model.eval()
    assert torch.equal(restored(images), trained(images))
    with pytest.raises(RuntimeError, match="Missing key"):  # a plain D does not take an SN checkpoint
        Discriminator(channels=3, image_size=32, features=8).load_state_dict(trained.state_dict())


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_torchsummary_prints_the_parameter_count(spectral_norm, capsys):
    from torchsummary import summary

    discriminator = Discriminator(channels=3, image_size=32, features=8, spectral_norm=spectral_norm)
    summary(discriminator, (3, 32, 32), device="cpu")
    assert f"Total params: {count_parameters(discriminator):,}" in capsys.readouterr().out


def test_unsupported_image_size_is_rejected():
    with pytest.raises(ValueError, match="image_size"):
        Generator(image_size=48)


def test_dcgan_initialisation_is_applied_at_construction():
    torch.manual_seed(0)
    generator = Generator(latent_dim=100, channels=3, image_size=64, features=64)
    conv = generator.model[0].weight
    batch_norm = generator.model[1]
    assert abs(conv.mean().item()) < 1e-3 and abs(conv.std().item() - 0.02) < 1e-3
    assert abs(batch_norm.weight.mean().item() - 1.0) < 0.01 and abs(batch_norm.weight.std().item() - 0.02) < 0.01
    assert torch.all(batch_norm.bias == 0)


def test_one_training_step_changes_both_models_and_reports_the_seed_outputs():
    torch.manual_seed(0)
    generator = Generator(latent_dim=8, channels=1, image_size=32, features=8)
    discriminator = Discriminator(channels=1, image_size=32, features=8)
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    before_g = [p.detach().clone() for p in generator.parameters()]
    before_d = [p.detach().clone() for p in discriminator.parameters()]
    step = make_training_step(generator, discriminator, optimizer_g, optimizer_d, 8, torch.device("cpu"))
    output = step(None, (torch.rand(4, 1, 32, 32) * 2 - 1, 0))
    assert set(output) == {"Loss_G", "Loss_D", "D_x", "D_G_z1", "D_G_z2"}
    # 0-d tensors left on the device: reading them would synchronise with it every iteration
    assert all(isinstance(value, torch.Tensor) and value.dim() == 0 for value in output.values())
    assert all(torch.isfinite(value) for value in output.values())
    assert any(not torch.equal(a, b) for a, b in zip(before_g, generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, discriminator.parameters()))


def test_trainer_tracks_running_averages_from_the_flushed_records():
    generator = Generator(latent_dim=8, channels=1, image_size=32, features=8)
    discriminator = Discriminator(channels=1, image_size=32, features=8)
    trainer = create_trainer(generator, discriminator, torch.optim.Adam(generator.parameters()),
                             torch.optim.Adam(discriminator.parameters()), 8, torch.device("cpu"))
    writer = HistoryWriter(Path(tempfile.mkdtemp()) / "history.jsonl")
    TrainingLog(writer, every=2).attach(trainer)
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: seen.append(dict(engine.state.metrics)))
    data = [(torch.rand(4, 1, 32, 32) * 2 - 1, 0) for _ in range(5)]
    trainer.run(data, max_epochs=1)
    records = writer.read()
    expected = {}
    for record in records:  # ignite RunningAverage's formula over the per-iteration losses
        for key in ("Loss_G", "Loss_D"):
            expected[key] = record[key] if key not in expected else 0.98 * expected[key] + 0.02 * record[key]
    assert trainer.state.metrics["Loss_G"] == pytest.approx(expected["Loss_G"], rel=1e-12)
    assert trainer.state.metrics["Loss_D"] == pytest.approx(expected["Loss_D"], rel=1e-12)
    # plain floats, set once per period (iterations 2, 4 and the epoch's end), never a device tensor
    assert [sorted(metrics) for metrics in seen] == [[], ["Loss_D", "Loss_G"], ["Loss_D", "Loss_G"],
                                                     ["Loss_D", "Loss_G"], ["Loss_D", "Loss_G"]]
    assert all(isinstance(value, float) for value in trainer.state.metrics.values())
