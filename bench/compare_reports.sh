#!/usr/bin/env bash
# The committed compare reports (docs/results/compare_<data>/): every strategy at train sizes
# 16/64/256/1000 with 2 seeds on Gemma 3 270M. One command per dataset, fixed here so that every
# session resumes the same grid: finished runs (results/*.json) are kept and skipped, and --budget
# caps only this invocation, so a grid larger than one sitting is finished over several.
#
#   bash bench/compare_reports.sh sst2 2h        # run (or resume) for at most 2 hours
#   bash bench/compare_reports.sh banking77 2h
#
# Why smaller evaluation sets than the strategy tables: the grid is 58 runs, and each run scores
# its test set, a train sample and (1 + paraphrases + 5 perturbations) x fragility examples. On 2
# CPU cores that evaluation, not training, is most of a grid's time. Banking77 also scores 77
# labels, 140 full-vocabulary LM-head projections an example, so its test set is smaller still
# (5 per class).
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:?usage: compare_reports.sh sst2|banking77 [budget]}
budget=${2:-}
case "$data" in
    sst2)      eval_args=(--test-limit 500 --fragility-k 2 --fragility-examples 40) ;;
    banking77) eval_args=(--test-limit 385 --fragility-k 1 --fragility-examples 24) ;;
    *) echo "compare_reports.sh: unknown dataset '$data' (sst2 or banking77)" >&2; exit 2 ;;
esac
adaptlab=${ADAPTLAB:-.venv/bin/adaptlab}
"$adaptlab" compare --data "$data" --strategies all --train-sizes 16,64,256,1000 --seeds 2 \
    "${eval_args[@]}" --set few_shot.k=8 --set prompt_search.budget_calls=400 \
    --keep-artifacts none ${budget:+--budget "$budget"} --no-progress --out "docs/results/compare_$data"
