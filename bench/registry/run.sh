#!/usr/bin/env bash
# Registry benchmark (issue #5): pull of a 256 MiB single-layer image from a local docker-registry
# into a fresh store (download, verify, extract) and push of it to an empty registry, side by
# side with the peers installed here, all in ONE run against the same registries:
#
#   pull: rbuild pull | skopeo copy to an OCI layout (no extraction) | podman pull | docker pull
#         | curl of the layer blob to /dev/null (what the server can deliver)
#   push: rbuild push | skopeo copy from rbuild's store (an OCI layout) | podman push | docker push
#         | curl POST + one PUT of the blob file (what the server can accept)
#
# Every push target is emptied before each push. Push runs against two registries configured the
# same way for every tool: one storing on disk (/var/tmp, like the pull source) and one storing on
# tmpfs (/dev/shm), which takes the server's own disk writes out of the measurement.
# Rounds are interleaved (each round runs every tool once, rotating the order), so load from
# other processes falls on all tools alike; ratios compare medians. "own CPU" is the CPU time of
# the command's processes (for podman that includes its storage work; for docker only the
# client: dockerd does the work), "server CPU" what docker-registry used meanwhile.
# podman and docker run with private storage (and docker with a private dockerd + containerd)
# inside the work dir; nothing of a system installation is used or changed.
#
#   [RBUILD_BIN=...] [RBUILD_COMPARE=other-rbuild] [SIZE_MIB=256] [SKIP_DOCKER=1] [SKIP_PODMAN=1] \
#     [SKIP_PUSH=1] bench/registry/run.sh [ROUNDS]
# RBUILD_COMPARE adds rows for a second rbuild binary (A/B of a change in the same run);
# SKIP_PUSH=1 runs only the pull group (quicker A/B of pull changes).
#   (default 5 rounds; needs skopeo, docker-registry, curl, python3; podman, docker.io optional)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-5}
SIZE_MIB=${SIZE_MIB:-256}
HERE=$PWD/bench/registry
# RBUILD_BIN=path skips the release build (e.g. while the tree does not build).
if [ -z "${RBUILD_BIN:-}" ]; then cargo build --release --bin rbuild >/dev/null; fi
RB=${RBUILD_BIN:-$PWD/target/release/rbuild}
W=$(mktemp -d /var/tmp/rbuild-bench-registry.XXXXXX)
SHM=$(mktemp -d /dev/shm/rbuild-bench-registry.XXXXXX)
PIDS=()
DOCKERD_PID= CONTAINERD_PID=

stop() { # PID: SIGTERM, SIGKILL after 15 s
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
cleanup() {
  set +e
  if [ -n "${PM:-}" ]; then $PM rmi -af >/dev/null 2>&1; fi
  [ -n "$DOCKERD_PID" ] && stop "$DOCKERD_PID"
  [ -n "$CONTAINERD_PID" ] && stop "$CONTAINERD_PID"
  # containerd shims of our containerd (none expected: nothing is run) carry $W in their args.
  for p in "${PIDS[@]}"; do stop "$p"; done
  for p in $(pgrep -f "$W/" || true); do [ "$p" != $$ ] && kill -9 "$p" 2>/dev/null; done
  findmnt -rn -o TARGET | grep -E "^($W|$SHM)(/|$)" | sort -r | xargs -r -n1 umount -l
  rm -rf "$W" "$SHM"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# start_registry NAME DATADIR: sets REG_ADDR (host:port) and REG_PID.
start_registry() {
  local name=$1 data=$2 port
  port=$(free_port)
  mkdir -p "$data"
  cat >"$W/$name.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port, secret: bench}
YML
  docker-registry serve "$W/$name.yml" >"$W/$name.log" 2>&1 &
  REG_PID=$!
  PIDS+=("$REG_PID")
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
  REG_ADDR=127.0.0.1:$port
}

start_registry src "$W/src-data"; SRC=$REG_ADDR SRC_PID=$REG_PID
start_registry dst-disk "$W/dst-disk-data"; DST_DISK=$REG_ADDR DST_DISK_PID=$REG_PID
start_registry dst-tmpfs "$SHM/dst-tmpfs-data"; DST_TMPFS=$REG_ADDR DST_TMPFS_PID=$REG_PID
echo "pull source $SRC (disk); push targets $DST_DISK (disk) and $DST_TMPFS (tmpfs)"

# The image: one gzip layer holding SIZE_MIB of incompressible data.
IMG=bench/big:1
mkdir -p "$W/rootfs"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$W/rootfs/blob.bin"
"$RB" --root "$W/store" import "$W/rootfs" "$SRC/$IMG" >/dev/null
"$RB" --root "$W/store" tag "$SRC/$IMG" "$DST_DISK/$IMG"
"$RB" --root "$W/store" tag "$SRC/$IMG" "$DST_TMPFS/$IMG"
"$RB" --root "$W/store" push -q "$SRC/$IMG" >/dev/null
rm -rf "$W/rootfs"
LAYER=$(python3 - "$W/store" <<'PY'
import json, sys
root = sys.argv[1]
index = json.load(open(f"{root}/index.json"))
digest = index["manifests"][0]["digest"]
manifest = json.load(open(f"{root}/blobs/sha256/{digest.split(':')[1]}"))
print(manifest["layers"][0]["digest"])
PY
)
echo "image $SRC/$IMG: one layer $LAYER ($(du -m "$W/store/blobs/sha256/${LAYER#sha256:}" | cut -f1) MiB)"

cat >"$W/curl-push.sh" <<'SH'
#!/bin/sh
# curl-push.sh HOST:PORT BLOBFILE DIGEST: one POST, then the whole blob in one streamed PUT.
set -e
loc=$(curl -sf -i -X POST "http://$1/v2/bench/big/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
case $loc in http*) ;; *) loc="http://$1$loc" ;; esac
case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
curl -sf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$2" "$loc${sep}digest=$3"
SH
chmod +x "$W/curl-push.sh"

PM=
if [ -z "${SKIP_PODMAN:-}" ] && command -v podman >/dev/null; then
  PM="podman --root $W/podman/root --runroot $W/podman/run --storage-driver overlay"
  $PM info >/dev/null
fi

DK=
if [ -z "${SKIP_DOCKER:-}" ] && [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/containerd ] && [ -x /usr/bin/docker ]; then
  D=$W/docker
  mkdir -p "$D"/{data,exec,containerd-root,containerd-state,client}
  cat >"$D/containerd.toml" <<TOML
version = 2
root = "$D/containerd-root"
state = "$D/containerd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$D/containerd.sock"
[ttrpc]
  address = "$D/containerd.sock.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$D/containerd-opt"
TOML
  /usr/bin/containerd --config "$D/containerd.toml" >"$D/containerd.log" 2>&1 &
  CONTAINERD_PID=$!
  for _ in $(seq 200); do [ -S "$D/containerd.sock" ] && break; sleep 0.1; done
  echo "{\"deprecated-key-path\": \"$D/key.json\"}" >"$D/daemon.json"
  /usr/sbin/dockerd --config-file "$D/daemon.json" --data-root "$D/data" --exec-root "$D/exec" \
    --pidfile "$D/docker.pid" -H "unix://$D/docker.sock" --containerd "$D/containerd.sock" \
    --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false --bridge=none \
    --storage-driver overlay2 --shutdown-timeout 3 \
    --insecure-registry "$SRC" --insecure-registry "$DST_DISK" --insecure-registry "$DST_TMPFS" \
    >"$D/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  DK="env DOCKER_CONFIG=$D/client /usr/bin/docker -H unix://$D/docker.sock"
  for _ in $(seq 400); do $DK info >/dev/null 2>&1 && break; sleep 0.1; done
  if ! $DK info >/dev/null 2>&1; then
    echo "private dockerd did not start; docker rows skipped:"; tail -5 "$D/dockerd.log"; DK=
  fi
fi

# The benchmark description for the driver.
export RBUILD_COMPARE=${RBUILD_COMPARE:-} SKIP_PUSH=${SKIP_PUSH:-}
export W SHM RB SRC IMG LAYER PM DK DST_DISK DST_TMPFS SRC_PID DST_DISK_PID DST_TMPFS_PID ROUNDS
python3 - >"$W/spec.json" <<'PY'
import json, os
e = os.environ
W, RB, SRC, IMG, LAYER, PM, DK = (e[k] for k in ("W", "RB", "SRC", "IMG", "LAYER", "PM", "DK"))
blob = f"{W}/store/blobs/sha256/{LAYER.split(':')[1]}"
pull = [
    {"name": "rbuild pull (download+verify+extract)",
     "prepare": f"rm -rf {W}/pull-root", "cmd": f"{RB} --root {W}/pull-root pull -q {SRC}/{IMG}"},
    {"name": "skopeo copy to OCI layout",
     "prepare": f"rm -rf {W}/skopeo-layout",
     "cmd": f"skopeo copy -q --src-tls-verify=false docker://{SRC}/{IMG} oci:{W}/skopeo-layout:big"},
]
CMP = e["RBUILD_COMPARE"]
if CMP:
    pull.append({"name": "rbuild pull (RBUILD_COMPARE)", "prepare": f"rm -rf {W}/pull-root",
                 "cmd": f"{CMP} --root {W}/pull-root pull -q {SRC}/{IMG}"})
if PM:
    pull.append({"name": "podman pull", "prepare": f"{PM} rmi -af",
                 "cmd": f"{PM} pull -q --tls-verify=false {SRC}/{IMG}"})
if DK:
    pull.append({"name": "docker pull", "prepare": f"{DK} image rm -f $({DK} images -qa) || true",
                 "cmd": f"{DK} pull -q {SRC}/{IMG}"})
pull.append({"name": "curl blob > /dev/null (server bound)", "prepare": "",
             "cmd": f"curl -sf -o /dev/null http://{SRC}/v2/bench/big/blobs/{LAYER}"})
for r in pull:
    r["server_pid"] = int(e["SRC_PID"])
groups = [{"title": "pull, fresh store each run", "target": 0.5, "target_peer": "skopeo", "rows": pull}]
# podman and docker push from their own storage: the image is pulled there (again) and tagged.
setup = []
for tool, pull_flags in ((PM, "--tls-verify=false"), (DK, "")):
    if tool:
        setup.append(f"{tool} pull -q {pull_flags} {SRC}/{IMG} && {tool} tag {SRC}/{IMG} {e['DST_DISK']}/{IMG}"
                     f" && {tool} tag {SRC}/{IMG} {e['DST_TMPFS']}/{IMG}")
pushes = [] if e["SKIP_PUSH"] else [
    ("disk", e["DST_DISK"], e["DST_DISK_PID"], f"{W}/dst-disk-data"),
    ("tmpfs", e["DST_TMPFS"], e["DST_TMPFS_PID"], f"{e['SHM']}/dst-tmpfs-data")]
for kind, dst, pid, data in pushes:
    empty = f"rm -rf {data}/docker"
    rows = [
        {"name": "rbuild push", "cmd": f"{RB} --root {W}/store push -q {dst}/{IMG}"},
        {"name": "skopeo copy from rbuild's store",
         "cmd": f"skopeo copy -q --dest-tls-verify=false oci:{W}/store:{dst}/{IMG} docker://{dst}/{IMG}"},
    ]
    if CMP:
        rows.append({"name": "rbuild push (RBUILD_COMPARE)", "cmd": f"{CMP} --root {W}/store push -q {dst}/{IMG}"})
    if PM:
        rows.append({"name": "podman push", "cmd": f"{PM} push -q --tls-verify=false {dst}/{IMG}"})
    if DK:
        rows.append({"name": "docker push", "cmd": f"{DK} push -q {dst}/{IMG}"})
    rows.append({"name": "curl POST + PUT of the blob (server bound)",
                 "cmd": f"{W}/curl-push.sh {dst} {blob} {LAYER}"})
    for r in rows:
        r["prepare"] = empty
        r["server_pid"] = int(pid)
    groups.append({"title": f"push to an empty registry storing on {kind}", "target": 0.25,
                   "setup": " && ".join(setup),
                   "target_peer": "podman", "rows": rows})
print(json.dumps({"runs": int(e["ROUNDS"]), "groups": groups}))
PY
cat /proc/loadavg | sed 's/^/load average before the run: /'
python3 "$HERE/drive.py" "$W/spec.json"
