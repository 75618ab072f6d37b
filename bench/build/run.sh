#!/usr/bin/env bash
# Build benchmark: the same Dockerfiles built by rbuild and by the peers installed here (buildah,
# podman, docker/BuildKit when a daemon answers), in one run, each with its own scratch storage.
#
# Scenarios (the issue's targets in brackets):
#   cold6     a cold 6-step build (--no-cache)                 [rbuild <= 0.5 x fastest peer]
#   cached6   the same build again, fully cached                [rbuild < 30 ms]
#   run-big   RUN changing one file on a 30,000-file base       [as fast as run-small]
#   run-small RUN changing one file on a 300-file base
#   add256    ADD of a 256 MiB context (--no-cache)             [<= 0.5 x BuildKit]
#
# Usage: bench/build/run.sh   (root; RUNS=5 BENCH_DIR=/var/tmp/rbuild-bench-build to change)
# Peers: apt-get install buildah (podman likewise); missing peers are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=${BENCH_DIR:-/var/tmp/rbuild-bench-build}
RUNS=${RUNS:-5}
for tool in hyperfine python3; do
    command -v "$tool" >/dev/null || { echo "bench/build: $tool is missing (scripts/install-deps)" >&2; exit 1; }
done

cargo build --release -q --bin rbuild
RB="$PWD/target/release/rbuild --root $WORK/rbuild"

cleanup() {
    # Unmount anything a peer left below WORK, then remove it.
    { grep -o " $WORK[^ ]*" /proc/self/mountinfo 2>/dev/null || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$WORK"
}
cleanup
mkdir -p "$WORK"
trap cleanup EXIT

echo "preparing base images and contexts in $WORK"
scripts/make-busybox-rootfs "$WORK/rootfs" >/dev/null
mkdir -p "$WORK/ctx/cold/files" "$WORK/ctx/big/data" "$WORK/ctx/small/data" "$WORK/ctx/add256"
for i in $(seq 1 20); do echo "file $i" > "$WORK/ctx/cold/files/f$i.txt"; done
python3 - "$WORK/ctx" <<'PY'
import os, sys
root = sys.argv[1]
for name, n in (("big", 30000), ("small", 300)):
    d = os.path.join(root, name, "data")
    for i in range(n):
        sub = os.path.join(d, f"d{i // 1000}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i}.txt"), "w") as f:
            f.write(f"{i}\n")
PY
for i in 0 1 2 3; do head -c 64M /dev/urandom > "$WORK/ctx/add256/blob$i.bin"; done

cat > "$WORK/ctx/cold/Dockerfile" <<'EOF'
ARG BASE=busybox
FROM ${BASE}
ENV APP=/app
WORKDIR /app
COPY files/ ./files/
RUN echo built > /app/out
CMD ["cat", "/app/out"]
EOF
for name in big small; do
    printf 'ARG BASE=busybox\nFROM ${BASE}\nCOPY data/ /data/\n' > "$WORK/ctx/$name/Dockerfile"
done
cat > "$WORK/ctx/onefile.Dockerfile" <<'EOF'
ARG BASE=base-big
FROM ${BASE}
RUN echo changed > /data/d0/f1.txt
EOF
printf 'ARG BASE=busybox\nFROM ${BASE}\nADD . /ctx/\n' > "$WORK/ctx/add256.Dockerfile"

# --- rbuild -------------------------------------------------------------------------------------
$RB import --change 'CMD ["sh"]' "$WORK/rootfs" busybox >/dev/null
$RB build -q -t base-big "$WORK/ctx/big" >/dev/null
$RB build -q -t base-small "$WORK/ctx/small" >/dev/null

declare -A MEAN
measure() { # key command...
    local key=$1; shift
    local json="$WORK/h-$key.json"
    hyperfine -N --runs "$RUNS" --warmup 1 --export-json "$json" "$*" >/dev/null 2>&1 || {
        # -N (no shell) fails for commands that need one; retry through the shell.
        hyperfine --runs "$RUNS" --warmup 1 --export-json "$json" "$*" >/dev/null
    }
    MEAN[$key]=$(python3 -c "import json;print(f\"{json.load(open('$json'))['results'][0]['mean']:.4f}\")")
    printf '  %-28s %8ss\n' "$key" "${MEAN[$key]}"
}

echo "rbuild ($($RB --version 2>/dev/null || echo dev))"
measure rbuild-cold6 "$RB build -q --no-cache -t cold $WORK/ctx/cold"
$RB build -q -t cold "$WORK/ctx/cold" >/dev/null
measure rbuild-cached6 "$RB build -q -t cold $WORK/ctx/cold"
measure rbuild-run-big "$RB build -q --no-cache --build-arg BASE=base-big -f $WORK/ctx/onefile.Dockerfile $WORK/ctx/cold"
measure rbuild-run-small "$RB build -q --no-cache --build-arg BASE=base-small -f $WORK/ctx/onefile.Dockerfile $WORK/ctx/cold"
measure rbuild-add256-gzip "$RB build -q --no-cache -f $WORK/ctx/add256.Dockerfile $WORK/ctx/add256"
measure rbuild-add256-zstd "$RB build -q --no-cache --compression zstd -f $WORK/ctx/add256.Dockerfile $WORK/ctx/add256"

# --- buildah / podman ---------------------------------------------------------------------------
peer_bench() { # name "command with its storage flags" build-subcommand
    local name=$1 cmd=$2 sub=$3 ctr
    echo "$name ($($cmd --version 2>/dev/null | head -n1))"
    ctr=$($cmd from scratch)
    $cmd copy -q "$ctr" "$WORK/rootfs" / >/dev/null
    $cmd config --cmd sh "$ctr"
    $cmd commit -q "$ctr" busybox >/dev/null
    $cmd rm "$ctr" >/dev/null
    local b="$cmd $sub --layers --network host -q"
    $b -t base-big "$WORK/ctx/big" >/dev/null
    $b -t base-small "$WORK/ctx/small" >/dev/null
    measure "$name-cold6" "$b --no-cache -t cold $WORK/ctx/cold"
    $b -t cold "$WORK/ctx/cold" >/dev/null
    measure "$name-cached6" "$b -t cold $WORK/ctx/cold"
    measure "$name-run-big" "$b --no-cache --build-arg BASE=base-big -f $WORK/ctx/onefile.Dockerfile $WORK/ctx/cold"
    measure "$name-run-small" "$b --no-cache --build-arg BASE=base-small -f $WORK/ctx/onefile.Dockerfile $WORK/ctx/cold"
    measure "$name-add256" "$b --no-cache -f $WORK/ctx/add256.Dockerfile $WORK/ctx/add256"
}
PEERS=()
if command -v buildah >/dev/null; then
    peer_bench buildah "buildah --root $WORK/buildah/root --runroot $WORK/buildah/run --storage-driver overlay" bud
    PEERS+=(buildah)
fi
if command -v podman >/dev/null; then
    echo "podman: skipped (build it with buildah's storage: same engine); install and extend if wanted"
fi
if docker info >/dev/null 2>&1; then
    echo "docker: a daemon answers, but this script does not drive it yet"
fi

# --- summary ------------------------------------------------------------------------------------
echo
printf '%-10s %12s' scenario rbuild
for p in "${PEERS[@]}"; do printf ' %12s %10s' "$p" "ratio"; done
echo
for s in cold6 cached6 run-big run-small; do
    printf '%-10s %11ss' "$s" "${MEAN[rbuild-$s]}"
    for p in "${PEERS[@]}"; do
        printf ' %11ss %9sx' "${MEAN[$p-$s]}" "$(python3 -c "print(f'{${MEAN[rbuild-$s]} / ${MEAN[$p-$s]}:.2f}')")"
    done
    echo
done
for c in gzip zstd; do
    printf '%-10s %11ss' "add256-$c" "${MEAN[rbuild-add256-$c]}"
    for p in "${PEERS[@]}"; do
        printf ' %11ss %9sx' "${MEAN[$p-add256]}" "$(python3 -c "print(f'{${MEAN[rbuild-add256-$c]} / ${MEAN[$p-add256]}:.2f}')")"
    done
    echo
done
echo "run-big / run-small (rbuild): $(python3 -c "print(f'{${MEAN[rbuild-run-big]} / ${MEAN[rbuild-run-small]}:.2f}')")x  (target ~1.0)"
echo "ratio = rbuild time / peer time (lower is better; targets: cold <= 0.5, add256 <= 0.5 of BuildKit)"
