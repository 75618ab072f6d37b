#!/usr/bin/env bash
# Layer writer and applier benchmark: rbuild-layerfs next to `tar | gzip`, `tar | zstd` and
# umoci (repack = its writer, unpack = its applier) on the same data, in the same run.
#
# Data sets: 256 MiB of incompressible data (4 x 64 MiB from /dev/urandom) and 30,000 small
# text-like files. Prints seconds, MB/s (file data), files/s and the ratios the targets use:
#   writer  >= 0.8 x its compressor alone (same settings, same tar stream)
#   applier >= 2 x `umoci unpack` (of umoci's own layer blob, which rbuild then also applies)
#
# Usage: bench/layers/run.sh            (root; BENCH_DIR=... to move the scratch space)
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=${BENCH_DIR:-/var/tmp/rbuild-bench-layers}
SMALL_FILES=${SMALL_FILES:-30000}
for tool in umoci gzip zstd tar python3; do
    command -v "$tool" >/dev/null || { echo "bench/layers: $tool is missing (scripts/install-deps)" >&2; exit 1; }
done

cargo build --release -q -p rbuild-layerfs --example layer_bench
BIN=$PWD/target/release/examples/layer_bench

rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT

now() { echo "$EPOCHREALTIME"; }
elapsed() { python3 -c "print(f'{$2 - $1:.4f}')"; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

declare -A DATA_BYTES FILES
printf 'generating data sets in %s\n' "$WORK"
mkdir -p "$WORK/data/big"
for i in 0 1 2 3; do head -c 64M /dev/urandom >"$WORK/data/big/blob$i.bin"; done
"$BIN" gen-small "$WORK/data/small" "$SMALL_FILES"
for set in big small; do
    DATA_BYTES[$set]=$(du -sb --apparent-size "$WORK/data/$set" | cut -f1)
    FILES[$set]=$(find "$WORK/data/$set" -type f | wc -l)
done
sync

ROWS=()
row() { # set tool seconds [note]
    local set=$1 tool=$2 secs=$3 note=${4:-}
    local mbs fps
    mbs=$(python3 -c "print(f'{${DATA_BYTES[$set]} / 1e6 / $secs:.1f}')")
    fps=$(python3 -c "print(f'{${FILES[$set]} / $secs:.0f}')")
    ROWS+=("$(printf '%-6s %-34s %9s %9s %10s  %s' "$set" "$tool" "$secs" "$mbs" "$fps" "$note")")
    printf '%s\n' "${ROWS[-1]}"
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }

SUMMARY=()
printf '%-6s %-34s %9s %9s %10s\n' set tool seconds MB/s files/s
for set in big small; do
    data=$WORK/data/$set
    out=$WORK/out-$set
    mkdir -p "$out"

    # --- writer -------------------------------------------------------------------------------
    secs=$("$BIN" write "$data" none "$out/layer.tar" | field seconds)
    row "$set" "rbuild write (tar only)" "$secs"
    for comp in gzip zstd; do
        w=$("$BIN" write "$data" "$comp" "$out/layer.$comp" | field seconds)
        c=$("$BIN" compress "$out/layer.tar" "$comp" | field seconds)
        row "$set" "rbuild write $comp" "$w"
        row "$set" "  its compressor alone ($comp)" "$c"
        SUMMARY+=("$set: writer/$comp-compressor speed = $(ratio "$c" "$w") (target >= 0.80)")
    done
    t0=$(now); tar -C "$data" -cf - . | gzip -6 >"$out/peer.tar.gz"; t1=$(now)
    row "$set" "tar | gzip -6" "$(elapsed "$t0" "$t1")"
    t0=$(now); tar -C "$data" -cf - . | zstd -3 -T0 -q -c >"$out/peer.tar.zst"; t1=$(now)
    row "$set" "tar | zstd -3 -T0" "$(elapsed "$t0" "$t1")"

    # umoci repack: an empty image, its bundle filled with the data, repacked as a new layer.
    oci=$out/oci
    umoci init --layout "$oci"
    umoci new --image "$oci:empty"
    umoci unpack --image "$oci:empty" "$out/bundle" >/dev/null
    cp -a "$data/." "$out/bundle/rootfs/"
    sync
    t0=$(now); umoci repack --image "$oci:$set" "$out/bundle" >/dev/null; t1=$(now)
    row "$set" "umoci repack" "$(elapsed "$t0" "$t1")"
    rm -rf "$out/bundle"

    # --- applier ------------------------------------------------------------------------------
    t0=$(now); umoci unpack --image "$oci:$set" "$out/umoci-bundle" >/dev/null; t1=$(now)
    umoci_secs=$(elapsed "$t0" "$t1")
    row "$set" "umoci unpack" "$umoci_secs"
    rm -rf "$out/umoci-bundle"
    umoci_blob=$(python3 - "$oci" "$set" <<'PY'
import json, sys
oci, tag = sys.argv[1], sys.argv[2]
index = json.load(open(f"{oci}/index.json"))
desc = next(m for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
manifest = json.load(open(f"{oci}/blobs/sha256/{desc['digest'].split(':')[1]}"))
print(f"{oci}/blobs/sha256/{manifest['layers'][-1]['digest'].split(':')[1]}")
PY
)
    a=$("$BIN" apply "$umoci_blob" "$out/apply-umoci" | field seconds)
    row "$set" "rbuild apply (umoci's gzip blob)" "$a"
    rm -rf "$out/apply-umoci"
    SUMMARY+=("$set: umoci unpack / rbuild apply, same blob = $(ratio "$umoci_secs" "$a")x (target >= 2)")
    for comp in gzip zstd; do
        a=$("$BIN" apply "$out/layer.$comp" "$out/apply-$comp" | field seconds)
        row "$set" "rbuild apply ($comp, own blob)" "$a"
        rm -rf "$out/apply-$comp"
    done
    mkdir -p "$out/tar-x"
    t0=$(now); tar -C "$out/tar-x" -xzf "$out/peer.tar.gz"; t1=$(now)
    row "$set" "tar -xzf" "$(elapsed "$t0" "$t1")"
    rm -rf "$out"
done

printf '\nsizes: big %s bytes in %s files, small %s bytes in %s files\n' \
    "${DATA_BYTES[big]}" "${FILES[big]}" "${DATA_BYTES[small]}" "${FILES[small]}"
printf '%s\n' "${SUMMARY[@]}"
