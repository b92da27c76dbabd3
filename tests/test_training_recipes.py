"""The training step's recipes: losses, augmentation, ADA, EMA generator and their checkpoints."""

import copy
import io
import math

import pytest
import torch
from ignite.engine import Events
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from conftest import tiny_overrides

from gan_ignite.augment import AdaAugment, AdaController, DiffAugment
from gan_ignite.config import load_config
from gan_ignite.ema import create_ema, recalibrate_batchnorm
from gan_ignite.engines import (LOSS_KEYS, LatentNoise, TrainingRecipe, create_trainer, make_resumable,
                                make_training_step)
from gan_ignite.losses import get_loss
from gan_ignite.networks.dcgan import Discriminator, Generator

CPU = torch.device("cpu")
LATENT = 8


def tiny_models(seed: int = 0, spectral_norm: bool = False):
    torch.manual_seed(seed)
    generator = Generator(latent_dim=LATENT, channels=1, image_size=32, features=4)
    discriminator = Discriminator(channels=1, image_size=32, features=4, spectral_norm=spectral_norm)
    optimizers = [torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
                  for model in (generator, discriminator)]
    return generator, discriminator, *optimizers


def batches(count: int, size: int = 4, seed: int = 1) -> list[tuple[torch.Tensor, int]]:
    noise = torch.Generator().manual_seed(seed)
    return [(torch.rand(size, 1, 32, 32, generator=noise) * 2 - 1, 0) for _ in range(count)]


def seed_step(generator, discriminator, optimizer_g, optimizer_d):
    """The seed's step as it was before D returned logits: D ended with nn.Sigmoid, nn.BCELoss,
    and two backward passes for D."""
    probability = nn.Sequential(discriminator, nn.Sigmoid())
    criterion = nn.BCELoss()

    def step(batch, latent):
        real_images = batch[0]
        labels = torch.full((real_images.size(0),), 1.0)
        discriminator.zero_grad(set_to_none=True)
        output_real = probability(real_images).view(-1)
        loss_d_real = criterion(output_real, labels)
        loss_d_real.backward()
        fake_images = generator(latent)
        labels.fill_(0.0)
        output_fake = probability(fake_images.detach()).view(-1)
        loss_d_fake = criterion(output_fake, labels)
        loss_d_fake.backward()
        optimizer_d.step()
        generator.zero_grad(set_to_none=True)
        labels.fill_(1.0)
        output_fake_after = probability(fake_images).view(-1)
        loss_g = criterion(output_fake_after, labels)
        loss_g.backward()
        optimizer_g.step()
        return {"Loss_G": loss_g.item(), "Loss_D": (loss_d_real + loss_d_fake).item(),
                "D_x": output_real.mean().item(), "D_G_z1": output_fake.mean().item(),
                "D_G_z2": output_fake_after.mean().item()}

    return step


def test_seed_recipe_reproduces_the_seed_step_bit_for_bit():
    seed_models, new_models = tiny_models(), tiny_models()
    reference = seed_step(*seed_models)
    step = make_training_step(*new_models, LATENT, CPU)
    for iteration, batch in enumerate(batches(5), start=1):
        expected = reference(batch, LatentNoise(LATENT, CPU)(4, iteration))  # the step's own latents
        assert step(None, batch) == expected
    for seed_model, new_model in zip(seed_models[:2], new_models[:2]):
        for expected, got in zip(seed_model.state_dict().values(), new_model.state_dict().values()):
            assert torch.equal(got, expected)


@pytest.mark.parametrize("loss", ["bce", "non_saturating", "hinge"])
def test_step_reports_the_chosen_loss_of_ds_logits_and_probabilities(loss):
    generator, discriminator, optimizer_g, optimizer_d = tiny_models()
    frozen_g, frozen_d = copy.deepcopy(generator), copy.deepcopy(discriminator)
    real_images = batches(1)[0][0]
    step = make_training_step(generator, discriminator, optimizer_g, optimizer_d, LATENT, CPU, loss=loss)
    output = step(None, (real_images, 0))
    fake_images = frozen_g(LatentNoise(LATENT, CPU)(4, 1))
    real_logits, fake_logits = frozen_d(real_images).view(-1), frozen_d(fake_images).view(-1)
    expected_d = get_loss(loss).discriminator(real_logits, fake_logits).item()
    assert output["Loss_D"] == pytest.approx(expected_d, rel=1e-5)
    assert output["D_x"] == pytest.approx(torch.sigmoid(real_logits).mean().item(), rel=1e-5)
    assert output["D_G_z1"] == pytest.approx(torch.sigmoid(fake_logits).mean().item(), rel=1e-5)
    assert 0 < output["D_G_z2"] < 1


@pytest.mark.parametrize("recipe", [
    TrainingRecipe(loss="hinge", augment=DiffAugment()),
    TrainingRecipe(loss="non_saturating", augment=AdaAugment(0.5)),
], ids=["hinge-diffaugment", "non_saturating-ada"])
def test_augmented_recipes_train_both_models(recipe):
    generator, discriminator, optimizer_g, optimizer_d = tiny_models(spectral_norm=True)
    before = [copy.deepcopy(model.state_dict()) for model in (generator, discriminator)]
    trainer = create_trainer(generator, discriminator, optimizer_g, optimizer_d, LATENT, CPU, recipe)
    trainer.run(batches(3), max_epochs=1)
    output = trainer.state.output
    assert all(math.isfinite(output[key]) for key in LOSS_KEYS)
    assert ("ada_p" in output) == isinstance(recipe.augment, AdaAugment)
    for state, model in zip(before, (generator, discriminator)):
        assert any(not torch.equal(state[key], value) for key, value in model.state_dict().items())


def test_diverged_discriminator_gives_nan_losses_not_an_exception():
    generator, discriminator, optimizer_g, optimizer_d = tiny_models()
    with torch.no_grad():
        discriminator.model[0].weight.fill_(math.nan)
    for augment in (None, AdaAugment(0.25)):
        step = make_training_step(generator, discriminator, optimizer_g, optimizer_d, LATENT, CPU, "bce", augment)
        output = step(None, batches(1)[0])
        assert all(math.isnan(output[key]) for key in LOSS_KEYS)
    assert output["ada_p"] == 0.25 and math.isnan(output["real_sign"])


def test_ada_p_in_the_output_rises_while_d_calls_every_real_real():
    generator, discriminator, optimizer_g, optimizer_d = tiny_models(spectral_norm=True)
    with torch.no_grad():
        discriminator.model[-1].bias.fill_(50.0)  # an over-confident D: every logit positive
    augment = AdaAugment()
    recipe = TrainingRecipe(augment=augment, ada=AdaController(augment, target=0.6, speed_images=1000, interval=2))
    trainer = create_trainer(generator, discriminator, optimizer_g, optimizer_d, LATENT, CPU, recipe)
    seen = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: seen.append(
        (engine.state.output["ada_p"], engine.state.output["real_sign"])))
    trainer.run(batches(6), max_epochs=1)
    step = 2 * 4 / 1000  # interval * batch_size / speed_images
    assert [p for p, _ in seen] == pytest.approx([0, 0, step, step, 2 * step, 2 * step])
    assert all(sign == 1.0 for _, sign in seen)
    assert augment.p == pytest.approx(3 * step)


def test_ema_generator_is_the_exponential_average_after_ema_start():
    generator, discriminator, optimizer_g, optimizer_d = tiny_models()
    decay, start = 0.9, 2
    expected = [p.detach().double().clone() for p in generator.parameters()]
    recipe = TrainingRecipe(ema=create_ema(generator, decay), ema_start=start)
    trainer = create_trainer(generator, discriminator, optimizer_g, optimizer_d, LATENT, CPU, recipe)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _hand_average(engine):
        for average, live in zip(expected, generator.parameters()):
            if engine.state.iteration <= start:
                average.copy_(live.detach())
            else:
                average.mul_(decay).add_(live.detach().double(), alpha=1 - decay)

    trainer.run(batches(5), max_epochs=1)
    ema_model = recipe.ema.ema_model
    for got, want, live in zip(ema_model.parameters(), expected, generator.parameters()):
        assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-7)
        assert not torch.equal(got, live)
    for got, live in zip(ema_model.buffers(), generator.buffers()):
        assert torch.equal(got, live)
    assert not ema_model.training


def test_recipe_from_config_and_its_checkpoint_objects():
    generator = tiny_models()[0]
    config = load_config(None, ["train.loss=hinge", "train.augment=ada", "train.ada_target=0.7",
                                "train.ada_p=0.25", "train.ada_interval=8", "train.ema_decay=0.99", "train.ema_start=10"])
    recipe = TrainingRecipe.from_config(config.train, generator)
    assert recipe.loss == "hinge" and isinstance(recipe.augment, AdaAugment)
    assert (recipe.ada.target, recipe.ada.interval, recipe.ada.speed_images) == (0.7, 8, 500_000)
    assert recipe.augment.p == 0.25 and recipe.ada.p == 0.25
    assert recipe.ema.momentum == pytest.approx(0.01) and recipe.ema_start == 10
    assert set(recipe.checkpoint_objects()) == {"ada", "ema_generator"}
    seed = TrainingRecipe.from_config(load_config(None).train, generator)
    assert (seed.ada, seed.ema, seed.checkpoint_objects()) == (None, None, {})


def run_recipe(data, epochs, checkpoint=None):
    """Train the hinge + SN + ADA + EMA recipe; resume from ``checkpoint`` bytes if given."""
    generator, discriminator, optimizer_g, optimizer_d = tiny_models(spectral_norm=True)
    augment = AdaAugment(0.5)
    recipe = TrainingRecipe(loss="hinge", augment=augment, ada=AdaController(augment, speed_images=100, interval=2),
                            ema=create_ema(generator, 0.5), ema_start=1)
    trainer = create_trainer(generator, discriminator, optimizer_g, optimizer_d, LATENT, CPU, recipe)
    to_save = {"generator": generator, "discriminator": discriminator, "optimizer_G": optimizer_g,
               "optimizer_D": optimizer_d, "trainer": trainer, **recipe.checkpoint_objects()}
    if checkpoint is not None:
        state = torch.load(io.BytesIO(checkpoint), weights_only=False)
        for name, obj in to_save.items():
            obj.load_state_dict(state[name])
    torch.manual_seed(0)
    trainer.run(data, max_epochs=epochs)
    buffer = io.BytesIO()
    torch.save({name: obj.state_dict() for name, obj in to_save.items()}, buffer)
    return to_save, buffer.getvalue()


def test_ada_and_ema_resume_exactly_from_a_checkpoint():
    # a shuffled loader as train.py builds it: DeterministicEngine re-seeds a resumed run from its
    # iteration counter only for DataLoaders; the checkpoint after 3 iterations falls in the middle
    # of an ADA interval of 2
    images = torch.cat([images for images, _ in batches(3)])
    dataset = TensorDataset(images, torch.zeros(len(images)))
    data = make_resumable(DataLoader(dataset, batch_size=4, shuffle=True, drop_last=True))
    uninterrupted, _ = run_recipe(data, epochs=2)
    _, checkpoint = run_recipe(data, epochs=1)
    resumed, _ = run_recipe(data, epochs=2, checkpoint=checkpoint)
    assert resumed["ada"].state_dict() == uninterrupted["ada"].state_dict()
    assert resumed["ada"].p not in (0.0, 0.5, 1.0)  # p moved during the run
    for name in ("generator", "discriminator", "ema_generator"):
        for key, value in uninterrupted[name].state_dict().items():
            assert torch.equal(resumed[name].state_dict()[key], value), (name, key)


def test_recalibrated_batchnorm_holds_the_latents_batch_statistics():
    generator = tiny_models()[0]
    ema_model = create_ema(generator, 0.999).ema_model
    for average, live in zip(ema_model.buffers(), generator.buffers()):  # as EMAHandler's "copy" leaves them
        average.data = live.data
    live_statistics = copy.deepcopy(generator.state_dict())
    recalibrate_batchnorm(ema_model, LATENT, num_batches=2, batch_size=16, seed=3, device=CPU)
    noise = torch.Generator().manual_seed(3)
    with torch.no_grad():
        activations = [ema_model.model[0](torch.randn(16, LATENT, 1, 1, generator=noise)) for _ in range(2)]
    first_norm = ema_model.model[1]
    means = torch.stack([a.mean(dim=(0, 2, 3)) for a in activations]).mean(0)
    variances = torch.stack([a.var(dim=(0, 2, 3), unbiased=True) for a in activations]).mean(0)
    assert torch.allclose(first_norm.running_mean, means, atol=1e-6)
    assert torch.allclose(first_norm.running_var, variances, rtol=1e-5)
    assert first_norm.momentum == 0.1 and not ema_model.training
    for key, value in generator.state_dict().items():  # the live generator's statistics are untouched
        assert torch.equal(value, live_statistics[key])


def test_recalibration_is_deterministic_per_seed():
    generator = tiny_models()[0]
    copies = [copy.deepcopy(generator) for _ in range(3)]
    for model, seed in zip(copies, (5, 5, 6)):
        recalibrate_batchnorm(model, LATENT, num_batches=3, batch_size=8, seed=seed, device=CPU)
    same, other = copies[0].model[1].running_var, copies[2].model[1].running_var
    assert torch.equal(copies[1].model[1].running_var, same) and not torch.equal(other, same)


def test_lr_d_sets_the_discriminators_learning_rate_also_after_a_resume(tmp_path, image_folder, stats_cache):
    from gan_ignite.train import main

    run_dir = tmp_path / "ttur"
    overrides = tiny_overrides(run_dir, image_folder, stats_cache, **{
        "eval.every_epochs": 0, "train.max_epochs": 1, "train.lr": 1e-4, "train.lr_d": 4e-4})

    def learning_rates(iteration: int) -> tuple[float, float]:
        state = torch.load(run_dir / "checkpoints" / f"checkpoint_{iteration}.pt", weights_only=False)
        return tuple(state[name]["param_groups"][0]["lr"] for name in ("optimizer_G", "optimizer_D"))

    assert main(overrides) == 0
    assert learning_rates(3) == (1e-4, 4e-4)
    # the config, not the checkpoint, sets the learning rates of a resumed run; null = train.lr
    assert main(overrides + ["train.max_epochs=2", "train.resume_from=auto", "train.lr_d=null"]) == 0
    assert learning_rates(6) == (1e-4, 1e-4)


def test_latents_depend_on_seed_rank_and_iteration_only():
    noise = LatentNoise(LATENT, CPU, seed=3, rank=1)
    drawn = [noise(4, iteration) for iteration in (1, 2, 3)]
    again = LatentNoise(LATENT, CPU, seed=3, rank=1)
    assert torch.equal(again(4, 3), drawn[2])  # a resumed run draws iteration 3's latents without the earlier ones
    torch.manual_seed(123)  # the global RNG (augmentations, DataLoader seeds) does not move them
    assert torch.equal(again(4, 1), drawn[0])
    others = [LatentNoise(LATENT, CPU, seed=3, rank=0)(4, 1), LatentNoise(LATENT, CPU, seed=4, rank=1)(4, 1),
              drawn[1]]
    assert not any(torch.equal(other, drawn[0]) for other in others)
    assert drawn[0].shape == (4, LATENT) and abs(torch.cat(drawn).std().item() - 1) < 0.4
