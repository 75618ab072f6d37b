#!/usr/bin/env bash
# Union driver benchmark: kernel overlayfs vs rbuild's FUSE driver vs fuse-overlayfs, same
# layers, one run, drivers interleaved round by round (best of RBUILD_BENCH_ROUNDS, default 3).
# Rows: 20,000 create/stat/unlink; 1 GiB sequential write (with fsync) and read; a cold read
# of 1 GiB of lower-layer data; `tar -x` of a 10,000-file archive.
# Needs root, /dev/fuse and fuse-overlayfs. RBUILD_BENCH_DIR picks the scratch filesystem
# (default /var/tmp); about 2.5 GiB free space is needed. RBUILD_BENCH_TRACE=1 also counts the
# FUSE requests of every row (tracefs; slows the FUSE rows, so compare untraced times only).
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v fuse-overlayfs >/dev/null || { echo "fuse-overlayfs is not installed (apt-get install fuse-overlayfs)" >&2; exit 1; }
echo "kernel $(uname -r); FUSE passthrough needs >= 6.9; $(nproc) CPUs"
cargo nextest run --release -p rbuild-layerfs --test fuse_bench --run-ignored only --no-capture \
    2>&1 | grep -v '^\s*\(Compiling\|Finished\|Running\|Starting\|PASS\|START\|SLOW\)'
