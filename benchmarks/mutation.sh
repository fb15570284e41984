#!/usr/bin/env bash
# Mutation testing (mutmut, the `mutation` extra: pip install -e ".[mutation]") of the method
# modules, one module at a time, each with the fast unit tests that exercise it. Not part
# of CI: minutes per module on one core.
#
#   benchmarks/mutation.sh [MODULE...]          (from the repository root; default: all)
#
# MODULE is a path under csd/ without .py (methods/csd/losses); its outputs are named with
# dots (methods.csd.losses).
#
# Each module runs in its own temporary copy of the repository (mutmut writes a mutants/
# tree next to the code), with `[tool.mutmut]` appended to that copy's pyproject.toml. Per
# module it prints mutmut's counts and keeps the survivors' diffs in
# benchmarks/mutation/<module>.survivors.txt. MUTATION_BUDGET_S (default 1800) bounds each
# module's run: mutants not run by then count as "not checked". MAX_CHILDREN: parallel
# mutants (default 1). KEEP_MUTANTS=1 keeps each temporary copy (for `mutmut show NAME` there).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
MUTMUT=${MUTMUT:-$REPO/.venv/bin/mutmut}
[ -x "$MUTMUT" ] || MUTMUT=/work/main/.venv/bin/mutmut
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
BUDGET=${MUTATION_BUDGET_S:-1800}
OUT=$REPO/benchmarks/mutation
mkdir -p "$OUT"

# module -> the fast tests that exercise it (a TOML list of pytest arguments)
declare -A TESTS=(
    [methods/csd/sampling]='"tests/methods/test_csd.py", "-k", "not train_cam_csd"'
    [methods/csd/losses]='"tests/methods/test_csd.py", "-k", "not train_cam_csd"'
    [methods/csd/train]='"tests/methods/test_csd.py", "-k", "not train_cam_csd"'
    [methods/cda]='"tests/methods/test_cda.py"'
    [cam/make_cam]='"tests/cam/test_cam.py", "-k", "make_cams or multiscale or rescale"'
    [seg/train_seg]='"tests/seg/test_deeplab.py", "tests/overfit/test_overfit.py", "-k",
                     "train_deeplab or train_seg or epochs_for"'
    [runtime/training]='"tests/cam/test_cam.py", "-k", "train_cam or epoch_loader"'
)
MODULES=("$@")
[ ${#MODULES[@]} -gt 0 ] || MODULES=(methods/csd/sampling methods/csd/losses methods/csd/train
                                     methods/cda cam/make_cam seg/train_seg runtime/training)

for module in "${MODULES[@]}"; do
    stem=${module//\//.}
    [ -n "${TESTS[$module]:-}" ] || { echo "no test selection for module $module" >&2; exit 2; }
    work=$(mktemp -d)
    cp -r "$REPO/csd" "$REPO/tests" "$REPO/pyproject.toml" "$work/"
    cat >>"$work/pyproject.toml" <<EOF

[tool.mutmut]
source_paths = ["csd"]
only_mutate = ["csd/$module.py"]
pytest_add_cli_args_test_selection = [${TESTS[$module]}]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]
EOF
    start=$SECONDS
    (cd "$work" && timeout "$BUDGET" "$MUTMUT" run --max-children "${MAX_CHILDREN:-1}" \
        >"$OUT/$stem.log" 2>&1) || echo "$module: mutmut stopped (exit $?; budget ${BUDGET} s)"
    (cd "$work" && "$MUTMUT" export-cicd-stats >/dev/null 2>&1 &&
        "$MUTMUT" results --all true >"$OUT/$stem.results.txt" 2>&1) || true
    stats=$work/mutants/mutmut-cicd-stats.json
    if [ -f "$stats" ]; then
        cp "$stats" "$OUT/$stem.stats.json"
        echo "$module ($((SECONDS - start)) s): $(tr -d '\n ' <"$stats")"
    else
        echo "$module: no results (see $OUT/$stem.log)"
    fi
    : >"$OUT/$stem.survivors.txt"
    for name in $(grep -E ': survived$' "$OUT/$stem.results.txt" 2>/dev/null |
                  sed 's/: survived$//'); do
        (cd "$work" && "$MUTMUT" show "$name") >>"$OUT/$stem.survivors.txt" 2>&1 || true
    done
    if [ -n "${KEEP_MUTANTS:-}" ]; then
        echo "$module: mutants kept in $work"
    else
        rm -rf "$work"
    fi
done
