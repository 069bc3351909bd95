#!/usr/bin/env bash
# Start-up time of `keyserver` by key provider: from exec to its `listening` line, on a data
# dir made before (so the keys are unwrapped, not made). `file` unwraps locally; `aws-kms`
# calls DescribeKey and Decrypt four times against a local KMS emulator (moto).
#
#   bench/startup.sh [RUNS]      (KEYSERVER_BIN, MOTO_SERVER to override the binaries)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
bin="${KEYSERVER_BIN:-target/release/keyserver}"
moto="${MOTO_SERVER:-target/ci-moto/bin/moto_server}"
[ -x "$bin" ] || { echo "no $bin: cargo build --release --bins" >&2; exit 1; }
[ -x "$moto" ] || { echo "no $moto: python3 -m venv target/ci-moto && target/ci-moto/bin/pip install 'moto[server]'" >&2; exit 1; }
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$moto" -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=eu-west-1 KEYSERVER_LOG=error
key=$("$(dirname "$moto")/python" -c "import boto3; print(boto3.client('kms', endpoint_url='http://127.0.0.1:$port', region_name='eu-west-1').create_key()['KeyMetadata']['Arn'])")
"$bin" init --data-dir "$work/file" >/dev/null
"$bin" init --data-dir "$work/kms" --kms-key-id "$key" --kms-endpoint "http://127.0.0.1:$port" >/dev/null

# Milliseconds from exec to the listening line.
once() {
  local dir="$1" fifo="$work/out" start end pid
  rm -f "$fifo"; mkfifo "$fifo"
  start=$(date +%s%N)
  "$bin" --data-dir "$dir" --listen 127.0.0.1:0 >"$fifo" &
  pid=$!
  read -r _ <"$fifo"
  end=$(date +%s%N)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo $(( (end - start) / 1000000 ))
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
file_ms=$(for _ in $(seq 1 "$runs"); do once "$work/file"; done | median)
kms_ms=$(for _ in $(seq 1 "$runs"); do once "$work/kms"; done | median)
echo "provider  start-up median of $runs (ms)"
echo "file      $file_ms"
echo "aws-kms   $kms_ms   (+$(( kms_ms - file_ms )) ms: DescribeKey and four Decrypt calls to a local emulator)"
