#!/usr/bin/env bash
# Benchmark of `modelship mirror` on loopback: builds the release binaries and the load
# generator (bench/loadgen, a crate of its own outside the workspace), installs Debian's
# nginx when missing, then runs bench/bench.py. Extra arguments go to bench.py (see
# `bench/run.sh --help`). Results land in bench/.out/ (git-ignored).
#
# `bench/run.sh --wrk` measures as a user would instead: wrk (Debian's, installed when
# missing) against the router and nginx's mirror in front of two nginx upstreams, nothing
# pinned, no priority raised, 3 rounds; only the router is built.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { echo "bench: $*" >&2; }

wrk_mode=false
for arg in "$@"; do if [[ $arg == --wrk ]]; then wrk_mode=true; fi; done

install_pkg() {
  [[ $(id -u) == 0 ]] || { log "$1 is missing: sudo apt-get install $2"; exit 1; }
  log "installing Debian's $2"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  install_pkg nginx nginx-light
fi
if $wrk_mode && ! command -v wrk >/dev/null; then
  install_pkg wrk wrk
fi
nginx="$(command -v nginx || echo /usr/sbin/nginx)"
command -v taskset >/dev/null || { log "taskset (util-linux) is needed"; exit 1; }

# MODELSHIP_BENCH_BIN_DIR: use the binaries there as they are (no build).
bin_dir="${MODELSHIP_BENCH_BIN_DIR:-}"
if [[ -z $bin_dir ]]; then
  target_dir="${CARGO_TARGET_DIR:-$repo/target}"
  bin_dir="$target_dir/release"
  log "building release binaries into $bin_dir"
  if $wrk_mode; then
    (cd "$repo" && cargo build --release -p modelship --bins)
  else
    (cd "$repo" && cargo build --release -p modelship -p model-server --bins)
    (cd "$repo/bench/loadgen" && cargo build --release --target-dir "$target_dir")
  fi
fi

# The machine is shared (builds, other tests): as root, run the benchmark in a session of
# its own whose scheduling group weighs as much as the kernel allows (autogroup nice -20),
# so that other work disturbs the measurements less. Every target gets the same treatment.
# Not in wrk mode, which measures what a user would see.
priority=()
if ! $wrk_mode && [[ $(id -u) == 0 && -w /proc/self/autogroup ]]; then
  priority=(setsid --wait bash -c 'echo -20 >/proc/self/autogroup && exec nice -n -20 "$@"' bench)
fi

exec "${priority[@]}" python3 "$repo/bench/bench.py" \
  --modelship "$bin_dir/modelship" \
  --model-server "$bin_dir/model-server" \
  --model "$repo/model-server/models/churn-v1.json" \
  --loadgen "$bin_dir/modelship-loadgen" --nginx "$nginx" "$@"
