#!/usr/bin/env bash
# Checks template.yaml the way AWS would: cfn-lint, `sam validate --lint`, checkov's
# security checks, and `sam build` for the template's runtime and architecture when a
# matching interpreter exists here.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
SAM="${SAM:-.venv-sam/bin/sam}"
CHECKOV="${CHECKOV:-.venv-checkov/bin/checkov}"
export SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

echo "== cfn-lint template.yaml"
"$VENV/bin/cfn-lint" template.yaml
echo "== sam validate --lint"
"$SAM" validate --lint --template template.yaml
# Zero failed checks; every skip is a resource's Metadata.checkov.skip with its reason.
# --skip-download: no calls to the vendor's API (guidelines), so it runs offline.
echo "== checkov (cloudformation)"
"$CHECKOV" --file template.yaml --framework cloudformation --compact --quiet --skip-download

runtime=$(sed -n 's/^ *Runtime: python\([0-9.]*\)$/\1/p' template.yaml | head -n1)
interpreter=""
# pyenv's shims answer for every version but fail when that version is not selected:
# look in pyenv's version folders first, then for a real interpreter on PATH.
for candidate in "$(pyenv root 2>/dev/null)/versions/$runtime"*/bin/python"$runtime" \
  "$(command -v "python$runtime" 2>/dev/null | grep -v /shims/ || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then interpreter=$candidate; break; fi
done
if [ -z "$interpreter" ]; then
  echo "== sam build SKIPPED: no python$runtime interpreter on this machine (install it, e.g. pyenv install $runtime)"
  exit 0
fi
echo "== sam build (python$runtime from $interpreter)"
build_dir=$(mktemp -d)
trap 'rm -rf "$build_dir"' EXIT
PATH="$(dirname "$interpreter"):$PATH" "$SAM" build --template template.yaml \
  --build-dir "$build_dir" --no-cached --parallel >"$build_dir.log" 2>&1 || {
  cat "$build_dir.log"; rm -f "$build_dir.log"; exit 1; }
tail -n 3 "$build_dir.log"; rm -f "$build_dir.log"
# The layer must carry the shared package and its binary dependencies for arm64.
test -f "$build_dir/CommonLayer/python/retail_pulse/settings.py"
ls "$build_dir/CommonLayer/python/PIL/" | grep -q 'aarch64' || {
  echo "Pillow in the layer is not built for arm64"; exit 1; }
echo "sam build OK: layer and functions built for arm64"
