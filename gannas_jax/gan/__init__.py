"""The adversarial core: generator, discriminator, losses, state and jit-compiled steps."""

from gannas_jax.gan.config import GENERATOR_MODES, GanConfig
from gannas_jax.gan.fit import fit_gan, pad_real
from gannas_jax.gan.losses import LOSSES, GanLoss, get_loss, register_loss
from gannas_jax.gan.models import Discriminator, Generator, SpectralDense
from gannas_jax.gan.rank import fit_pairwise, fit_ranker
from gannas_jax.gan.sample import discriminate, generate
from gannas_jax.gan.state import GanState, init_gan
from gannas_jax.gan.step import gan_step

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
    "fit_pairwise",
    "fit_ranker",
    "gan_step",
    "generate",
    "get_loss",
    "init_gan",
    "pad_real",
    "register_loss",
]
