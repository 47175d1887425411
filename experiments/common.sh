# Shared by the experiment scripts (sourced after they cd to the repository root): the CLI to call,
# the thread count and parallel jobs from the environment, and the learned-dense recipe.
#   SUPERMASK (.venv/bin/supermask)  THREADS (unset: PyTorch's default)  JOBS (1)
SM=${SUPERMASK:-.venv/bin/supermask}
THREADS_ARG=()
[ -n "${THREADS:-}" ] && THREADS_ARG=(train.threads="$THREADS")
JOBS=${JOBS:-1}
# learned dense weights: Kaiming normal init and lr 0.01 (lr 0.1 from signed-constant weights diverged to NaN)
DENSE=(supermask.method=dense supermask.weight_init=kaiming_normal optim.lr=0.01)
