#!/usr/bin/env bash
# The simulation LLM behind an OpenAI-compatible endpoint on its own GPU(s) (SIM_ENDPOINT in
# agent_loops.yaml). ENGINE=vllm (default) or sglang. UNTESTED ON A GPU HERE.
set -euo pipefail
SIM_MODEL="${SIM_MODEL:-Alibaba-NLP/Simulation_LLM_google_14B}"
PORT="${PORT:-6001}"
TP="${TP:-1}"
case "${ENGINE:-vllm}" in
  vllm) exec vllm serve "$SIM_MODEL" --host 127.0.0.1 --port "$PORT" --tensor-parallel-size "$TP" ;;
  sglang) exec python3 -m sglang.launch_server --model-path "$SIM_MODEL" --host 127.0.0.1 --port "$PORT" --tp "$TP" ;;
  *) echo "ENGINE must be vllm or sglang" >&2; exit 2 ;;
esac
