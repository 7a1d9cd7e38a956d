"""GAN-NAS over sequential CNNs on MNIST (tensorflow-datasets), sized for a GPU.

Run:
  python scripts/search.py --config configs/mnist.py --workdir runs/mnist

Needs MNIST prepared for tensorflow-datasets under $TFDS_DATA_DIR (default ~/tensorflow_datasets).
"""

from gannas_jax.search.factory import training_config


def get_config():
    return training_config(
        dataset="mnist",
        budget=256,
        population=32,
        space=dict(
            input_shape=(28, 28, 1),
            num_classes=10,
            num_stages=3,
            slots_per_stage=3,
            kernel_sizes=(3, 5, 7),
            channels=(16, 32, 64),
            num_fc=2,
            fc_widths=(64, 128, 256),
        ),
        train=dict(steps=2000, batch_size=128, learning_rate=1e-3, schedule="cosine"),
    )
