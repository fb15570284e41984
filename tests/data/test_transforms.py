"""Training augmentations: RandomResize resizes as IRN's PIL calls do."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from csd.data.transforms import RandomResize, pil_nearest_index

pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_image(h, w, seed):
    """A photo-like uint8 image: a random image blurred by nearest upsampling + bicubic."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 5, w // 5, 3), dtype=np.uint8)
    return np.array(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))


@pytest.mark.parametrize("scale", [0.49, 0.5, 1.5, 2.0])
def test_random_resize_matches_pil_bicubic_images_and_nearest_labels(scale):
    # 75 x 100 at x1.5 -> 112 x 150 and at x0.49 -> 37 x 49 hit PIL's exact ties
    image = smooth_image(75, 100, seed=0)
    label = np.random.default_rng(1).choice([0, 3, 7, 255], size=(75, 100)).astype(np.uint8)
    out = RandomResize(scale, scale, "scale")(
        {"image": tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)),
         "mask": tv_tensors.Mask(torch.from_numpy(label))})
    size = (round(75 * scale), round(100 * scale))  # IRN: np.round of each side
    assert isinstance(out["mask"], tv_tensors.Mask) and out["mask"].shape == size
    pil_label = np.asarray(Image.fromarray(label).resize(size[::-1], Image.NEAREST))
    np.testing.assert_array_equal(out["mask"].numpy(), pil_label)
    assert set(np.unique(out["mask"].numpy())) <= {0, 3, 7, 255}
    pil_image = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BICUBIC))
    diff = np.abs(out["image"].permute(1, 2, 0).numpy().astype(int) - pil_image)
    assert diff.max() <= 2 and (diff > 0).mean() < 0.02  # fixed-point rounding only


def test_pil_nearest_index_reads_the_centre_pixel():
    assert pil_nearest_index(8, 2).tolist() == [2, 6]  # centres 2, 6 (as x0.25 labels)
    assert pil_nearest_index(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    # an exact tie (centre of output pixel 4 is 3.0): PIL's running sum reads pixel 2
    column = np.arange(100, dtype=np.uint8)[:, None]
    pil = np.asarray(Image.fromarray(column).resize((1, 150), Image.NEAREST))[:, 0]
    assert pil_nearest_index(100, 150).tolist() == pil.tolist()
    assert pil[4] == 2
