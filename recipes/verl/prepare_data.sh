#!/usr/bin/env bash
# The training and test parquet for the recipes from any zerosearch QA source (TRAIN / TEST: files,
# comma-separated, or world[:split]). Example with the ZeroSearch data:
#   TRAIN=zerosearch_train.parquet TEST=nq_test.jsonl,hotpotqa_test.jsonl recipes/verl/prepare_data.sh
set -euo pipefail
DATA="${DATA:-data/verl}"
zerosearch export --format verl --data "${TRAIN:-world:train}" --split train --out "$DATA/train.parquet"
zerosearch export --format verl --data "${TEST:-world:test}" --split test --out "$DATA/test.parquet"
