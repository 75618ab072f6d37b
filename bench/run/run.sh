#!/usr/bin/env bash
# Container start-to-exit latency: `rbuild run --rm IMAGE true` against `runc run` of a prepared
# bundle (and docker/podman when installed), median of N runs (default 50) measured by hyperfine.
# Usage: bench/run/run.sh [RUNS]     (needs root; builds rbuild in release mode)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-50}
command -v hyperfine >/dev/null || { echo "error: hyperfine not installed (scripts/install-deps)" >&2; exit 1; }
cargo build --release --bin rbuild >&2
rbuild=$PWD/target/release/rbuild
work=$(mktemp -d /tmp/rbuild-bench-run-XXXXXX)
cleanup() { "$rbuild" --root "$work/store" ps -aq 2>/dev/null | xargs -r "$rbuild" --root "$work/store" rm -f >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

scripts/make-busybox-rootfs "$work/rootfs" >/dev/null
"$rbuild" --root "$work/store" import --change 'CMD ["sh"]' "$work/rootfs" bench-busybox >/dev/null
"$rbuild" --root "$work/store" run --rm bench-busybox true   # warm: layers unpacked, caches hot

declare -A median
measure() { # name command...
  local name=$1; shift
  hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/$name.json" "$*" >/dev/null 2>&1 || {
    echo "$name: failed to run: $*" >&2; return 1; }
  median[$name]=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.2f" % (r["median"]*1000))' "$work/$name.json")
}

measure rbuild "$rbuild --root $work/store run --rm bench-busybox true"

# The same with the store on tmpfs: separates the container work from the disk's metadata and
# overlay-unmount sync costs (an overlay unmount syncs the whole upper filesystem).
if [ -d /dev/shm ]; then
  shm=$(mktemp -d /dev/shm/rbuild-bench-run-XXXXXX)
  trap 'cleanup; rm -rf "$shm"' EXIT
  "$rbuild" --root "$shm" import --change 'CMD ["sh"]' "$work/rootfs" bench-busybox >/dev/null
  "$rbuild" --root "$shm" run --rm bench-busybox true
  measure rbuild-tmpfs "$rbuild --root $shm run --rm bench-busybox true"
fi

if command -v runc >/dev/null; then
  mkdir -p "$work/bundle"
  cp -a "$work/rootfs" "$work/bundle/rootfs"
  (cd "$work/bundle" && runc spec)
  python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["true"]
json.dump(c, open(p, "w"))
PY
  measure runc "runc run --bundle $work/bundle rbuild-bench-$$"
fi
command -v docker >/dev/null && docker image inspect busybox >/dev/null 2>&1 && measure docker "docker run --rm busybox true"
command -v podman >/dev/null && podman image exists busybox 2>/dev/null && measure podman "podman run --rm busybox true"

echo "start-to-exit of 'true', median of $runs runs (load average: $(cut -d' ' -f1-3 /proc/loadavg)):"
for k in "${!median[@]}"; do printf "  %-8s %8s ms\n" "$k" "${median[$k]}"; done
for k in "${!median[@]}"; do
  [ "$k" = rbuild ] && continue
  python3 -c "import sys; print('  %s / rbuild = %.2fx' % (sys.argv[1], float(sys.argv[2]) / float(sys.argv[3])))" "$k" "${median[$k]}" "${median[rbuild]}"
  [ -n "${median[rbuild-tmpfs]:-}" ] && [ "$k" != rbuild-tmpfs ] && python3 -c "import sys; print('  %s / rbuild-tmpfs = %.2fx' % (sys.argv[1], float(sys.argv[2]) / float(sys.argv[3])))" "$k" "${median[$k]}" "${median[rbuild-tmpfs]}"
done
python3 -c "import sys; m=float(sys.argv[1]); print('  target <= 15 ms: %s' % ('met' if m <= 15 else 'NOT met'))" "${median[rbuild]}"
