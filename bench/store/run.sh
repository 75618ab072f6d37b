#!/usr/bin/env bash
# Store benchmark: rbuild import / save / load / system check next to their nearest peers on
# the same data in the same run, best of $RUNS:
#   import  rbuild import DIR         vs  umoci insert (DIR -> new layer in an OCI layout)
#           (rbuild also unpacks the layer into layers/; gzip is single-threaded, umoci's pgzip
#           uses every core, so a zstd row shows the cost without gzip)
#   save    rbuild save -o X.tar      vs  skopeo copy oci:STORE:name docker-archive:X.tar
#   load    rbuild load -i X.tar      vs  skopeo copy docker-archive:X.tar oci:DIR:name
#           (rbuild also unpacks and verifies every layer; skopeo only copies blobs)
#   check   rbuild system check (re-hashes every blob), reported as MB/s
# Data: a busybox rootfs plus 64 MiB of incompressible data and 5,000 small files.
#
# Usage: bench/store/run.sh     (root; BENCH_DIR=/dev/shm/x to run on tmpfs; RUNS=3)
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=${BENCH_DIR:-/var/tmp/rbuild-bench-store}
RUNS=${RUNS:-3}
for tool in umoci skopeo python3; do
    command -v "$tool" >/dev/null || { echo "bench/store: $tool is missing (scripts/install-deps)" >&2; exit 1; }
done

cargo build --release -q -p rbuild
RB=$PWD/target/release/rbuild

rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

SRC=$WORK/rootfs
scripts/make-busybox-rootfs "$SRC" >/dev/null
mkdir -p "$SRC/data/small"
for i in 0 1 2 3; do head -c $((16 << 20)) /dev/urandom > "$SRC/data/random$i"; done
python3 - "$SRC/data/small" <<'PY'
import os, sys
d = sys.argv[1]
for i in range(5000):
    with open(os.path.join(d, f"f{i:05}.txt"), "w") as f:
        f.write(f"line {i}\n" * (i % 50 + 1))
PY
BYTES=$(du -sb "$SRC" | cut -f1)

now() { date +%s.%N; }
# best PREP CMD...: runs CMD $RUNS times (shell code PREP before each, untimed) and prints the
# best time.
best() {
    local prep=$1 best_t=""
    shift
    for _ in $(seq "$RUNS"); do
        eval "$prep"
        local t0 t1
        t0=$(now)
        "$@" >/dev/null 2>"$WORK/stderr" || { echo "bench/store: $* failed:" >&2; cat "$WORK/stderr" >&2; exit 1; }
        t1=$(now)
        best_t=$(python3 -c "a='$best_t'; b=$t1-$t0; print(b if a=='' else min(float(a), b))")
    done
    echo "$best_t"
}
mbps() { python3 -c "print(f'{$BYTES/1e6/$1:.1f}')"; }
ratio() { python3 -c "print(f'{$2/$1:.2f}')"; }

STORE=$WORK/store
t_import=$(best "rm -rf $STORE" "$RB" --root "$STORE" import "$SRC" bench:1)
"$RB" --root "$STORE" import "$SRC" bench:1 >/dev/null
t_import_zstd=$(best "rm -rf $WORK/store-zstd" "$RB" --root "$WORK/store-zstd" import --compression zstd "$SRC" bench:1)

umoci_import() {
    rm -rf "$WORK/umoci-layout"
    umoci init --layout "$WORK/umoci-layout"
    umoci new --image "$WORK/umoci-layout:t"
    umoci insert --image "$WORK/umoci-layout:t" "$SRC" /
}
t_umoci_import=$(best : umoci_import)

t_save=$(best : "$RB" --root "$STORE" save -o "$WORK/rbuild.tar" bench:1)
t_skopeo_save=$(best "rm -f $WORK/skopeo.tar" skopeo copy -q "oci:$STORE:bench:1" "docker-archive:$WORK/skopeo.tar:bench:1")

t_load=$(best "rm -rf $WORK/store2" "$RB" --root "$WORK/store2" load -i "$WORK/rbuild.tar")
t_skopeo_load=$(best "rm -rf $WORK/skopeo-oci" skopeo copy -q "docker-archive:$WORK/rbuild.tar" "oci:$WORK/skopeo-oci:bench:1")

t_check=$(best : "$RB" --root "$STORE" system check)
BLOB_BYTES=$(du -sb "$STORE/blobs" | cut -f1)

printf '%-8s %10s %10s %12s %10s %s\n' step rbuild_s peer_s rbuild_MB/s speedup peer
printf '%-8s %10.3f %10.3f %12s %10s %s\n' import "$t_import" "$t_umoci_import" "$(mbps "$t_import")" "$(ratio "$t_import" "$t_umoci_import")" "umoci insert"
printf '%-8s %10.3f %10.3f %12s %10s %s\n' import-z "$t_import_zstd" "$t_umoci_import" "$(mbps "$t_import_zstd")" "$(ratio "$t_import_zstd" "$t_umoci_import")" "umoci insert (gzip); rbuild with --compression zstd"
printf '%-8s %10.3f %10.3f %12s %10s %s\n' save "$t_save" "$t_skopeo_save" "$(mbps "$t_save")" "$(ratio "$t_save" "$t_skopeo_save")" "skopeo copy oci: -> docker-archive:"
printf '%-8s %10.3f %10.3f %12s %10s %s\n' load "$t_load" "$t_skopeo_load" "$(mbps "$t_load")" "$(ratio "$t_load" "$t_skopeo_load")" "skopeo copy docker-archive: -> oci: (no unpack)"
printf '%-8s %10.3f %10s %12s\n' check "$t_check" - "$(python3 -c "print(f'{$BLOB_BYTES/1e6/$t_check:.1f}')")"
echo "data: $((BYTES / 1000000)) MB rootfs; speedup = peer time / rbuild time (> 1 means rbuild is faster)"
