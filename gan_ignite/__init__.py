"""gan_ignite: train GANs with PyTorch-Ignite and measure them with standard FID, IS, KID and PRDC."""

__version__ = "0.1.0"
