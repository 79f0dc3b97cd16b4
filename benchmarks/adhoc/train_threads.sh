cd "$(dirname "$0")/../.."
# Tiny EDSR baseline, 300 iterations of sisr train, --threads 1 vs 2 alternated: bash benchmarks/adhoc/train_threads.sh
D=../shared/datasets
for t in 1 2 1 2; do
  rm -rf /tmp/thr_run
  s=$(date +%s.%N)
  .venv/bin/sisr train --config edsr-baseline --run-dir /tmp/thr_run --threads $t "model.hparams={n_resblocks: 2, n_feats: 16}" "data.hr=[$D/T91/HR]" train.iterations=300 val.every=0 data.workers=0 train.checkpoint_every=1000 log.every=100 train.batch_size=16 > /tmp/thr_$t.log 2>&1
  e=$(date +%s.%N)
  echo "threads $t: $(echo "$e - $s" | bc) s; $(grep -o '[0-9.]* it/s' /tmp/thr_$t.log | tail -1)"
done
