#!/usr/bin/env bash
# Registry-shared build cache benchmark: a CI runner with an EMPTY store builds a Dockerfile whose
# steps are expensive. Compared in one run, each from a fresh store/storage (prepared outside the
# timing, with the base image already pulled):
#
#   rbuild-nocache     rbuild build, steps executed (no shared cache)
#   rbuild-cachefrom   rbuild build --cache-from REG/cache (steps reused, layers pulled)
#   rbuild-pull        rbuild pull of the finished image (same bytes moved, but every layer is
#                      also unpacked; a cached build fetches blobs and unpacks none)
#   buildah-cachefrom  buildah build --layers --cache-from REG/bcache (when buildah is installed)
#
# Usage: bench/cache/run.sh   (root; RUNS=5 BENCH_DIR=/var/tmp/rbuild-bench-cache to change)
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=${BENCH_DIR:-/var/tmp/rbuild-bench-cache}
RUNS=${RUNS:-5}
for tool in hyperfine python3 /usr/bin/docker-registry; do
    command -v "$tool" >/dev/null || { echo "bench/cache: $tool is missing (scripts/install-deps)" >&2; exit 1; }
done

cargo build --release -q --bin rbuild
RB="$PWD/target/release/rbuild"

REG_PID=
cleanup() {
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
    grep -o " $WORK[^ ]*" /proc/self/mountinfo 2>/dev/null | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done || true
    rm -rf "$WORK"
}
cleanup
mkdir -p "$WORK/reg"
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
HOST=127.0.0.1:$PORT
cat > "$WORK/reg/config.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/reg/data}, delete: {enabled: true}}
http: {addr: $HOST}
EOF
/usr/bin/docker-registry serve "$WORK/reg/config.yml" >"$WORK/reg/log" 2>&1 &
REG_PID=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done

echo "preparing the base image and the context in $WORK"
scripts/make-busybox-rootfs "$WORK/rootfs" >/dev/null
BASE=$HOST/lib/busybox:1
$RB --root "$WORK/seed" import --change 'CMD ["sh"]' "$WORK/rootfs" "$BASE" >/dev/null
$RB --root "$WORK/seed" push "$BASE" >/dev/null 2>&1
mkdir -p "$WORK/ctx"
# Steps that cost CPU time and produce 2 layers (24 MiB of incompressible data, 3000 files).
cat > "$WORK/ctx/Dockerfile" <<EOF
FROM $BASE
RUN i=0; while [ \$i -lt 300000 ]; do i=\$((i+1)); done; dd if=/dev/urandom of=/big bs=1M count=24 2>/dev/null
RUN mkdir /many && cd /many && i=0; while [ \$i -lt 3000 ]; do echo \$i > f\$i; i=\$((i+1)); done
ENV DONE=1
EOF
$RB --root "$WORK/seed" build -q --cache-to "$HOST/team/cache" -t "$HOST/team/app:1" "$WORK/ctx" >/dev/null 2>"$WORK/export.log"
$RB --root "$WORK/seed" push "$HOST/team/app:1" >/dev/null 2>&1

fresh() { echo "rm -rf $WORK/r && $RB --root $WORK/r pull $BASE >/dev/null 2>&1"; }
CMDS=(
    --prepare "$(fresh)" -n rbuild-nocache "$RB --root $WORK/r build -q $WORK/ctx"
    --prepare "$(fresh)" -n rbuild-cachefrom "$RB --root $WORK/r build -q --cache-from $HOST/team/cache $WORK/ctx"
    --prepare "rm -rf $WORK/r" -n rbuild-pull "$RB --root $WORK/r pull $HOST/team/app:1"
)
if command -v buildah >/dev/null; then
    BH="buildah --root $WORK/bh/root --runroot $WORK/bh/run --storage-driver overlay"
    BHB="$BH build -q --layers --tls-verify=false --isolation chroot"
    $BHB --cache-to "$HOST/team/bcache" -f "$WORK/ctx/Dockerfile" "$WORK/ctx" >/dev/null 2>&1 ||
        echo "buildah could not export its cache; skipping it" >&2
    BFRESH="$BH rm -a >/dev/null 2>&1; $BH rmi -a -f >/dev/null 2>&1; $BH pull --tls-verify=false docker://$BASE >/dev/null 2>&1"
    CMDS+=(--prepare "$BFRESH" -n buildah-cachefrom "$BHB --cache-from $HOST/team/bcache -f $WORK/ctx/Dockerfile $WORK/ctx")
fi
hyperfine -r "$RUNS" -w 1 --export-json "$WORK/result.json" "${CMDS[@]}" >/dev/null
python3 - "$WORK/result.json" <<'PY'
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
base = r["rbuild-cachefrom"]["median"]
print(f"{'scenario':<20} {'median':>9} {'ratio to rbuild-cachefrom':>26}")
for name, x in r.items():
    print(f"{name:<20} {x['median']*1000:8.0f}ms {x['median']/base:25.2f}x")
PY
