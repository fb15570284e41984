import numpy as np
import pytest

from csd.seg.crf import crf_inference, crf_inference_label

# IRN's cam_to_ir_label values (method.md).
SETTINGS = {"gt_prob": 0.7, "gaussian_sxy": 3, "gaussian_compat": 3, "bilateral_sxy": 50,
            "bilateral_srgb": 5, "bilateral_compat": 10, "iterations": 10}


def two_colour_image(h=40, w=60):
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2] = (200, 30, 30)
    image[:, w // 2:] = (20, 40, 190)
    labels = np.zeros((h, w), np.int64)
    labels[:, w // 2:] = 1
    return image, labels


def test_label_crf_keeps_image_consistent_labels():
    image, labels = two_colour_image()
    image.setflags(write=False)  # decoded images are read-only; the CRF must cope
    out = crf_inference_label(image, labels, 3, SETTINGS)
    assert out.shape == labels.shape
    np.testing.assert_array_equal(out, labels)


def test_label_crf_fixes_a_stray_label_against_the_colours():
    image, labels = two_colour_image()
    noisy = labels.copy()
    noisy[18:22, 5:9] = 1  # a small wrong patch in the red half
    out = crf_inference_label(image, noisy, 2, SETTINGS)
    np.testing.assert_array_equal(out, labels)


def test_softmax_crf_returns_probabilities():
    rng = np.random.default_rng(0)
    image, _ = two_colour_image()
    logits = rng.normal(size=(4,) + image.shape[:2]).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)
    out = crf_inference(image, probs, SETTINGS)
    assert out.shape == probs.shape and out.dtype == np.float32
    assert np.all(out >= 0) and np.all(out <= 1 + 1e-6)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-4)
    assert not np.allclose(out, probs, atol=1e-3)  # it did refine something


def test_softmax_crf_follows_confident_colour_consistent_probs():
    image, labels = two_colour_image()
    probs = np.where(labels[None] == np.arange(2)[:, None, None], 0.8, 0.2).astype(np.float32)
    out = crf_inference(image, probs, SETTINGS)
    np.testing.assert_array_equal(out.argmax(axis=0), labels)


def test_shape_mismatch_is_rejected():
    image, labels = two_colour_image()
    with pytest.raises(ValueError, match="does not match"):
        crf_inference_label(image, labels[:-1], 2, SETTINGS)
    with pytest.raises(ValueError, match="does not match"):
        crf_inference(image, np.full((2, 5, 5), 0.5, np.float32), SETTINGS)
