#!/usr/bin/env bash
# Checks the adapterci/adapterd image without Docker (scripts/test.sh runs it; there is no Docker daemon to build
# or run the image here). It lays out the image's files from the local debug build with the script the Dockerfile
# runs (scripts/image/assemble_rootfs.sh, hard links: no gigabytes copied) and checks:
#   - docker/Dockerfile against that layout: its runtime stage copies the script's output whole and nothing else,
#     sets LD_LIBRARY_PATH to docker/rootfs.txt's libdir and only ADAPTERCI_* variables adapterd reads, runs
#     adapterd as its entrypoint as 65532:65532, installs exactly docker/runtime-deps.txt's apt packages; the
#     builder builds exactly rootfs.txt's binaries, pins torch as scripts/bootstrap.sh does, Rust as Cargo.toml's
#     rust-version, and puts torch where .cargo/config.toml looks;
#   - docker/runtime-deps.txt against this Debian bookworm machine's dpkg database (who owns each library);
#   - every ELF file of the layout: each NEEDED library is in its libdir or provided per runtime-deps.txt, and no
#     file needs a newer glibc or libstdc++ symbol version than the base image has;
#   - everything readable by UID 65532, nothing setuid or world-writable;
#   - the binaries run from the layout alone: with a clean environment (PATH and LD_LIBRARY_PATH of the layout
#     only, HOME and the working directory the read-only layout), as UID/GID 65532 when run as root: --help of
#     each, `adapterci-db migrate`, `adapterctl db status` through adapterci-db on PATH, and adapterd started on
#     the default GGUF with a temp --data-dir and TMPDIR, answering /healthz, every shared object it mapped from
#     the layout or a base package, then stopped by SIGTERM with status 0; the layout is unchanged afterwards.
#
#   scripts/image/check_rootfs.sh [--require-binaries]
#
# Without the debug binaries (cargo's test build makes them) it skips with a notice, or fails with
# --require-binaries (scripts/test.sh passes it, after its tests step built them).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"
require_binaries=0
case "${1:-}" in
  "") ;;
  --require-binaries) require_binaries=1 ;;
  *) printf 'check_rootfs: error: unknown argument %s (only --require-binaries)\n' "$1" >&2; exit 2 ;;
esac

printf '\n==> %s\n' "container image: docker/Dockerfile and its rootfs (scripts/image/check_rootfs.sh, no Docker)" >&2
log() { printf 'check_rootfs: %s\n' "$*" >&2; }
failures=0
fail() { printf 'check_rootfs: FAIL: %s\n' "$*" >&2; failures=$((failures + 1)); }

dockerfile=docker/Dockerfile
deps_file=docker/runtime-deps.txt
assemble=scripts/image/assemble_rootfs.sh
read -r -a cargo_bin_args <<<"$("$assemble" --print-cargo-bins)"
bins=()
for ((i = 1; i < ${#cargo_bin_args[@]}; i += 2)); do bins+=("${cargo_bin_args[i]}"); done
libdir=$("$assemble" --print-libdir)

target_dir=${CARGO_TARGET_DIR:-$repo/target}
missing=()
for bin in "${bins[@]}"; do [ -x "$target_dir/debug/$bin" ] || missing+=("$bin"); done
if [ "${#missing[@]}" -gt 0 ]; then
  message="debug binaries not built: ${missing[*]} (cargo build --locked ${cargo_bin_args[*]})"
  if [ "$require_binaries" = 1 ]; then
    fail "$message"
    exit 1
  fi
  log "skipped: $message"
  exit 0
fi

# --- docker/Dockerfile against rootfs.txt, runtime-deps.txt, bootstrap.sh, Cargo.toml, .cargo/config.toml ------
stage() { # NAME: the lines of the stage `FROM ... AS NAME`, continuation lines joined
  sed -e ':a' -e '/\\$/N; s/\\\n/ /; ta' "$dockerfile" \
    | awk -v name="$1" 'toupper($1) == "FROM" { inside = (tolower($NF) == name) } inside'
}
builder=$(stage builder)
runtime=$(stage runtime)
[ -n "$builder" ] || fail "$dockerfile: no stage 'FROM ... AS builder'"
[ -n "$runtime" ] || fail "$dockerfile: no stage 'FROM ... AS runtime'"
[ "$(grep -cE '^FROM ' "$dockerfile")" = 2 ] || fail "$dockerfile: expected two stages (builder, runtime)"
[[ $(grep -E '^FROM ' "$dockerfile" | tail -1) == *" AS runtime" ]] || fail "$dockerfile: the last stage must be runtime"

copies=$(grep -E '^(COPY|ADD) ' <<<"$runtime" || true)
[ "$copies" = "COPY --from=builder /rootfs/ /" ] \
  || fail "$dockerfile: the runtime stage must add files only by 'COPY --from=builder /rootfs/ /' (the layout of $assemble), found: $(tr '\n' ';' <<<"${copies:-nothing}")"
grep -qF "cargo build --release --locked \$($assemble --print-cargo-bins)" <<<"$builder" \
  || fail "$dockerfile: the builder must run 'cargo build --release --locked \$($assemble --print-cargo-bins)'"
grep -qF "$assemble --profile release --link copy /rootfs" <<<"$builder" \
  || fail "$dockerfile: the builder must run '$assemble --profile release --link copy /rootfs'"
ld_path=$(sed -n 's/.*[[:space:]]LD_LIBRARY_PATH=\([^[:space:]]*\).*/\1/p' <<<"$runtime")
[ "$ld_path" = "$libdir" ] || fail "$dockerfile: ENV LD_LIBRARY_PATH='$ld_path', docker/rootfs.txt's libdir is '$libdir'"
grep -qxF 'ENTRYPOINT ["adapterd"]' <<<"$runtime" || fail "$dockerfile: runtime ENTRYPOINT must be [\"adapterd\"]"
grep -qxF 'USER 65532:65532' <<<"$runtime" || fail "$dockerfile: runtime must run as USER 65532:65532"
for name in $(grep -oE '\bADAPTERCI_[A-Z_]+=' <<<"$runtime" | tr -d '=' | sort -u); do
  grep -qE "pub const $name: &str" crates/adapterci-server/src/env_vars.rs \
    || fail "$dockerfile: ENV $name is not a variable adapterd reads (crates/adapterci-server/src/env_vars.rs)"
done
for bin in adapterd adapterci-db; do
  [[ " ${bins[*]} " == *" $bin "* ]] || fail "docker/rootfs.txt: no 'bin $bin' (the chart runs it)"
done

apt_installed=$(sed -n 's/.*apt-get install -y --no-install-recommends \([^&]*\).*/\1/p' <<<"$runtime" | tr ' ' '\n' | sed '/^$/d' | sort)
apt_listed=$(awk '$1 == "apt" { print $2 }' "$deps_file" | sort)
[ "$apt_installed" = "$apt_listed" ] \
  || fail "$dockerfile installs apt packages [$(echo $apt_installed)] but $deps_file lists [$(echo $apt_listed)]"

rust_version=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
digest='(@sha256:[0-9a-f]{64})?' # pinned by tag, and by digest where the operator adds one
grep -qxE "ARG RUST_IMAGE=rust:${rust_version//./\\.}-bookworm$digest" "$dockerfile" \
  || fail "$dockerfile: ARG RUST_IMAGE must be rust:$rust_version-bookworm (Cargo.toml's rust-version, bookworm's glibc)"
grep -qxE "ARG RUNTIME_IMAGE=debian:bookworm-slim$digest" "$dockerfile" \
  || fail "$dockerfile: ARG RUNTIME_IMAGE must be debian:bookworm-slim (the glibc $deps_file states)"
torch_version=$(sed -n 's/^torch_version=\(.*\)/\1/p' scripts/bootstrap.sh)
grep -qxF "ARG TORCH_VERSION=$torch_version" <<<"$builder" \
  || fail "$dockerfile: ARG TORCH_VERSION must be $torch_version (scripts/bootstrap.sh's torch_version)"
libtorch=$(sed -n 's/^LIBTORCH = { value = "\([^"]*\)".*/\1/p' .cargo/config.toml)
grep -qF "/src/$libtorch/lib/libtorch_cpu.so" <<<"$builder" && grep -qxF "WORKDIR /src" <<<"$builder" \
  || fail "$dockerfile: the builder must install torch at /src/$libtorch (.cargo/config.toml's LIBTORCH) and build in /src"
# each RUN's shell command parses as /bin/sh (Debian's dash, the images' shell) would parse it
while IFS= read -r run; do
  command=$(sed -E 's/^RUN +//; s/^(--mount=[^ ]+ +)+//' <<<"$run")
  parse_error=$(sh -n -c "$command" 2>&1) || fail "$dockerfile: a RUN does not parse as sh: $parse_error: ${command:0:80}..."
done < <({ printf '%s\n' "$builder"; printf '%s\n' "$runtime"; } | grep -E '^RUN ')
if command -v hadolint >/dev/null 2>&1; then
  hadolint "$dockerfile" || fail "hadolint $dockerfile"
else
  log "hadolint not installed: Dockerfile lint skipped (the structure checks above ran)"
fi

# --- runtime-deps.txt against this machine's packages (Debian bookworm, as the base image) ------------------
allowed=() allowed_packages=() glibc_max="" glibcxx_max=""
while read -r kind package rest; do
  case "$kind" in
    "" | \#*) continue ;;
    glibc) glibc_max=$package; continue ;;
    glibcxx) glibcxx_max=$package; continue ;;
  esac
  read -r -a libs <<<"${rest%%#*}"
  allowed+=("${libs[@]}")
  [ "$kind" = host ] && continue
  allowed_packages+=("$package")
  if command -v dpkg >/dev/null 2>&1; then
    for lib in "${libs[@]}"; do
      owner=$(dpkg -S "*/$lib" 2>/dev/null | sed -n "s|^\([^:]*\):[^:]*: .*/$lib\$|\1|p" | sort -u | head -1)
      [ "$owner" = "$package" ] || fail "$deps_file: $lib is owned by '${owner:-no package}' here, not $package"
    done
  fi
done <"$deps_file"
[ -n "$glibc_max" ] && [ -n "$glibcxx_max" ] || fail "$deps_file: needs 'glibc VERSION' and 'glibcxx VERSION'"
host_glibc=$(ldd --version | sed -n '1s/.* \([0-9.]*\)$/\1/p')
[ "$host_glibc" = "$glibc_max" ] || log "note: this machine's glibc is $host_glibc, the image's $glibc_max"

# --- the layout ------------------------------------------------------------------------------------------------
work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill -KILL "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
chmod 0755 "$work"
root="$work/rootfs"
"$assemble" --profile debug --link hard "$root"

elf_count=0 unresolved=0 newest_glibc="" newest_glibcxx=""
while IFS= read -r -d '' file; do
  [ "$(LC_ALL=C head -c 4 "$file")" = $'\177ELF' ] || continue
  elf_count=$((elf_count + 1))
  headers=$(objdump -p "$file")
  for needed in $(awk '$1 == "NEEDED" { print $2 }' <<<"$headers"); do
    [ -e "$root$libdir/$needed" ] && continue
    [[ " ${allowed[*]} " == *" $needed "* ]] && continue
    fail "${file#"$root"}: needs $needed, neither in $libdir nor in $deps_file"
    unresolved=$((unresolved + 1))
  done
  newest_glibc=$(printf '%s\n' "$newest_glibc" $(grep -oE 'GLIBC_[0-9.]+' <<<"$headers" | sed 's/GLIBC_//') | sed '/^$/d' | sort -uV | tail -1)
  newest_glibcxx=$(printf '%s\n' "$newest_glibcxx" $(grep -oE 'GLIBCXX_[0-9.]+' <<<"$headers" | sed 's/GLIBCXX_//') | sed '/^$/d' | sort -uV | tail -1)
done < <(find "$root" -type f -print0)
[ "$elf_count" -ge "${#bins[@]}" ] || fail "only $elf_count ELF files in the layout"
log "$elf_count ELF files, NEEDED libraries resolved in $libdir or $deps_file ($unresolved unresolved)"
version_ok() { [ -z "$1" ] || [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1)" = "$2" ]; }
version_ok "$newest_glibc" "$glibc_max" || fail "a file needs GLIBC_$newest_glibc, the base image has $glibc_max"
version_ok "$newest_glibcxx" "$glibcxx_max" || fail "a file needs GLIBCXX_$newest_glibcxx, the base image has $glibcxx_max"
log "newest symbol versions needed: GLIBC_$newest_glibc (base $glibc_max), GLIBCXX_$newest_glibcxx (base $glibcxx_max)"

unreadable=$(find "$root" \( -type f ! -perm -o+r \) -o \( -type d ! -perm -o+rx \) | head -5)
[ -z "$unreadable" ] || fail "not readable by UID 65532 (other): $unreadable"
unsafe=$(find "$root" -type f \( -perm /6000 -o -perm -o+w \) | head -5)
[ -z "$unsafe" ] || fail "setuid/setgid or world-writable: $unsafe"

# --- running from the layout ------------------------------------------------------------------------------------
run_as=()
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null 2>&1; then
  run_as=(setpriv --reuid=65532 --regid=65532 --clear-groups --)
  user="UID/GID 65532"
else
  user="UID $(id -u) (not root: cannot switch to 65532)"
fi
scratch="$work/scratch"
mkdir -p "$scratch/tmp" "$scratch/data"
[ "${#run_as[@]}" -gt 0 ] && chown -R 65532:65532 "$scratch"
# what the image's environment would be, with the layout for /: PATH and LD_LIBRARY_PATH into it, HOME its
# read-only root (Kubernetes gives a user without a passwd entry HOME=/), TMPDIR the writable /tmp. It execs, so
# call it only in a subshell: $(in_image ...), or in_image ... & (then $! is the program's own pid).
in_image() {
  cd "$root" && exec "${run_as[@]}" env -i PATH="$root/usr/local/bin" LD_LIBRARY_PATH="$root$libdir" \
    HOME="$root" TMPDIR="$scratch/tmp" NO_COLOR=1 "$@"
}
snapshot() { find "$root" -printf '%p %s %T@ %m\n' | sort; }
before=$(snapshot)

for bin in "${bins[@]}"; do
  if out=$(in_image "$bin" --help 2>&1) && grep -q "Usage: $bin" <<<"$out"; then
    log "$bin --help: ok ($user)"
  elif [ "$bin" = adapterci-db ] && grep -q "usage: ADAPTERCI_DATABASE_URL=URL adapterci-db" <<<"$out"; then
    log "$bin (no argument): prints its usage ($user)"
  else
    fail "$bin --help from the layout: $(tail -5 <<<"$out")"
  fi
done
db_url="sqlite://$scratch/data/metadata.db?mode=rwc"
if out=$(in_image ADAPTERCI_DATABASE_URL="$db_url" adapterci-db migrate 2>&1) && grep -q '"applied_now"' <<<"$out"; then
  log "adapterci-db migrate (the chart's migration Job): ok"
else
  fail "adapterci-db migrate from the layout: $(tail -5 <<<"$out")"
fi
if out=$(in_image ADAPTERCI_DATABASE_URL="$db_url" adapterctl db status 2>&1) && grep -q "m20261126_000001_create_pipelines" <<<"$out"; then
  log "adapterctl db status (runs adapterci-db from PATH): ok"
else
  fail "adapterctl db status from the layout: $(tail -5 <<<"$out")"
fi

model=${ADAPTERCI_BASE_MODEL:-$repo/.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
if [ ! -f "$model" ]; then
  fail "no base model at $model for adapterd to start on (run scripts/bootstrap.sh)"
else
  mkdir -p "$work/models"
  ln "$(readlink -f "$model")" "$work/models/base.gguf" 2>/dev/null || cp "$(readlink -f "$model")" "$work/models/base.gguf"
  log_file="$scratch/adapterd.log"
  in_image adapterd --listen 127.0.0.1:0 --data-dir "$scratch/data/adapterd" --model "smollm2=$work/models/base.gguf" \
    >"$log_file" 2>&1 &
  server_pid=$!
  addr=""
  for _ in $(seq 1 1200); do # up to 2 minutes for a debug build to load the model
    addr=$(sed -e 's/\x1b\[[0-9;]*m//g' "$log_file" | sed -n 's/.*adapterd listening.*addr=\([0-9.]*:[0-9]*\).*/\1/p' | head -1)
    [ -n "$addr" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$addr" ]; then
    fail "adapterd from the layout did not start listening: $(tail -5 "$log_file")"
  else
    if health=$(curl -fsS --max-time 30 "http://$addr/healthz"); then
      log "adapterd ($user, clean environment) listening on $addr, /healthz: $health"
    else
      fail "adapterd from the layout: GET http://$addr/healthz failed"
    fi
    foreign=0
    while read -r path; do
      case "$path" in "$root"/*) continue ;; esac
      if ! command -v dpkg >/dev/null 2>&1; then # no package database: the file name must be an allowed library's
        name=$(basename "$path")
        for lib in "${allowed[@]}"; do [[ $name == "$lib"* ]] && continue 2; done
        fail "adapterd mapped $path, neither from the layout nor a library of $deps_file"
        foreign=$((foreign + 1))
        continue
      fi
      owner=$(dpkg -S "$path" 2>/dev/null || dpkg -S "${path#/usr}" 2>/dev/null || true)
      owner=${owner%%:*}
      if [ -z "$owner" ] || [[ " ${allowed_packages[*]} " != *" $owner "* ]]; then
        fail "adapterd mapped $path (package '${owner:-none}'), neither from the layout nor a package of $deps_file"
        foreign=$((foreign + 1))
      fi
    done < <(awk '$6 ~ /^\// && $6 ~ /\.so/ { print $6 }' "/proc/$server_pid/maps" | sort -u)
    log "shared objects adapterd mapped: $(awk '$6 ~ /\.so/ { print $6 }' "/proc/$server_pid/maps" | sort -u | grep -c "^$root/") from the layout, the rest from base packages ($foreign foreign)"
  fi
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 1 600); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$server_pid" 2>/dev/null; then
    fail "adapterd did not stop within 60 s of SIGTERM"
  else
    status=0
    wait "$server_pid" || status=$?
    [ "$status" = 0 ] && log "adapterd stopped on SIGTERM with status 0" || fail "adapterd exited with status $status on SIGTERM"
  fi
  server_pid=""
fi

after=$(snapshot)
[ "$before" = "$after" ] || fail "the layout changed while its binaries ran (the image's root is read-only): $(diff <(echo "$before") <(echo "$after") | head -5)"

if [ "$failures" -gt 0 ]; then
  log "$failures check(s) failed"
  exit 1
fi
log "ok: $(du -shL "$root" 2>/dev/null | cut -f1) layout (${#bins[@]} binaries, debug) checked"
