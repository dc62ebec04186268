#!/usr/bin/env bash
# Mount the embedded default: a local OSS + KMS emulator with a demo bucket and a generated
# RSA master key, all kept under a state directory, mounted at MOUNTPOINT.
#
#   scripts/run.sh [MOUNTPOINT]        set up, start the emulator, mount (default ./mnt)
#   scripts/run.sh stop [MOUNTPOINT]   unmount (after pending uploads) and stop the emulator
#
# Idempotent: a second run reuses the running emulator, the key and an existing mount.
# Environment: OSSENCFS_STATE (default ./state), OSSENCFS_OSS_PORT (default 19440),
# OSSENCFS_KMS_PORT (default 19441), OSSENCFS_BUCKET (default demo).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"

action="start"
if [ "${1:-}" = "stop" ] || [ "${1:-}" = "start" ]; then
    action="$1"
    shift
fi
MOUNTPOINT="$(realpath -m "${1:-$ROOT/mnt}")"
STATE="$(realpath -m "${OSSENCFS_STATE:-$ROOT/state}")"
OSS_PORT="${OSSENCFS_OSS_PORT:-19440}"
KMS_PORT="${OSSENCFS_KMS_PORT:-19441}"
BUCKET="${OSSENCFS_BUCKET:-demo}"
PY="$ROOT/.venv/bin/python"
export OSS_ACCESS_KEY_ID="demo-ak" OSS_ACCESS_KEY_SECRET="demo-sk"
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
EMU_PID="$STATE/emulator.pid"
ENDPOINT="http://127.0.0.1:$OSS_PORT"

is_mounted() { grep -qs " $1 fuse" /proc/mounts; }
emulator_running() { [ -f "$EMU_PID" ] && kill -0 "$(cat "$EMU_PID")" 2>/dev/null; }

if [ "$action" = "stop" ]; then
    if is_mounted "$MOUNTPOINT"; then
        "$PY" -m ossencfs umount "$MOUNTPOINT"
        echo "unmounted $MOUNTPOINT"
    fi
    if emulator_running; then
        kill "$(cat "$EMU_PID")"
        for _ in $(seq 50); do emulator_running || break; sleep 0.1; done
        rm -f "$EMU_PID"
        echo "emulator stopped"
    fi
    exit 0
fi

mkdir -p "$STATE" "$MOUNTPOINT"
chmod 700 "$STATE"

# 1. master key (RSA, generated once; the private key never leaves the state directory)
if [ ! -f "$STATE/master.pem" ]; then
    "$PY" -m ossencfs keygen "$STATE/master.pem" >/dev/null
    echo "generated RSA master key $STATE/master.pem"
fi

# 2. the emulator (OSS + KMS), started once, in the background
if ! emulator_running; then
    : > "$STATE/emulator.log"
    nohup "$PY" -m ossencfs emulator --data "$STATE/oss" --port "$OSS_PORT" \
        --kms-port "$KMS_PORT" --bucket "$BUCKET" \
        --access-key-id "$OSS_ACCESS_KEY_ID" --access-key-secret "$OSS_ACCESS_KEY_SECRET" \
        >>"$STATE/emulator.log" 2>&1 &
    echo $! > "$EMU_PID"
    for _ in $(seq 100); do
        grep -q "^OSS endpoint:" "$STATE/emulator.log" && break
        if ! emulator_running; then
            echo "run.sh: the emulator did not start:" >&2
            cat "$STATE/emulator.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "emulator: OSS $ENDPOINT, KMS http://127.0.0.1:$KMS_PORT (data in $STATE/oss)"
fi

# 3. the mount (detaches once mounted; errors are reported here)
if is_mounted "$MOUNTPOINT"; then
    echo "already mounted: $MOUNTPOINT"
else
    "$PY" -m ossencfs mount "oss://$BUCKET" "$MOUNTPOINT" --endpoint "$ENDPOINT" \
        --rsa-key "$STATE/master.pem" --cache-dir "$STATE/cache"
    echo "mounted oss://$BUCKET on $MOUNTPOINT"
fi

cat <<EOF

Use it like any folder:
    cp somefile $MOUNTPOINT/ && ls -l $MOUNTPOINT
Objects are stored encrypted (OSS client-side encryption, RSA key $STATE/master.pem);
see them raw with the emulator's data under $STATE/oss.
Mount log: $STATE/cache/*/mount.log
Stop:
    scripts/run.sh stop $MOUNTPOINT      (or: .venv/bin/ossencfs umount $MOUNTPOINT)
EOF
