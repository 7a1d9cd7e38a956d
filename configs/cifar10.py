"""GAN-NAS over sequential CNNs on CIFAR-10 (tensorflow-datasets), sized for a GPU.

Run:
  python scripts/search.py --config configs/cifar10.py --workdir runs/cifar10

Needs CIFAR-10 prepared for tensorflow-datasets under $TFDS_DATA_DIR
(default ~/tensorflow_datasets).
"""

from gannas_jax.search.factory import training_config


def get_config():
    return training_config(
        dataset="cifar10",
        budget=256,
        population=32,
        space=dict(
            input_shape=(32, 32, 3),
            num_classes=10,
            num_stages=3,
            slots_per_stage=4,
            kernel_sizes=(3, 5, 7),
            channels=(32, 64, 128),
            num_fc=1,
            fc_widths=(128, 256, 512),
        ),
        train=dict(steps=5000, batch_size=128, learning_rate=1e-3, schedule="cosine"),
    )
