#!/usr/bin/env bash
# Mounts that outlive the command: `run -d` (+ `rm -f`) and `mount` (+ `umount`) with the
# overlay driver and with the FUSE driver (a separate `rbuild __fuse-serve` process), plus a
# foreground `run --rm` under each driver (its FUSE server stays in-process), in one hyperfine
# run; prints FUSE/overlay ratios. Needs root, /dev/fuse, hyperfine and busybox-static.
# RBUILD_BIN picks the binary (default: target/release/rbuild, built if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v hyperfine >/dev/null || { echo "hyperfine is not installed" >&2; exit 1; }
BIN=${RBUILD_BIN:-target/release/rbuild}
[ -x "$BIN" ] || cargo build --release -p rbuild
BIN=$(realpath "$BIN")
WORK=$(mktemp -d /var/tmp/rbuild-bench-detached.XXXXXX)
cleanup() {
    "$BIN" --root "$WORK/store" rm -f $("$BIN" --root "$WORK/store" ps -aq) >/dev/null 2>&1 || true
    "$BIN" --root "$WORK/store" umount bb >/dev/null 2>&1 || true
    grep -o " $WORK/[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/rootfs/bin"
cp /bin/busybox "$WORK/rootfs/bin/"
for applet in sh true tail; do ln -s busybox "$WORK/rootfs/bin/$applet"; done
R="$BIN --root $WORK/store"
$R import "$WORK/rootfs" bb >/dev/null
echo "load before: $(cat /proc/loadavg)"
hyperfine --style basic --warmup 3 --runs "${RBUILD_BENCH_RUNS:-30}" --export-json "$WORK/r.json" \
    -n "run -d + rm -f, overlay" "id=\$($R --storage-driver overlay run -d bb tail -f /dev/null) && $R rm -f \$id >/dev/null" \
    -n "run -d + rm -f, fuse" "id=\$($R --storage-driver fuse run -d bb tail -f /dev/null) && $R rm -f \$id >/dev/null" \
    -n "mount + umount, overlay" "$R --storage-driver overlay mount bb >/dev/null && $R umount bb >/dev/null" \
    -n "mount + umount, fuse" "$R --storage-driver fuse mount bb >/dev/null && $R umount bb >/dev/null" \
    -n "run --rm true, overlay" "$R --storage-driver overlay run --rm bb true" \
    -n "run --rm true, fuse" "$R --storage-driver fuse run --rm bb true" >/dev/null
echo "load after: $(cat /proc/loadavg)"
python3 - "$WORK/r.json" <<'PY'
import json, sys
rows = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
for what in ["run -d + rm -f", "mount + umount", "run --rm true"]:
    o, f = rows[f"{what}, overlay"], rows[f"{what}, fuse"]
    print(f"{what:16} overlay {o['median']*1000:7.1f} ms   fuse {f['median']*1000:7.1f} ms   fuse/overlay {f['median']/o['median']:.2f}x (medians)")
PY
