#!/usr/bin/env bash
# The main job (README command 1): the closed loop on the embedded defaults (SQLite, local object store, local
# training, SmolLM2-135M-Instruct). It starts adapterd, applies pipelines/ticket-format.yaml, uploads its dataset
# to the watched location, follows the run that the upload triggers (training, eval gates, publish), waits until
# the embedded worker serves the new version, and prints base-model vs adapter answers on held-out prompts.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
source scripts/bootstrap.sh

say() { printf '\n==> %s\n' "$*" >&2; }

say "building adapterd and adapterctl"
cargo build --locked -p adapterci-server -p adapterctl
bin="${CARGO_TARGET_DIR:-$repo/target}/debug"

data="$repo/.cache/demo"
rm -rf "$data"
mkdir -p "$data"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export ADAPTERCI_SERVER="http://127.0.0.1:$port"
ctl() { "$bin/adapterctl" "$@"; }

say "starting adapterd on $ADAPTERCI_SERVER (data in $data, log in $data/adapterd.log)"
"$bin/adapterd" --listen "127.0.0.1:$port" --data-dir "$data" --threads "$(nproc)" --tick-ms 500 \
  >"$data/adapterd.log" 2>&1 &
adapterd_pid=$!
trap 'kill $adapterd_pid 2>/dev/null || true; wait $adapterd_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 240); do
  if ctl get pipelines >/dev/null 2>&1; then break; fi
  if ! kill -0 "$adapterd_pid" 2>/dev/null; then
    echo "error: adapterd exited; its log:" >&2; cat "$data/adapterd.log" >&2; exit 1
  fi
  sleep 0.5
done

say "adapterctl apply -f pipelines/ticket-format.yaml"
ctl apply -f pipelines/ticket-format.yaml

say "uploading the dataset to the watched location"
ctl dataset push pipelines/data/ticket-format/train.jsonl --location datasets/ticket-format/train.jsonl

say "waiting for the watcher to start a run"
run_id=""
for _ in $(seq 1 120); do
  run_id=$(ctl get runs --pipeline ticket-format -o json | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r[0]["id"] if r else "")')
  [ -n "$run_id" ] && break
  sleep 0.5
done
[ -n "$run_id" ] || { echo "error: no run started; adapterd log:" >&2; tail -50 "$data/adapterd.log" >&2; exit 1; }

say "following run $run_id (training, eval gates, publish)"
set +e
ctl runs wait "$run_id"
status=$?
set -e
if [ "$status" -ne 0 ]; then
  echo "error: the run did not publish (exit $status); adapterd log:" >&2; tail -50 "$data/adapterd.log" >&2; exit "$status"
fi

say "waiting for the worker to serve the published version"
for _ in $(seq 1 120); do
  if ctl models -o json | python3 -c 'import json,sys; sys.exit(0 if any(m["id"]=="ticket-format" for m in json.load(sys.stdin)["data"]) else 1)'; then break; fi
  sleep 0.5
done
ctl models

say "held-out prompts: base model vs adapter (greedy)"
python3 - "$bin/adapterctl" pipelines/data/ticket-format/holdout.jsonl <<'PY'
import json, subprocess, sys
ctl, path = sys.argv[1], sys.argv[2]
records = [json.loads(line) for line in open(path) if line.strip()][:6]
def answer(prompt, adapter):
    args = [ctl, "generate", "--max-tokens", "40"] + (["--adapter", adapter] if adapter else []) + [prompt]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()
hits = {"base": 0, "adapter": 0}
for record in records:
    base, tuned = answer(record["prompt"], None), answer(record["prompt"], "ticket-format")
    hits["base"] += base == record["completion"].strip()
    hits["adapter"] += tuned == record["completion"].strip()
    print(f"prompt:   {record['prompt']}\nexpected: {record['completion']}\nbase:     {base}\nadapter:  {tuned}\n")
n = len(records)
print(f"exact match on these {n} held-out prompts: base {hits['base']}/{n}, adapter {hits['adapter']}/{n}")
PY

say "training curve of run $run_id (every step, stored by adapterd; chart: $data/loss_curve.svg)"
ctl runs metrics "$run_id" --svg "$data/loss_curve.svg"

say "gate report of run $run_id"
ctl describe run "$run_id"
say "done: the adapter was trained, gated, published and served"
