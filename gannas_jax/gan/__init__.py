"""The adversarial core: generator, discriminator, losses, state and jit-compiled steps."""

from gannas_jax.gan.losses import LOSSES, GanLoss, get_loss, register_loss
from gannas_jax.gan.models import Discriminator, Generator, SpectralDense
from gannas_jax.gan.train import (
    GENERATOR_MODES,
    GanConfig,
    GanState,
    discriminate,
    fit_gan,
    gan_step,
    generate,
    init_gan,
    pad_real,
)

__all__ = [
    "Discriminator",
    "GENERATOR_MODES",
    "GanConfig",
    "GanLoss",
    "GanState",
    "Generator",
    "LOSSES",
    "SpectralDense",
    "discriminate",
    "fit_gan",
    "gan_step",
    "generate",
    "get_loss",
    "init_gan",
    "pad_real",
    "register_loss",
]
