#!/usr/bin/env bash
# Layer writer and applier benchmark: rbuild-layerfs next to `tar | gzip`, `tar | zstd` and
# umoci (repack = its writer, unpack = its applier) on the same data, in the same run.
#
# Data sets: 256 MiB of incompressible data (4 x 64 MiB from /dev/urandom) and 30,000 small
# text-like files. Prints the best of $RUNS runs: seconds, MB/s of file data, files/s, and
# the ratios the targets use:
#   writer  >= 0.8 x its compressor alone (same settings, same tar stream, output discarded)
#   applier >= 2 x `umoci unpack` (on umoci's own layer blob, which rbuild then also applies)
#
# Nothing is deleted until the end: on ext4 without a journal, inode allocation right after
# mass deletions is slow (recently_deleted() scans) and would penalise whoever runs next.
#
# Usage: bench/layers/run.sh     (root; BENCH_DIR=/dev/shm/x to run on tmpfs; RUNS=3)
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=${BENCH_DIR:-/var/tmp/rbuild-bench-layers}
SMALL_FILES=${SMALL_FILES:-30000}
RUNS=${RUNS:-3}
for tool in umoci gzip zstd tar python3; do
    command -v "$tool" >/dev/null || { echo "bench/layers: $tool is missing (scripts/install-deps)" >&2; exit 1; }
done

cargo build --release -q -p rbuild-layerfs --example layer_bench
BIN=$PWD/target/release/examples/layer_bench

rm -rf "$WORK"
mkdir -p "$WORK"
trap 'rm -rf "$WORK"' EXIT
# A new, unused path below $WORK/run (works inside command substitutions).
fresh() { mktemp -u "$WORK/run/XXXXXXXXXX"; }
mkdir -p "$WORK/run"

declare -A DATA_BYTES FILES
printf 'data sets in %s (%s)\n' "$WORK" "$(stat -f -c %T "$WORK")"
mkdir -p "$WORK/data/big"
for i in 0 1 2 3; do head -c 64M /dev/urandom >"$WORK/data/big/blob$i.bin"; done
"$BIN" gen-small "$WORK/data/small" "$SMALL_FILES"
for set in big small; do
    DATA_BYTES[$set]=$(du -sb --apparent-size "$WORK/data/$set" | cut -f1)
    FILES[$set]=$(find "$WORK/data/$set" -type f | wc -l)
done

# Seconds of one run of "$@" (a shell function or command), after flushing dirty pages.
timed() {
    sync
    local t0=$EPOCHREALTIME
    "$@" >/dev/null
    python3 -c "print(f'{$EPOCHREALTIME - $t0:.4f}')"
}
# Best of $RUNS runs.
best() {
    local b=""
    for _ in $(seq "$RUNS"); do
        local s
        s=$(timed "$@")
        if [[ -z $b ]] || python3 -c "import sys; sys.exit(0 if $s < $b else 1)"; then b=$s; fi
    done
    echo "$b"
}
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
row() { # set tool seconds
    local set=$1 tool=$2 secs=$3
    printf '%-6s %-36s %9s %9s %10s\n' "$set" "$tool" "$secs" \
        "$(python3 -c "print(f'{${DATA_BYTES[$set]} / 1e6 / $secs:.1f}')")" \
        "$(python3 -c "print(f'{${FILES[$set]} / $secs:.0f}')")"
}

rb_write() { "$BIN" write "$1" "$2" /dev/null; }
rb_compress() { "$BIN" compress "$1" "$2"; }
rb_apply() { "$BIN" apply "$1" "$(fresh)"; }
tar_gzip() { tar -C "$1" -cf - . | gzip -6 >/dev/null; }
tar_zstd() { tar -C "$1" -cf - . | zstd -3 -T0 -q -c >/dev/null; }
tar_x() { local d; d=$(fresh); mkdir -p "$d"; tar -C "$d" -xzf "$1"; }
umoci_unpack() { umoci unpack --image "$1" "$(fresh)"; }
umoci_repack() { # layout set: a fresh bundle of the empty image, filled, then repacked (timed part)
    local b; b=$(fresh)
    umoci unpack --image "$1:empty" "$b" >/dev/null
    cp -a "$3/." "$b/rootfs/"
    sync
    local t0=$EPOCHREALTIME
    umoci repack --image "$1:$2" "$b" >/dev/null
    python3 -c "print(f'{$EPOCHREALTIME - $t0:.4f}')"
}
layer_blob() { # layout tag -> path of the top layer blob
    python3 - "$1" "$2" <<'PY'
import json, sys
oci, tag = sys.argv[1], sys.argv[2]
index = json.load(open(f"{oci}/index.json"))
desc = next(m for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
manifest = json.load(open(f"{oci}/blobs/sha256/{desc['digest'].split(':')[1]}"))
print(f"{oci}/blobs/sha256/{manifest['layers'][-1]['digest'].split(':')[1]}")
PY
}

SUMMARY=()
printf '%-6s %-36s %9s %9s %10s   (best of %s)\n' set tool seconds MB/s files/s "$RUNS"
for set in big small; do
    data=$WORK/data/$set
    out=$WORK/out-$set
    mkdir -p "$out"

    # --- writer: timed runs discard the blob; one more run keeps it for the applier ----------
    "$BIN" write "$data" none "$out/layer.tar" >/dev/null
    row "$set" "rbuild write, plain tar" "$(best rb_write "$data" none)"
    for comp in gzip zstd; do
        w=$(best rb_write "$data" "$comp")
        c=$(best rb_compress "$out/layer.tar" "$comp")
        row "$set" "rbuild write $comp" "$w"
        row "$set" "  its compressor alone ($comp)" "$c"
        SUMMARY+=("$set: rbuild writer speed / its $comp compressor's = $(ratio "$c" "$w") (target >= 0.80)")
        "$BIN" write "$data" "$comp" "$out/layer.$comp" >/dev/null
    done
    row "$set" "tar | gzip -6" "$(best tar_gzip "$data")"
    row "$set" "tar | zstd -3 -T0" "$(best tar_zstd "$data")"
    oci=$out/oci
    umoci init --layout "$oci"
    umoci new --image "$oci:empty"
    r=""
    for _ in $(seq "$RUNS"); do
        s=$(umoci_repack "$oci" "$set" "$data")
        if [[ -z $r ]] || python3 -c "import sys; sys.exit(0 if $s < $r else 1)"; then r=$s; fi
    done
    row "$set" "umoci repack" "$r"

    # --- applier: umoci unpack and rbuild apply of the same blob, alternating ----------------
    blob=$(layer_blob "$oci" "$set")
    u=""; a=""
    for _ in $(seq "$RUNS"); do
        s=$(timed umoci_unpack "$oci:$set")
        if [[ -z $u ]] || python3 -c "import sys; sys.exit(0 if $s < $u else 1)"; then u=$s; fi
        s=$(timed rb_apply "$blob")
        if [[ -z $a ]] || python3 -c "import sys; sys.exit(0 if $s < $a else 1)"; then a=$s; fi
    done
    row "$set" "umoci unpack" "$u"
    row "$set" "rbuild apply (umoci's gzip blob)" "$a"
    SUMMARY+=("$set: umoci unpack time / rbuild apply time, same blob = $(ratio "$u" "$a")x (target >= 2)")
    row "$set" "tar -xzf (umoci's gzip blob)" "$(best tar_x "$blob")"
    for comp in gzip zstd; do
        row "$set" "rbuild apply ($comp, own blob)" "$(best rb_apply "$out/layer.$comp")"
    done
done

printf '\nsizes: big %s bytes in %s files, small %s bytes in %s files; %s CPUs, load %s\n' \
    "${DATA_BYTES[big]}" "${FILES[big]}" "${DATA_BYTES[small]}" "${FILES[small]}" \
    "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${SUMMARY[@]}"
