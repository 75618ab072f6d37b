#!/usr/bin/env bash
# Build benchmark: the same Dockerfiles built by rbuild and by every peer installed here, in one
# run: buildah, podman, docker's legacy builder (DOCKER_BUILDKIT=0) and BuildKit (DOCKER_BUILDKIT=1),
# the last two on a private dockerd + containerd started for the run (own data root, exec root,
# sockets, pid files and cgroup parent, all below BENCH_DIR) and torn down at the end.
#
# Rows (the issue's targets in brackets):
#   cold6      a cold 6-step build                                [rbuild <= 0.5 x fastest peer]
#   cached6    the same build again, fully cached                 [rbuild < 30 ms]
#   run-big    RUN changing one file on a 30,000-file base        [as fast as run-small]
#   run-small  RUN changing one file on a 300-file base
#   add256     ADD of a 256 MiB context                           [rbuild <= 0.5 x BuildKit]
#
# Cold means cold for every tool: before each timed cold6/add256 run, rbuild, buildah and podman get
# a fresh storage directory holding only the busybox base, and docker loses the previous result,
# every dangling image and its whole build cache (`docker builder prune -af`, which also drops
# BuildKit's copy of the context). Before each run-big/run-small run every tool drops the previous
# result (and docker its build cache) but keeps the two base images. Every cold build also passes
# --no-cache. The cached row is measured after one untimed build, so every step is a cache hit.
#
# All tools build the same Dockerfiles from the same contexts on the same busybox rootfs
# (scripts/make-busybox-rootfs), imported by each tool as `busybox` (FROM busybox resolves
# locally; buildah/podman get --pull=never), with --network host for RUN steps.
# Times are the median of RUNS runs (rbuild's sub-second rows: RUNS_FAST runs), after one warm-up
# run, measured by hyperfine.
#
# Usage: bench/build/run.sh   (root; RUNS=5 RUNS_FAST=15 BENCH_DIR=/var/tmp/rbuild-bench-build
#                              PEERS="buildah podman docker buildkit" to change;
#                              RBUILD_BIN=path to time that binary instead of a fresh release build)
# Peers: scripts/install-deps installs buildah, podman and docker.io; a missing peer is skipped
# and the reason printed.
set -euo pipefail

WORK=${BENCH_DIR:-/var/tmp/rbuild-bench-build}
RUNS=${RUNS:-5}
# rbuild's sub-second rows (cold6, cached6, run-*) get more runs: the targets judge them.
RUNS_FAST=${RUNS_FAST:-15}
WANTED=${PEERS:-buildah podman docker buildkit}
SELF=$(realpath "$0")
REPO=$(realpath "$(dirname "$0")/../..")
RBIN=${RBUILD_BIN:-$REPO/target/release/rbuild}
# The client of Debian's docker.io package: it matches the 20.10 engine and drives its built-in
# BuildKit itself. (A newer docker CLI needs the buildx plugin for BuildKit.)
DOCKER_CLI=/usr/bin/docker
DK=$WORK/docker
# cgroup parent of the private dockerd (runc and BuildKit make their cgroups below it).
CG_NAME=rbuild-bench-build-docker
export DOCKER_HOST=unix://$DK/docker.sock DOCKER_CONFIG=$DK/client
unset DOCKER_CONTEXT

buildah_cmd() { echo "buildah --root $WORK/buildah/$1/root --runroot $WORK/buildah/$1/run --storage-driver overlay"; }
podman_cmd() { echo "podman --root $WORK/podman/$1/root --runroot $WORK/podman/$1/run --storage-driver overlay"; }
rbuild_cmd() { echo "$RBIN --root $WORK/rbuild/$1"; }

# Unmounts every mount at or below $1 (deepest first).
unmount_below() {
    { awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo || true; } |
        sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

# Loads the busybox rootfs into a tool's storage as `busybox` (with CMD sh, like the real one).
load_busybox() { # tool storage-name
    case $1 in
    rbuild) $(rbuild_cmd "$2") import --change 'CMD ["sh"]' "$WORK/rootfs" busybox ;;
    buildah)
        local b ctr
        b=$(buildah_cmd "$2")
        ctr=$($b from scratch)
        $b copy -q "$ctr" "$WORK/rootfs" / >/dev/null
        $b config --cmd sh "$ctr"
        $b commit -q "$ctr" busybox
        $b rm "$ctr" ;;
    podman) $(podman_cmd "$2") import -q --change 'CMD ["sh"]' "$WORK/rootfs.tar" busybox ;;
    docker) $DOCKER_CLI import --change 'CMD ["sh"]' "$WORK/rootfs.tar" busybox ;;
    esac >/dev/null
}

# Brings a tool's storage back to a cold state before a timed run.
#   fresh: only the busybox base (new storage directory; for docker: results, dangling images
#          and all build cache removed)
#   bases: busybox, base-big and base-small kept; the previous result and build cache removed
reset_storage() { # tool fresh|bases
    local tool=$1 mode=$2
    if [ "$tool" = buildkit ]; then tool=docker; fi
    case $tool/$mode in
    docker/*)
        $DOCKER_CLI rmi -f cold add256 onefile >/dev/null 2>&1 || true
        $DOCKER_CLI image prune -f >/dev/null
        $DOCKER_CLI builder prune -af >/dev/null ;;
    */fresh)
        unmount_below "$WORK/$tool/fresh"
        rm -rf "$WORK/$tool/fresh"
        load_busybox "$tool" fresh ;;
    rbuild/bases)
        local rb
        rb=$(rbuild_cmd main)
        $rb rmi onefile >/dev/null 2>&1 || true
        $rb system prune >/dev/null ;;
    buildah/bases) $(buildah_cmd main) rmi -f onefile >/dev/null 2>&1 || true ;;
    podman/bases) $(podman_cmd main) rmi -f onefile >/dev/null 2>&1 || true ;;
    esac
}

# Internal entry point for hyperfine's --prepare.
if [ "${1:-}" = --reset ]; then
    reset_storage "$2" "$3"
    exit 0
fi

stop_pid() { # pid: SIGTERM, SIGKILL after 15 s
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    set +e
    local f pid me=$$
    for f in "$DK/dockerd.pid" "$DK/containerd.pid"; do
        [ -s "$f" ] && stop_pid "$(cat "$f")"
    done
    # Whatever is left that runs from the bench dir: containerd shims, an interrupted build.
    # (The directory goes through the environment, so awk's own command line does not match.)
    ps -eo pid=,args= | D="$WORK/" awk -v me="$me" 'index($0, ENVIRON["D"]) && $1 != me { print $1 }' |
        while read -r pid; do kill -KILL "$pid" 2>/dev/null; done
    unmount_below "$WORK"
    # Cgroups runc and BuildKit made below the private dockerd's cgroup parent, deepest first.
    find /sys/fs/cgroup -maxdepth 8 -type d -name "$CG_NAME" 2>/dev/null |
        while read -r cg; do find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null; done
    rm -rf "$WORK"
}

# Starts containerd and dockerd with everything below $DK; returns non-zero with the log shown
# when the engine does not answer within 40 s.
start_dockerd() {
    mkdir -p "$DK"/{data,exec,containerd-root,containerd-state,client}
    cat > "$DK/containerd.toml" <<EOF
version = 2
root = "$DK/containerd-root"
state = "$DK/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$DK/containerd.sock"
[ttrpc]
  address = "$DK/containerd.sock.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$DK/containerd-opt"
EOF
    # The trust key would otherwise go to /etc/docker/key.json.
    printf '{"deprecated-key-path": "%s/key.json"}\n' "$DK" > "$DK/daemon.json"
    containerd --config "$DK/containerd.toml" > "$DK/containerd.log" 2>&1 < /dev/null &
    echo $! > "$DK/containerd.pid"
    local i driver=vfs
    for i in $(seq 400); do [ -S "$DK/containerd.sock" ] && break; sleep 0.1; done
    [ -S "$DK/containerd.sock" ] || { tail -n 20 "$DK/containerd.log" >&2; return 1; }
    if grep -qw overlay /proc/filesystems && [ "$(stat -f -c %T "$DK")" != overlayfs ]; then driver=overlay2; fi
    dockerd --config-file "$DK/daemon.json" --data-root "$DK/data" --exec-root "$DK/exec" \
        --pidfile "$DK/docker.pid" -H "$DOCKER_HOST" --containerd "$DK/containerd.sock" \
        --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none \
        --storage-driver "$driver" --shutdown-timeout 3 --cgroup-parent "$CG_NAME" \
        > "$DK/dockerd.log" 2>&1 < /dev/null &
    echo $! > "$DK/dockerd.pid"
    for i in $(seq 200); do
        $DOCKER_CLI info >/dev/null 2>&1 && return 0
        kill -0 "$(cat "$DK/dockerd.pid")" 2>/dev/null || break
        sleep 0.2
    done
    echo "dockerd did not answer:" >&2
    tail -n 20 "$DK/dockerd.log" >&2
    return 1
}

for tool in hyperfine python3; do
    command -v "$tool" >/dev/null || { echo "bench/build: $tool is missing (scripts/install-deps)" >&2; exit 1; }
done
[ -n "${RBUILD_BIN:-}" ] || (cd "$REPO" && cargo build --release -q --bin rbuild)

cleanup
mkdir -p "$WORK/tmp"
# Temp files of every tool (buildah's, podman's) stay below WORK and go with it.
export TMPDIR=$WORK/tmp
# The private docker client config (DOCKER_CONFIG); buildah insists that the auth file it names exists.
mkdir -p "$DK/client"
echo '{}' > "$DK/client/config.json"
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "load at start: $(cat /proc/loadavg)"

echo "preparing the busybox rootfs and contexts in $WORK"
"$REPO/scripts/make-busybox-rootfs" "$WORK/rootfs" >/dev/null
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
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

# cold6: FROM, ENV, WORKDIR, COPY, RUN, CMD.
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
    printf 'FROM busybox\nCOPY data/ /data/\n' > "$WORK/ctx/$name/Dockerfile"
done
cat > "$WORK/ctx/onefile.Dockerfile" <<'EOF'
ARG BASE=base-big
FROM ${BASE}
RUN echo changed > /data/d0/f1.txt
EOF
printf 'FROM busybox\nADD . /ctx/\n' > "$WORK/ctx/add256.Dockerfile"

# --- peers ---------------------------------------------------------------------------------------
# The env each tool's commands run with (DOCKER_BUILDKIT picks docker's builder).
tool_env() { case $1 in docker) echo DOCKER_BUILDKIT=0 ;; buildkit) echo DOCKER_BUILDKIT=1 ;; esac; }

# BUILD[tool]: the build command prefix; COLD[tool]: the same against the fresh (cold) storage.
declare -A BUILD COLD VERSION
SKIPPED=()
TOOLS=(rbuild)
DOCKER_STATE=
WARNINGS=()
BUILD[rbuild]="$(rbuild_cmd main) build -q --network host"
COLD[rbuild]="$(rbuild_cmd fresh) build -q --network host"
VERSION[rbuild]="$($RBIN --version)"

# Loads busybox and builds base-big (30,000 files) and base-small (300 files) for a tool.
# Returns non-zero, saying why, when a build fails or an image is missing afterwards.
make_bases() { # tool
    local name
    load_busybox "$1" main || { echo "$1: loading busybox failed" >&2; return 1; }
    for name in big small; do
        env $(tool_env "$1") ${BUILD[$1]} -t "base-$name" "$WORK/ctx/$name" >/dev/null ||
            { echo "$1: building base-$name failed" >&2; return 1; }
    done
    for name in busybox base-big base-small; do
        has_image "$1" "$name" || { echo "$1: image $name is missing after the set-up" >&2; return 1; }
    done
}

has_image() { # tool name
    case $1 in
    rbuild) $(rbuild_cmd main) inspect "$2" ;;
    buildah) $(buildah_cmd main) inspect --type image "$2" ;;
    podman) $(podman_cmd main) image inspect "$2" ;;
    docker) $DOCKER_CLI image inspect "$2" ;;
    esac >/dev/null 2>&1
}

echo "loading busybox and building the bases (base-big: 30,000 files, base-small: 300) in each tool"
make_bases rbuild || exit 1
for peer in $WANTED; do
    case $peer in
    buildah | podman)
        if ! command -v "$peer" >/dev/null; then SKIPPED+=("$peer: not installed (apt-get install -y $peer)"); continue; fi
        sub=build
        [ "$peer" = buildah ] && sub=bud
        BUILD[$peer]="$(${peer}_cmd main) $sub --layers --pull=never --network host -q"
        COLD[$peer]="$(${peer}_cmd fresh) $sub --layers --pull=never --network host -q"
        VERSION[$peer]="$($peer --version)"
        make_bases "$peer" || { SKIPPED+=("$peer: its set-up failed (message above)"); continue; }
        TOOLS+=("$peer") ;;
    docker | buildkit)
        if ! [ -x /usr/sbin/dockerd ] || ! [ -x "$DOCKER_CLI" ]; then SKIPPED+=("$peer: docker.io is not installed"); continue; fi
        BUILD[$peer]="$DOCKER_CLI build -q --network host"
        COLD[$peer]=${BUILD[$peer]}
        if [ -z "$DOCKER_STATE" ]; then
            echo "starting a private dockerd in $DK"
            DOCKER_STATE="the private dockerd did not start or its set-up failed (messages above)"
            # Both builders share the engine's image store: the bases are built once (legacy builder).
            BUILD[docker]=${BUILD[$peer]}
            start_dockerd && make_bases docker && DOCKER_STATE=ok
        fi
        [ "$DOCKER_STATE" = ok ] || { SKIPPED+=("$peer: $DOCKER_STATE"); continue; }
        VERSION[$peer]="docker engine $($DOCKER_CLI version -f '{{.Server.Version}}'),"
        if [ "$peer" = buildkit ]; then
            # BuildKit is built into the 20.10 engine and driven by its client; prove it runs here.
            printf 'FROM busybox\nRUN true\n' > "$WORK/ctx/probe.Dockerfile"
            if ! out=$(DOCKER_BUILDKIT=1 ${BUILD[$peer]} -f "$WORK/ctx/probe.Dockerfile" "$WORK/ctx/cold" 2>&1); then
                SKIPPED+=("buildkit: a one-RUN BuildKit build fails here: $(tail -n 3 <<<"$out" | tr '\n' ' ')")
                continue
            fi
            VERSION[$peer]+=" BuildKit built into the engine (DOCKER_BUILDKIT=1)"
        else
            VERSION[$peer]+=" legacy builder (DOCKER_BUILDKIT=0)"
        fi
        TOOLS+=("$peer") ;;
    *) echo "bench/build: unknown peer $peer (buildah podman docker buildkit)" >&2; exit 2 ;;
    esac
done

# MEDIAN: median wall time; CPU: mean user + system time of the command and its children.
declare -A MEDIAN CPU
measure() { # tool row reset-mode|- command...
    local tool=$1 row=$2 mode=$3
    shift 3
    local json="$WORK/h-$tool-$row.json" prep=()
    if [ "$mode" != - ]; then
        prep=(--prepare "bash $SELF --reset $tool $mode")
        reset_storage "$tool" "$mode"
    fi
    if env $(tool_env "$tool") hyperfine -N --runs "${MEASURE_RUNS:-$RUNS}" --warmup 1 "${prep[@]}" \
        --export-json "$json" "$*" >/dev/null 2>"$WORK/h-err"; then
        read -r "MEDIAN[$tool/$row]" "CPU[$tool/$row]" spread < <(python3 -c "import json,sys
r = json.load(open(sys.argv[1]))['results'][0]
print(r['median'], r['user'] + r['system'], f\"(min {r['min']:.3f}s, max {r['max']:.3f}s)\")" "$json")
        printf '  %-10s %-12s %8.3fs %s\n' "$tool" "$row" "${MEDIAN[$tool/$row]}" "$spread"
    else
        echo "  $tool $row FAILED: $*" >&2
        tail -n 5 "$WORK/h-err" >&2
        env $(tool_env "$tool") "$@" 2>&1 | tail -n 5 >&2 || true
    fi
}

for tool in "${TOOLS[@]}"; do
    echo "$tool: ${VERSION[$tool]}"
    b=${BUILD[$tool]}
    fast=$RUNS
    [ "$tool" = rbuild ] && [ "$RUNS_FAST" -gt "$RUNS" ] && fast=$RUNS_FAST
    MEASURE_RUNS=$fast measure "$tool" cold6 fresh ${COLD[$tool]} --no-cache -t cold "$WORK/ctx/cold"
    warm_id=$(env $(tool_env "$tool") $b -t cold "$WORK/ctx/cold" | tail -n 1)
    MEASURE_RUNS=$fast measure "$tool" cached6 - $b -t cold "$WORK/ctx/cold"
    # A full cache hit gives the image of the untimed build again.
    again_id=$(env $(tool_env "$tool") $b -t cold "$WORK/ctx/cold" | tail -n 1)
    [ "$warm_id" = "$again_id" ] ||
        WARNINGS+=("$tool cached6 was not a full cache hit: image $warm_id, then $again_id")
    for base in big small; do
        MEASURE_RUNS=$fast measure "$tool" "run-$base" bases $b --no-cache --build-arg "BASE=base-$base" -t onefile \
            -f "$WORK/ctx/onefile.Dockerfile" "$WORK/ctx/cold"
    done
    measure "$tool" add256 fresh ${COLD[$tool]} --no-cache -t add256 -f "$WORK/ctx/add256.Dockerfile" "$WORK/ctx/add256"
    if [ "$tool" = rbuild ]; then
        measure "$tool" add256-zstd fresh ${COLD[$tool]} --no-cache --compression zstd -t add256 \
            -f "$WORK/ctx/add256.Dockerfile" "$WORK/ctx/add256"
    fi
done

# --- summary -------------------------------------------------------------------------------------
echo
for s in "${SKIPPED[@]}"; do echo "skipped $s"; done
for w in "${WARNINGS[@]}"; do echo "WARNING: $w"; done
for k in "${!MEDIAN[@]}"; do echo "$k ${MEDIAN[$k]} ${CPU[$k]}"; done > "$WORK/medians"
python3 - "$WORK/medians" "${TOOLS[@]}" <<'PY'
import sys
med, cpu = {}, {}
for line in open(sys.argv[1]):
    k, v, c = line.split()
    med[k], cpu[k] = float(v), float(c)
tools = sys.argv[2:]
peers = tools[1:]
rows = ["cold6", "cached6", "run-big", "run-small", "add256", "add256-zstd"]

def get(tool, row):
    return med.get(f"{tool}/{row}")

def fmt(t):
    return "-" if t is None else f"{t:.3f}s"

print(f"median of the runs; ratio = rbuild / peer (below 1: rbuild is faster)")
head = f"{'row':<12} {'rbuild':>9}"
for p in peers:
    head += f" {p:>9} {'ratio':>6}"
print(head)
for row in rows:
    r = get("rbuild", row)
    line = f"{row:<12} {fmt(r):>9}"
    for p in peers:
        t = get(p, "add256" if row == "add256-zstd" else row)
        ratio = "-" if r is None or t is None else f"{r / t:.2f}"
        line += f" {fmt(t):>9} {ratio:>6}"
    print(line)
print("(add256-zstd: rbuild with --compression zstd, against the peers' add256)")
print()

def verdict(ok):
    return "-" if ok is None else ("met" if ok else "MISSED")

r = get("rbuild", "cold6")
peer_cold = [(get(p, "cold6"), p) for p in peers if get(p, "cold6") is not None]
if r is not None and peer_cold:
    t, p = min(peer_cold)
    print(f"target cold6 <= 0.5 x fastest peer ({p} {t:.3f}s): rbuild {r:.3f}s = {r / t:.2f}x -> {verdict(r <= 0.5 * t)}")
else:
    print("target cold6: no peer measured")
r = get("rbuild", "cached6")
if r is not None:
    print(f"target cached6 < 30 ms: rbuild {r * 1000:.1f} ms -> {verdict(r < 0.030)}")
big, small = get("rbuild", "run-big"), get("rbuild", "run-small")
if big is not None and small is not None:
    # "As fast": within 10 % or 10 ms of the small base, whichever is larger (run-to-run noise).
    ok = big <= small + max(0.1 * small, 0.010)
    print(f"target run-big as fast as run-small (within 10 % or 10 ms): {big:.3f}s vs {small:.3f}s = {big / small:.2f}x -> {verdict(ok)}")
    cb, cs = cpu["rbuild/run-big"], cpu["rbuild/run-small"]
    print(f"  (CPU time, user + system, less load-sensitive: run-big {cb * 1000:.1f} ms vs run-small {cs * 1000:.1f} ms = {cb / cs:.2f}x)")
r, bk = get("rbuild", "add256"), get("buildkit", "add256")
if r is not None and bk is not None:
    print(f"target add256 <= 0.5 x BuildKit ({bk:.3f}s): rbuild gzip {r:.3f}s = {r / bk:.2f}x -> {verdict(r <= 0.5 * bk)}", end="")
    z = get("rbuild", "add256-zstd")
    print("" if z is None else f"; rbuild zstd {z:.3f}s = {z / bk:.2f}x -> {verdict(z <= 0.5 * bk)}")
else:
    print("target add256: BuildKit not measured")
PY
echo "load at end: $(cat /proc/loadavg)"
