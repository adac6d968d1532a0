#!/bin/bash
# One prepared GPU run (issue 24): vectorised trials, GPU sharing, learner vs bare loop,
# compute-bound options (bf16, fused, compile) on the MLP 1024-1024.
# Needs no Ray or MLflow. On the lent machine (Python 3.12, torch, no network) the
# packages it lacks travel as wheels in .whl/ (git-ignored), fetched here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux2014_x86_64 -d .whl \
#     pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 \
#     typing-inspection==0.4.5 mnist1d==0.0.2.post1 dill==0.4.1
# and the run is `bash benchmarks/gpu_run.sh` with .whl carried. DEV=cpu checks the
# mechanics here (the sizes via S=, N=).
DEV=${DEV:-cuda}
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
if [ "$DEV" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  # lifelong as a package of links: the checkout root cannot go on the path (its
  # platform/ would hide Python's own platform module)
  mkdir -p /tmp/ll/lifelong && cp lifelong/__init__.py /tmp/ll/lifelong/
  for d in platform strategies scenarios cluster; do ln -sfn "$PWD/$d" /tmp/ll/lifelong/$d; done
  export PYTHONPATH=/tmp/site:/tmp/ll
  PY=python3
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $OUT/gpu.txt
else
  PY=${PY:-$PWD/.venv/bin/python}
fi
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")"
$PY -c "import torch, lifelong.platform.vectorized as v; print(torch.__version__, torch.cuda.is_available())" || exit 4
S=${S:-"1 4 16 32 64"}
echo "== vectorized_trials"; timeout ${T1:-300} $PY vectorized_trials.py --device $DEV --sizes $S --strategies naive ewc --repeats 1 2>&1 | tee $OUT/vectorized.txt
echo "== gpu_sharing"; timeout ${T2:-120} $PY gpu_sharing.py --device $DEV --trials ${N:-32} 2>&1 | tee $OUT/sharing.txt
echo "== vs_bare_loop 256"; timeout ${T3:-60} $PY vs_bare_loop.py --device $DEV --quick --strategies naive l2 ewc si 2>&1 | tee $OUT/bare256.txt
echo "== vs_bare_loop 1024"; timeout ${T3:-60} $PY vs_bare_loop.py --device $DEV --quick --hidden 1024 1024 --strategies naive l2 ewc si 2>&1 | tee $OUT/bare1024.txt
echo "== compute_bound mlp"; timeout ${T4:-120} $PY compute_bound.py --device $DEV --workloads mlp --no-avalanche --repeats 2 2>&1 | tee $OUT/compute_bound.txt
echo "== done"
