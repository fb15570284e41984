#!/usr/bin/env bash
# The one-line bugs of issue #14 (and a zeroed-target / all-background-mask bug per trainer):
# each is applied to a temporary copy of the repository, the targeted fast tests run there,
# and the mutant is "killed" when they fail. The working tree is never touched.
#
#   benchmarks/listed_mutants.sh [NAME_FILTER]      (from the repository root)
#
# Prints one line per mutant (killed / SURVIVED, with the tests' time) and exits non-zero
# when any survives. PYTHON defaults to .venv/bin/python (or /work/main/.venv's).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=/work/main/.venv/bin/python
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
FILTER=${1:-}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
survived=0

# mutant NAME FILE OLD NEW TESTS...: replace the one occurrence of OLD by NEW in FILE
mutant() {
    local name=$1 file=$2 old=$3 new=$4
    shift 4
    [[ -z "$FILTER" || "$name" == *"$FILTER"* ]] || return 0
    rm -rf "$WORK/repo"
    mkdir "$WORK/repo"
    cp -r "$REPO/csd" "$REPO/tests" "$REPO/pyproject.toml" "$WORK/repo/"
    OLD=$old NEW=$new "$PYTHON" - "$WORK/repo/$file" <<'EOF'
import os, sys
path = sys.argv[1]
text = open(path).read()
old, new = os.environ["OLD"], os.environ["NEW"]
if text.count(old) != 1:
    sys.exit(f"{path}: expected exactly one {old!r}, found {text.count(old)}")
open(path, "w").write(text.replace(old, new))
EOF
    local start=$SECONDS
    if (cd "$WORK/repo" && PYTHONPATH=$WORK/repo "$PYTHON" -m pytest -x -q -p no:cacheprovider \
            "$@" >"$WORK/log" 2>&1); then
        echo "SURVIVED  $name ($((SECONDS - start)) s: $*)"
        survived=$((survived + 1))
    else
        echo "killed    $name ($((SECONDS - start)) s; $(grep -m1 -oE '^FAILED [^ ]+' "$WORK/log" \
            || tail -n1 "$WORK/log"))"
    fi
}

CSD_UNIT=(tests/methods/test_csd.py -k "hand_computed or composes or lambdas")
mutant csd_losses_times_0 csd/methods/csd/train.py \
    'loss = loss_cls + settings["lambda_fg"] * terms["fg"] + settings["lambda_bg"] * terms["bg"]' \
    'loss = loss_cls + 0 * (settings["lambda_fg"] * terms["fg"] + settings["lambda_bg"] * terms["bg"])' \
    "${CSD_UNIT[@]}"
mutant csd_x_bg_pasted_with_fg_mask csd/methods/csd/train.py \
    'x_bg = paste(source, target, (1 - fg_mask) * batch["target_bg"])' \
    'x_bg = paste(source, target, fg_mask)' "${CSD_UNIT[@]}"
mutant csd_pasted_class_dropped_from_y_fg csd/methods/csd/sampling.py \
    'return torch.maximum(y_t, F.one_hot(batch["source_class"], NUM_CLASSES).to(y_t.dtype)), y_t' \
    'return y_t, y_t' "${CSD_UNIT[@]}"
mutant csd_lambdas_ignored csd/methods/csd/train.py \
    'loss = loss_cls + settings["lambda_fg"] * terms["fg"] + settings["lambda_bg"] * terms["bg"]' \
    'loss = loss_cls + terms["fg"] + terms["bg"]' "${CSD_UNIT[@]}"
mutant csd_reference_fg_term_reversed csd/methods/csd/losses.py \
    'loss_fg = kl_term(log_p[rows, source_class], log_q[rows, source_class])' \
    'loss_fg = kl_term(log_q[rows, source_class], log_p[rows, source_class])' \
    "${CSD_UNIT[@]}"
mutant csd_reference_teacher_scaled_in_bg csd/methods/csd/losses.py \
    'log_p = F.log_softmax(with_background(teacher, background), dim=1)' \
    'log_p = F.log_softmax(with_background(teacher, background) * settings["bg_scale"], dim=1)' \
    "${CSD_UNIT[@]}"
mutant csd_reference_bg_gated_like_fg csd/methods/csd/losses.py \
    '(loss_bg, bg_region, None, maps_bg, batch["target_label"])' \
    '(loss_bg, bg_region, fg_gate, maps_bg, batch["target_label"])' \
    "${CSD_UNIT[@]}"
mutant csd_zeroed_targets csd/methods/csd/train.py \
    'x, y = batch["image"], batch["label"]' \
    'x, y = batch["image"], 0 * batch["label"]; batch["target_label"] = 0 * batch["target_label"]' \
    tests/overfit/test_overfit.py -k "csd_classification"
mutant cda_never_pastes csd/methods/cda.py \
    'images, targets = paste_batch(batch, cda["paste_fraction"])' \
    'images, targets = batch["image"], batch["label"]' tests/methods/test_cda.py -k with_instances
mutant cda_zeroed_targets csd/methods/cda.py \
    'return criterion(model(images.to(device)).float(), targets.to(device)), {}' \
    'return criterion(model(images.to(device)).float(), 0 * targets.to(device)), {}' \
    tests/overfit/test_overfit.py -k cda
mutant train_cam_zeroed_targets csd/cam/train_cam.py \
    'targets = batch["label"].to(device, non_blocking=True)' \
    'targets = 0 * batch["label"].to(device, non_blocking=True)' \
    tests/overfit/test_overfit.py -k "train_cam_learns"
mutant train_mct_zeroed_targets csd/methods/mct/train_mct.py \
    'targets = batch["label"].to(device, non_blocking=True).float()' \
    'targets = 0 * batch["label"].to(device, non_blocking=True).float()' \
    tests/overfit/test_overfit.py -k mct
mutant train_irn_all_background_masks csd/irn/train_irn.py \
    'masks = batch["mask"].to(device, non_blocking=True)' \
    'masks = 0 * batch["mask"].to(device, non_blocking=True)' tests/overfit/test_overfit.py -k irn
mutant train_seg_all_background_masks csd/seg/train_seg.py \
    'masks = batch["mask"].to(device, non_blocking=True)' \
    'masks = 0 * batch["mask"].to(device, non_blocking=True)' tests/overfit/test_overfit.py -k seg
mutant make_cam_first_scale_only csd/cam/make_cam.py \
    'for scale in scales:' 'for scale in scales[:1]:' tests/cam/test_cam.py -k multiscale

echo "$survived survived"
[ "$survived" -eq 0 ]
