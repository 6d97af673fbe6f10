# Sourced by scripts/serve and scripts/test: system packages, uv, and the adapter's environment.
# Everything heavy is cached under PASSERELLE_HOME (outside the clone), keyed by lock-file hashes.
# Cold run: PASSERELLE_HOME=$(mktemp -d) UV_CACHE_DIR=$(mktemp -d) scripts/test
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export PASSERELLE_HOME=${PASSERELLE_HOME:-$HOME/.cache/passerelle}
SETUP_LOGS="$PASSERELLE_HOME/logs"
mkdir -p "$SETUP_LOGS"

# run_step NAME LOG HINT COMMAND...: the command's output goes to LOG; a failure ends set-up with one plain line.
run_step() {
  local name=$1 log=$2 hint=$3
  shift 3
  if ! "$@" >>"$log" 2>&1; then
    tail -n 15 "$log" >&2
    echo "set-up failed at '$name'; details in $log; $hint" >&2
    exit 1
  fi
}
UV_VERSION=0.13.9
# ffmpeg: the adapter decodes every audio upload with it.
# prometheus and espeak-ng: the tests scrape Triton and the adapter with a real server, and speak
# their test audio.
SYSTEM_PACKAGES=(python3.11 python3.11-venv libpython3.11 ca-certificates ffmpeg prometheus espeak-ng)

missing=()
for package in "${SYSTEM_PACKAGES[@]}" ${EXTRA_SYSTEM_PACKAGES:-}; do
  [ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" = "install ok installed" ] || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "installing system packages: ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  apt_hint="check that Debian's package mirror answers (apt-get update) and that you may use apt-get (root or sudo)"
  run_step "system packages (apt-get update)" "$SETUP_LOGS/apt.log" "$apt_hint" $sudo_cmd apt-get update -qq
  run_step "system packages (${missing[*]})" "$SETUP_LOGS/apt.log" "$apt_hint" \
    env DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

tools="$PASSERELLE_HOME/tools/uv-$UV_VERSION"
if [ ! -x "$tools/bin/uv" ]; then
  rm -rf "$tools"
  uv_hint="check that PyPI answers (pip install uv==$UV_VERSION), then run the command again"
  run_step "uv $UV_VERSION" "$SETUP_LOGS/uv.log" "$uv_hint" /usr/bin/python3.11 -m venv "$tools"
  run_step "uv $UV_VERSION" "$SETUP_LOGS/uv.log" "$uv_hint" "$tools/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
export PATH="$tools/bin:$PATH"

adapter_key=$(sha256sum "$REPO/adapter/requirements.lock" | cut -c1-16)
ADAPTER_ENV="$PASSERELLE_HOME/envs/adapter-$adapter_key"
if [ ! -f "$ADAPTER_ENV/.complete" ]; then
  rm -rf "$ADAPTER_ENV"
  env_hint="check that PyPI answers (uv pip sync adapter/requirements.lock), then run the command again"
  run_step "the adapter's environment" "$SETUP_LOGS/adapter-env.log" "$env_hint" uv venv --quiet --python /usr/bin/python3.11 "$ADAPTER_ENV"
  run_step "the adapter's environment" "$SETUP_LOGS/adapter-env.log" "$env_hint" \
    uv pip sync --quiet --python "$ADAPTER_ENV/bin/python" "$REPO/adapter/requirements.lock"
  touch "$ADAPTER_ENV/.complete"
fi
# The adapter runs from the clone's source; the cached environment holds only its dependencies.
export PYTHONPATH="$REPO/adapter/src${PYTHONPATH:+:$PYTHONPATH}"
ADAPTER_PY="$ADAPTER_ENV/bin/python"
cd "$REPO"
