"""LogME and the linear probe on features with known answers."""
import numpy as np
import pytest

from keras_transfer.training import cut_probe, linear_probe


def _data(n=120, d=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    informative = rng.normal(0, 0.3, (n, d)) + np.eye(classes, d)[labels] * 3
    noise = rng.normal(0, 1, (n, d))
    return informative, noise, labels


def test_features_that_determine_the_labels_score_higher_than_noise():
    informative, noise, labels = _data()
    assert cut_probe.logme(informative, labels) > cut_probe.logme(noise, labels) + 0.1
    assert linear_probe.cv_linear_probe(informative, labels) > 0.95 > 0.6 > linear_probe.cv_linear_probe(noise, labels)


@pytest.mark.parametrize("features", ["zeros", "constant", "one_live_column"])
def test_features_without_variance_score_without_dividing_by_zero(features):
    """Identical images give identical (standardised: zero) features: a finite score, no better
    than features that tell the classes apart, and no warning."""
    informative, _, labels = _data(n=30, d=6)
    f = {"zeros": np.zeros((30, 6)), "constant": np.ones((30, 6)),
         "one_live_column": np.c_[informative[:, :1], np.zeros((30, 5))]}[features]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score = cut_probe.logme(f, labels)
    assert np.isfinite(score) and score < cut_probe.logme(informative, labels)
    assert 0 <= linear_probe.cv_linear_probe(f, labels) <= 1


def test_probe_cuts_on_identical_images_recommends_a_cut(tmp_path):
    from keras_transfer.models import backbones

    base = backbones.build_base("vgg16", weights=None, input_shape=(32, 32, 3))
    images = np.full((12, 32, 32, 3), 128, np.uint8)
    result = cut_probe.probe_cuts(base, images, np.arange(12) % 2, ["a", "b"], str(tmp_path), seed=0, batch_size=6)
    assert all(np.isfinite(row["logme"]) for row in result["cuts"]) and result["recommended_layer"]


def test_the_fixed_point_maximises_the_directly_computed_evidence():
    """At the returned (alpha, beta) the evidence formula equals the Gaussian log density of y under
    y ~ N(0, I/beta + F F^T/alpha), computed directly, and no nearby (alpha, beta) is higher."""
    informative, _, labels = _data(n=60, d=8)
    y = (labels == 1).astype(float)
    f = informative
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    evidence, alpha, beta = cut_probe.logme_target(s ** 2, u, y, f.shape[1])

    def direct(a, b):
        cov = np.eye(len(y)) / b + f @ f.T / a
        sign, logdet = np.linalg.slogdet(cov)
        return (-0.5 * (logdet + y @ np.linalg.solve(cov, y) + len(y) * np.log(2 * np.pi))) / len(y)

    assert evidence == pytest.approx(direct(alpha, beta), rel=1e-6, abs=1e-8)
    for a, b in ((alpha * 1.3, beta), (alpha / 1.3, beta), (alpha, beta * 1.3), (alpha, beta / 1.3)):
        assert direct(a, b) < direct(alpha, beta)


def test_fit_linear_matches_scikit_learns_probabilities_binary_and_multiclass():
    from sklearn.linear_model import LogisticRegression

    for classes in (2, 3):
        informative, _, labels = _data(classes=classes)
        fitted = linear_probe.fit_linear(informative, labels, classes, grid=(1.0,))
        logits = informative @ fitted.kernel + fitted.bias
        ours = np.exp(logits - logits.max(1, keepdims=True))
        ours /= ours.sum(1, keepdims=True)
        theirs = LogisticRegression(C=1.0, max_iter=3000).fit(informative, labels).predict_proba(informative)
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_without_validation_images_c_is_chosen_by_cross_validation_that_keeps_views_together():
    """Near copies of each image (its views): folds that split an image's copies score
    memorisation (every C near 1.0, the tie going elsewhere); folds by image choose as validation
    images would. Either way C is chosen, not fixed at 1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_score

    rng = np.random.default_rng(0)
    n, d = 90, 60
    labels = np.arange(n) % 3
    centers = np.zeros((3, d))
    centers[:, :20] = rng.normal(size=(3, 20)) * 0.6
    x = rng.normal(size=(n, d)) + centers[labels]
    views = np.concatenate([x + 0.01 * rng.normal(size=x.shape) for _ in range(4)])
    y, groups = np.tile(labels, 4), np.arange(4 * n) % n
    by_image = linear_probe.fit_linear(views, y, 3, groups=groups)
    by_row = linear_probe.fit_linear(views, y, 3)
    scores = [cross_val_score(LogisticRegression(C=c, max_iter=3000), views, y, groups=groups,
                              cv=StratifiedGroupKFold(3, shuffle=True, random_state=0)).mean() for c in linear_probe.C_GRID]
    assert by_image.C == linear_probe.C_GRID[int(np.argmax(scores))] == 0.01
    assert by_row.C == 0.1 and by_image.val_accuracy is None  # no validation accuracy to report
    logits = views @ by_image.kernel + by_image.bias  # refitted on every row at the chosen C
    theirs = LogisticRegression(C=0.01, max_iter=3000).fit(views, y).decision_function(views)
    np.testing.assert_allclose(logits - logits.mean(1, keepdims=True), theirs - theirs.mean(1, keepdims=True), atol=1e-4)


def test_probe_command_scores_every_cut_and_recommends(tmp_path, capsys):
    import json

    from keras_transfer.cli.entry_point import main

    out = tmp_path / "probe"
    assert main(["probe", "--dataset", "digits", "--limit-per-class", "8", "--backbone", "vgg16", "--weights", "hed",
                 "--input-size", "32", "--out", str(out)]) == 0
    result = json.load(open(out / "probe.json"))
    assert [c["removed"] for c in result["cuts"]] == list(range(13))
    assert result["cuts"][3]["layer"] == "block4_pool"
    assert all(np.isfinite(c["logme"]) and 0 <= c["probe_accuracy"] <= 1 for c in result["cuts"])
    assert 0 <= result["recommended_removed"] < 13
    assert (out / "probe.png").read_bytes()[:4] == b"\x89PNG"
    assert f"recommended: --removed {result['recommended_removed']}" in capsys.readouterr().out


def test_train_removed_auto_uses_the_probe(tmp_path):
    import json

    from keras_transfer import runs
    from keras_transfer.runs import config as cfg

    config = cfg.TrainConfig(cfg.DataConfig(dataset="digits", input_size=32, limit_per_class=6),
                             cfg.ModelConfig(backbone="vgg16", weights="hed", removed="auto"),
                             cfg.RecipeConfig(head_epochs=1, fine_tune_epochs=0, verbose=0),
                             cfg.DistributeConfig(precision="float32"))
    metrics = runs.train(config, str(tmp_path / "run"), progress=False)
    chosen = json.load(open(tmp_path / "run" / "probe.json"))["recommended_removed"]
    assert metrics["removed"] == chosen


def test_probe_and_train_removed_auto_recommend_the_same_cut_from_the_same_images(tmp_path, capsys):
    """One function, one sample: ``probe`` scores the training split ``train --removed auto``
    probes (it used to score train + validation: 102 images against train's 84, and another cut)."""
    import json

    from keras_transfer.cli.entry_point import main

    data = ["--dataset", "digits", "--limit-per-class", "8", "--input-size", "32", "--seed", "3"]
    model = ["--backbone", "vgg16", "--weights", "hed"]
    assert main(["probe", *data, *model, "--out", str(tmp_path / "probe")]) == 0
    said = capsys.readouterr().out
    # train's --precision auto may train in bfloat16 (it does on a CPU with avx512_bf16): the probe is float32 in both
    assert main(["train", *data, *model, "--removed", "auto", "--head-epochs", "1", "--fine-tune-epochs", "0",
                 "--out", str(tmp_path / "run")]) == 0
    probed, trained = (json.load(open(tmp_path / d / "probe.json")) for d in ("probe", "run"))
    assert probed["images"] == trained["images"] and probed["cuts"] == trained["cuts"]
    assert probed["recommended_removed"] == trained["recommended_removed"] == \
        json.load(open(tmp_path / "run" / "metrics.json"))["removed"]
    n_train = json.load(open(tmp_path / "run" / "metrics.json"))["train_images"]
    assert f"scored {probed['images']} of the {n_train} training images (seed 3" in said


def test_where_logme_and_the_probe_disagree_the_output_says_which_it_follows():
    rows = [cut_probe.CutScore(0, "top", logme=-1.0, probe_accuracy=0.9), cut_probe.CutScore(1, "lower", logme=-0.5,
                                                                                      probe_accuracy=0.7)]
    best = cut_probe.recommend(rows)
    said = cut_probe.follows(best, max(rows, key=lambda r: r.logme))
    assert best.removed == 0 and "LogME prefers removed 1 (lower)" in said and "follows the linear probe" in said
    assert cut_probe.follows(rows[0], rows[0]) == "the linear probe and LogME agree"
    result = {"cuts": [vars(r) for r in rows], "recommended_removed": 0, "follows": said}
    assert cut_probe.format_rows(result).splitlines()[-1] == said


def test_among_tied_cuts_one_with_far_larger_maps_is_passed_over_whatever_logme_says():
    """MobileNetV2 on easy images (every cut's probe at 1.000): LogME favoured its first block's
    64x64x16 maps; a cut with maps within 2x of the smallest tied one wins instead."""
    rows = [cut_probe.CutScore(0, "out_relu", logme=-0.9, probe_accuracy=1.0, map_floats=4 * 4 * 1280),
            cut_probe.CutScore(8, "block_8_add", logme=-0.6, probe_accuracy=1.0, map_floats=8 * 8 * 64),
            cut_probe.CutScore(12, "block_4_add", logme=-0.5, probe_accuracy=1.0, map_floats=16 * 16 * 32),
            cut_probe.CutScore(16, "expanded_conv_project_BN", logme=-0.1, probe_accuracy=1.0, map_floats=64 * 64 * 16),
            cut_probe.CutScore(17, "stem", logme=0.0, probe_accuracy=0.9, map_floats=64)]
    best = cut_probe.recommend(rows)
    assert best.layer == "block_4_add"  # 8,192 floats: within 2x of 4,096, and LogME's best of those two
    said = cut_probe.follows(best, max(rows[:4], key=lambda r: r.logme))
    assert "LogME prefers removed 16 (expanded_conv_project_BN), which the linear probe ties" in said
    assert "8.0x as large (65,536 floats an image against 8,192)" in said
    # a real gain in probe accuracy still wins, whatever its maps cost
    rows[3].probe_accuracy = 1.0 + 1e-2
    assert cut_probe.recommend(rows).layer == "expanded_conv_project_BN"


def test_the_floor_and_the_head_start_choose_c_alike():
    """linear_probe.floor (bench_quality's floor, tune's) is fit_linear on standardised features: the
    default head starts exactly there."""
    from keras_transfer.training import linear_probe

    informative, noise, labels = _data(n=90)
    x = informative + noise
    train, val, test = (x[:50], labels[:50]), (x[50:70], labels[50:70]), (x[70:], labels[70:])
    floor = linear_probe.floor(train, val, test)
    z = (x - x[:50].mean(0)) / x[:50].std(0)
    fitted = linear_probe.fit_linear(z[:50], labels[:50], 3, z[50:70], labels[50:70])
    assert floor["C"] == fitted.C and floor["val_accuracy"] == fitted.val_accuracy
    assert floor["test_accuracy"] == float(np.mean((z[70:] @ fitted.kernel + fitted.bias).argmax(1) == labels[70:]))
    assert linear_probe.majority(np.array([0, 0, 1]), np.array([0, 1, 1, 1])) == 0.25


def test_the_floor_takes_features_computed_in_bfloat16():
    import ml_dtypes

    from keras_transfer.training import linear_probe

    informative, noise, labels = _data(n=90)
    x = (informative + noise).astype(ml_dtypes.bfloat16)  # what a bfloat16 model's pooled features are
    parts = [(x[a:b], labels[a:b]) for a, b in ((0, 50), (50, 70), (70, 90))]
    want = linear_probe.floor(*[(p[0].astype("float32"), p[1]) for p in parts])
    assert linear_probe.floor(*parts) == want and want["test_accuracy"] > 0.5


def test_the_probe_recommends_the_same_cut_whatever_precision_training_runs_in():
    from keras_transfer import data
    from keras_transfer.training import precision

    splits = data.load(dataset="digits", image_size=32, limit=8, seed=3, progress=False)
    plain = cut_probe.recommend_for("vgg16", "hed", splits, seed=3)
    with precision.using("bfloat16"):  # as `train --precision auto` runs VGG16 on a CPU with avx512_bf16
        under_bf16 = cut_probe.recommend_for("vgg16", "hed", splits, seed=3)
    assert under_bf16["cuts"] == plain["cuts"] and under_bf16["recommended_removed"] == plain["recommended_removed"]
