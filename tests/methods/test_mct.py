"""MCTformer-V2 (csd.methods.mct.mctformer, csd.methods.mct.train_mct): tokens, attention, position embeddings, DeiT
weights, CSD with the transformer classifier, training and make_cam on a tiny VOC tree."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from csd.cam.cam_net import CAMNet
from csd.cam.make_cam import make_cams
from csd.data.transforms import train_transform
from csd.data.voc import load_labels
from csd.methods.csd.losses import csd_losses
from csd.methods.csd.sampling import PastePairs
from csd.methods.csd.train import Teacher, csd_step, train_cam_csd
from csd.methods.mct.mctformer import MCTformer, build_mct
from csd.methods.mct.train_mct import MCT_CLASSIFIER, load_mct, train_mct
from csd.runtime.io import save_torch
from csd.runtime.training import adamw_groups
from tests.conftest import layer_dtypes, make_voc
from tests.methods.test_csd import CSD as RESNET_CSD
from tests.methods.test_csd import POOLED as RESNET_POOLED

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"embed_dim": 48, "depth": 3, "num_heads": 3, "patch_size": 16, "drop_path": 0.1,
        "pretrained": None}
TRAIN = {"seed": 4, "model": TINY, "batch_size": 4, "epochs": 2, "lr": 5e-4, "lr_batch": 8,
         "min_lr": 1e-5, "warmup_lr": 1e-6, "warmup_epochs": 1, "weight_decay": 0.05,
         "crop": 32, "scale": [0.5, 1.0], "auto_augment": "rand-m9-mstd0.5-inc1",
         "re_prob": 0.25, "resize_long": [40, 56], "flip": True, "cam_layers": 2,
         "num_workers": 0}
# config.yaml's csd with csd_mct laid over it (the author's forms on the class maps as they
# are), every cell inside a region counting, the head trained too
CSD = dict(RESNET_CSD, cam_units="logit", range_floor=0.0, confidence=0.0)
POOLED = dict(RESNET_POOLED, cam_units="logit", range_floor=0.0, confidence=0.0)


def tiny_model(img_size=32, **kwargs):
    torch.manual_seed(0)
    return MCTformer(embed_dim=48, depth=3, num_heads=3, img_size=img_size, **kwargs)


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    ids, _ = make_voc(root, n=12, seed=5)
    return root, ids, load_labels(root / "labels.csv")


@pytest.fixture(scope="module")
def trained(voc, tmp_path_factory):
    root, ids, _ = voc
    out = tmp_path_factory.mktemp("mct")
    history = train_mct(root, ids, root / "labels.csv", out / "mct.pt", out / "h.json", TRAIN)
    return out, history


def test_token_layout_logits_and_cam_shapes():
    model = tiny_model(img_size=64).eval()
    with torch.no_grad():
        tokens = model.features(torch.randn(2, 3, 64, 48))
        assert tokens.cls.shape == (2, 20, 48)
        assert tokens.patches.shape == (2, 48, 4, 3)
        assert tokens.attention.shape == (3, 2, 20 + 12, 20 + 12)  # blocks, batch, tokens
        assert model(torch.randn(2, 3, 64, 48)).shape == (2, 2, 20)  # class tokens, patch CAM
        cam = model.cam(torch.randn(2, 3, 64, 48))
        assert cam.shape == (2, 20, 4, 3) and cam.min() >= 0
        # sizes not divisible by the patch are padded: the grid rounds up, as CAMNet's
        assert model.cam(torch.randn(1, 3, 50, 37)).shape == (1, 20, 4, 3)
        assert CAMNet({"depth": 18, "pretrained": None, "strides": [2, 2, 2, 1],
                       "frozen_stages": 0, "freeze_bn": False}).eval().cam(
            torch.randn(1, 3, 50, 37)).shape == (1, 20, 4, 3)
        # the batch slices like a tensor (CSD splits one pass into x, X_fg, X_bg)
        part = tokens[1:]
        assert part.cls.shape[0] == part.patches.shape[0] == part.attention.shape[1] == 1


def test_attention_rows_sum_to_one_and_fused_attention_is_off():
    model = tiny_model().train()  # drop path on: the attention must still be collected
    tokens = model.features(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(tokens.attention.sum(dim=-1),
                               torch.ones(tokens.attention.shape[:-1]))
    assert tokens.attention.min() >= 0 and tokens.attention.requires_grad
    assert not any(block.attn.fused_attn for block in model.blocks)
    assert all(block.attn.attn_drop.weights is None for block in model.blocks)


def test_class_maps_are_class_attention_times_patch_cam_and_refined_by_affinity():
    model = tiny_model(cam_layers=2).eval()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        tokens = model.features(x)
        raw = model.cam_from_features(tokens, relu=False)
        attention = tokens.attention[-2:].sum(0)[:, :20, 20:].reshape(1, 20, 2, 3)
        torch.testing.assert_close(raw, attention * model.head(tokens.patches))
        torch.testing.assert_close(model.cam_from_features(tokens), F.relu(raw))
        affinity = tokens.attention.sum(0)[0, 20:, 20:]  # [6, 6], all blocks
        expected = (affinity @ F.relu(raw)[0].flatten(1).T).T.reshape(1, 20, 2, 3)
        torch.testing.assert_close(model.cam(x), expected)
        model.refine = False
        torch.testing.assert_close(model.cam(x), F.relu(raw))


def test_csd_maps_are_the_refined_cam_whose_loss_reaches_the_attention_only():
    # the author's (PSD_WSSS): CSD's maps are the affinity-refined fused CAM with the patch
    # CAM detached, whatever `refine` says for the seeds
    model = tiny_model(cam_layers=2)
    model.refine = False
    tokens = model.features(torch.randn(2, 3, 32, 48))
    maps = model.decoupling_maps(tokens, classifier_grad=True)
    with torch.no_grad():
        fused = model.cam_from_features(tokens)
        affinity = tokens.attention.sum(0)[:, 20:, 20:]
        torch.testing.assert_close(maps, model.refined(tokens, fused))
        torch.testing.assert_close(
            maps[1], (affinity[1] @ fused[1].flatten(1).T).T.reshape(20, 2, 3))
    maps.pow(2).sum().backward()
    assert model.head.weight.grad is None and model.head.bias.grad is None
    assert model.blocks[-1].attn.qkv.weight.grad.abs().sum() > 0


def test_patch_position_embedding_is_resampled_for_other_sizes():
    model = tiny_model(img_size=32).eval()  # 2x2 grid of position embeddings
    with torch.no_grad():
        model.pos_embed.copy_(torch.arange(4.0).view(1, 4, 1).expand(1, 4, 48))
        for p in model.patch_embed.parameters():
            p.zero_()  # patch embedding 0: what the tokens get is the position embedding
        grid = model.patch_embed(torch.zeros(1, 3, 64, 64))
        embedded = model._pos_embed(grid)
    assert embedded.shape == (1, 16, 48)
    table = model.pos_embed.reshape(1, 2, 2, 48).permute(0, 3, 1, 2)
    expected = F.interpolate(table, size=(4, 4), mode="bicubic", align_corners=False,
                             antialias=True).flatten(2).transpose(1, 2)
    torch.testing.assert_close(embedded, expected)
    assert not torch.allclose(embedded[0, 0], embedded[0, -1])


@pytest.mark.parametrize("distilled", [False, True])
def test_pretrained_deit_weights_fill_every_class_token(tmp_path, distilled):
    torch.manual_seed(1)
    deit = VisionTransformer(img_size=32, patch_size=16, embed_dim=48, depth=3, num_heads=3,
                             num_classes=1000, qkv_bias=True)  # one cls token, 2x2 grid
    state = deit.state_dict()
    if distilled:  # DeiT's distilled checkpoints have a second prefix token
        state["dist_token"] = torch.randn(1, 1, 48)
        state["pos_embed"] = torch.cat([state["pos_embed"][:, :1], torch.randn(1, 1, 48),
                                        state["pos_embed"][:, 1:]], dim=1)
    save_torch(tmp_path / "deit.pth", {"model": state})
    model = build_mct(dict(TINY, pretrained=str(tmp_path / "deit.pth")), img_size=64)
    torch.testing.assert_close(model.class_tokens, state["cls_token"].expand(1, 20, 48))
    torch.testing.assert_close(model.class_pos, state["pos_embed"][:, :1].expand(1, 20, 48))
    assert model.pos_embed.shape == (1, 16, 48)  # 2x2 table resampled to the 4x4 grid
    torch.testing.assert_close(model.blocks[2].mlp.fc2.weight, state["blocks.2.mlp.fc2.weight"])
    torch.testing.assert_close(model.patch_embed.proj.weight, state["patch_embed.proj.weight"])
    assert model.head.weight.shape == (20, 48, 3, 3)  # the CAM head is new
    model(torch.randn(1, 3, 64, 64))
    # a checkpoint of another shape is refused, naming the file
    save_torch(tmp_path / "wide.pth", {"model": VisionTransformer(
        img_size=32, patch_size=16, embed_dim=96, depth=3, num_heads=3).state_dict()})
    with pytest.raises((ValueError, RuntimeError), match="wide.pth|size mismatch"):
        build_mct(dict(TINY, pretrained=str(tmp_path / "wide.pth")), img_size=64)


def test_weight_decay_skips_biases_norms_tokens_and_position_embeddings():
    model = tiny_model()
    no_decay, decay = adamw_groups(model, 0.05)
    assert no_decay["weight_decay"] == 0 and decay["weight_decay"] == 0.05
    skipped = {id(p) for p in no_decay["params"]}
    for p in (model.class_tokens, model.class_pos, model.pos_embed, model.head.bias,
              model.blocks[0].norm1.weight):
        assert id(p) in skipped
    assert id(model.head.weight) in {id(p) for p in decay["params"]}
    assert len(skipped) + len(decay["params"]) == len(list(model.parameters()))


def test_csd_losses_with_the_transformer_classifier(voc):
    root, ids, labels = voc
    torch.manual_seed(0)
    data = PastePairs(root, ids, labels, root / "SegmentationClass",
                      train_transform("long", [40, 56], 32))
    batch = torch.utils.data.default_collate([data[i] for i in range(4)])
    model = tiny_model(cam_layers=2)
    teacher = Teacher(model, "same", 0.9)
    # student == teacher: both losses vanish (the in-batch teacher reads the student's
    # features of S; here from an eval-mode pass, to compare with the EMA copy below)
    source = batch["source_image"]
    model.eval()
    maps = teacher.maps(model.features(source))
    model.train()
    assert maps.shape == (4, 20, 2, 2)
    same = dict(batch, target_label=F.one_hot(batch["source_class"], 20).float())
    # L_fg vanishes (L_bg scales the student's scores only, so it is not 0), with either
    # reduction
    for settings in (CSD, POOLED):
        fg, _ = csd_losses(maps, maps.clone(), maps.clone(), same, settings)
        assert fg.item() == pytest.approx(0, abs=1e-6)
    # one CSD step: the decoupling losses reach the blocks' attention and not the patch
    # CAM's head (detached, the author's), and their gradient norms on the tokens and
    # attention maps are logged (no pasted object of these tiny squares covers a whole
    # 16 x 16 cell: L_fg has no cell here)
    loss, parts = csd_step(model, teacher, batch, 0, CSD, model.classification_loss, "cpu")
    assert {"cls", "fg", "bg", "grad_cls", "grad_fg", "grad_bg"} <= set(parts)
    assert torch.isfinite(loss) and parts["fg_images"] == 0 and parts["bg"].item() != 0
    assert parts["grad_fg"] == 0 and parts["grad_bg"] > 0 and parts["grad_cls"] > 0
    parts["fg"].add(parts["bg"]).backward()
    assert model.blocks[-1].attn.qkv.weight.grad.abs().sum() > 0
    assert model.head.weight.grad is None
    assert model.training and not teacher.maps(model.features(source)).requires_grad
    # an EMA teacher is a deep copy with its own attention capture
    ema = Teacher(model, "ema", 0.9)
    torch.testing.assert_close(ema.maps(ema.features(batch["source_image"])), maps,
                               atol=1e-5, rtol=1e-4)


def test_train_mct_one_run_history_model_file_and_determinism(voc, trained, tmp_path):
    root, ids, _ = voc
    out, history = trained
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h[k]) and h[k] > 0 for h in history for k in ("loss", "cls", "patch"))
    assert all(h["loss"] == pytest.approx(h["cls"] + h["patch"]) for h in history)
    assert json.loads((out / "h.json").read_text()) == history
    # warm-up (1 epoch = 3 steps from 1e-6) then cosine towards min_lr; peak lr 5e-4 * 4 / 8
    assert history[0]["lr"] == pytest.approx(1e-6 + 2 * (2.5e-4 - 1e-6) / 3)
    assert 1e-5 < history[1]["lr"] < 2.5e-4
    model = load_mct(out / "mct.pt", cam_layers=1, refine=False)
    assert not model.training and model.cam_layers == 1 and not model.refine
    # the same seed gives the same weights (CPU)
    train_mct(root, ids, root / "labels.csv", tmp_path / "b.pt", tmp_path / "b.json", TRAIN)
    a = torch.load(out / "mct.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = dict(TRAIN, seed=5)
    train_mct(root, ids, root / "labels.csv", tmp_path / "c.pt", tmp_path / "c.json", other)
    c = torch.load(tmp_path / "c.pt", weights_only=True)["model"]
    assert not torch.equal(a["head.weight"], c["head.weight"])


def test_train_cam_csd_trains_the_transformer(voc, tmp_path):
    root, ids, _ = voc
    settings = dict(TRAIN, epochs=1, csd=CSD)
    history = train_cam_csd(root, ids, root / "labels.csv", root / "SegmentationClass",
                            tmp_path / "m.pt", tmp_path / "h.json", settings,
                            classifier=MCT_CLASSIFIER)
    assert len(history) == 1 and all(np.isfinite(history[0][k]) for k in (
        "cls", "fg", "bg", "grad_cls", "grad_fg", "grad_bg", "fg_images", "bg_images",
        "draw_cooccurs"))
    load_mct(tmp_path / "m.pt")  # inference: an ordinary MCTformer


def test_make_cams_writes_the_resnet_format(voc, trained, tmp_path):
    root, ids, labels = voc
    out, _ = trained
    resnet = CAMNet({"depth": 18, "pretrained": None, "strides": [2, 2, 2, 1],
                     "frozen_stages": 0, "freeze_bn": False})
    save_torch(tmp_path / "cam.pt", {"model": resnet.state_dict(), "settings": {
        "backbone": {"depth": 18, "pretrained": None, "strides": [2, 2, 2, 1],
                     "frozen_stages": 0, "freeze_bn": False}}})
    settings = {"scales": [1.0, 0.5], "flip": True}
    make_cams(root, ids[:3], root / "labels.csv", tmp_path / "cam.pt", tmp_path / "r", settings)
    written = make_cams(root, ids[:3], root / "labels.csv", out / "mct.pt", tmp_path / "m",
                        settings, load=lambda path, device: load_mct(path, device, 2, True))
    assert written == 3
    for image_id in ids[:3]:
        r = np.load(tmp_path / "r" / f"{image_id}.npz")
        m = np.load(tmp_path / "m" / f"{image_id}.npz")
        assert sorted(m.files) == sorted(r.files) == ["cam", "high_res", "keys"]
        for key in r.files:
            assert m[key].shape == r[key].shape and m[key].dtype == r[key].dtype, key
        np.testing.assert_array_equal(m["keys"], np.flatnonzero(labels[image_id]))
        h, w = r["high_res"].shape[1:]
        assert m["cam"].shape[1:] == (math.ceil(h / 4), math.ceil(w / 4))
        for maps in (m["cam"], m["high_res"]):
            # make_cam's normalisation, max + 1e-5: a barely trained MCT map peaks at ~1e-2
            assert maps.min() >= 0
            np.testing.assert_allclose(maps.max(axis=(1, 2)), 1.0, atol=1e-2)


def test_augmentation_is_timms_randaugment_and_survives_the_top_magnitude():
    from timm.data.auto_augment import RandAugment
    from timm.data.random_erasing import RandomErasing

    from csd.methods.mct.train_mct import mct_transform

    transform = mct_transform(dict(TRAIN, auto_augment="rand-m10-n3-inc1"))
    steps = {type(step) for step in transform.transform.transforms}
    assert RandAugment in steps and RandomErasing in steps
    posterize = [op for step in transform.transform.transforms
                 if isinstance(step, RandAugment) for op in step.ops
                 if op.name == "PosterizeIncreasing"][0]
    assert posterize.level_fn(10, {}) == (1,)  # timm gives 0 bits, which Pillow refuses
    posterize.prob = 1.0
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    out = transform({"image": image, "label": np.ones(20)})
    assert out["image"].shape == (3, 32, 32) and out["image"].dtype == torch.float32


def test_train_mct_resume_equals_uninterrupted(voc, trained, tmp_path, monkeypatch):
    from tests.cam.test_cam import Killed, kill_after_first_epoch

    root, ids, _ = voc
    out, history = trained
    kill_after_first_epoch(monkeypatch)
    with pytest.raises(Killed):
        train_mct(root, ids, root / "labels.csv", tmp_path / "m.pt", tmp_path / "h.json", TRAIN)
    monkeypatch.undo()
    torch.manual_seed(999)  # the checkpoint restores every RNG (RandAugment draws from all)
    np.random.seed(999)
    assert train_mct(root, ids, root / "labels.csv", tmp_path / "m.pt", tmp_path / "h.json",
                     TRAIN) == history
    a = torch.load(out / "mct.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "m.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_train_mct_and_its_cams_compute_in_bf16(voc, trained, tmp_path):
    root, ids, _ = voc
    with layer_dtypes() as seen:
        history = train_mct(root, ids, root / "labels.csv", tmp_path / "mct.pt",
                            tmp_path / "h.json", dict(TRAIN, epochs=1), precision="bf16")
    assert seen == {torch.bfloat16} and history[0]["precision"] == "bf16"
    with layer_dtypes() as seen:
        make_cams(root, ids[:1], root / "labels.csv", tmp_path / "mct.pt", tmp_path / "m",
                  {"scales": [1.0], "flip": True}, precision="bf16",
                  load=lambda path, device: load_mct(path, device, 2, True))
    assert seen == {torch.bfloat16}
    cam = np.load(tmp_path / "m" / f"{ids[0]}.npz")["high_res"]
    assert cam.dtype == np.float32 and np.isfinite(cam).all()
