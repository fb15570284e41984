"""Dense CRF (Krähenbühl & Koltun) refinement, shared by IRN's IR labels and DeepLab inference."""

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels, unary_from_softmax


def _mean_field(image, unary, settings):
    """Run settings["iterations"] mean-field steps; unary is [n, H*W] float32 energies."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"CRF image must be HxWx3, got shape {image.shape}")
    h, w = image.shape[:2]
    n = unary.shape[0]
    if unary.shape[1] != h * w:
        raise ValueError(f"CRF unary covers {unary.shape[1]} pixels, image has {h}x{w}")
    crf = dcrf.DenseCRF2D(w, h, n)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=settings["gaussian_sxy"], compat=settings["gaussian_compat"])
    # pydensecrf wants a writeable C-contiguous uint8 buffer (decoded images are read-only).
    rgb = np.array(image, dtype=np.uint8, order="C", copy=True)
    crf.addPairwiseBilateral(sxy=settings["bilateral_sxy"], srgb=settings["bilateral_srgb"],
                             rgbim=rgb, compat=settings["bilateral_compat"])
    q = crf.inference(settings["iterations"])
    return np.array(q, dtype=np.float32).reshape(n, h, w)


def crf_inference(image, probs, settings):
    """Refine class probabilities probs [n, H, W] (summing to 1 over n) -> refined [n, H, W]."""
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[1:] != np.asarray(image).shape[:2]:
        raise ValueError(f"probs shape {probs.shape} does not match image {np.shape(image)}")
    return _mean_field(image, unary_from_softmax(probs), settings)


def crf_inference_label(image, labels, n_labels, settings):
    """Refine a hard label map (values 0..n_labels-1, each trusted with settings["gt_prob"])."""
    labels = np.asarray(labels)
    if labels.shape != np.asarray(image).shape[:2]:
        raise ValueError(f"label map shape {labels.shape} does not match image {np.shape(image)}")
    if n_labels < 2:
        # Nothing to choose between (and unary_from_labels would divide by zero).
        return np.zeros(labels.shape, dtype=np.int64)
    unary = unary_from_labels(labels.astype(np.int64), n_labels, gt_prob=settings["gt_prob"],
                              zero_unsure=False)
    return np.argmax(_mean_field(image, unary, settings), axis=0)
