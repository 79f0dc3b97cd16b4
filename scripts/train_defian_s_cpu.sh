#!/usr/bin/env bash
# DeFiAN-S on the CPU (the shipped weights), run from the project root in the background:
#   nohup nice -n 19 scripts/train_defian_s_cpu.sh [round] > runs/cpu_ship.log 2>&1 &
# Round 1 (2026-12-02): x3 and x4 fine-tuned from the handed-over x2 run, then x2 continued (shipped).
# Round 2 (2026-12-03): x4 and x3 continued from the shipped files at a lower learning rate, one thread
#   (the other core is left to other work); a file is replaced only when its Set5 score improves.
# Each run resumes exactly if started again (sisr train --resume).
set -u
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE
D=../shared/datasets
X2=../shared/pretraining/defian-s-x2/latest.safetensors
P=src/sisr/pretrained
COMMON=("data.hr=[$D/T91/HR, $D/BSD200/HR, $D/General100/HR]" val.root=$D schedule.step=null
        train.channels_last=true train.compile=true train.checkpoint_every=200 data.workers=1 log.every=50)
run() {  # name, extra overrides...
  local name=$1; shift
  if [ -f runs/$name/checkpoints/latest.json ]; then
    .venv/bin/sisr train --resume --run-dir runs/$name
  else
    .venv/bin/sisr train --config defian-s --run-dir runs/$name "${COMMON[@]}" "$@"
  fi
}
case "${1:-2}" in
  1)
    run defian-s-x3 model.scale=3 model.init=$X2 train.iterations=1400 optim.lr=2e-4 "schedule.milestones=[700, 1100]" val.every=350 || exit $?
    run defian-s-x4 model.scale=4 model.init=$X2 train.iterations=1400 optim.lr=2e-4 "schedule.milestones=[700, 1100]" val.every=350 || exit $?
    run defian-s-x2-c model.scale=2 model.init=$X2 train.iterations=1600 optim.lr=1e-4 "schedule.milestones=[800, 1300]" val.every=400 || exit $?
    ;;
  2)
    export OMP_NUM_THREADS=1
    run defian-s-x4-b model.scale=4 model.init=$P/defian-s_x4.safetensors train.iterations=1000 optim.lr=1e-4 "schedule.milestones=[500, 800]" val.every=250 || exit $?
    run defian-s-x3-b model.scale=3 model.init=$P/defian-s_x3.safetensors train.iterations=1000 optim.lr=1e-4 "schedule.milestones=[500, 800]" val.every=250 || exit $?
    ;;
esac
