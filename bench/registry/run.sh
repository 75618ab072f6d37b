#!/usr/bin/env bash
# Registry benchmark: pull of a 256 MiB single-layer image from a local docker-registry into a
# fresh store (download, verify, extract) and push of it to an empty registry, side by side
# with skopeo (copy to an OCI layout / copy from rbuild's store, which is an OCI layout),
# and podman where installed. Prints times and ratios.
#
#   [RBUILD_BIN=...] [SIZE_MIB=256] bench/registry/run.sh [RUNS]        (default 5 runs each; needs hyperfine, skopeo, docker-registry)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-5}
SIZE_MIB=${SIZE_MIB:-256}
# RBUILD_BIN=path skips the release build (e.g. while the tree does not build).
if [ -z "${RBUILD_BIN:-}" ]; then cargo build --release --bin rbuild >/dev/null; fi
RB=${RBUILD_BIN:-$PWD/target/release/rbuild}
W=$(mktemp -d /var/tmp/rbuild-bench-registry.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_registry() { # NAME -> prints host:port
  local name=$1 port; port=$(free_port)
  mkdir -p "$W/$name/data"
  cat >"$W/$name/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/$name/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port, secret: bench}
YML
  docker-registry serve "$W/$name/config.yml" >"$W/$name/log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  echo "127.0.0.1:$port"
}

SRC=$(start_registry src)
DST=$(start_registry dst)
echo "source registry $SRC, push target $DST (emptied before each push)"

# The image: one layer holding SIZE_MIB of incompressible data.
mkdir -p "$W/rootfs"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$W/rootfs/blob.bin"
"$RB" --root "$W/store" import "$W/rootfs" "$SRC/bench/big:1" >/dev/null
"$RB" --root "$W/store" tag "$SRC/bench/big:1" "$DST/bench/big:1"
"$RB" --root "$W/store" push -q "$SRC/bench/big:1" >/dev/null
rm -rf "$W/rootfs"
BLOB=$(du -sm "$W/src/data" | cut -f1)
echo "image pushed to the source registry (${BLOB} MiB stored)"

hf() { hyperfine --style basic --runs "$RUNS" --export-json "$1" "${@:2}"; }

echo; echo "== pull (fresh store / fresh layout each run) =="
PULL=(--prepare "rm -rf $W/pull-root $W/skopeo-layout"
  -n "rbuild pull (download+verify+extract)" "$RB --root $W/pull-root pull -q $SRC/bench/big:1"
  -n "skopeo copy to OCI layout (no extraction)" "skopeo copy -q --src-tls-verify=false docker://$SRC/bench/big:1 oci:$W/skopeo-layout:big")
if command -v podman >/dev/null; then
  PULL+=(-n "podman pull" "podman pull -q --tls-verify=false $SRC/bench/big:1; podman rmi -f $SRC/bench/big:1")
fi
hf "$W/pull.json" "${PULL[@]}"

echo; echo "== push to an empty registry =="
PUSH=(--prepare "rm -rf $W/dst/data/docker"
  -n "rbuild push" "$RB --root $W/store push -q $DST/bench/big:1"
  -n "skopeo copy from rbuild's store (OCI layout)" "skopeo copy -q --dest-tls-verify=false oci:$W/store:$DST/bench/big:1 docker://$DST/bench/big:1")
if command -v podman >/dev/null; then
  PUSH+=(-n "podman push" "podman push -q --tls-verify=false oci:$W/store:$DST/bench/big:1 $DST/bench/big:1")
fi
hf "$W/push.json" "${PUSH[@]}"

echo; echo "== ratios (mean time of rbuild / mean time of peer) =="
python3 - "$W/pull.json" "$W/push.json" <<'PY'
import json, sys
for path, target, peer_hint in ((sys.argv[1], 0.5, "skopeo"), (sys.argv[2], 0.25, "podman")):
    res = json.load(open(path))["results"]
    rb = res[0]["mean"]
    print(f"{res[0]['command']}: {rb:.3f} s")
    for r in res[1:]:
        print(f"  vs {r['command']}: {r['mean']:.3f} s  ratio {rb / r['mean']:.2f}")
    print(f"  target: <= {target} x {peer_hint}")
PY
