"""Mixed precision's speed, stage by stage: fp32 against `auto` in one run on one machine.

    python benchmarks/precision.py [--config config/demo.yaml [OVERLAY ...]] [--method irn]
        [--seed 0] [--workdir .] [--threads 1] [--images 48] [--stages ...]

Reruns each stage's own function on the first N train_aug images of a finished run (its
data, models, CAMs, IR labels and masks: `snakemake --configfile CONFIG` makes them), with
the settings that run used (read from its model files and the config; CSD's and CDA's from
the METHOD_csd / METHOD_cda runs of the same seed, on this run's masks), once at fp32 and
once at `auto` (what csd.runtime.precision resolves it to on this machine is printed), after one
untimed pass of each on a few images (oneDNN builds its kernels on first use). Training
stages run one epoch over the N images. Prints seconds per image and the ratio per stage.
Outputs go to a temporary directory; the run is left as it was. The accuracy side is a
whole run at each precision (docs/results.md gives the commands).
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

from csd.data.voc import read_ids
from csd.runtime.config import check_config_files
from csd.runtime.config import voc_root as csd_voc_root
from csd.runtime.precision import cpu_flags, resolve


def saved_settings(path):
    return torch.load(path, map_location="cpu", weights_only=False)["settings"]


def stages(config, run, data, voc_root, splits, args_method):
    """{stage: call(ids, out_dir, precision)}: each stage's function on `ids`."""
    labels = splits / "labels.csv"
    cam = saved_settings(run / "cam_model.pt")
    irn = saved_settings(run / "irn_model.pt")

    def epoch_of(settings, ids):
        return dict(settings, epochs=1, batch_size=min(settings["batch_size"], len(ids)))

    def pretrain(ids, out, precision):
        from csd.toyvoc.pretrain import pretrain_backbone
        settings = dict(saved_settings(data / "pretrain" / "pretrain_model.pt"),
                        n_images=len(ids), epochs=1)
        settings["batch_size"] = min(settings["batch_size"], len(ids))
        pretrain_backbone(out / "b.pth", out / "m.pt", out / "h.json", settings,
                          precision=precision)

    def train_cam(ids, out, precision):
        from csd.cam.train_cam import train_cam
        train_cam(voc_root, ids, labels, out / "m.pt", out / "h.json", epoch_of(cam, ids),
                  precision=precision)

    def regime(name, train):
        """CSD or CDA with the settings of the method's own run (round 1 on this run's
        masks); CSD's warm-up off, so that its one epoch has its losses."""
        settings = saved_settings(run.parent.parent / f"{args_method}_{name}" / run.name
                                  / "cam_model.pt")
        if name == "csd":
            settings["csd"] = dict(settings["csd"], warmup_epochs=0)

        def call(ids, out, precision):
            train(voc_root, ids, labels, run / "mask" / "all", out / "m.pt", out / "h.json",
                  epoch_of(settings, ids), precision=precision)
        return call

    def make_cam(ids, out, precision):
        from csd.cam.make_cam import make_cams
        make_cams(voc_root, ids, labels, run / "cam_model.pt", out, config["make_cam"],
                  precision=precision)

    def train_irn(ids, out, precision):
        from csd.irn.train_irn import train_irn
        train_irn(voc_root, ids, run / "ir_label" / "all", out / "m.pt", out / "h.json",
                  epoch_of(irn, ids), precision=precision)

    def make_sem_seg(ids, out, precision):
        from csd.irn.make_sem_seg import make_sem_seg
        make_sem_seg(voc_root, ids, [run / "cam" / "all"], run / "irn_model.pt", out,
                     {**config["make_sem_seg"], "crop": irn["crop"]}, precision=precision)

    from csd.methods.cda import train_cam_cda
    from csd.methods.csd.train import train_cam_csd
    found = {"pretrain_backbone": pretrain, "train_cam": train_cam,
             "train_cam_csd": regime("csd", train_cam_csd),
             "train_cam_cda": regime("cda", train_cam_cda), "make_cam": make_cam,
             "train_irn": train_irn, "make_sem_seg": make_sem_seg}
    if (run / "seg_model.pt").exists():
        seg = saved_settings(run / "seg_model.pt")
        seg.pop("epochs")  # derived from `iterations` by train_deeplab itself

        def train_seg(ids, out, precision):
            from csd.seg.train_seg import train_deeplab
            batch = min(seg["batch_size"], len(ids))
            train_deeplab(voc_root, ids, run / "mask" / "all", out / "m.pt", out / "h.json",
                          dict(seg, batch_size=batch, iterations=len(ids) // batch),
                          precision=precision)

        def infer_seg(ids, out, precision):
            from csd.seg.infer_seg import infer_deeplab
            infer_deeplab(voc_root, ids, run / "seg_model.pt", out / "raw", out / "crf",
                          config["infer_seg"], precision=precision)

        found.update(train_seg=train_seg, infer_seg=infer_seg)
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=["config/demo.yaml"])
    parser.add_argument("--method", default="irn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=".")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (job_threads)")
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--warmup-images", type=int, default=8)
    parser.add_argument("--stages", nargs="+", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = check_config_files([REPO / path for path in args.config])
    work = Path(args.workdir)
    data = work / config["data_dir"]
    splits = data / "splits" / config["dataset"]["name"]
    run = work / config["results_dir"] / args.method / f"seed{args.seed}"
    ids = read_ids(splits / "train_aug.txt")
    calls = stages(config, run, data, work / csd_voc_root(config), splits, args.method)
    auto = resolve("auto", "cpu")
    native = sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "avx2", "avx512f"})
    print(f"auto = {auto} on this CPU ({' '.join(native)}); torch {torch.__version__}, "
          f"{args.threads} thread(s); {args.images} images per stage ({run})")
    print(f"{'stage':<18} {'fp32 s/img':>11} {'auto s/img':>11} {'ratio':>7}")
    for name, call in calls.items():
        if args.stages and name not in args.stages:
            continue
        seconds = {}
        with tempfile.TemporaryDirectory() as tmp:
            for precision in ("fp32", "auto"):  # untimed: kernels built, caches warm
                call(ids[:args.warmup_images], Path(tmp) / f"warm_{precision}", precision)
            for precision in ("fp32", "auto"):
                start = time.perf_counter()
                call(ids[:args.images], Path(tmp) / precision, precision)
                seconds[precision] = (time.perf_counter() - start) / args.images
        print(f"{name:<18} {seconds['fp32']:>11.4f} {seconds['auto']:>11.4f} "
              f"{seconds['fp32'] / seconds['auto']:>6.2f}x", flush=True)


if __name__ == "__main__":
    main()
