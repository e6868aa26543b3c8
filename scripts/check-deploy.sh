#!/usr/bin/env bash
# Validates the deployment files offline: docker-compose.yml with docker-compose, the
# Kubernetes manifests with kubernetes-validate (bundled schemas, no cluster), each
# kustomization rendered by `kubectl kustomize` where kubectl is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$HOME/.cache/studio-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import kubernetes_validate" 2>/dev/null \
  || "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate
validate() { "$venv/bin/kubernetes-validate" --strict --quiet "$@"; }

docker-compose -f docker-compose.yml config -q

k8s=deploy/kubernetes
if command -v kubectl >/dev/null; then
  out=$(mktemp -d)
  for dir in "$k8s"/*/; do
    name=$(basename "$dir")
    kubectl kustomize "$dir" > "$out/$name.yaml"
    validate "$out/$name.yaml"
    echo "deploy: $k8s/$name renders and validates ($(grep -c '^kind:' "$out/$name.yaml") objects)"
  done
  rm -rf "$out"
else
  # Without kustomize, validate every manifest file as written (patches are not applied).
  mapfile -t files < <(find "$k8s" -name '*.yaml' ! -name kustomization.yaml | sort)
  validate "${files[@]}"
  echo "deploy: ${#files[@]} manifest files validate (kubectl not installed: kustomizations not rendered)"
fi
