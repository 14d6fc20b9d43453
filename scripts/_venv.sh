# Shared by scripts/test and scripts/demo: make sure .venv exists and holds the
# current promptcal install. Re-installs only when pyproject.toml changed.
VENV="${PROMPTCAL_VENV:-$PWD/.venv}"
export NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$VENV/numba-cache}"
export PROMPTCAL_CACHE_DIR="${PROMPTCAL_CACHE_DIR:-$VENV/promptcal-cache}"
ensure_venv() {
    local extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    local stamp="$VENV/.promptcal-installed-$extras"
    local want
    want="$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
        echo "$want" > "$stamp"
    fi
}
