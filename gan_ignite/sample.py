"""Draw images from a saved generator: ``python -m gan_ignite.sample --checkpoint CKPT --out DIR``.

The run's ``config.yaml`` is read from the checkpoint's run directory; ``--model`` picks the live
generator or its EMA (default: the one the run evaluated, ``eval.model``; an EMA generator gets
its BatchNorm statistics recalibrated exactly as for scoring).

Outputs:

- ``--out DIR``: ``--num`` PNGs ``000000.png``, ``000001.png``, ... (RGB, or mode L for a grayscale
  model), converted to uint8 exactly as the evaluator converts generated images, so that
  ``python -m gan_ignite.metrics REAL DIR`` scores them like a training-time evaluation would;
- ``--out FILE.png --grid``: one grid of the ``--num`` images (about sqrt(num) per row);
- ``--interpolate STEPS --gif FILE.gif``: a latent walk. The ``--num`` latents (the same ones the
  images above get) are visited in order and back to the first along great circles (spherical
  interpolation, slerp, which keeps the interpolated vectors at the norm Gaussian latents have,
  where linear interpolation would pass through unlikely short vectors); ``STEPS`` frames per
  segment, so ``num * STEPS`` frames, frame ``k * STEPS`` being image ``k``. Each frame is one
  image, enlarged (nearest neighbour) to at least 128 pixels; the GIF loops forever.

Latents come from one seeded CPU stream (``--seed``, 0 by default), all drawn at once and then
split into batches: the same seed gives the same images whatever ``--batch-size`` (and device,
up to round-off).

``--truncation T`` is the truncation trick (Brock et al. 2019, BigGAN): every latent component
with ``|z| > T`` is redrawn from the same stream until all lie in ``[-T, T]``. A smaller ``T``
keeps the samples nearer the mode of the latent distribution: images look cleaner and more
typical but less varied. FID measures fidelity and diversity together, so it usually rises when
``T`` is small (diversity lost) even as single images look better; report it with the ``T`` used.
``T`` around 2 or more changes little, since few components of a standard normal exceed it. The
latent mean is 0, so a small ``T`` draws every image near the generator's image of 0, its "average"
image: a briefly trained generator's is often a blur (on Fashion-MNIST an almost black square);
the trick pays off on well-trained generators, at ``T`` of 0.7 or more.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from gan_ignite.command import main_for
from gan_ignite.config import ScoredModel, out_of_range
from gan_ignite.errors import RunDirError, UserError
from gan_ignite.io import atomic_write, require_memory, require_writable_folder

GIF_MIN_SIZE = 128  # GIF frames are enlarged to at least this many pixels
GIF_FRAME_MS = 80
SAMPLE_NAME = re.compile(r"^(\d{6,})\.png$")
INTERRUPTED = "Interrupted by Ctrl-C; the images written so far are in place, each one complete."


def generated_batches(generator: Any, latents: Any, batch_size: int, device: Any) -> Iterator[Any]:
    """uint8 images on the CPU, batch by batch, as the evaluator generates them; a progress bar on a terminal."""
    from tqdm.auto import tqdm

    from gan_ignite.engines import generated_images

    with tqdm(total=len(latents), desc="Sampling", unit="img", disable=not sys.stderr.isatty(), leave=False) as bar:
        for images in generated_images(generator, latents.split(batch_size), device):
            yield images.cpu()
            bar.update(len(images))


def generate(generator: Any, latents: Any, batch_size: int, device: Any) -> Any:
    """All the images at once (a grid, a GIF)."""
    import torch

    return torch.cat(list(generated_batches(generator, latents, batch_size, device)))


def to_pil(image: Any) -> Any:
    """uint8 C x H x W -> PIL, mode L for one channel, RGB for three."""
    from PIL import Image

    array = image.permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)  # uint8 H x W -> L, H x W x 3 -> RGB


def sample_name(index: int) -> str:
    return f"{index:06d}.png"


def is_sample_name(name: str, num: int) -> bool:
    """Whether ``name`` is one of the ``num`` file names ``--out DIR`` writes (without listing them)."""
    match = SAMPLE_NAME.match(name)
    return bool(match) and int(match.group(1)) < num and name == sample_name(int(match.group(1)))


def write_folder(batches: Iterable[Any], folder: Path) -> int:
    """Write the images batch by batch, each one complete or absent (no fsync per image); their count."""
    count = 0
    for batch in batches:
        for image in batch:
            picture = to_pil(image)
            atomic_write(folder / sample_name(count), lambda handle: picture.save(handle, format="PNG"), fsync=False)
            count += 1
    return count


def write_grid(images: Any, path: Path) -> None:
    from torchvision.utils import save_image

    grid = images.float() / 255  # k / 255 goes back to exactly k in save_image: the grid holds the folder's values
    atomic_write(path, lambda handle: save_image(grid, handle, format="png", nrow=math.ceil(math.sqrt(len(images))),
                                                 padding=2))


def write_gif(images: Any, path: Path) -> None:
    from PIL import Image

    scale = max(1, math.ceil(GIF_MIN_SIZE / images.shape[-1]))
    frames = [to_pil(image).resize((images.shape[-1] * scale, images.shape[-2] * scale), Image.Resampling.NEAREST)
              for image in images]
    atomic_write(path, lambda handle: frames[0].save(handle, format="GIF", save_all=True, append_images=frames[1:],
                                                     duration=GIF_FRAME_MS, loop=0))


def check_arguments(args: argparse.Namespace) -> None:
    if args.out is None and args.gif is None:
        raise UserError("Nothing to write: give --out DIR (images), --out FILE.png --grid, or --interpolate STEPS "
                        "--gif FILE.gif.")
    for option, value, key in (("--num", args.num, "eval.num_samples"), ("--batch-size", args.batch_size,
                                                                           "eval.batch_size")):
        problem = out_of_range(key, value)
        if problem is not None:
            raise UserError(f"{option} {problem}.")
    if not 0 <= args.seed < 2**63:
        raise UserError(f"--seed {args.seed} is out of range: seeds lie in [0, 2**63 - 1].")
    if args.truncation is not None and not args.truncation > 0:
        raise UserError(f"--truncation {args.truncation} must be positive: latent components are kept within "
                        f"[-T, T] (e.g. 0.5 to 1.0 for cleaner, less varied images; omit it for none).")
    if args.interpolate is not None and args.gif is None:
        raise UserError("--interpolate STEPS needs --gif OUT.gif: the latent walk is written as an animated GIF.")
    if args.gif is not None and args.interpolate is None:
        raise UserError("--gif needs --interpolate STEPS (frames per segment between two latents, e.g. 16).")
    if args.interpolate is not None and (args.interpolate < 1 or args.num < 2):
        raise UserError(f"--interpolate {args.interpolate} with --num {args.num}: the walk needs at least 1 frame per "
                        f"segment and at least 2 latents to walk between (--num 2 or more).")
    if args.grid and args.out is None:
        raise UserError("--grid needs --out FILE.png, the grid image to write.")


def writable_folder(folder: Path, what: str) -> None:
    require_writable_folder(folder, f"Cannot write {what} to '{folder}'", "Choose a writable location.")


def check_outputs(args: argparse.Namespace) -> None:
    """Every output location usable before any image is generated."""
    from gan_ignite.metrics.networks.images import find_image_files

    if args.out is not None and args.grid:
        if args.out.suffix.lower() != ".png" or args.out.is_dir():
            raise UserError(f"--out '{args.out}' with --grid must be a .png file name (the grid image).")
        writable_folder(args.out.parent, "the grid")
    elif args.out is not None:
        if args.out.exists() and not args.out.is_dir():
            raise RunDirError(f"--out '{args.out}' is a file; give a folder for the images (or add --grid to write "
                              f"one grid image).")
        writable_folder(args.out, "the images")
        others = [path for path in find_image_files(args.out)
                  if path.parent != args.out or not is_sample_name(path.name, args.num)]
        if others:
            # a metrics folder must hold one sample set; stale images would be scored with the new ones
            raise RunDirError(f"--out '{args.out}' already holds {len(others)} other image(s) (e.g. '{others[0]}'), "
                              f"which would be scored together with the new ones. Choose an empty folder or remove "
                              f"them.")
    if args.gif is not None:
        if args.gif.suffix.lower() != ".gif" or args.gif.is_dir():
            raise UserError(f"--gif '{args.gif}' must be a .gif file name.")
        writable_folder(args.gif.parent, "the GIF")


def memory_needed(args: argparse.Namespace, config: Any) -> int:
    """A rough upper bound of the bytes held at once: the latents (all drawn at once), the grid's images,
    the GIF's frames (a folder is written batch by batch)."""
    latent_bytes = config.model.latent_dim * 4
    size, channels = config.data.image_size, config.data.channels
    needed = args.num * latent_bytes * 2  # the latents and the truncation's redraws
    if args.grid:
        needed += args.num * channels * size * size * (1 + 4 + 4)  # uint8 images, the float grid and its copy
    if args.gif is not None:
        scale = max(1, math.ceil(GIF_MIN_SIZE / size))
        frames = args.num * (args.interpolate or 1)
        needed += frames * (latent_bytes + channels * size * size + 3 * (size * scale) ** 2)
    return needed


def sample(args: argparse.Namespace, config: Any, device: Any, model: str, generator: Any,
           trainer_state: dict) -> list[str]:
    """Write what was asked with the loaded ``generator``; the lines that say what was written."""
    from gan_ignite.latents import sample_latents, walk_latents

    keys = sample_latents(args.num, config.model.latent_dim, args.seed, args.truncation)
    source = (f"{model} of iteration {trainer_state.get('iteration', '?')}, seed {args.seed}"
              + (f", truncation {args.truncation}" if args.truncation is not None else ""))
    written = []
    size = f"{config.data.image_size}x{config.data.image_size} {'L' if config.data.channels == 1 else 'RGB'}"
    if args.out is not None and args.grid:
        write_grid(generate(generator, keys, args.batch_size, device), args.out)
        written.append(f"wrote a grid of {args.num} {size} images to {args.out} ({source})")
    elif args.out is not None:
        count = write_folder(generated_batches(generator, keys, args.batch_size, device), args.out)
        written.append(f"wrote {count} {size} images ({sample_name(0)} to {sample_name(count - 1)}) to {args.out} "
                       f"({source})")
    if args.gif is not None:
        frames = generate(generator, walk_latents(keys, args.interpolate), args.batch_size, device)
        write_gif(frames, args.gif)
        written.append(f"wrote a {len(frames)}-frame latent walk ({args.num} latents, {args.interpolate} frames "
                       f"each) to {args.gif} ({source})")
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint .pt of a run")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the PNGs (created), or with --grid the grid .png to write")
    parser.add_argument("--num", type=int, default=64, help="number of images / latents (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latent stream (default 0)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--truncation", type=float, default=None, metavar="T",
                        help="truncation trick: keep latent components within [-T, T] (less variety, cleaner images)")
    parser.add_argument("--grid", action="store_true", help="write one grid image to --out instead of a folder")
    parser.add_argument("--interpolate", type=int, default=None, metavar="STEPS",
                        help="latent walk through the --num latents with STEPS frames per segment (needs --gif)")
    parser.add_argument("--gif", type=Path, default=None, help="the animated GIF of --interpolate")
    parser.add_argument("--model", choices=[str(name) for name in ScoredModel], default=None,
                        help="the live generator or its EMA (default: what the run evaluated, eval.model)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--allow-import", action="append", default=[], metavar="MODULE",
                        help="let the run's config import MODULE for its own generator (model.generator): only for "
                             "runs you trust, since importing a module runs its code")


def run(args: argparse.Namespace) -> int:
    from gan_ignite.config import scored_model
    from gan_ignite.evaluation import load_generator
    from gan_ignite.metrics._base import resolve_device
    from gan_ignite.run_dir import load_run_config

    check_arguments(args)
    _, config = load_run_config(args.checkpoint)
    device = resolve_device(args.device)
    require_memory(memory_needed(args, config), f"--num {args.num}" + (
        f" with --interpolate {args.interpolate}" if args.interpolate else ""),
        "Lower --num (a folder of samples can be written in parts with different --seed values).")
    model = args.model or scored_model(config)
    # the checkpoint is read (and refused if it must be) before any output folder is created
    generator, trainer_state = load_generator(config, args.checkpoint, device, model, set(args.allow_import))
    check_outputs(args)
    for line in sample(args, config, device, model, generator, trainer_state):
        print(line)
    return 0


main = main_for(__name__)

if __name__ == "__main__":
    sys.exit(main())
