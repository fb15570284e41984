"""CSD (csd.methods.csd: sampling, losses, training): each piece on known inputs, then short
training runs on a tiny VOC-like tree whose ground truth serves as round-0 masks."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from csd.cam.cam_net import CAMNet
from csd.data.transforms import MEAN, STD, train_transform
from csd.methods.cda import (
    train_cam_cda,
)
from csd.methods.csd.losses import (
    Cells,
    cam_scores,
    cells_inside,
    csd_cells,
    csd_losses,
    image_weights,
    purity,
    reduce_cells,
)
from csd.methods.csd.sampling import (
    PastePairs,
    cooccurrence,
    count_temperature,
    source_probs,
    transition,
)
from csd.methods.csd.train import Teacher, csd_step, train_cam_csd
from csd.runtime.config import ConfigError, validate_config
from tests.cam.test_cam import Killed, kill_after_first_epoch
from tests.conftest import COLOURS, RECORD, layer_dtypes
from tests.methods.conftest import BACKBONE, CDA, TRAIN, onehot

# The author's forms, as config/config.yaml's csd section (classifier_grad on: the tests
# check that the losses reach every layer)
CSD = {"target": "all", "temperature": 10.0, "temperature_units": "per_image",
       "teacher": "same", "ema_decay": 0.99, "cam_units": "peak",
       "fg_temperature": 1.0, "confidence": 0.5, "bg_score": 0.1, "bg_scale": 10.0,
       "reduction": "image",
       "purity": True, "purity_bg": 0.4, "purity_scale": 1.0, "lambda_fg": 1.0,
       "lambda_bg": 1.0, "warmup_epochs": 0, "pasted_cls": False, "classifier_grad": True,
       "range_floor": 0.1}
# The shared machinery's other options: pooled over the batch, no purity, pasted images
# classified, the temperature in counts
POOLED = dict(CSD, reduction="pooled", purity=False, pasted_cls=True,
              temperature_units="count")




def test_cooccurrence_counts_known_labels():
    counts = cooccurrence([onehot(3), onehot(3), onehot(3, 14), onehot(3, 14, 12), onehot(7)])
    expected = np.ones((20, 20))
    expected[3, 3] += 2
    expected[7, 7] += 1
    expected[3, 14] += 2
    expected[14, 3] += 2
    for i, j in [(3, 12), (12, 3), (14, 12), (12, 14)]:
        expected[i, j] += 1
    np.testing.assert_array_equal(counts, expected)


def test_source_probabilities_follow_cooccurrence_and_availability():
    counts = np.ones((20, 20))
    counts[14, 12] = counts[12, 14] = 40  # person <-> horse
    p_matrix = transition(counts, temperature=10)
    np.testing.assert_allclose(p_matrix.sum(axis=1), 1)
    available = np.ones(20, bool)
    probs = source_probs(p_matrix, onehot(14), available)
    assert probs.argmax() == 12 and probs.sum() == pytest.approx(1)
    # exp(39 / 10) times the weight of any other class
    assert probs[12] / probs[0] == pytest.approx(np.exp(3.9))
    # A hotter softmax spreads the mass; an unavailable class is never drawn.
    flat = source_probs(transition(counts, 1000), onehot(14), available)
    assert flat[12] < probs[12]
    available[12] = False
    assert source_probs(p_matrix, onehot(14), available)[12] == 0
    # Several target classes: sum of their rows.
    both = source_probs(p_matrix, onehot(12, 14), np.ones(20, bool))
    expected = p_matrix[12] + p_matrix[14]
    np.testing.assert_allclose(both, expected / expected.sum())


def nearest_colour(image, mask):
    """The colour (a class's square, or the grey background) nearest the mean normalised
    image over the pixels where `mask` is 1."""
    colours = dict(COLOURS, background=(120, 120, 120))
    mean = (image * mask).sum(dim=(1, 2)) / mask.sum()
    return min(colours, key=lambda k: ((torch.tensor(colours[k]) / 255 - torch.tensor(MEAN))
                                       / torch.tensor(STD) - mean).norm())


def test_paste_pairs_masks_labels_and_pasted_images(voc):
    root, ids, labels = voc
    torch.manual_seed(0)
    transform = train_transform("long", [40, 56], 32)
    data = PastePairs(root, ids, labels, root / "SegmentationClass", transform)
    single = [i for i in ids if labels[i].sum() == 1]
    checked = 0
    for index in range(len(ids)):
        s = data[index]
        c = s["source_class"]
        assert s["source_image"].shape == s["target_image"].shape == (3, 32, 32)
        assert data.available[c]
        # the source is a single-label image of class c; its mask is where its label map is c+1
        assert set(torch.unique(s["source_fg"]).tolist()) <= {0.0, 1.0}
        assert data.ids[data.sources[c][0]] in single
        # the masks mark the source's object (its class's colour) and the target's grey
        # background (a crop may miss the object)
        if s["source_fg"].any():
            assert nearest_colour(s["source_image"], s["source_fg"]) == c
            checked += 1
        assert nearest_colour(s["target_image"], s["target_bg"]) == "background"
    assert checked > len(ids) / 2
    multi = PastePairs(root, ids, labels, root / "SegmentationClass", transform,
                       target="multi_label")
    assert all(labels[ids[t]].sum() > 1 for t in multi.targets)


def test_paste_pairs_domains_and_clear_errors(voc):
    root, ids, _ = voc
    masks, transform = root / "SegmentationClass", train_transform("long", [40, 56], 32)
    # one single-label image (class 2), one multi-label image, the rest multi-label too
    labels = {i: onehot(0, 1) for i in ids}
    labels[ids[0]] = onehot(2)
    labels[ids[1]] = onehot(0, 2)
    data = PastePairs(root, ids, labels, masks, transform)
    assert np.flatnonzero(data.available).tolist() == [2]  # one source image is enough
    assert data.targets.tolist() == list(range(len(ids)))  # target "all": every image
    # the default temperature, 10 as on VOC train_aug, in this dataset's counts
    np.testing.assert_allclose(data.transition, transition(
        cooccurrence([labels[i] for i in ids]), 10.0 * len(ids) / 10582))
    only_one = dict({i: onehot(2) for i in ids}, **{ids[1]: onehot(0, 2)})
    data = PastePairs(root, ids, only_one, masks, transform, target="multi_label")
    assert data.targets.tolist() == [1]
    with pytest.raises(ValueError, match="settings 'csd.target' must be all or multi_label"):
        PastePairs(root, ids, labels, masks, transform, target="single")
    with pytest.raises(ValueError, match=r"CSD needs single-label images \(the source domain\); "
                       "the training list has none"):
        PastePairs(root, ids, {i: onehot(0, 1) for i in ids}, masks, transform)
    with pytest.raises(ValueError, match="'csd.target: multi_label' but the training list has "
                       "no multi-label image"):
        PastePairs(root, ids, {i: onehot(2) for i in ids}, masks, transform,
                   target="multi_label")
    with pytest.raises(ValueError, match=r"no source class available for a target with "
                       r"classes \[0, 1\]"):
        source_probs(data.transition, onehot(0, 1), np.zeros(20, bool))


def test_transition_is_finite_for_large_counts():
    """The softmax subtracts each row's maximum: counts of thousands (VOC) at temperature 1
    neither overflow nor underflow a whole row."""
    counts = np.ones((20, 20))
    counts[0, 1] = 5000.0
    p = transition(counts, 1.0)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1)
    assert p[0, 1] == pytest.approx(1.0) and p[5, 7] == pytest.approx(1 / 20)


def test_temperature_per_image_draws_alike_on_datasets_of_any_size():
    """per_image: the temperature is VOC train_aug's (10,582 images) scaled to the dataset,
    so a dataset and the same labels ten times over draw alike; in counts they do not."""
    assert count_temperature(10, "count", 200) == 10
    assert count_temperature(10, "per_image", 10582) == pytest.approx(10)
    assert count_temperature(10, "per_image", 1010) == pytest.approx(10 * 1010 / 10582)
    small = [onehot(14), onehot(14), onehot(14, 12), onehot(14, 12), onehot(14, 12),
             onehot(12), onehot(3), onehot(3, 7)] * 5  # 40 images
    large = small * 10  # 400 images, the same statistics
    draw = {n: {units: source_probs(transition(cooccurrence(labels), count_temperature(
                    10, units, len(labels))), onehot(14), np.ones(20, bool))
                for units in ("per_image", "count")}
            for n, labels in (("small", small), ("large", large))}
    np.testing.assert_allclose(draw["small"]["per_image"], draw["large"]["per_image"])
    # per image, person (14) holds horse (12) in 15 of 40 images: nearly always drawn
    assert draw["small"]["per_image"][12] > 0.9
    # in counts: nearly uniform on 40 images (a difference of 15 counts at 10), not on 400
    assert draw["small"]["count"][12] < 0.3 < draw["large"]["count"][12]
    with pytest.raises(ValueError, match="csd.temperature_units"):
        count_temperature(10, "images", 40)


def test_paste_pairs_report_whether_the_source_cooccurs_with_the_target(voc):
    root, ids, labels = voc
    torch.manual_seed(0)
    data = PastePairs(root, ids, labels, root / "SegmentationClass",
                      train_transform("long", [40, 56], 32), temperature=1.0,
                      temperature_units="count")
    label_sets = [set(np.flatnonzero(labels[i])) for i in ids]
    seen = set()
    for index in range(len(ids)):
        s = data[index]
        c, target = s["source_class"], set(np.flatnonzero(np.asarray(s["target_label"])))
        assert s["source_in_target"] == float(c in target)
        shares = any(c in held and (held & target) - {c} for held in label_sets)
        assert s["source_cooccurs"] == float(shares)
        seen.add((s["source_in_target"], s["source_cooccurs"]))
    assert len(seen) > 1  # the test data has draws of more than one kind


def test_csd_config_keys_are_the_schemas_and_the_schema_checks_them():
    repo = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((repo / "config/config.yaml").read_text())
    schema_path = repo / "workflow/schemas/config.schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    assert set(config["csd"]) == set(schema["properties"]["csd"]["required"])
    # the tests' defaults are config.yaml's (but the classifier's gradient and the EMA rate)
    assert config["csd"] == dict(CSD, classifier_grad=False, ema_decay=0.999)
    assert set(config["csd_mct"]) <= set(config["csd"])
    validate_config(config, schema_path)
    for key, bad in (("reduction", "mean"), ("temperature_units", "voc"),
                     ("cam_units", "raw"), ("purity", "yes"), ("bg_scale", 0),
                     ("fg_temperature", -1), ("purity_bg", 0)):
        broken = dict(config, csd=dict(config["csd"], **{key: bad}))
        with pytest.raises(ConfigError, match=rf"csd\.{key}\b"):
            validate_config(broken, schema_path)
    missing = dict(config, csd={k: v for k, v in config["csd"].items() if k != "bg_score"})
    with pytest.raises(ConfigError, match="bg_score"):
        validate_config(missing, schema_path)
    with pytest.raises(ConfigError, match=r"csd_mct\.cam_units\b"):
        validate_config(dict(config, csd_mct={"cam_units": "raw"}), schema_path)
    with pytest.raises(ValueError, match="csd.cam_units"):
        csd_losses(*[torch.zeros(1, 20, 2, 2)] * 3, loss_batch(size=16),
                   dict(CSD, cam_units="raw"))


def test_ema_teacher_averages_with_its_decay():
    model = CAMNet(BACKBONE)
    teacher = Teacher(model, "ema", 0.9)
    weight = model.classifier.weight
    running_mean = model.backbone.stage1[1].running_mean
    teacher.update()  # the first update copies the model
    with torch.no_grad():
        weight.add_(1.0)
        running_mean.add_(1.0)
    teacher.update()
    torch.testing.assert_close(teacher.ema.module.classifier.weight, weight - 0.9)
    # BatchNorm statistics are averaged too
    torch.testing.assert_close(teacher.ema.module.backbone.stage1[1].running_mean,
                               running_mean - 0.9)
    assert set(teacher.extras()) == {"ema_teacher"} and Teacher(model, "same", 0.9).extras() == {}
    with pytest.raises(ValueError, match="settings 'csd.teacher' must be same or ema"):
        Teacher(model, "copy", 0.9)


def test_paste_pairs_missing_round0_mask_names_the_directory(voc, tmp_path):
    root, ids, labels = voc
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no round-0 pseudo mask"):
        PastePairs(root, ids, labels, tmp_path, train_transform("long", [40, 56], 32))


def test_cells_inside_needs_the_whole_cell():
    mask = torch.zeros(1, 8, 8)
    mask[0, :4, :6] = 1  # covers cell (0, 0) fully, cell (0, 1) half
    inside = cells_inside(mask, (2, 2))
    assert inside.tolist() == [[[True, False], [False, False]]]


def test_cam_scores_in_peak_units_are_max_normalised_with_the_peak_held():
    maps = torch.randn(2, 20, 4, 4, generator=torch.Generator().manual_seed(0))
    scores = cam_scores(maps, "peak")
    torch.testing.assert_close(scores.amax(dim=(2, 3)), (maps.amax(dim=(2, 3)) > 0).float(),
                               check_dtype=False)
    assert torch.all(scores[maps <= 0] == 0)
    torch.testing.assert_close(cam_scores(maps, "logit"), F.relu(maps))
    # invariant to the maps' scale; the peak gets no gradient from another cell's loss
    torch.testing.assert_close(cam_scores(maps * 3, "peak"), scores)
    maps = torch.zeros(1, 20, 4, 4)
    maps[0, 3, 0, 0], maps[0, 3, 1, 1] = 20.0, 2.0
    maps.requires_grad_(True)
    cam_scores(maps, "peak")[0, 3, 1, 1].backward()
    assert maps.grad[0, 3, 1, 1] == pytest.approx(1 / 20) and maps.grad[0, 3, 0, 0] == 0


def loss_batch(c=3, size=32):
    fg = torch.zeros(2, size, size)
    fg[:, :16, :16] = 1
    bg = 1 - fg
    return {"source_class": torch.tensor([c, c]), "target_label":
            torch.tensor(np.array([onehot(c), onehot(c)]), dtype=torch.float32),
            "source_fg": fg, "target_bg": bg}


def teacher_cam(c=3):
    cam = torch.zeros(2, 20, 4, 4)
    cam[:, c, :2, :2] = 5.0  # the object, where the source mask is
    cam[:, c, 2:, 2:] = 0.1
    return cam


@pytest.mark.parametrize("purity", [False, True])
def test_fg_zero_when_student_equals_teacher_both_rise_when_it_errs(purity):
    settings = dict(POOLED, purity=purity)
    batch, cam = loss_batch(), teacher_cam()
    loss_fg, loss_bg = csd_losses(cam, cam.clone(), cam.clone(), batch, settings)
    assert loss_fg.item() == pytest.approx(0, abs=1e-6)
    # The student ignores the pasted object (fg), or fires on the pasted background (bg).
    weak = cam.clone()
    weak[:, 3, :2, :2] = 0.0
    strong_bg = cam.clone()
    strong_bg[:, 3, 2:, 2:] = 5.0
    assert csd_losses(cam, weak, cam, batch, settings)[0].item() > 0.1
    assert csd_losses(cam, cam, strong_bg, batch, settings)[1].item() > loss_bg.item() + 0.1


def hand_made_maps():
    """(teacher, student_fg, student_bg, batch): one image, 2 x 3 cells of 2 x 2 pixels,
    source class 3, target labels {3, 7}; the pasted object covers the top row, the pasted
    background the bottom row but cell (1, 2)."""
    fg = torch.zeros(1, 4, 6)
    fg[0, :2] = 1
    batch = {"source_class": torch.tensor([3]), "source_fg": fg,
             "target_bg": torch.ones(1, 4, 6),
             "target_label": torch.tensor(np.array([onehot(3, 7)]), dtype=torch.float32)}
    batch["target_bg"][0, 2:, 4:] = 0  # cell (1, 2): the target's object, not its background
    teacher = torch.zeros(1, 20, 2, 3)
    teacher[0, 3] = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.15, 0.0]])
    student_fg = torch.zeros(1, 20, 2, 3)
    student_fg[0, 5, 0, 0] = 4.0  # at cell (0, 0) class 5 leads, class 3 is at the minimum
    student_bg = torch.zeros(1, 20, 2, 3)
    student_bg[0, 7, 1, 0] = 1.0
    student_bg[0, 3, 1, 0] = -1.0  # ReLU'd to 0
    student_bg[0, 5, 1, 0] = 3.0
    student_bg[0, 7, 0, 2] = 5.0  # inside the pasted object: not L_bg's cell (but the peak)
    return teacher, student_fg, student_bg, batch


@pytest.mark.parametrize("units", ["logit", "peak"])
def test_reference_losses_equal_hand_computed_values(units):
    """The author's forms on hand_made_maps. No purity: uniform weights."""
    e = math.exp
    settings = dict(CSD, cam_units=units, purity=False)
    # class 5 at the pasted background's cell (1, 0): not a target label, counted all the
    # same (all 20 classes)
    teacher, student_fg, student_bg, batch = hand_made_maps()
    loss_fg, loss_bg = csd_losses(teacher, student_fg, student_bg, batch, settings)

    # L_fg: the teacher's c_s map over the cells, min-max (+1e-4): 2/2.0001, 1/2.0001 (not
    # above 0.5), 0: only cell (0, 0). There, channel min-max: the teacher's class 3 is the
    # only non-zero class (a = 1 - 1e-4 / peak), the student's class 5 (b); only the c_s
    # term of the KL, p log(p / q), teacher at fg_temperature 1. The author's weights are
    # spread over all three cells inside the pasted object before the gate shuts two of
    # them: the lone confident cell weighs 1/3.
    peak_t, peak_s = (2.0, 4.0) if units == "logit" else (1.0, 1.0)
    a, b = peak_t / (peak_t + 1e-4), peak_s / (peak_s + 1e-4)
    p = e(a) / (e(a) + 19)
    q = 1 / (e(b) + 19)
    expected_fg = p * math.log(p / q) / 3
    assert loss_fg.item() == pytest.approx(expected_fg, rel=1e-5)
    # L_bg at cells (1, 0) and (1, 1), no gate: [20 classes, 0.1]; the teacher unscaled, the
    # student x 10; only the background term of the KL; the mean of the two cells.
    if units == "logit":
        t_11 = 0.15  # the teacher's class 3 at (1, 1)
        s_10 = [1.0, 3.0]  # the student's classes 7 and 5 at (1, 0)
    else:  # each map over its own peak: the teacher's class 3 over 2; class 7 over 5, 5 over 3
        t_11 = 0.15 / 2
        s_10 = [1.0 / 5, 1.0]
    p_10 = e(0.1) / (e(0.1) + 20)
    p_11 = e(0.1) / (e(0.1) + 19 + e(t_11))
    q_10 = e(1) / (e(1) + 18 + sum(e(10 * s) for s in s_10))
    q_11 = e(1) / (e(1) + 20)
    expected_bg = (p_10 * math.log(p_10 / q_10) + p_11 * math.log(p_11 / q_11)) / 2
    assert loss_bg.item() == pytest.approx(expected_bg, rel=1e-4)
    # a batch of two: the author divides by the batch size, an image without cells counts 0
    empty = {k: torch.cat([v, v]) for k, v in batch.items()}
    empty["source_fg"][1] = 0
    empty["target_bg"][1] = 0
    two = csd_losses(*(torch.cat([m, m]) for m in (teacher, student_fg, student_bg)),
                     empty, settings)
    assert [t.item() for t in two] == pytest.approx([expected_fg / 2, expected_bg / 2],
                                                    rel=1e-4)


def test_reference_fg_is_one_sided():
    """L_fg keeps only c_s's term of the KL, so a student giving c_s more of the cell than
    the teacher does gets a loss below 0 (pushed further the same way), not pulled back to
    the teacher's share."""
    batch, teacher = loss_batch(), teacher_cam()
    teacher[:, 5, :2, :2] = 2.5  # a second class at the object's cells: half of c_s there
    teacher[:, 5, 3, 3] = 5.0  # (and its peak elsewhere, so also half in peak units)
    student = teacher.clone()
    student[:, 5, :2, :2] = 0.0  # the student gives c_s more of the cell
    settings = dict(CSD, purity=False)
    assert csd_losses(teacher, teacher, teacher, batch, settings)[0].item() == pytest.approx(
        0, abs=1e-6)
    # by hand: channel min-max 1 for c_s and 1/2 for class 5 (teacher), c_s alone (student)
    a = 1 / (1 + 1e-4)
    p = math.exp(a) / (math.exp(a) + math.exp(a / 2) + 18)
    q = math.exp(a) / (math.exp(a) + 19)
    loss = csd_losses(teacher, student, teacher, batch, settings)[0].item()
    assert loss == pytest.approx(p * math.log(p / q), rel=1e-4) and loss < -1e-3
    # a class firing on the pasted background raises L_bg, also one not labelled in T
    loud = teacher.clone()
    loud[:, 5, 2:, 2:] = 5.0
    assert (csd_losses(teacher, teacher, loud, batch, settings)[1]
            > csd_losses(teacher, teacher, teacher, batch, settings)[1] + 0.01)


def test_purity_weights_change_the_losses():
    batch, cam = loss_batch(), teacher_cam()
    cam[:, 3, 0, 0] = 0.8  # ambiguous cells weigh more
    cam[:, 3, 3, 3] = -1.0
    student = torch.randn(cam.shape, generator=torch.Generator().manual_seed(0))
    # L_bg's cells must differ in purity and loss for the weights to matter
    student[:, 3, 2:, 2:] = torch.tensor([[0.0, 4.0], [1.0, 0.0]])
    settings = dict(POOLED, confidence=0.0)
    plain = csd_losses(cam, student, student, batch, settings)
    weighted = csd_losses(cam, student, student, batch, dict(settings, purity=True))
    assert all(abs(a.item() - b.item()) > 1e-4 for a, b in zip(plain, weighted))


class SpyCAMNet(CAMNet):
    """CAMNet that keeps what its feature pass saw and the features it gave."""

    def features(self, x):
        self.seen = x.detach().clone()
        self.feats = super().features(x)
        return self.feats


def pair_batch():
    """Two hand-made pairs at 32 x 32 (2 x 2 cells): distinct random images, rectangular
    masks, source classes 3 and 7 into targets holding {14} and {3, 14}."""
    g = torch.Generator().manual_seed(0)
    fg = torch.zeros(2, 32, 32)
    fg[0, :16, :16] = 1  # exactly cell (0, 0)
    fg[1, 8:24, 8:24] = 1
    target_bg = torch.zeros(2, 32, 32)
    target_bg[0, :, 16:] = 1
    target_bg[1, :16] = 1  # overlaps the pasted object in rows 8-15
    return {"image": torch.randn(2, 3, 32, 32, generator=g),
            "label": torch.tensor(np.array([onehot(1), onehot(2)]), dtype=torch.float32),
            "source_image": torch.randn(2, 3, 32, 32, generator=g),
            "target_image": torch.randn(2, 3, 32, 32, generator=g),
            "source_fg": fg, "target_bg": target_bg, "source_class": torch.tensor([3, 7]),
            "target_label": torch.tensor(np.array([onehot(14), onehot(3, 14)]),
                                         dtype=torch.float32),
            # what PastePairs says of its draws (here made up)
            "source_cooccurs": torch.tensor([1.0, 0.0]),
            "source_in_target": torch.tensor([0.0, 0.0])}


def test_csd_step_composes_x_fg_x_bg_and_their_labels():
    batch = pair_batch()
    model = SpyCAMNet(BACKBONE)
    seen_targets = []

    def criterion(logits, targets):
        seen_targets.append(targets)
        return F.multilabel_soft_margin_loss(logits, targets)

    csd_step(model, Teacher(model, "same", 0.9), batch, 0, POOLED, criterion, "cpu")
    x, x_fg, x_bg, source = model.seen.split(2)
    s, t = batch["source_image"], batch["target_image"]
    torch.testing.assert_close(x, batch["image"])
    torch.testing.assert_close(source, s)  # the in-batch teacher's input
    expected_fg = t.clone()
    expected_fg[0, :, :16, :16] = s[0, :, :16, :16]
    expected_fg[1, :, 8:24, 8:24] = s[1, :, 8:24, 8:24]
    torch.testing.assert_close(x_fg, expected_fg)
    expected_bg = t.clone()
    expected_bg[0, :, :, 16:] = s[0, :, :, 16:]  # the target's background, no object there
    expected_bg[1, :, :16] = s[1, :, :16]
    expected_bg[1, :, 8:16, 8:24] = t[1, :, 8:16, 8:24]  # the pasted object's pixels: T's
    torch.testing.assert_close(x_bg, expected_bg)
    # labels: x's, X_fg's (the target's and the pasted class), X_bg's (the target's)
    expected_labels = torch.tensor(np.array([onehot(1), onehot(2), onehot(3, 14),
                                             onehot(3, 7, 14), onehot(14), onehot(3, 14)]),
                                   dtype=torch.float32)
    torch.testing.assert_close(seen_targets[0], expected_labels)
    # the decoupling losses read the raw (pre-ReLU) maps of X_fg, X_bg and S
    _, parts = csd_step(model, Teacher(model, "same", 0.9), batch, 0,
                        dict(POOLED, confidence=-1.0), criterion, "cpu")
    maps = model.cam_from_features(model.feats.detach(), relu=False)
    assert (maps < 0).any()
    expected = csd_losses(maps[6:], maps[2:4], maps[4:6], batch, dict(POOLED, confidence=-1.0))
    torch.testing.assert_close(torch.stack([parts["fg"], parts["bg"]]), torch.stack(expected))
    # the author's forms on the same maps
    _, parts = csd_step(model, Teacher(model, "same", 0.9), batch, 0, CSD, criterion, "cpu")
    maps = model.cam_from_features(model.feats.detach(), relu=False)
    expected = csd_losses(maps[6:], maps[2:4], maps[4:6], batch, CSD)
    torch.testing.assert_close(torch.stack([parts["fg"], parts["bg"]]), torch.stack(expected))
    # what the draws were, and which images had cells to learn from: pair 0's object covers
    # cell (0, 0) exactly and its pasted background column 1; pair 1's object, in the middle,
    # leaves no whole cell to either
    assert parts["draw_cooccurs"].item() == 0.5 and parts["draw_in_target"].item() == 0.0
    fg, bg = csd_cells(maps[6:], maps[2:4], maps[4:6], batch, CSD)
    assert parts["fg_images"].item() == fg.valid.flatten(1).any(1).float().mean().item()
    assert fg.valid[1].sum() == 0 and parts["fg_images"].item() <= 0.5
    assert parts["bg_images"].item() == 0.5 and bg.valid[0].sum() == 2
    # pasted_cls false: the classification loss of x only
    seen_targets.clear()
    csd_step(model, Teacher(model, "same", 0.9), batch, 0, dict(POOLED, pasted_cls=False),
             criterion, "cpu")
    torch.testing.assert_close(seen_targets[0], expected_labels[:2])
    # no teacher pass in the batch during the warm-up, nor with the EMA teacher
    csd_step(model, Teacher(model, "same", 0.9), batch, 0, dict(POOLED, warmup_epochs=1),
             criterion, "cpu")
    assert len(model.seen) == 6
    model.feats = None  # the EMA copy deep-copies the model
    csd_step(model, Teacher(model, "ema", 0.9), batch, 0, POOLED, criterion, "cpu")
    assert len(model.seen) == 6


@pytest.mark.parametrize("settings", [CSD, POOLED], ids=["author", "pooled"])
def test_total_loss_gradient_on_the_features_follows_the_lambdas(settings):
    """d(total)/d(features) = d(cls) + lambda_fg d(L_fg) + lambda_bg d(L_bg): the
    classification gradient alone at lambda 0, growing linearly with each lambda; the
    history's gradient norms are those of d(cls), d(L_fg), d(L_bg)."""
    batch = pair_batch()
    torch.manual_seed(0)
    model = SpyCAMNet(BACKBONE)
    criterion = nn.MultiLabelSoftMarginLoss()
    # every cell inside a region counts
    base = dict(settings, confidence=-1.0)

    def gradient(part=None, **lambdas):
        loss, parts = csd_step(model, Teacher(model, "same", 0.9), batch, 0,
                               dict(base, **lambdas), criterion, "cpu")
        return torch.autograd.grad(parts[part] if part else loss, model.feats)[0]

    cls, fg, bg = gradient("cls"), gradient("fg"), gradient("bg")
    assert fg.abs().sum() > 0 and bg.abs().sum() > 0
    scale = cls.abs().max()
    close = dict(atol=1e-5 * scale, rtol=1e-4)
    torch.testing.assert_close(gradient(lambda_fg=0.0, lambda_bg=0.0), cls, **close)
    torch.testing.assert_close(gradient(lambda_fg=1.0, lambda_bg=0.0), cls + fg, **close)
    torch.testing.assert_close(gradient(lambda_fg=2.0, lambda_bg=0.0), cls + 2 * fg, **close)
    torch.testing.assert_close(gradient(lambda_fg=0.0, lambda_bg=3.0), cls + 3 * bg, **close)
    torch.testing.assert_close(gradient(lambda_fg=1.0, lambda_bg=1.0), cls + fg + bg,
                               **close)
    _, parts = csd_step(model, Teacher(model, "same", 0.9), batch, 0, base, criterion, "cpu")
    for name, grad in (("cls", cls), ("fg", fg), ("bg", bg)):
        assert parts[f"grad_{name}"].item() == pytest.approx(grad.norm().item(), rel=1e-4)


def test_fg_loss_only_on_confident_cells_bg_loss_ungated():
    settings = dict(POOLED, confidence=1.0)  # min-max normalised maps never exceed 1
    batch, cam = loss_batch(), teacher_cam()
    weak = torch.zeros_like(cam)
    loss_fg, loss_bg = csd_losses(cam, weak, weak, batch, settings)
    assert loss_fg.item() == 0 and loss_bg.item() != 0  # the author gates L_fg only


def test_purity_is_the_entropy_of_the_pasted_images_own_cam():
    """Three cells of one image labelled {3}: class 3 scores 2, 1, 0 (logit units). Spatial
    min-max gives 2/2.0001, 1/2.0001, 0; with the background channel 0.4 each cell is a
    two-way distribution; entropy / log 21."""
    maps = torch.zeros(1, 20, 1, 3)
    maps[0, 3, 0] = torch.tensor([2.0, 1.0, 0.0])
    maps[0, 5, 0] = torch.tensor([9.0, 0.0, 0.0])  # not a label of the image: left out
    labels = torch.tensor(np.array([onehot(3)]), dtype=torch.float32)

    def entropy(a):  # of (a, 0.4) / (a + 0.4), over log 21
        x = a / (a + 0.4)
        return -(x * math.log(x) + (1 - x) * math.log(1 - x)) / math.log(21) if a else 0.0

    expected = [entropy(2 / 2.0001), entropy(1 / 2.0001), entropy(0.0)]
    got = purity(maps, labels, dict(CSD, cam_units="logit"))
    np.testing.assert_allclose(got[0, 0].tolist(), expected, atol=1e-5)
    # the cell where class 3 is as strong as the background is the most ambiguous
    assert got[0, 0, 1] > got[0, 0, 0] > got[0, 0, 2]
    # peak units: the same (spatial min-max does not see a map's scale); no gradient
    maps.requires_grad_(True)
    peak = purity(maps, labels, CSD)
    torch.testing.assert_close(peak, got, atol=1e-3, rtol=0)
    assert not peak.requires_grad


def test_purity_weights_sum_to_one_per_image_and_favour_ambiguous_cells():
    valid = torch.zeros(3, 2, 2, dtype=torch.bool)
    valid[0, 0] = True  # two cells
    valid[1] = True  # four cells
    # image 2: no valid cell
    cell_purity = torch.tensor([[[0.9, 0.1], [1.0, 1.0]], [[0.0, 0.5], [1.0, 0.2]],
                                [[0.3, 0.3], [0.3, 0.3]]])
    weights = image_weights(valid, cell_purity, 1.0)
    assert weights.flatten(1).sum(dim=1).tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert torch.all(weights[~valid] == 0)
    e = math.exp
    assert weights[0, 0].tolist() == pytest.approx([e(0.9) / (e(0.9) + e(0.1)),
                                                    e(0.1) / (e(0.9) + e(0.1))])
    assert weights[1, 1, 0] == weights[1].max()  # the most ambiguous cell weighs most
    # without purity: uniform over each image's valid cells
    uniform = image_weights(valid)
    assert uniform[0, 0].tolist() == [0.5, 0.5] and torch.all(uniform[1] == 0.25)
    # scale 0: purity changes nothing
    torch.testing.assert_close(image_weights(valid, cell_purity, 0.0), uniform)


def test_reductions_by_hand():
    """Image 0: valid cells with losses 1 and 3 (uniform weights); image 1: one valid cell
    with loss 5. Per image (the author's): (2 + 5) / 2; pooled over valid cells: 9 / 3."""
    loss = torch.tensor([[[1.0, 3.0], [100.0, 100.0]], [[5.0, 100.0], [100.0, 100.0]]])
    valid = torch.tensor([[[True, True], [False, False]], [[True, False], [False, False]]])
    cells = Cells(loss, valid, image_weights(valid))
    assert reduce_cells(cells, "image").item() == pytest.approx(3.5)
    assert reduce_cells(cells, "pooled").item() == pytest.approx(3.0)
    # purity weights in the pooled form: each image's weights scaled to mean 1
    weights = torch.tensor([[[0.25, 0.75], [0.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]]])
    assert reduce_cells(Cells(loss, valid, weights), "pooled").item() == pytest.approx(
        (2 * (0.25 * 1 + 0.75 * 3) + 5) / 3)
    assert reduce_cells(Cells(loss, valid, weights), "image").item() == pytest.approx(
        (0.25 * 1 + 0.75 * 3 + 5) / 2)
    with pytest.raises(ValueError, match="csd.reduction"):
        reduce_cells(cells, "mean")


PARTS = {"cls", "fg", "bg", "grad_cls", "grad_fg", "grad_bg", "fg_images", "bg_images",
         "draw_cooccurs", "draw_in_target"}
WARMUP_PARTS = {"cls", "draw_cooccurs", "draw_in_target"}


@pytest.mark.parametrize("settings", [CSD, POOLED], ids=["author", "pooled"])
@pytest.mark.parametrize("kind", ["same", "ema"])
def test_gradients_reach_student_not_teacher(voc, kind, settings):
    root, ids, labels = voc
    torch.manual_seed(0)
    data = PastePairs(root, ids, labels, root / "SegmentationClass",
                      train_transform("long", [40, 56], 32))
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    model = CAMNet(BACKBONE)
    teacher = Teacher(model, kind, 0.9)
    # every cell inside a region counts
    settings = dict(settings, confidence=0.0)
    loss, parts = csd_step(model, teacher, batch, 0, settings, nn.MultiLabelSoftMarginLoss(),
                           "cpu")
    assert set(parts) == PARTS
    assert parts["fg"].requires_grad and parts["bg"].requires_grad
    parts["fg"].add(parts["bg"]).backward()
    assert model.classifier.weight.grad.abs().sum() > 0
    assert model.backbone.stage4[-1].conv1.weight.grad.abs().sum() > 0
    assert model.training  # the teacher pass left the student in train mode
    source = batch["source_image"]
    assert not teacher.maps(model.features(source)).requires_grad
    if kind == "ema":
        assert all(p.grad is None and not p.requires_grad for p in teacher.ema.parameters())
    # classifier_grad false: the decoupling losses reach the features, not the classifier
    model.zero_grad()
    _, parts = csd_step(model, teacher, batch, 0, dict(settings, classifier_grad=False),
                        nn.MultiLabelSoftMarginLoss(), "cpu")
    parts["fg"].add(parts["bg"]).backward()
    assert model.classifier.weight.grad is None or not model.classifier.weight.grad.any()
    assert model.backbone.stage4[-1].conv1.weight.grad.abs().sum() > 0
    # warm-up epochs: classification only
    _, parts = csd_step(model, teacher, batch, 0, dict(settings, warmup_epochs=1),
                        nn.MultiLabelSoftMarginLoss(), "cpu")
    assert set(parts) == WARMUP_PARTS


def self_pasted_batch(voc):
    """Four of PastePairs' samples with each source as its own target (T = S, labels c_s,
    background where S's object is not)."""
    root, ids, labels = voc
    torch.manual_seed(0)
    data = PastePairs(root, ids, labels, root / "SegmentationClass",
                      train_transform("long", [64, 80], 64))
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    batch["target_image"] = batch["source_image"]
    batch["target_label"] = F.one_hot(batch["source_class"], 20).float()
    batch["target_bg"] = 1 - batch["source_fg"]
    return batch


def test_in_batch_teacher_equals_student_on_the_same_image(voc):
    """Pasting S onto itself: the student's maps of X_fg and X_bg are the teacher's maps of S,
    also with trainable BatchNorm (batch statistics), so both losses are exactly 0 (L_bg
    with the student's scores unscaled, as the teacher's)."""
    batch = self_pasted_batch(voc)
    model = CAMNet(dict(BACKBONE, freeze_bn=False))
    settings = dict(POOLED, confidence=0.0, bg_scale=1.0)
    _, parts = csd_step(model, Teacher(model, "same", 0.9), batch, 0, settings,
                        nn.MultiLabelSoftMarginLoss(), "cpu")
    assert parts["fg"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["bg"].item() == pytest.approx(0.0, abs=1e-6)
    # an eval-mode copy of the same weights (running statistics) is not the student
    _, parts = csd_step(model, Teacher(model, "ema", 0.9), batch, 0, settings,
                        nn.MultiLabelSoftMarginLoss(), "cpu")
    assert parts["fg"].item() + parts["bg"].item() > 1e-4


def test_teacher_pass_of_its_own_without_batch_statistics(voc, monkeypatch):
    """Frozen BatchNorm (the published setting): the teacher's pass on S runs apart, in eval
    mode without gradient, so S stays out of the student's backward; its losses are those
    of the in-batch pass (which trainable BatchNorm needs) up to float rounding."""
    root, ids, labels = voc
    torch.manual_seed(0)
    data = PastePairs(root, ids, labels, root / "SegmentationClass",
                      train_transform("long", [64, 80], 64))
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    passes = []

    class PassCAMNet(CAMNet):
        def features(self, x):
            passes.append((len(x), torch.is_grad_enabled(), self.training))
            return super().features(x)

    assert Teacher(CAMNet(BACKBONE).train(), "same", 0.9).in_batch  # trainable BatchNorm
    torch.manual_seed(1)
    model = PassCAMNet(dict(BACKBONE, freeze_bn=True, strides=[2, 2, 1, 1])).train()  # as fit()
    teacher = Teacher(model, "same", 0.9)
    assert not teacher.in_batch
    settings = dict(CSD, confidence=0.0)
    criterion = nn.MultiLabelSoftMarginLoss()
    loss, parts = csd_step(model, teacher, batch, 0, settings, criterion, "cpu")
    assert passes == [(12, True, True), (4, False, False)] and model.training
    assert parts["fg_images"] > 0 and parts["bg_images"] > 0
    passes.clear()
    monkeypatch.setattr(Teacher, "in_batch", property(lambda self: True))
    loss_in_batch, parts_in_batch = csd_step(model, teacher, batch, 0, settings, criterion,
                                             "cpu")
    assert passes == [(16, True, True)]
    for key in ("fg", "bg"):
        assert parts[key].item() == pytest.approx(parts_in_batch[key].item(), rel=1e-4,
                                                  abs=1e-6)
    assert loss.item() == pytest.approx(loss_in_batch.item(), rel=1e-5)


def test_source_pasted_on_itself_in_the_reference_forms(voc):
    """The author's forms on S pasted onto itself: L_fg is 0 (teacher and student give c_s
    the same term); L_bg is not 0 by design: the student's scores are scaled by 10 and the
    teacher's are not, so each background cell gives p_bg log(p_bg / q_bg) of the same
    scores (written out here; without purity, a mean per image over the batch)."""
    batch = self_pasted_batch(voc)
    model = SpyCAMNet(dict(BACKBONE, freeze_bn=False))
    settings = dict(CSD, purity=False, confidence=0.0)
    _, parts = csd_step(model, Teacher(model, "same", 0.9), batch, 0, settings,
                        nn.MultiLabelSoftMarginLoss(), "cpu")
    assert parts["fg"].item() == pytest.approx(0.0, abs=1e-6)
    all_maps = model.cam_from_features(model.feats.detach(), relu=False)
    maps = all_maps[12:]  # S's, the teacher's
    torch.testing.assert_close(all_maps[8:12], maps)  # X_bg = S
    scores = F.relu(maps) / F.relu(maps).amax(dim=(2, 3), keepdim=True).clamp_min(0.1)
    p = math.exp(0.1) / (math.exp(0.1) + scores.exp().sum(dim=1))
    q = math.exp(1.0) / (math.exp(1.0) + (10 * scores).exp().sum(dim=1))
    cell = p * (p / q).log()
    valid = cells_inside(1 - batch["source_fg"], maps.shape[2:])
    assert valid.any()
    expected = sum(float(cell[i][valid[i]].mean().detach()) for i in range(4) if valid[i].any()) / 4
    assert parts["bg"].item() == pytest.approx(expected, rel=1e-4)
    assert abs(expected) > 1e-3


def test_train_cam_csd_writes_model_and_loss_parts_and_resumes(voc, tmp_path, monkeypatch):
    root, ids, _ = voc
    settings = dict(TRAIN, csd=dict(CSD, teacher="ema"))
    args = (root, ids, root / "labels.csv", root / "SegmentationClass")
    history = train_cam_csd(*args, tmp_path / "a.pt", tmp_path / "a.json", settings)
    assert [h["epoch"] for h in history] == [1, 2]
    # every part of csd_step per epoch: the terms, their gradient norms on the features, the
    # shares of images with cells to learn from and of draws that co-occur with T
    # (and the per-epoch maxima of the gradient norms beside their means)
    maxima = {f"{part}_max" for part in PARTS if part.startswith("grad_")}
    assert all(set(h) == PARTS | RECORD | maxima for h in history)
    assert all(h[f"{part}_max"] >= h[part] for h in history for part in
               ("grad_cls", "grad_fg", "grad_bg", "grad_norm"))
    assert all(np.isfinite(h[k]) for h in history for k in PARTS)
    assert all(0 <= h[k] <= 1 for h in history for k in
               ("fg_images", "bg_images", "draw_cooccurs", "draw_in_target"))
    assert all(h["grad_cls"] > 0 and h["bg_images"] > 0 for h in history)
    assert json.loads((tmp_path / "a.json").read_text()) == history
    uninterrupted = torch.load(tmp_path / "a.pt", weights_only=True)["model"]
    CAMNet(BACKBONE).load_state_dict(uninterrupted)  # inference: an ordinary CAMNet
    # Killed after epoch 1, restarted: the EMA teacher comes back from the checkpoint too,
    # so the run ends with the same weights.
    kill_after_first_epoch(monkeypatch)
    with pytest.raises(Killed):
        train_cam_csd(*args, tmp_path / "b.pt", tmp_path / "b.json", settings)
    monkeypatch.undo()
    torch.manual_seed(999)
    assert train_cam_csd(*args, tmp_path / "b.pt", tmp_path / "b.json", settings) == history
    resumed = torch.load(tmp_path / "b.pt", weights_only=True)["model"]
    for key in resumed:
        assert torch.equal(resumed[key], uninterrupted[key]), key


@pytest.mark.parametrize("method", ["csd", "cda"])
def test_csd_and_cda_train_in_bf16_with_csds_losses_in_float32(voc, tmp_path, monkeypatch,
                                                               method):
    """The network's convolutions compute in bfloat16; CSD's class maps, min-max and losses
    in float32 with autocast off (a channel range near 1e-4 means nothing in bfloat16)."""
    root, ids, _ = voc
    args = (root, ids, root / "labels.csv", root / "SegmentationClass", tmp_path / "m.pt",
            tmp_path / "h.json")
    cells = []
    real = csd_cells

    def spy(teacher_maps, *args):
        fg, bg = real(teacher_maps, *args)
        cells.append((teacher_maps.dtype, args[0].dtype, args[1].dtype, fg.loss.dtype,
                      bg.loss.dtype, torch.is_autocast_enabled("cpu")))
        return fg, bg

    monkeypatch.setattr("csd.methods.csd.train.csd_cells", spy)
    train = train_cam_csd if method == "csd" else train_cam_cda
    settings = dict(TRAIN, epochs=1, **({"csd": CSD} if method == "csd" else {"cda": CDA}))
    with layer_dtypes() as seen:
        history = train(*args, settings, precision="bf16")
    assert seen == {torch.bfloat16} and history[0]["precision"] == "bf16"
    assert np.isfinite(history[0]["loss"])
    if method == "csd":
        assert cells and set(cells) == {(torch.float32,) * 5 + (False,)}


@pytest.mark.parametrize("range_floor, bounded", [(0.1, True), (0.0, False)])
def test_a_nearly_silent_confident_cell_gives_a_bounded_gradient(range_floor, bounded):
    """A confident cell inside the pasted object where the student's only positive class
    scores 1e-4 of its peak: the author's channel min-max divides by ~2e-4 there (floor 0,
    the demo's blow-up), CSD's floor by 0.1: the min-max's slope is then at most
    1 / 0.1, and so is the gradient on the map (L_fg's slope in the normalised score, the
    cell weight and 1 / batch size are each at most 1; the peak is 1)."""
    batch, teacher = loss_batch(), teacher_cam()
    student = torch.zeros(2, 20, 4, 4)
    student[:, 3, 3, 3] = 1.0  # the peak, outside the object
    student[:, 3, 0, 0] = 1e-4  # a confident cell of the object: nearly silent
    student[:, 3, :2, :2] -= torch.tensor([[0.0, 1.0], [1.0, 1.0]])  # the rest ReLU'd to 0
    student[:, [c for c in range(20) if c != 3]] = -1.0
    student.requires_grad_(True)
    settings = dict(CSD, range_floor=range_floor)
    fg, _ = csd_losses(teacher, student, teacher, batch, settings)
    fg.backward()
    grad = student.grad[:, :, 0, 0].abs().max().item()
    assert (grad <= 1 / 0.1) if bounded else (grad > 1 / 0.1), grad
    # where the range is at least the floor the floor changes nothing
    student = teacher.clone().requires_grad_(True)
    fg_floor, _ = csd_losses(teacher, student, teacher, batch, CSD)
    fg_author, _ = csd_losses(teacher, student, teacher, batch, dict(CSD, range_floor=0.0))
    assert fg_floor.item() == pytest.approx(fg_author.item(), rel=1e-6)
