"""Bad input raises ValueError with a message naming the problem."""

import jax.numpy as jnp
import numpy as np
import pytest

from gannas_jax import NB201Space, SequentialSpace

NB = NB201Space()
SEQ = SequentialSpace()


@pytest.mark.parametrize(
    "bad, match",
    [
        ("|nor_conv_3x3~0|+|none~0|", "malformed cell string"),
        ("nor_conv_3x3~0+none~0|none~1+x", "malformed cell string"),
        ("|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv_9x9'"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 .* must have 2 inputs"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must come from node 0"),
        ("|none 0|+|none~0|none~1|+|none~0|none~1|none~2|", "malformed edge"),
    ],
)
def test_nb201_bad_strings(bad, match):
    with pytest.raises(ValueError, match=match):
        NB.from_string(bad)


@pytest.mark.parametrize(
    "bad, match",
    [
        ("[conv3x3-16] [relu]", "malformed architecture string"),
        ("[conv3x3-16] [relu] [fc64-relu] [fc64-relu]", "malformed architecture string"),
        ("junk [conv3x3-16] [relu] [fc64-relu]", "malformed architecture string"),
        ("[conv9x9-16] [relu] []", "unknown kernel size 9"),
        ("[conv3x3-12] [relu] []", "unknown channel count 12"),
        ("[conv3x5-16] [relu] []", "only square kernels"),
        ("[swish] [relu] []", "unknown op 'swish'"),
        ("[relu] [relu] [fc64-swish]", "unknown activation 'swish'"),
        ("[relu] [relu] [fc63-relu]", "unknown dense width 63"),
        ("[relu] [relu] [dense64]", "unknown head op 'dense64'"),
        ("[relu relu relu relu] [] []", "stage 0 has 4 layers, at most 3"),
        ("[] [] [fc32-relu fc32-relu fc32-relu]", "head has 3 dense layers, at most 2"),
    ],
)
def test_sequential_bad_strings(bad, match):
    with pytest.raises(ValueError, match=match):
        SEQ.from_string(bad)


@pytest.mark.parametrize("space", [NB, SEQ], ids=["nb201", "sequential"])
def test_codes_out_of_range(space):
    arch = np.zeros(space.num_variables, np.int32)
    arch[0] = space.cardinalities[0]
    with pytest.raises(ValueError, match=r"code \d+ out of range for variable 0"):
        space.to_string(arch)
    arch[0] = -1
    with pytest.raises(ValueError, match="out of range"):
        space.onehot(arch[None])
    with pytest.raises(ValueError, match="must be integers"):
        space.validate(np.full(space.num_variables, 0.5))


@pytest.mark.parametrize("space", [NB, SEQ], ids=["nb201", "sequential"])
@pytest.mark.parametrize("shape", [(), (3,), (2, 50)])
def test_wrong_shape(space, shape):
    with pytest.raises(ValueError, match="must have shape"):
        space.onehot(jnp.zeros(shape, jnp.int32))
    with pytest.raises(ValueError, match="must have shape"):
        space.canonicalize(np.zeros(shape, np.int32))


def test_to_string_wants_one_architecture():
    with pytest.raises(ValueError, match="expected one architecture"):
        NB.to_string(np.zeros((2, 6), np.int32))


def test_nb201_index_errors():
    with pytest.raises(ValueError, match="index out of range"):
        NB.from_index(15625)
    with pytest.raises(ValueError, match="index must be an integer"):
        NB.from_index(1.5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(input_shape=(8, 8, 1), num_stages=5),
            "5 stages need 4 2x2 reductions, but an input of 8x8 allows at most 3",
        ),
        (dict(input_shape=(8, 8)), r"input_shape must be \(H, W, C\)"),
        (dict(kernel_sizes=(3, 4)), "kernel sizes must be odd"),
        (dict(channels=()), "channels must not be empty"),
        (dict(channels=(8, -16)), "channels must hold positive ints"),
        (dict(fc_widths=(32, 32)), "fc_widths has repeated values"),
        (dict(num_stages=0), "num_stages must be an int >= 1"),
        (dict(num_classes=1), "num_classes must be an int >= 2"),
        (dict(slots_per_stage=2.5), "slots_per_stage must be an int"),
    ],
)
def test_impossible_sequential_configs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SequentialSpace(**kwargs)


def test_bad_specs():
    with pytest.raises(ValueError, match="not a sequential spec"):
        SEQ.from_spec(NB.to_spec(np.zeros(6, np.int32)))
    spec = SEQ.to_spec(np.zeros(SEQ.num_variables, np.int32))
    spec["input_shape"] = [28, 28, 1]
    with pytest.raises(ValueError, match="spec is for input"):
        SEQ.from_spec(spec)
    spec = NB.to_spec(np.zeros(6, np.int32))
    spec["edges"][0]["op"] = "conv_9x9"
    with pytest.raises(ValueError, match="unknown op 'conv_9x9'"):
        NB.from_spec(spec)
    spec["edges"][0] = spec["edges"][1]
    with pytest.raises(ValueError, match="invalid or repeated edge"):
        NB.from_spec(spec)


def test_sample_bad_n():
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        NB.sample(None, -1)
