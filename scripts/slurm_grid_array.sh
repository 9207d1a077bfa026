#!/usr/bin/env bash
# One run of a grid per Slurm array task: sbatch --array=1-<runs>%<parallel> scripts/slurm_grid_array.sh <grid.yaml>
#   python grid.py --grid=config/grid_table1.yaml --status     # how many runs, and which are done
#   sbatch --array=1-3240%50 scripts/slurm_grid_array.sh config/grid_table1.yaml
# A task whose run is done exits at once; a task whose run was interrupted resumes it (train.py --continue_train);
# two tasks never train the same run (its lock). Adapt the resources below to your cluster.
#SBATCH --job-name=memory-wrap-grid
#SBATCH --cpus-per-task=4
#SBATCH --gres=gpu:1
#SBATCH --time=04:00:00
#SBATCH --output=logs/grid-%A_%a.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-4}"
exec .venv/bin/python grid.py --grid="$1" --task="${SLURM_ARRAY_TASK_ID:?run this script with sbatch --array}"
