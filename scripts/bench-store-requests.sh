#!/usr/bin/env bash
# What one GET costs the S3 API server of the benchmarks (moto, one Python process): the same
# bytes downloaded as many small objects and as a few large ones, with curl (no agent involved),
# printing the wall time and the CPU seconds moto spent on each set.
#
#   scripts/bench-store-requests.sh                      # 672 objects of 1.7 MB against 3 of 380 MB
#   SMALL_COUNT=336 SMALL_BYTES=3400000 scripts/bench-store-requests.sh
#
# The defaults match the S3 backup of scripts/bench-backup.sh: 672 parts of about 1.7 MB stored
# each (4 MiB of content each), against the three large objects walross stores for the same data.
# Needs moto_server, python3 with boto3 (for presigned URLs: moto refuses anonymous GETs), curl.
set -euo pipefail

ROOT=${ROOT:-/tmp/pgec2-bench-requests}
PORT=${PORT:-55990}
SMALL_COUNT=${SMALL_COUNT:-672}
SMALL_BYTES=${SMALL_BYTES:-1700000}
LARGE_COUNT=${LARGE_COUNT:-3}
PARALLEL=${PARALLEL:-4}
URL=http://127.0.0.1:$PORT

rm -rf "$ROOT" && mkdir -p "$ROOT"
moto_server -H 127.0.0.1 -p "$PORT" >"$ROOT/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null || true; rm -rf "$ROOT"' EXIT
for _ in $(seq 1 60); do curl -sf -o /dev/null "$URL/moto-api/" && break; sleep 0.5; done

large_bytes=$((SMALL_COUNT * SMALL_BYTES / LARGE_COUNT))
head -c "$SMALL_BYTES" /dev/urandom >"$ROOT/small"
head -c "$large_bytes" /dev/urandom >"$ROOT/large"

# Presigned PUT and GET URLs for both sets, as curl config files.
python3 - "$URL" "$ROOT" "$SMALL_COUNT" "$LARGE_COUNT" <<'EOF'
import sys
import boto3
url, root, small, large = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id="bench", aws_secret_access_key="bench",
                  region_name="us-east-1")
s3.create_bucket(Bucket="bench")
for kind, count in (("small", small), ("large", large)):
    with open(f"{root}/put-{kind}", "w") as put, open(f"{root}/get-{kind}", "w") as get:
        for n in range(count):
            params = {"Bucket": "bench", "Key": f"{kind}/{n}"}
            put.write(f'url = "{s3.generate_presigned_url("put_object", Params=params)}"\n'
                      f'upload-file = "{root}/{kind}"\noutput = "/dev/null"\n')
            get.write(f'url = "{s3.generate_presigned_url("get_object", Params=params)}"\n'
                      f'output = "/dev/null"\n')
EOF

moto_cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$MOTO/stat"; }

# $1: small or large. Prints "set,objects,wall_s,moto_cpu_s" (the header printed below).
fetch_set() {
  local kind=$1 count before after started ended
  count=$(grep -c '^url' "$ROOT/get-$kind")
  before=$(moto_cpu)
  started=${EPOCHREALTIME}
  curl -sSf --no-progress-meter -Z --parallel-max "$PARALLEL" -K "$ROOT/get-$kind"
  ended=${EPOCHREALTIME}
  after=$(moto_cpu)
  awk -v k="$kind" -v n="$count" -v s="$started" -v e="$ended" -v b="$before" -v a="$after" \
    'BEGIN { printf "%s,%d,%.2f,%.2f\n", k, n, e - s, a - b }'
}

curl -sSf --no-progress-meter -Z --parallel-max "$PARALLEL" -K "$ROOT/put-small"
curl -sSf --no-progress-meter -Z --parallel-max "$PARALLEL" -K "$ROOT/put-large"
echo "set,objects,wall_s,moto_cpu_s"
for _ in 1 2 3; do
  fetch_set small
  fetch_set large
done
