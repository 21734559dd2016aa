#!/usr/bin/env bash
# equal twin STEPS probe: the published teacher's output as the twin's only target plus the twin hint, with the
# strict arm's 1700 twin steps (its teacher time not compensated), seed 0, from a worktree at 3a3ba33
cd /work/wt-pays
export PYTHONPATH=/work/wt-pays OMP_NUM_THREADS=1
nice /work/main/.venv/bin/python benchmarks/distill_pays.py --runs-dir /work/runs/pays_gray_eqsteps --seeds 0 \
  --arms distilled_ffdnet-clean+twin_hint --twin-steps 1700 --jobs 1
