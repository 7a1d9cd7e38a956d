"""The default job: GAN-NAS over sequential CNNs on scikit-learn's bundled 8x8 digits (CPU).

Run:
  python scripts/search.py --config configs/digits.py --workdir runs/digits

Every query trains a child network from scratch with the `train` recipe and scores it by
validation accuracy; test accuracy is reported alongside. Children are trained 16 at a time by
one compiled program.
"""

from gannas_jax.search.factory import training_config


def get_config():
    # 2 stages of 3 slots around one 2x2 reduction, then up to 2 dense layers.
    return training_config(
        dataset="digits",
        budget=96,
        space=dict(
            input_shape=(8, 8, 1),
            num_classes=10,
            num_stages=2,
            slots_per_stage=3,
            kernel_sizes=(3, 5, 7),
            channels=(8, 16, 32),
            num_fc=2,
            fc_widths=(32, 64, 128),
        ),
    )
