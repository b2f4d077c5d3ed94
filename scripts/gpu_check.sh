#!/usr/bin/env bash
# Every GPU measurement the population and CUDA work needs, in one run that fits a short loan of a GPU
# machine (each step has a time limit, 530 s in all, under the loan's 600 s per command; a step that fails or
# times out does not stop the others). Results land in OUT: steps.txt (each step's exit code and milliseconds), one log per
# step, bench_population.json, and each study's summary.md / study.json / comparison.png.
#
#   scripts/gpu_check.sh DATA_DIR OUT_DIR          # on the GPU machine, from the repository root
#   DEVICE=cpu QUICK=1 scripts/gpu_check.sh ...    # a dry run of the script itself on a CPU (minutes)
#
# Runs the package from the checkout (PYTHONPATH=.), so it needs no install; PYTHON picks the interpreter.
# What it measures: tests/test_cuda.py (deterministic CUDA runs, resume exactness); the population engine's
# throughput against one run after another (bench.py, MLP with 12 models, CNN with 12 on 20,000 images);
# the MLP study with 5 seeds end to end on the population engine (the target: 30 s on an H200) and
# with one seed on the sequential engine (the per-run cost the 5-seed sequential study multiplies).
set -u
data=${1:?usage: scripts/gpu_check.sh DATA_DIR OUT_DIR}
out=${2:?usage: scripts/gpu_check.sh DATA_DIR OUT_DIR}
py=${PYTHON:-python}
device=${DEVICE:-cuda}
quick=${QUICK:-0}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$out"
runs=$(mktemp -d)  # checkpoints and events stay here; only the summaries are copied to OUT

if [ "$quick" = 1 ]; then  # the dry run: tiny sizes, the same commands
    bench_sizes=(--population 4 --population-epochs 1 --population-subset 2000)
    cnn_sizes=(--population 2 --population-epochs 1 --population-subset 1000)
    study_sizes=(--epochs 1 --set data.subset=2000)
else
    bench_sizes=(--population 12 --population-epochs 2)
    cnn_sizes=(--population 12 --population-epochs 1 --population-subset 20000)
    study_sizes=()
fi

step() {  # step NAME LIMIT_S COMMAND...: run it with a time limit, log its output, note rc and seconds
    local name=$1 limit=$2
    shift 2
    local start end rc
    start=$(date +%s%N)
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    rc=$?
    end=$(date +%s%N)
    printf '%-16s rc=%-3s %6d ms\n' "$name" "$rc" $(((end - start) / 1000000)) | tee -a "$out/steps.txt"
}

keep_study() {  # copy a study's tables and figure from the temporary runs folder to OUT/NAME
    local name=$1 dir
    dir=$(ls -d "$runs/$name"/compare-* 2>/dev/null | head -1)
    [ -n "$dir" ] || return 0
    mkdir -p "$out/$name"
    cp "$dir"/summary.md "$dir"/study.json "$dir"/comparison.png "$out/$name/" 2>/dev/null
}

{
    date -u
    nvidia-smi 2>&1 | head -15
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} >"$out/machine.txt" 2>&1

step tests 80 "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py
step bench_mlp 140 "$py" scripts/bench.py "${bench_sizes[@]}" --device "$device" --data-dir "$data" \
    --json "$out/bench_population.json"
step bench_cnn 100 "$py" scripts/bench.py "${cnn_sizes[@]}" --population-models cnn --device "$device" \
    --data-dir "$data" --json "$out/bench_population_cnn.json"
step study_pop5 90 "$py" -m fashionmlp compare-optimizers --model mlp --seeds 0,1,2,3,4 --device "$device" \
    --data-dir "$data" --runs-dir "$runs/study_pop5" ${study_sizes[@]+"${study_sizes[@]}"}
keep_study study_pop5
step study_seq1 120 "$py" -m fashionmlp compare-optimizers --model mlp --seeds 0 --engine sequential \
    --device "$device" --data-dir "$data" --runs-dir "$runs/study_seq1" ${study_sizes[@]+"${study_sizes[@]}"}
keep_study study_seq1
rm -rf "$runs"
