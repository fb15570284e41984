"""The results table from hand-made metrics files: columns, means, stds, order, paper rows."""

import json

import pandas as pd
import pytest

from csd.results.table import LEADING_COLUMNS, write_table
from tests.conftest import REPO


def metrics(path, miou, iou=None):
    path.write_text(json.dumps({"miou": miou, "iou": iou or {"background": miou}}))
    return path


def bench(path, cpu):
    path.write_text("s\th:m:s\tmax_rss\tcpu_time\n"
                    f"{cpu + 1}\t0:00:01\t100\t{cpu}\n")
    return path


@pytest.fixture
def runs(tmp_path):
    values = {("irn", 0): (40, 50, 10), ("irn", 1): (42, 54, 12),
              ("irn_csd", 0): (45, 56, 33), ("irn_csd", 1): (47, 60, 33)}
    out = []
    for (method, seed), (seed_miou, mask_miou, cpu) in values.items():
        stem = tmp_path / f"{method}{seed}"
        out.append({"method": method, "seed": seed, "metrics": {
            "seed": metrics(stem.with_suffix(".seed.json"), seed_miou,
                            {"background": 80.0, "boat": seed_miou / 2}),
            "mask": metrics(stem.with_suffix(".mask.json"), mask_miou)},
            "train_tsv": bench(stem.with_suffix(".tsv"), cpu)})
    return out


def outputs(tmp_path):
    return {key: tmp_path / name for key, name in (
        ("table", "table.csv"), ("long", "long.csv"), ("per_class", "per_class.csv"),
        ("markdown", "table.md"), ("html", "table.html"))}


def test_table_means_stds_order_and_paper_rows(runs, tmp_path):
    out = outputs(tmp_path)
    write_table(runs, REPO / "config/literature.csv", out)
    table = pd.read_csv(out["table"])
    assert list(table.columns[:len(LEADING_COLUMNS)]) == LEADING_COLUMNS
    ours = table[table["source"] == "reproduced"].set_index("method")
    assert list(ours.index) == ["irn", "irn_csd"]  # config order, before the paper rows
    assert ours.loc["irn", "n_seeds"] == 2
    assert ours.loc["irn", "seed_miou"] == pytest.approx(41.0)
    assert ours.loc["irn", "seed_miou_std"] == pytest.approx(1.41, abs=0.01)  # sample std
    assert ours.loc["irn_csd", "mask_miou"] == pytest.approx(58.0)
    assert ours.loc["irn_csd", "mask_miou_std"] == pytest.approx(2.83, abs=0.01)
    assert ours.loc["irn_csd", "train_cpu_ratio"] == pytest.approx(3.0)
    assert ours["val_miou"].isna().all()  # no DeepLab stage in these runs
    paper = table[table["source"] == "paper"].set_index("method")
    assert paper.loc["IRN (CVPR'19)", "seed_miou"] == 48.3
    assert paper.loc["IRN w/ CSD (BMVC'23)", "mask_miou"] == 68.2
    assert table.index[table["source"] == "paper"].min() > table.index[
        table["source"] == "reproduced"].max()
    long = pd.read_csv(out["long"])
    assert len(long) == 4 and set(long.columns) >= {"method", "seed", "seed_miou", "mask_miou"}
    per_class = pd.read_csv(out["per_class"])
    boat = per_class[(per_class["class"] == "boat") & (per_class["method"] == "irn_csd")]
    assert sorted(boat["iou"]) == [22.5, 23.5]
    assert "| irn_csd" in out["markdown"].read_text()
    assert "<table" in out["html"].read_text()


def test_single_seed_has_no_std_and_bad_metrics_name_the_file(runs, tmp_path):
    out = outputs(tmp_path)
    table = write_table(runs[:1], None, out)
    assert table.loc[0, "n_seeds"] == 1 and pd.isna(table.loc[0, "seed_miou_std"])
    runs[0]["metrics"]["seed"].write_text("{}")
    with pytest.raises(ValueError, match=str(runs[0]["metrics"]["seed"])):
        write_table(runs, None, out)


def test_precision_column_from_the_histories(runs, tmp_path):
    """Each run's precision comes from its training histories: one value where the stages
    agree, stage:value pairs where they differ; runs without DeepLab leave its columns
    empty (the masks table)."""
    for run, used in zip(runs, (("bf16", "bf16"), ("bf16", "bf16"), ("bf16", "fp32"),
                                ("bf16", "fp32"))):
        run["histories"] = {}
        for stage, value in zip(("train_cam", "train_irn"), used):
            path = tmp_path / f"{run['method']}{run['seed']}.{stage}.json"
            path.write_text(json.dumps([{"epoch": 1, "precision": "fp32"},
                                        {"epoch": 2, "precision": value}]))
            run["histories"][stage] = path
    out = outputs(tmp_path)
    table = write_table(runs, None, out).set_index("method")
    assert table.loc["irn", "precision"] == "bf16"
    assert table.loc["irn_csd", "precision"] == "train_cam:bf16 train_irn:fp32"
    assert table[["val_miou", "val_crf_miou"]].isna().all().all()
    long = pd.read_csv(out["long"])
    assert list(long["precision"])[:2] == ["bf16", "bf16"]
