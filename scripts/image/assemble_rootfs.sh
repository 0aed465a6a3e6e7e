#!/usr/bin/env bash
# Lays out, under OUT, the files the adapterci/adapterd image adds to its base image, as docker/rootfs.txt lists
# them: the binaries in /usr/local/bin and the torch wheel's libraries (with CUDA's, from the CUDA wheel) in one
# libdir. docker/Dockerfile's builder stage runs it (release build, files copied) and its runtime stage copies OUT
# whole; scripts/image/check_rootfs.sh runs it on the local debug build (hard links) and checks the result.
#
#   scripts/image/assemble_rootfs.sh [--profile debug|release] [--link hard|copy] [--site-packages DIR] OUT
#   scripts/image/assemble_rootfs.sh --print-cargo-bins     # `--bin NAME` for each binary, for cargo build
#   scripts/image/assemble_rootfs.sh --print-libdir         # the libdir (the image's LD_LIBRARY_PATH)
#
# Binaries come from ${CARGO_TARGET_DIR:-target}/<profile>/; the torch wheel from the site-packages of .venv (the
# one scripts/bootstrap.sh makes, and the one the Dockerfile makes at the same place). --link hard (the default)
# hard-links the files instead of copying gigabytes, falling back to a copy across file systems; --link copy
# copies them and makes them readable by everyone (the image runs as UID 65532).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
manifest="$repo/docker/rootfs.txt"

die() { printf 'assemble_rootfs: error: %s\n' "$*" >&2; exit 1; }

# --- the manifest --------------------------------------------------------------------------------------------
bins=() libdir="" torch_globs=() torch_skips=() nvidia_globs=() nvidia_skips=()
line_no=0
while IFS= read -r line || [ -n "$line" ]; do
  line_no=$((line_no + 1))
  line=${line%%#*}
  read -r -a words <<<"$line" || true
  [ "${#words[@]}" -eq 0 ] && continue
  [ "${#words[@]}" -eq 2 ] || die "$manifest:$line_no: expected 'RULE VALUE', got '${line}'"
  rule=${words[0]} value=${words[1]}
  case "$rule" in
    bin)
      [[ $value =~ ^[A-Za-z0-9_-]+$ ]] || die "$manifest:$line_no: bin '$value' is not a cargo binary name"
      bins+=("$value") ;;
    libdir)
      [[ $value == /* ]] || die "$manifest:$line_no: libdir '$value' must be absolute"
      [ -z "$libdir" ] || die "$manifest:$line_no: a second libdir"
      libdir=$value ;;
    torch) torch_globs+=("$value") ;;
    torch-skip) torch_skips+=("$value") ;;
    nvidia) nvidia_globs+=("$value") ;;
    nvidia-skip) nvidia_skips+=("$value") ;;
    *) die "$manifest:$line_no: unknown rule '$rule' (bin, libdir, torch, torch-skip, nvidia, nvidia-skip)" ;;
  esac
done <"$manifest"
[ "${#bins[@]}" -gt 0 ] || die "$manifest: no bin line"
[ -n "$libdir" ] || die "$manifest: no libdir line"

# --- arguments -----------------------------------------------------------------------------------------------
profile=debug link=hard site_packages="" out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --print-cargo-bins) for bin in "${bins[@]}"; do printf -- '--bin %s ' "$bin"; done; echo; exit 0 ;;
    --print-libdir) printf '%s\n' "$libdir"; exit 0 ;;
    --profile) profile=${2:?--profile needs debug or release}; shift 2 ;;
    --link) link=${2:?--link needs hard or copy}; shift 2 ;;
    --site-packages) site_packages=${2:?--site-packages needs a directory}; shift 2 ;;
    -*) die "unknown option '$1' (see the header of $0)" ;;
    *) [ -z "$out" ] || die "one OUT directory, got '$out' and '$1'"; out=$1; shift ;;
  esac
done
[ -n "$out" ] || die "usage: $0 [--profile debug|release] [--link hard|copy] [--site-packages DIR] OUT"
case "$profile" in debug | release) ;; *) die "--profile '$profile': debug or release" ;; esac
case "$link" in hard | copy) ;; *) die "--link '$link': hard or copy" ;; esac
if [ -z "$site_packages" ]; then
  for candidate in "$repo"/.venv/lib/python3*/site-packages; do
    [ -d "$candidate/torch/lib" ] && site_packages=$candidate
  done
  [ -n "$site_packages" ] || die "no torch in $repo/.venv (run scripts/bootstrap.sh, or pass --site-packages DIR)"
fi
[ -d "$site_packages/torch/lib" ] || die "$site_packages/torch/lib: not a directory (is torch installed there?)"
target_dir=${CARGO_TARGET_DIR:-$repo/target}
bin_dir="$target_dir/$profile"
if [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then die "$out: exists and is not empty"; fi

# --- placing files -------------------------------------------------------------------------------------------
place() { # SOURCE DEST MODE
  local source=$1 dest=$2 mode=$3
  mkdir -p "$(dirname "$dest")"
  if [ "$link" = hard ] && ln "$source" "$dest" 2>/dev/null; then
    return 0
  fi
  cp "$source" "$dest"
  chmod "$mode" "$dest"
}
matches_any() { # NAME GLOB...
  local name=$1 glob
  shift
  for glob in "$@"; do
    # shellcheck disable=SC2053 # the manifest's value is a glob
    [[ $name == $glob ]] && return 0
  done
  return 1
}

mkdir -p "$out"
chmod 0755 "$out"
for bin in "${bins[@]}"; do
  [ -x "$bin_dir/$bin" ] || die "$bin_dir/$bin: not built (cargo build $([ "$profile" = release ] && echo '--release ')--bin $bin)"
  place "$bin_dir/$bin" "$out/usr/local/bin/$bin" 0755
done

mkdir -p "$out$libdir"
declare -A placed_from=()
add_libs() { # DIR GLOBS-NAME SKIPS-NAME
  local dir=$1 file name
  local -n globs=$2 skips=$3
  for file in "$dir"/*; do
    [ -f "$file" ] || continue
    name=$(basename "$file")
    matches_any "$name" "${globs[@]}" || continue
    [ "${#skips[@]}" -gt 0 ] && matches_any "$name" "${skips[@]}" && continue
    if [ -n "${placed_from[$name]:-}" ]; then
      die "$name: in both ${placed_from[$name]} and $dir (libdir is flat)"
    fi
    placed_from[$name]=$dir
    place "$file" "$out$libdir/$name" 0644
  done
}
add_libs "$site_packages/torch/lib" torch_globs torch_skips
[ -n "${placed_from[libtorch_cpu.so]:-}" ] || die "$site_packages/torch/lib has no libtorch_cpu.so"
if [ -d "$site_packages/nvidia" ]; then
  for dir in "$site_packages"/nvidia/*/lib; do
    [ -d "$dir" ] && add_libs "$dir" nvidia_globs nvidia_skips
  done
fi
# a copy is made readable by all here; a hard link keeps its source's mode (check_rootfs.sh checks it)
[ "$link" = copy ] && chmod -R a+rX "$out"
printf 'assemble_rootfs: %s: %d binaries (%s) and %d libraries in %s\n' \
  "$out" "${#bins[@]}" "$profile" "${#placed_from[@]}" "$libdir" >&2
