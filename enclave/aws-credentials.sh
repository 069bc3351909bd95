#!/bin/sh
# Writes the instance role's temporary credentials (IMDSv2) to an AWS shared credentials
# file, whole (written aside, then renamed), mode 0600. `keyserver host` reads that file each
# time the enclave asks, and lends what it holds. Run by aws-credentials.timer every 4
# minutes: IMDS has new credentials at least 5 minutes before the old ones expire, so the
# file never holds expired ones. The enclave borrows them at start only (to unwrap its keys).
#
#   aws-credentials.sh /run/keyserver-host/credentials
set -eu
out="${1:?usage: aws-credentials.sh FILE}"
imds="http://169.254.169.254/latest"
token="$(curl -fsS --max-time 5 -X PUT "$imds/api/token" \
  -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')"
get() { curl -fsS --max-time 5 -H "X-aws-ec2-metadata-token: $token" "$imds/$1"; }
role="$(get meta-data/iam/security-credentials/ | head -n 1)"
[ -n "$role" ] || { echo "this instance has no role" >&2; exit 1; }
umask 077
tmp="$(mktemp "$out.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
get "meta-data/iam/security-credentials/$role" | jq -r '
  if .Code != "Success" then error("IMDS: \(.Code)") else . end
  | "[default]",
    "aws_access_key_id = \(.AccessKeyId)",
    "aws_secret_access_key = \(.SecretAccessKey)",
    "aws_session_token = \(.Token)"' > "$tmp"
mv -f "$tmp" "$out"
trap - EXIT
