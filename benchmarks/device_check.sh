#!/usr/bin/env bash
# The CUDA check: the first session lent a GPU (the `device` tool) runs this before anything
# else, as one call, and puts the figures in its note.
#
#   bash benchmarks/device_check.sh prepare      # here, first: stages .device-stage/ (git-ignored)
#   device run, carry [".device-stage"], timeout_s 540:
#       bash benchmarks/device_check.sh run
#
# prepare builds wheels of seqlearn (this working tree) and seqeval, the one import the
# device's python lacks (it has torch, Lightning, sacrebleu, sentencepiece, safetensors,
# pytest), and copies Multi30k from ../shared/data (which does not travel) into .device-stage/.
# run installs them with --no-deps and writes, each step under its own time limit so that a
# slow one leaves the others theirs, to $OUT (./device-out without the tool):
#   env.txt               GPU, driver, torch, CUDA and cuDNN versions
#   tests.log             tests/test_cuda.py (cuDNN against the step loop, GPU training) and
#                         the 0.1.0 checkpoints on CUDA (tests/test_checkpoint_compat.py)
#   train_speed*.json     seq2seq_multi30k.py train-speed, float32 and bf16-mixed
#   decode_speed.json     seq2seq_multi30k.py decode-speed (one epoch, then beam 5 on test2016)
#   timed_bleu.json       Multi30k training for $MINUTES minutes (default 3), joint BPE 8000 as
#                         in the README's 25-minute CPU runs, then test2016 BLEU
# `run STEP...` runs only those steps (env tests train decode bleu); PYTHON picks the
# interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
STAGE=.device-stage
PYTHON=${PYTHON:-python3}

prepare() {
    set -e
    rm -rf "$STAGE" && mkdir -p "$STAGE/wheels" "$STAGE/multi30k"
    local py=${PYTHON_HERE:-.venv/bin/python}
    "$py" -m pip wheel -q --no-deps --no-build-isolation -w "$STAGE/wheels" .
    "$py" -m pip wheel -q --no-deps -w "$STAGE/wheels" "$(grep -i '^seqeval==' constraints.txt)"
    cp ../shared/data/multi30k/{train,val,test2016}.{de,en}.gz "$STAGE/multi30k/"
    du -sh "$STAGE"
}

step_env() {
    { nvidia-smi || true; "$PYTHON" -c 'import torch, pytorch_lightning as pl
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), "lightning", pl.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)'; } > "$OUT/env.txt" 2>&1
}

step_tests() {
    timeout 240 "$PYTHON" -m pytest -q -p no:cacheprovider -rs tests/test_cuda.py tests/test_checkpoint_compat.py \
        > "$OUT/tests.log" 2>&1
}

bench() {  # bench SECONDS NAME ARGS...: one benchmark's JSON line to $OUT/NAME.json, its log beside it
    local limit=$1 name=$2
    shift 2
    timeout "$limit" "$PYTHON" benchmarks/seq2seq_multi30k.py "$@" --data "$STAGE/multi30k" \
        > "$OUT/$name.json" 2> "$OUT/$name.log"
}

step_train() {
    bench 100 train_speed train-speed
    bench 100 train_speed_bf16 train-speed --precision bf16-mixed
}

step_decode() {
    bench 150 decode_speed decode-speed
}

step_bleu() {
    local minutes=${MINUTES:-3}
    bench $((minutes * 60 + 150)) timed_bleu timed-bleu --minutes "$minutes" --select val_bleu --label-smoothing 0.1 \
        --dropout 0.3 --lr-scheduler plateau --precision bf16-mixed --subwords bpe --vocab-size 8000
}

case "${1:-}" in
    prepare) prepare ;;
    run)
        shift
        [ -d "$STAGE/wheels" ] || { echo "no $STAGE/wheels: run 'bash $0 prepare' first (here), then carry $STAGE" >&2; exit 2; }
        OUT=${OUT:-device-out}
        mkdir -p "$OUT"
        site=$(mktemp -d)
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$STAGE"/wheels/*.whl || exit 3
        export PYTHONPATH="$site" PYTHONUNBUFFERED=1
        for step in "${@:-env tests train decode bleu}"; do
            for s in $step; do
                start=$(date +%s)
                "step_$s"
                echo "$s: exit $?, $(($(date +%s) - start)) s" | tee -a "$OUT/steps.txt"
            done
        done
        ;;
    *) echo "usage: bash $0 prepare | run [env tests train decode bleu]" >&2; exit 2 ;;
esac
