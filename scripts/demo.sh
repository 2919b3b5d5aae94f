#!/usr/bin/env bash
# Two udrbd nodes on 127.0.0.1 replicating one resource, driven by udrbdadm from one drbd.conf
# (the host name is overridden per node with __DRBD_NODE__, as drbdadm allows).
#
# Upper-layer I/O goes through /dev/ublkbN when the host has ublk, else through the daemon's
# in-process API (the `udrbd write/read` client); the script says which one it used.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null

cargo build --release -q -p udrbd -p udrbd-tools
BIN="$PWD/${CARGO_TARGET_DIR:-target}/release"
[[ "${CARGO_TARGET_DIR:-}" == /* ]] && BIN="$CARGO_TARGET_DIR/release"
export UDRBD_BIN="$BIN/udrbd"

DIR=$(mktemp -d /tmp/udrbd-demo.XXXXXX)
cleanup() {
    for n in alice bob; do
        __DRBD_NODE__=$n UDRBD_RUN_DIR="$DIR/$n" "$BIN/udrbdadm" -c "$DIR/drbd.conf" down r0 2>/dev/null || true
        if [[ -f "$DIR/$n/r0.pid" ]]; then kill -9 "$(cat "$DIR/$n/r0.pid")" 2>/dev/null || true; fi
    done
    rm -rf "$DIR"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PA=$(port)
PB=$(port)
cat >"$DIR/drbd.conf" <<EOF
resource r0 {
  net  { protocol C; connect-int 2; ping-int 3; timeout 15; }
  disk { resync-rate 100M; }
  on alice {
    volume 0 { device minor 1; disk $DIR/alice.img; meta-disk internal; }
    address 127.0.0.1:$PA;
  }
  on bob {
    volume 0 { device minor 1; disk $DIR/bob.img; meta-disk internal; }
    address 127.0.0.1:$PB;
  }
}
EOF
truncate -s 64M "$DIR/alice.img" "$DIR/bob.img"

adm() { # adm NODE ARGS...
    local n=$1
    shift
    __DRBD_NODE__=$n UDRBD_RUN_DIR="$DIR/$n" "$BIN/udrbdadm" -c "$DIR/drbd.conf" "$@"
}
io() { # io NODE write|read ARGS...
    local n=$1
    shift
    "$BIN/udrbd" --resource r0 --run-dir "$DIR/$n" "$@"
}
wait_for() { # wait_for NODE VERB WANT SECONDS
    local deadline=$((SECONDS + $4))
    until [[ "$(adm "$1" "$2" r0 2>/dev/null)" == "$3" ]]; do
        if ((SECONDS > deadline)); then
            echo "demo: $1: $2 never became $3" >&2
            adm "$1" status r0 >&2 || true
            tail -n 30 "$DIR/$1/r0.log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
}

echo "== configuration ($DIR/drbd.conf)"
cat "$DIR/drbd.conf"
echo "== create-md and up on both nodes"
# --force: drbdmeta (and udrbdmeta) want it for a regular file instead of a block device.
adm alice create-md --force r0 </dev/null
adm bob create-md --force r0 </dev/null
adm alice up r0
adm bob up r0
wait_for alice cstate Connected 30
adm alice status r0

echo "== primary --force on alice: full sync to bob"
adm alice primary --force r0
adm alice status r0
wait_for alice dstate UpToDate/UpToDate 120
adm alice status r0
adm bob status r0

# The upper layer: try ublk first (a Primary's /dev/ublkbN), else the daemon's in-process API.
if DEV=$(io alice expose 2>"$DIR/expose.err"); then
    echo "== upper layer: ublk, alice's volume is $DEV"
    UPPER=ublk
else
    echo "== upper layer: in-process API (ublk unusable here: $(sed 's/^udrbd: //' "$DIR/expose.err"))"
    UPPER=api
fi
head -c $((4 << 20)) /dev/urandom >"$DIR/payload"
if [[ $UPPER == ublk ]]; then
    dd if="$DIR/payload" of="$DEV" bs=1M seek=1 oflag=direct conv=fsync status=none
    echo "wrote 4 MiB at byte 1 MiB of $DEV with dd (O_DIRECT; each write completes on both disks, protocol C)"
else
    io alice write --sector 2048 --input "$DIR/payload"
    echo "wrote 4 MiB at sector 2048 on alice through the in-process API (complete: on both disks, protocol C)"
fi
io alice read --sector 2048 --len $((64 << 10)) --output "$DIR/readback"
cmp <(head -c $((64 << 10)) "$DIR/payload") "$DIR/readback" && echo "read back through alice: identical"

SIZE_KIB=$(python3 - "$DIR/alice/r0.sock" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'{"version":1,"request":"Status"}\n')
print(json.loads(s.makefile().readline())["response"]["Status"]["volumes"][0]["size_kib"])
PY
)
HA=$(head -c $((SIZE_KIB * 1024)) "$DIR/alice.img" | sha256sum | cut -d' ' -f1)
HB=$(head -c $((SIZE_KIB * 1024)) "$DIR/bob.img" | sha256sum | cut -d' ' -f1)
echo "alice data area sha256: $HA"
echo "bob   data area sha256: $HB"
if [[ "$HA" != "$HB" ]]; then
    echo "demo: data areas differ" >&2
    exit 1
fi
echo "== replicated: both data areas are identical"
adm alice events2 --now r0
echo "== logs (alice)"
grep -E "conn\(|role\(|disk\(|pdsk\(" "$DIR/alice/r0.log" | head -20 || true
adm alice down r0
adm bob down r0
echo "demo: done"
