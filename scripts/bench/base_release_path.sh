#!/usr/bin/env bash
# Issue 3's targets measured on the product path: the `adapterci-base` commands a user runs, not the benchmark
# harness. One palettized release (3.5 bpw, statistics on teacher text + the user corpus), then two recovery
# adapters for it trained side by side (teacher-written text only; teacher text + the user corpus, CORPUS_SHARE
# of the sequences from it), each scored with `adapterci-base evaluate` on held-out natural text no step saw.
#
#   scripts/bench/base_release_path.sh [palettize|recover|controls|options|peers|all]      (default: all)
#
#   scripts/bench/base_release_path.sh controls  the releases the allocation is measured against, at the same
#                                                settings: every operation at 4 bits, and the 3.5 bpw target met
#                                                with an arbitrary allocation; each with its recovery adapter
#                                                (teacher text + user corpus), the two trained side by side
#   scripts/bench/base_release_path.sh options   the release's own bits palettized with each option or without
#                                                each part of the method, every one scored as released (no
#                                                adapter): naive k-means (no activation weighting, no GPTQ, no
#                                                rotation), no GPTQ, no rotation, the tied embedding at 8 and 4 bits,
#                                                linear inputs quantized to int8 per token; and the 8-bit
#                                                embedding's release with its recovery adapter (teacher text +
#                                                user corpus): the whole model near llama.cpp's 4-bit files' size
#   scripts/bench/base_release_path.sh peers     llama.cpp's Q8_0/Q5_0/Q4_0/IQ4_NL from the same GGUF, on the CPU
#
# The phases can run in separate processes (a device lent in calls of 10 minutes): `palettize` writes
# $WORK/release/base.safetensors, the teacher-text cache and the scored eval tokens, `recover` reads them.
# `peers` (part of `all`) scores llama.cpp's requantizations of the same GGUF on exactly those eval tokens, with
# llama-cpp-python in .venv-peers (installed when missing: builds llama.cpp, ~5 min); on a machine where it
# cannot be installed (a device), run it afterwards here with the same OUT. Settings come from the environment
# (default in brackets):
#   BIN           adapterci-base binary [target/release/adapterci-base, brought up to date with cargo]
#   MODEL         the source GGUF [.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf]
#   WORK          releases, adapters, cache [target/bench/release-path];  OUT: logs and table.md [$WORK]
#   CORPUS        the user corpus [all the public-domain prose in scripts/bench/data/, ~15.7 MB]
#   CORPUS_SHARE  share of the second adapter's recovery sequences drawn from the corpus [0.9]
#   PRECISION     f32|bf16: the recovery's frozen matmuls [the tool's default: bf16 on a CPU with AVX-512 BF16]
#   EVAL          held-out text [scripts/oracles/data/natural_english.txt]
#   DEVICE        auto|cpu|cuda [auto];  THREADS per process [1 on the CPU; 6 on CUDA]
#   TEACHER_SEQS [256; 2048 on CUDA]  SEQ_LEN [128; 256]  SENS_SEQS [2; 8]  MINUTES per recovery [4; 8.5]
#   BATCH, LR     recovery steps [4 and 1e-3 on the CPU; 48 and 1.5e-3 on CUDA]
#   STEPS         at most this many steps per recovery, within MINUTES (a budget a busy machine does not move) [100000]
#   RECOVER_THREADS  CPU threads of each recovery process, which run side by side [THREADS]
#   PALETTE_LR    when set, a third adapter beside them: teacher text + user corpus with the palettes' tables
#                 and row scales trained at this rate (its retrained release is scored with it)
#   PALETTIZE_ARGS  extra `adapterci-base palettize` flags, e.g. "--low-rank-rounds 1" []
#   TF32          1: recovery matmuls on CUDA in TF32 (TORCH_ALLOW_TF32_CUBLAS_OVERRIDE; evaluation stays f32) [1]
#   CONTROLS      0: `all` skips the controls phase [1];  ARBITRARY_SEED: the arbitrary allocation's seed [2026]
#   OPTIONS       0: `all` skips the options phase [1]
# Results: $OUT/table.md, and each command's log beside it.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
phase=${1:-all}
case $phase in palettize | recover | controls | options | peers | all) ;; *)
  echo "usage: $0 [palettize|recover|controls|options|peers|all]" >&2
  exit 2
  ;;
esac
WORK=${WORK:-$repo/target/bench/release-path}
OUT=${OUT:-$WORK}
MODEL=${MODEL:-$repo/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
EVAL=${EVAL:-$repo/scripts/oracles/data/natural_english.txt}
DEVICE=${DEVICE:-auto}
cuda=false
if [[ $DEVICE == cuda ]] || { [[ $DEVICE == auto ]] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }; then
  cuda=true
fi
if $cuda; then # the settings of the H200 run in docs/benchmarks.md (2026-11-27 19:58 UTC)
  THREADS=${THREADS:-6} TEACHER_SEQS=${TEACHER_SEQS:-2048} SEQ_LEN=${SEQ_LEN:-256} SENS_SEQS=${SENS_SEQS:-8}
  MINUTES=${MINUTES:-8.5} BATCH=${BATCH:-48} LR=${LR:-1.5e-3}
else
  THREADS=${THREADS:-1} TEACHER_SEQS=${TEACHER_SEQS:-256} SEQ_LEN=${SEQ_LEN:-128} SENS_SEQS=${SENS_SEQS:-2}
  MINUTES=${MINUTES:-4} BATCH=${BATCH:-4} LR=${LR:-1e-3}
fi
mkdir -p "$WORK" "$OUT"
if [[ -z ${CORPUS:-} ]]; then
  CORPUS=$WORK/user_corpus.txt
  zcat scripts/bench/data/public_domain_prose.txt.gz scripts/bench/data/more_public_domain_prose.txt.gz \
    scripts/bench/data/twentieth_century_prose.txt.gz >"$CORPUS"
fi
if [[ -z ${BIN:-} ]]; then
  # built (or brought up to date: a stale binary would run old code) with the toolchain's environment
  BIN=$repo/target/release/adapterci-base
  source scripts/bootstrap.sh >/dev/null
  cargo build --quiet --release -p adapterci-base
fi
export OMP_WAIT_POLICY=PASSIVE
common=(--model "$MODEL" --device "$DEVICE" --teacher-seqs "$TEACHER_SEQS" --seq-len "$SEQ_LEN"
  --teacher-cache "$WORK/teacher-cache")
release=$WORK/release/base.safetensors
recovery=(--steps "${STEPS:-100000}" --minutes "$MINUTES" --batch "$BATCH" --learning-rate "$LR")
tf32=0
$cuda && [[ ${TF32:-1} == 1 ]] && tf32=1

# palettize_release DIR FLAGS...: a release into $WORK/DIR with these `palettize` flags, its log in $OUT
palettize_release() {
  local dir=$1
  shift
  # shellcheck disable=SC2086 # PALETTIZE_ARGS is a list of flags
  "$BIN" palettize "${common[@]}" --threads "$THREADS" --corpus "$CORPUS" --out "$WORK/$dir" "$@" ${PALETTIZE_ARGS:-} \
    >"$OUT/palettize-$dir.log" 2>&1 || { tail -20 "$OUT/palettize-$dir.log" >&2; exit 1; }
  tail -1 "$OUT/palettize-$dir.log" >&2
}

# recover_side_by_side NAME:KIND:RELEASE_DIR...: one recovery adapter per job, all trained at once, into
# $WORK/NAME for the release in $WORK/RELEASE_DIR; KIND is teacher (teacher text only), corpus (teacher text +
# the user corpus) or palettes (corpus, with the palettes trained). Then each is scored: $OUT/evaluate-NAME.txt.
recover_side_by_side() {
  local job name kind dir pids=() status=0
  for job in "$@"; do
    IFS=: read -r name kind dir <<<"$job"
    [[ -f $WORK/$dir/base.safetensors ]] || { echo "no release in $WORK/$dir: palettize it first" >&2; exit 1; }
    extra=()
    [[ $kind != teacher ]] && extra=(--corpus "$CORPUS" --corpus-share "${CORPUS_SHARE:-0.9}")
    [[ -n ${PRECISION:-} ]] && extra+=(--precision "$PRECISION")
    [[ $kind == palettes ]] && extra+=(--palette-learning-rate "$PALETTE_LR")
    TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=$tf32 "$BIN" recover "${common[@]}" --threads "${RECOVER_THREADS:-$THREADS}" \
      --release "$WORK/$dir/base.safetensors" \
      --out "$WORK/$name" "${recovery[@]}" "${extra[@]}" >"$OUT/recover-$name.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
  if [[ $status != 0 ]]; then
    for job in "$@"; do tail -5 "$OUT/recover-${job%%:*}.log" >&2; done
    exit 1
  fi
  for job in "$@"; do
    IFS=: read -r name kind dir <<<"$job"
    tail -1 "$OUT/recover-$name.log" >&2
    cp "$WORK/$name/recovery.json" "$OUT/recovery-$name.json"
    scored=$WORK/$dir/base.safetensors
    # trained palettes make a new release, and the adapter is bound to it
    [[ $kind == palettes ]] && scored=$WORK/$name/base.safetensors
    "$BIN" evaluate --model "$MODEL" --release "$scored" --recovery "$WORK/$name/recovery.safetensors" \
      --text "$EVAL" --device "$DEVICE" --threads "$THREADS" >"$OUT/evaluate-$name.txt"
  done
}

if [[ $phase == palettize || $phase == all ]]; then
  echo "[$(date +%T)] palettize: $TEACHER_SEQS x $SEQ_LEN teacher tokens, statistics with the user corpus" >&2
  palettize_release release --sens-seqs "$SENS_SEQS"
  "$BIN" evaluate --model "$MODEL" --release "$release" --text "$EVAL" --device "$DEVICE" --threads "$THREADS" \
    --tokens-out "$OUT/eval_tokens.json" | tee "$OUT/evaluate-release.txt" >&2
fi

if [[ $phase == recover || $phase == all ]]; then
  jobs=(teacher:teacher:release corpus:corpus:release)
  [[ -n ${PALETTE_LR:-} ]] && jobs+=(palettes:palettes:release)
  echo "[$(date +%T)] recover: ${jobs[*]%%:*} side by side, $MINUTES min each, batch $BATCH x $SEQ_LEN, lr $LR, tf32 $tf32" >&2
  recover_side_by_side "${jobs[@]}"
fi

if [[ $phase == controls || ($phase == all && ${CONTROLS:-1} == 1) ]]; then
  echo "[$(date +%T)] controls: uniform 4 bits, and an arbitrary allocation (seed ${ARBITRARY_SEED:-2026})" >&2
  palettize_release uniform4 --uniform-bits 4
  palettize_release arbitrary --arbitrary-seed "${ARBITRARY_SEED:-2026}"
  echo "[$(date +%T)] controls: their recovery adapters side by side, $MINUTES min each" >&2
  recover_side_by_side uniform4-corpus:corpus:uniform4 arbitrary-corpus:corpus:arbitrary
fi

if [[ $phase == options || ($phase == all && ${OPTIONS:-1} == 1) ]]; then
  analysis=$WORK/release/analysis.json
  [[ -f $analysis ]] || { echo "no $analysis: run the palettize phase first" >&2; exit 1; }
  echo "[$(date +%T)] options: the release's bits palettized with each option and without each part" >&2
  for option in naive:--naive no-gptq:--no-gptq no-rotation:"--rotation off" embedding8:"--embedding-bits 8" \
    embedding4:"--embedding-bits 4" activations8:"--activation-bits 8"; do
    name=option-${option%%:*}
    # shellcheck disable=SC2086 # the option's flags
    palettize_release "$name" --analysis "$analysis" ${option#*:}
    "$BIN" evaluate --model "$MODEL" --release "$WORK/$name/base.safetensors" --text "$EVAL" --device "$DEVICE" \
      --threads "$THREADS" >"$OUT/evaluate-$name.txt"
  done
  # the whole model at ~4.5 bpw, as llama.cpp's 4-bit files are: the 8-bit embedding's release with its adapter
  echo "[$(date +%T)] options: the 8-bit embedding's recovery adapter (teacher text + user corpus)" >&2
  recover_side_by_side option-embedding8-corpus:corpus:option-embedding8
fi

if [[ $phase == peers || $phase == all ]]; then
  [[ -f $OUT/eval_tokens.json ]] || { echo "no $OUT/eval_tokens.json: run the palettize phase first" >&2; exit 1; }
  venv=$(scripts/bench/peer_venv.sh)
  echo "[$(date +%T)] peers: llama.cpp requantizations of $MODEL on the same eval tokens (CPU)" >&2
  "$venv/bin/python" scripts/bench/llama_cpp_quants.py --model "$MODEL" --tokens "$OUT/eval_tokens.json" \
    --out "$OUT/peers.json" --workdir "$WORK/llama-cpp-quants" --threads 2 >"$OUT/peers.log" 2>&1 \
    || { tail -20 "$OUT/peers.log" >&2; exit 1; }
fi

if [[ $phase != palettize && -f $OUT/evaluate-release.txt ]]; then
  python3 - "$OUT" "$WORK" <<'PY'
import json, pathlib, re, sys
out, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def rows(path):
    got, bpw = {}, None
    for line in path.read_text().splitlines():
        parts = re.split(r"\s{2,}", line.strip())
        if len(parts) == 5 and parts[0] != "model":
            got[parts[0]] = [float(x) for x in parts[1:]]
        m = re.search(r"linear ([\d.]+) bpw, whole model ([\d.]+) bpw", line)
        if m:
            bpw = (float(m.group(1)), float(m.group(2)))
    return got, bpw
lines = ["| model | linear bpw | whole-model bpw | perplexity | vs uncompressed | mean CE | top-1 agreement | recovery fraction | steps |",
         "|---|---|---|---|---|---|---|---|---|"]
got, (lbpw, wbpw) = rows(out / "evaluate-release.txt")
unc, start = got["uncompressed"], got["palettized"]  # every fraction is measured from the release as palettized
def fmt(name, b1, b2, r, frac="", steps=""):
    lines.append(f"| {name} | {b1} | {b2} | {r[0]:.2f} | {100 * (r[0] / unc[0] - 1):+.1f}% | {r[1]:.4f} | {r[2]:.3f} | {frac} | {steps} |")
fmt("uncompressed", 32, 32, unc)
fmt("palettized release", f"{lbpw:.4f}", f"{wbpw:.4f}", start)
transfer = []
# (adapter, label, the release's row when it is not the release above: its own start)
variants = [("teacher", "teacher text only", None), ("corpus", "teacher text + user corpus", None),
            ("palettes", "teacher text + user corpus, palettes trained", "its retrained release alone"),
            ("uniform4-corpus", "teacher text + user corpus", "control: every operation at 4 bits"),
            ("arbitrary-corpus", "teacher text + user corpus", "control: arbitrary allocation, same target")]
def adapter_rows(which, label, own):
    """The adapter's row, after its release's own row when that is not the release above."""
    got, bpw = rows(out / f"evaluate-{which}.txt")
    rec = got["palettized + recovery adapter"]
    # the fraction is measured from the release the adapter was trained for (a control's own); with trained
    # palettes, from the release above, which the palettes started from
    origin = got["palettized"] if own and which != "palettes" else start
    if own:
        fmt(own, f"{bpw[0]:.4f}", f"{bpw[1]:.4f}", got["palettized"])
    found = [p for p in (out / f"recovery-{which}.json", work / which / "recovery.json") if p.exists()]
    steps = ""
    if found:
        report = json.loads(found[0].read_text())
        steps = f"{report['steps']} in {report['seconds']:.0f} s on {report['device']}"
        # training batches against held-out text against the eval text: memorization, or the eval's distance
        recent = [kl for _, kl in report["kl_curve"][-50:]]
        last = max((p["step"] for p in report.get("validation", [])), default=None)
        held = [f"{p['set']} {p['kl']:.4f}" for p in report.get("validation", []) if p["step"] == last]
        transfer.append(f"- {own or 'the release'}, {label}: KL on the training batches of the last {len(recent)} steps "
                        f"{sum(recent) / len(recent):.4f}; held out of training: {', '.join(held) or 'none'}; "
                        f"eval text {rec[3]:.4f}")
    fmt(f"+ recovery adapter ({label})", f"{bpw[0]:.4f}", f"{bpw[1]:.4f}", rec,
        f"{(origin[1] - rec[1]) / (origin[1] - unc[1]):.3f}", steps)
for which, label, own in variants:
    if (out / f"evaluate-{which}.txt").exists():
        adapter_rows(which, label, own)
# the release's bits with an option, or without a part of the method, as released, and with its adapter
# where the options phase trained one
for which, label in [("naive", "ablation: naive k-means (no activation weighting, no GPTQ, no rotation)"),
                     ("no-gptq", "ablation: no GPTQ (activation-weighted k-means, nearest entries)"),
                     ("no-rotation", "ablation: no rotation"),
                     ("embedding8", "option: tied embedding palettized to 8 bits"),
                     ("embedding4", "option: tied embedding palettized to 4 bits"),
                     ("activations8", "option: linear inputs quantized to int8 per token")]:
    if (out / f"evaluate-option-{which}-corpus.txt").exists():
        adapter_rows(f"option-{which}-corpus", "teacher text + user corpus", label)
    elif (out / f"evaluate-option-{which}.txt").exists():
        got, bpw = rows(out / f"evaluate-option-{which}.txt")
        fmt(label, f"{bpw[0]:.4f}", f"{bpw[1]:.4f}", got["palettized"])
if (out / "peers.json").exists():
    peers = json.loads((out / "peers.json").read_text())
    params = 134515008  # SmolLM2-135M: linear 106,168,320 + embedding 28,311,552 + norms 35,136
    for r in peers["rows"]:
        fmt(f"{r['variant']}, CPU", r["linear_bpw"], f"{8 * r['file_bytes'] / params:.3f}",
            [r["perplexity"], r["cross_entropy"], r["top1_agreement"]])
if transfer:
    lines += ["", "Mean KL to the uncompressed model per position:"] + transfer
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
fi
