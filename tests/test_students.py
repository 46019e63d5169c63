"""Student builder: flat tf_keras MobileNets with logits, resized inside, short-training BN momentum."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.stages.students import StudentConfig, build_student


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"])
def test_each_arch_builds_flat_with_logits(arch):
    m = build_student(
        StudentConfig(arch=arch, width=0.35 if arch == "mobilenet_v2" else 0.75), (32, 32, 3), 7
    )
    assert m.output_shape == (None, 7)
    assert not any(hasattr(layer, "layers") for layer in m.layers), (
        "nested sub-model: tfmot cannot reach it"
    )
    out = m(
        np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32), training=False
    ).numpy()
    assert out.shape == (2, 7) and not np.allclose(
        out.sum(axis=1), 1.0
    )  # logits, not probabilities


def test_resize_inside_and_bn_momentum():
    m = build_student(StudentConfig(input_size=48, bn_momentum=0.9), (32, 32, 3), 10)
    assert m.input_shape == (None, 32, 32, 3)
    assert m.get_layer("student_resize").get_config()["height"] == 48
    momenta = {
        layer.momentum for layer in m.layers if layer.__class__.__name__ == "BatchNormalization"
    }
    assert momenta == {0.9}


def test_too_small_or_two_channel_inputs_are_refused():
    with pytest.raises(UsageError, match="at least 32x32"):
        build_student(StudentConfig(), (16, 16, 3), 10)
    with pytest.raises(UsageError, match="RGB"):
        build_student(StudentConfig(), (32, 32, 2), 10)


def test_grey_students_take_one_channel():
    # Fashion-MNIST: 28x28 grey, resized inside; the first convolution reads one channel
    m = build_student(StudentConfig(arch="mobilenet_v3_large", width=0.5, minimalistic=True,
                                    input_size=32), (28, 28, 1), 10)  # fmt: skip
    assert m.input_shape == (None, 28, 28, 1) and m.output_shape == (None, 10)
    first_conv = next(layer for layer in m.layers if layer.__class__.__name__ == "Conv2D")
    assert first_conv.kernel.shape[2] == 1


def test_minimalistic_v3_drops_hard_swish_and_squeeze_excite():
    def op_kinds(model):
        return {layer.__class__.__name__ for layer in model.layers}, {
            layer.name for layer in model.layers
        }

    full_kinds, full_names = op_kinds(
        build_student(StudentConfig(arch="mobilenet_v3_small", width=0.75), (32, 32, 3), 10)
    )
    mini_kinds, mini_names = op_kinds(
        build_student(
            StudentConfig(arch="mobilenet_v3_small", width=0.75, minimalistic=True), (32, 32, 3), 10
        )
    )
    # Full MobileNetV3 has squeeze-excite blocks (a Multiply per block) and hard-swish activations.
    assert any("squeeze_excite" in n for n in full_names) and "Multiply" in full_kinds
    assert not any("squeeze_excite" in n for n in mini_names) and "Multiply" not in mini_kinds


def test_minimalistic_is_refused_for_mobilenet_v2():
    from edgekit.errors import RecipeError
    from edgekit.recipes import load_recipe

    with pytest.raises(RecipeError, match="minimalistic applies to MobileNetV3 students only"):
        load_recipe(
            "distill", ["distill.student.arch=mobilenet_v2", "distill.student.minimalistic=true"]
        )
