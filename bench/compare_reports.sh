#!/usr/bin/env bash
# The committed compare reports (docs/results/compare_<data>/): every strategy at train sizes
# 16/64/256/1000 with 2 seeds on Gemma 3 270M. One command per dataset, fixed here so that every
# session resumes the same grid: finished runs (results/*.json) are kept and skipped, and --budget
# caps only this invocation, so a grid larger than one sitting is finished over several.
#
#   bash bench/compare_reports.sh sst2 2h        # run (or resume) for at most 2 hours
#   bash bench/compare_reports.sh banking77 2h
#   bash bench/compare_reports.sh viggo 2h       # data-to-text on Gemma 3 270M: 32/64/256, 1 seed
#   bash bench/compare_reports.sh viggo-smollm2 2h   # the same task on SmolLM2-135M-Instruct
#   bash bench/compare_reports.sh demo-chat 30m  # multi-turn support chats on SmolLM2-135M-Instruct
#   bash bench/compare_reports.sh e2e 30m        # E2E (validation trains, test scores): prompts vs LoRA
#
# These are full grids (--full-grid): every run is measured, which the adaptive compare
# (docs/results/adaptive_compare.md) is measured against.
#
# ViGGO (generation) scores 100 test rows (about 92 distinct inputs), no template fragility (each
# paraphrase is another full decoding pass), and 8 inputs x 4 samples for consistency.
#
# Why smaller evaluation sets than the strategy tables: the grid is 58 runs, and each run scores
# its test set, a train sample and (1 + paraphrases + 5 perturbations) x fragility examples. On 2
# CPU cores that evaluation, not training, is most of a grid's time. Banking77 also scores 77
# labels, 140 full-vocabulary LM-head projections an example, so its test set is smaller still
# (5 per class).
set -euo pipefail
cd "$(dirname "$0")/.."
report=${1:?usage: compare_reports.sh sst2|banking77|viggo|viggo-smollm2|demo-chat|e2e [budget]}
budget=${2:-}
data=$report model=gemma-3-270m sizes=16,64,256,1000 seeds=2 k=8 calls=400 strategies=all
case "$report" in
    sst2)      eval_args=(--test-limit 500 --fragility-k 2 --fragility-examples 40) ;;
    banking77) eval_args=(--test-limit 385 --fragility-k 1 --fragility-examples 24) ;;
    viggo|viggo-smollm2)
        data=viggo sizes=32,64,256 seeds=1 k=4 calls=120   # each call decodes a sentence
        [ "$report" = viggo-smollm2 ] && sizes=256         # one size: this sitting had no time for more
        [ "$report" = viggo-smollm2 ] && model=smollm2-135m-instruct
        eval_args=(--test-limit 100 --fragility-k 0 --fragility-examples 24 --consistency-examples 8) ;;
    demo-chat)  # 180 train conversations, 60 test; the chat model renders them through its template
        model=smollm2-135m-instruct sizes=32,180 seeds=1 k=4 calls=120
        eval_args=(--test-limit 60 --fragility-k 0 --fragility-examples 24 --consistency-examples 8) ;;
    e2e)  # no train split in the snapshot: validation trains, 100 test rows score
        data=e2e_nlg sizes=256 seeds=1 k=4 calls=120 strategies=zero_shot,few_shot,lora
        eval_args=(--test-limit 100 --fragility-k 0 --fragility-examples 24 --consistency-examples 8) ;;
    *) echo "compare_reports.sh: unknown report '$report' (sst2, banking77, viggo, viggo-smollm2, demo-chat or e2e)" >&2
       exit 2 ;;
esac
adaptlab=${ADAPTLAB:-.venv/bin/adaptlab}
"$adaptlab" compare --full-grid --data "$data" --model "$model" --strategies "$strategies" --train-sizes "$sizes" --seeds "$seeds" \
    "${eval_args[@]}" --set few_shot.k=$k --set prompt_search.budget_calls=$calls \
    --keep-artifacts none ${budget:+--budget "$budget"} --no-progress --out "docs/results/compare_${report//-/_}"
