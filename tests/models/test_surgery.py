import keras
import numpy as np
import pytest

from keras_transfer.models import surgery
from keras_transfer.models.backbones import BACKBONES, build_base
from keras_transfer.models.heads import gap_dense
from keras_transfer.models.surgery import chop, cut_points, describe, freeze, layer_index, multiply_adds


@pytest.mark.parametrize("name", list(BACKBONES))
def test_every_declared_unit_is_a_graph_derived_cut_point(name, small_base):
    model = small_base(name)
    points = cut_points(model)
    names = surgery.units(model)
    assert len(names) >= 4
    assert set(names) <= set(points)
    indices = [layer_index(model, u) for u in names]
    assert indices == sorted(indices), "units are declared bottom to top"


def test_vgg16_every_layer_is_a_cut_point(small_base):
    model = small_base("vgg16")
    assert cut_points(model) == [layer.name for layer in model.layers]
    assert len(surgery.units(model)) == 13


def test_inception_v3_cut_points_are_stem_and_mixed_blocks(small_base):
    model = small_base("inception_v3")
    assert len(model.layers) == 311
    points = cut_points(model)
    mixed = [p for p in points if p.startswith("mixed")]
    assert mixed == [f"mixed{i}" for i in range(11)]
    assert [layer_index(model, m) for m in mixed] == [40, 63, 86, 100, 132, 164, 196, 228, 248, 279, 310]
    assert "mixed9_0" not in points and "mixed9_1" not in points
    # the stem is a chain: every layer up to the first branch is a cut point
    assert points[:18] == [layer.name for layer in model.layers[:18]]
    assert len(points) == 18 + 11


def test_resnet50_cut_points_are_block_outputs_not_branches(small_base):
    points = cut_points(small_base("resnet50"))
    assert "conv3_block2_out" in points and "conv3_block2_add" in points
    assert "conv3_block2_1_conv" not in points and "conv3_block1_0_conv" not in points


def test_cut_points_of_a_model_with_two_outputs_dominate_both():
    inp = keras.Input((4,), name="x")
    h = keras.layers.Dense(3, name="shared")(inp)
    a = keras.layers.Dense(1, name="a")(h)
    b = keras.layers.Dense(1, name="b")(keras.layers.Dense(2, name="bh")(h))
    model = keras.Model(inp, [a, b], name="two")
    assert cut_points(model) == ["x", "shared"]


@pytest.mark.parametrize("removed,end", [(1, "block5_conv2"), (3, "block4_pool"), (4, "block4_conv2"), (12, "block1_conv1")])
def test_chop_vgg16_removed(removed, end, small_base):
    chopped = chop(small_base("vgg16"), removed=removed)
    assert chopped.layers[-1].name == end
    assert chopped.name == "vgg16"


def test_chop_inception_removed_one_ends_at_mixed9(small_base):
    assert chop(small_base("inception_v3"), removed=1).layers[-1].name == "mixed9"


def test_chop_resnet_removes_whole_blocks(small_base):
    # removing a residual block must not keep its branch and add (the cut point just before
    # conv5_block3_out is conv5_block3_add, which is still inside the block)
    assert chop(small_base("resnet50"), removed=1).layers[-1].name == "conv5_block2_out"


@pytest.mark.parametrize("name", list(BACKBONES))
def test_chop_one_unit_ends_at_a_cut_point_below_the_top_unit(name, small_base):
    model = small_base(name)
    chopped = chop(model, removed=1)
    end = chopped.layers[-1].name
    assert end in cut_points(model)
    assert layer_index(model, end) < layer_index(model, surgery.units(model)[-1])
    assert len(surgery.units(chopped)) == len(surgery.units(model)) - 1


def test_chopped_model_shares_variables_with_the_original(small_base):
    model = small_base("vgg16")
    chopped = chop(model, removed=3)
    original = {id(v) for v in model.weights}
    assert chopped.weights and all(id(v) in original for v in chopped.weights)
    kernel = chopped.get_layer("block1_conv1").kernel
    assert kernel is model.get_layer("block1_conv1").kernel


def test_chop_at_name_and_index(small_base):
    model = small_base("inception_v3")
    assert chop(model, at="mixed5").layers[-1].name == "mixed5"
    assert chop(model, at=164).layers[-1].name == "mixed5"


def test_chop_at_a_branch_layer_names_the_nearest_cut_points(small_base):
    with pytest.raises(ValueError, match=r"'mixed9_0'.*not a cut point.*mixed8 \(layer 248\), mixed9 \(layer 279\)"):
        chop(small_base("inception_v3"), at="mixed9_0")


def test_chop_refuses_bad_arguments(small_base):
    model = small_base("vgg16")
    with pytest.raises(ValueError, match="exactly one"):
        chop(model)
    with pytest.raises(ValueError, match="removed=14 is out of range.*0..13"):
        chop(model, removed=14)
    with pytest.raises(ValueError, match="nothing would be left"):
        chop(model, removed=13)
    with pytest.raises(ValueError, match="no layer named"):
        chop(model, at="block9_conv1")
    assert chop(model, removed=0) is model


def test_freeze_counts_backbone_layer_indices_inside_a_classifier():
    base = build_base("vgg16", weights=None, input_shape=(32, 32, 3))
    model = gap_dense(base, 3, width=8)
    freeze(model, 7)
    assert [layer.trainable for layer in base.layers] == [False] * 7 + [True] * (len(base.layers) - 7)
    head = [layer for layer in model.layers if layer.name in ("head_dense", "predictions")]
    assert all(layer.trainable for layer in head)
    assert surgery.frozen_count(model) == 7
    freeze(model, "block3_pool")  # through that layer
    assert surgery.frozen_count(model) == layer_index(base, "block3_pool") + 1
    with pytest.raises(ValueError, match="0..19"):
        freeze(model, 20)


def test_frozen_batchnorm_keeps_its_statistics_through_fit(small_base, rng):
    base = build_base("mobilenet_v2", weights=None, input_shape=(32, 32, 3))
    model = gap_dense(base, 2, width=4)
    k = layer_index(base, "block_3_project_BN") + 1
    freeze(model, k)
    bns = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    frozen = [b for b in bns if layer_index(base, b.name) < k]
    trained = [b for b in bns if layer_index(base, b.name) >= k]
    before = {b.name: b.moving_mean.numpy().copy() for b in bns}
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    model.fit(x, np.array([0, 1] * 4), epochs=1, batch_size=8, verbose=0)
    for b in frozen:
        np.testing.assert_array_equal(b.moving_mean.numpy(), before[b.name])
    assert any(not np.allclose(b.moving_mean.numpy(), before[b.name]) for b in trained)


def test_freeze_points_are_unit_boundaries(small_base):
    model = small_base("inception_v3")
    ks = surgery.freeze_points(model)
    assert ks[0] == 0 and ks[-1] == 311
    assert 249 in ks  # through mixed8 (index 248): Keras's documented model.layers[:249]


def test_describe_rows(small_base):
    model = small_base("inception_v3")
    rows = describe(model)
    assert [r.index for r in rows] == list(range(311))
    by_name = {r.name: r for r in rows}
    assert by_name["mixed7"].cut_point and by_name["mixed7"].unit
    assert not by_name["mixed9_0"].cut_point
    assert by_name["mixed10"].output_shape == (None, 1, 1, 2048)
    first_conv = next(r for r in rows if r.type == "Conv2D")  # Keras numbers its name per process
    assert first_conv.index == 1 and first_conv.params == 3 * 3 * 3 * 32
    table = surgery.format_table(rows, only_cut_points=True)
    assert "mixed9_0" not in table and table.count(" U ") == 11


def test_multiply_adds_count_kernels_at_every_output_position():
    x = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same")
    dense = keras.layers.Dense(5)
    y = dense(keras.layers.GlobalAveragePooling2D()(conv(x)))
    keras.Model(x, y)
    assert multiply_adds([conv]) == 8 * 8 * (3 * 3 * 3 * 4)
    assert multiply_adds([dense]) == 4 * 5
    assert multiply_adds([keras.layers.ReLU()]) == 0


def _tutorial_inception(num_classes=3):
    """The seed tutorial's classifier, built its way: backbone layers and head in one model."""
    from keras.applications import InceptionV3
    from keras.layers import Dense, GlobalAveragePooling2D

    base_model = InceptionV3(weights=None, include_top=False, input_shape=(75, 75, 3))
    x = base_model.output
    x = GlobalAveragePooling2D()(x)
    x = Dense(1024, activation="relu")(x)
    predictions = Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs=base_model.input, outputs=predictions)


def test_surgery_works_on_the_tutorials_own_model():
    model = _tutorial_inception()
    assert surgery.units(model) == [f"mixed{i}" for i in range(11)]
    assert surgery.backbone_of(model) is model  # indices are this model's own layers
    freeze(model, 249)
    tutorial = _tutorial_inception()
    for layer in tutorial.layers[:249]:  # the tutorial's loop
        layer.trainable = False
    for layer in tutorial.layers[249:]:
        layer.trainable = True
    assert [layer.trainable for layer in model.layers] == [layer.trainable for layer in tutorial.layers]
    rows = describe(model)
    assert len(rows) == len(model.layers) and rows[248].name == "mixed8" and rows[248].unit
    assert not rows[248].trainable and rows[249].trainable
    assert "mixed9_0" not in cut_points(model)
    assert chop(model, removed=1).layers[-1].name == "mixed9"
    assert surgery.frozen_count(model) == 249


def test_inlined_vgg19_is_not_taken_for_vgg16():
    from keras_transfer.models.backbones import backbone_for

    base = keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    flat = keras.Model(base.input, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(base.output)))
    assert backbone_for(flat).name == "vgg19"
    with pytest.raises(ValueError, match="known backbone"):
        surgery.units(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_one_resolver_turns_every_frozen_spec_into_a_layer_count(small_base):
    from keras_transfer import training
    from keras_transfer.models.surgery import ThroughUnit, resolve_frozen

    model = training.build_model("inception_v3", 2, weights=None, input_size=75, width=4)
    assert resolve_frozen(model, None) == 249  # Keras's guide: train the top 2 blocks (through mixed8)
    assert resolve_frozen(model, "mixed5") == 165 == resolve_frozen(model, 165) == resolve_frozen(model, "165")
    assert resolve_frozen(model, "all") == 311
    assert resolve_frozen(model, "unit:0") == 0
    assert resolve_frozen(model, ThroughUnit(9)) == resolve_frozen(model, "mixed8") == 249  # units: mixed0..mixed10
    assert resolve_frozen(model, "unit:12") == 311  # past the last unit: all
    vgg = small_base("vgg16")
    # for a backbone with its top 3 units removed (it ends at block4_pool, 15 layers), without chopping it
    assert resolve_frozen(vgg, "all", removed=3) == 15 == len(chop(vgg, removed=3).layers)
    assert resolve_frozen(vgg, ThroughUnit(10), removed=3) == layer_index(vgg, "block4_conv3") + 1
    assert resolve_frozen(vgg, None, removed=3) == layer_index(vgg, "block4_conv1") + 1  # all but the top two left
    for bad, message in ((400, "out of range.*311"), ("mixed99", "no layer of that name"),
                         ("unit:13", "unit:0..unit:11"), (-1, "out of range")):
        with pytest.raises(ValueError, match=message) as error:
            resolve_frozen(model, bad)
        assert "Received: frozen=" in str(error.value)
    # freeze and the unit boundaries go through it too
    assert surgery.frozen_count(freeze(model, "unit:9")) == 249
    assert surgery.freeze_points(vgg, removed=3)[-1] == 15 and surgery.freeze_points(vgg)[:2] == [0, 2]


def test_one_resolver_for_removed_is_where_chop_and_the_probe_end(small_base):
    from keras_transfer.training import cut_probe

    vgg = small_base("vgg16")
    for removed in range(surgery.max_removed(vgg) + 1):
        assert chop(vgg, removed=removed).layers[-1].name == vgg.layers[surgery.cut_index(vgg, removed)].name
    assert [name for _, name in cut_probe.cut_candidates(vgg)][:4] == ["block5_pool", "block5_conv2", "block5_conv1",
                                                                  "block4_pool"]
    with pytest.raises(ValueError, match="Received: removed=13"):
        surgery.cut_index(vgg, 13)
