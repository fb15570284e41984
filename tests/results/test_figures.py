"""Report figures on hand-made inputs: files are written, bad inputs are named."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from csd.results.figures import colorize, per_class_bars, training_curves
from csd.results.metrics import seed_labels


def test_per_class_bars_writes_a_png_with_a_panel_per_kind(tmp_path):
    rows = [{"method": m, "seed": s, "kind": k, "class": c, "iou": 10.0 * s + i}
            for m in ("irn", "irn_csd") for s in (0, 1) for k in ("seed", "val")
            for i, c in enumerate(("background", "boat"))]
    pd.DataFrame(rows).to_csv(tmp_path / "per_class.csv", index=False)
    per_class_bars(tmp_path / "per_class.csv", tmp_path / "bars.png")
    one = Image.open(tmp_path / "bars.png").size
    pd.DataFrame([r for r in rows if r["kind"] == "seed"]).to_csv(tmp_path / "seed.csv",
                                                                  index=False)
    per_class_bars(tmp_path / "seed.csv", tmp_path / "seed.png")
    assert one[1] > 1.5 * Image.open(tmp_path / "seed.png").size[1]  # two panels vs one
    assert not list(tmp_path.glob(".*.part"))


def test_per_class_bars_without_known_kinds_names_the_file(tmp_path):
    pd.DataFrame([{"method": "irn", "seed": 0, "kind": "other", "class": "boat", "iou": 1}]
                 ).to_csv(tmp_path / "pc.csv", index=False)
    with pytest.raises(ValueError, match="pc.csv"):
        per_class_bars(tmp_path / "pc.csv", tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_training_curves_plot_every_stage(tmp_path):
    histories = []
    for stage in ("train_cam", "train_seg"):
        path = tmp_path / f"{stage}.json"
        path.write_text(json.dumps([{"epoch": e, "loss": 1 / e, "lr": 0.1 / e}
                                    for e in (1, 2, 3)]))
        histories.append({"method": "irn", "seed": 0, "stage": stage, "path": path})
    assert training_curves(histories, tmp_path / "curves.png") == {"train_cam": set(),
                                                                    "train_seg": set()}
    assert Image.open(tmp_path / "curves.png").size[0] > 0
    with pytest.raises(ValueError, match="no training history"):
        training_curves([], tmp_path / "none.png")


def test_training_curves_draw_csd_terms_where_the_history_has_them(tmp_path):
    csd = {"cls": 0.5, "fg": 0.1, "bg": -0.01, "grad_cls": 1.0, "grad_fg": 0.2,
           "grad_bg": 3.0, "fg_images": 0.8, "bg_images": 1.0, "draw_cooccurs": 0.6,
           "draw_in_target": 0.1}
    runs = {"irn": [{"epoch": e, "loss": 1 / e, "lr": 0.1} for e in (1, 2)],
            "irn_csd": [{"epoch": e, "loss": 1 / e, "lr": 0.1, **csd} for e in (1, 2)]}
    histories = []
    for method, epochs in runs.items():
        path = tmp_path / f"{method}.json"
        path.write_text(json.dumps(epochs))
        histories.append({"method": method, "seed": 0, "stage": "train_cam", "path": path})
    # a column missing from one epoch (a warm-up epoch has no fg/bg) is not drawn
    del runs["irn_csd"][0]["fg"]
    (tmp_path / "irn_csd.json").write_text(json.dumps(runs["irn_csd"]))
    drawn = training_curves(histories, tmp_path / "curves.png")
    assert drawn == {"train_cam": set(csd) - {"fg"}}


def test_seed_labels_and_colours():
    cams = np.zeros((2, 2, 3), np.float32)
    cams[0, 0, 0] = 0.9
    cams[1, 1, 1] = 0.1   # below the background threshold
    cams[1, 1, 2] = 0.5
    labels = seed_labels(cams, [4, 14], 0.15)
    assert labels.tolist() == [[5, 0, 0], [0, 0, 15]]
    assert seed_labels(np.zeros((0, 2, 3), np.float32), [], 0.15).tolist() == [[0] * 3] * 2
    rgb = colorize(np.array([[0, 255]]))
    assert rgb.shape == (1, 2, 3) and rgb[0, 0].tolist() == [0, 0, 0]
