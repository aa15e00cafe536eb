#!/usr/bin/env bash
# The shipledger gate for the composite action (action.yml). Inputs arrive only as environment
# variables (INPUT_*), never spliced into this script, so a crafted input cannot run as shell.
# Writes the outputs `allowed`, `reason` and `message` and a job summary; exits 0 when the gate
# allows, 3 when it denies, 1 when it cannot decide (the job fails closed either way).
set -euo pipefail

named=0
for value in "${INPUT_ARTIFACT:-}" "${INPUT_DIGEST:-}" "${INPUT_IMAGE:-}"; do
  [ -n "$value" ] && named=$((named + 1))
done
if [ "$named" -ne 1 ]; then
  echo "::error title=shipledger gate::give exactly one of the inputs artifact, digest and image"
  exit 2
fi
if [ -z "${INPUT_SERVICE:-}" ] || [ -z "${INPUT_ENVIRONMENT:-}" ]; then
  echo "::error title=shipledger gate::the inputs service and environment are required"
  exit 2
fi

args=(gate --service "$INPUT_SERVICE" --env "$INPUT_ENVIRONMENT" --json)
if [ -n "${INPUT_ARTIFACT:-}" ]; then
  args+=(-- "$INPUT_ARTIFACT")  # a path is hashed as `shipledger register` hashed it
elif [ -n "${INPUT_DIGEST:-}" ]; then
  args+=(--digest "$INPUT_DIGEST")
else
  case "$INPUT_IMAGE" in
    *@sha256:*) args+=(--digest "sha256:${INPUT_IMAGE##*@sha256:}") ;;
    *) echo "::error title=shipledger gate::image $INPUT_IMAGE names no digest (REPO@sha256:...): a tag can move"
       exit 2 ;;
  esac
fi
[ -n "${INPUT_RPC_URL:-}" ] && export SHIPLEDGER_RPC_URL="$INPUT_RPC_URL"
[ -n "${INPUT_DEPLOYMENT:-}" ] && export SHIPLEDGER_DEPLOYMENT="$INPUT_DEPLOYMENT"

out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
status=0
python="${SHIPLEDGER_PYTHON:-python3}"  # the interpreter shipledger was installed into
"$python" -m shipledger.cli "${args[@]}" >"$out" 2>"$err" || status=$?

# allowed, reason and the sentence from the one JSON document the CLI prints (its error document
# when it could not decide); the last stderr line when there is no document (a usage error)
answer=$("$python" -c '
import json, sys
from shipledger.errors import gate_sentence
text = open(sys.argv[1]).read().strip()
doc = json.loads(text) if text else {}
if "allowed" in doc:
    try:
        sentence = gate_sentence(doc["reason"], doc["details"])
    except (KeyError, IndexError, ValueError):
        sentence = doc["reason"]
    print(str(doc["allowed"]).lower(), doc["reason"], sentence)
else:
    error = doc.get("error") or {}
    print("false", error.get("code", "unknown"), error.get("message", ""))
' "$out")
read -r allowed reason message <<<"$answer"
[ -n "$message" ] || message=$(sed -e 's/^shipledger: //' "$err" | tail -n 1)
[ "$status" -eq 0 ] || allowed=false

{
  echo "allowed=$allowed"
  echo "reason=$reason"
  delimiter="shipledger_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  echo "message<<$delimiter"
  echo "$message"
  echo "$delimiter"
} >>"${GITHUB_OUTPUT:-/dev/null}"

{
  echo "### shipledger gate: $([ "$allowed" = true ] && echo allowed || echo denied)"
  echo
  echo "| service | environment | reason |"
  echo "| --- | --- | --- |"
  echo "| \`$INPUT_SERVICE\` | \`$INPUT_ENVIRONMENT\` | \`$reason\` |"
  echo
  echo "$message"
} >>"${GITHUB_STEP_SUMMARY:-/dev/null}"

if [ "$status" -ne 0 ]; then
  echo "::error title=shipledger gate::$message"
fi
exit "$status"
