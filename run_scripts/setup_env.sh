# Source me: makes .venv with the pinned requirements on first use, reuses it after,
# and rebuilds it when requirements.txt changes. Sets PYTHON to its interpreter.
# POSIX sh, so `sh run_scripts/...` works as well as bash.
ROOT=${ROOT:-$(pwd)}
. "$ROOT/run_scripts/interpreter.sh"  # VENV: $UNIGROUND_VENV, else .venv
want=$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    base=$(command -v python3.11 || command -v python3)
    echo "setting up $VENV with $($base --version) (first run: several minutes)"
    "$base" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -r "$ROOT/requirements.txt"
    echo "$want" > "$VENV/.requirements.sha256"
fi
if ! command -v java >/dev/null 2>&1; then
    # pycocoevalcap's PTB tokenizer and METEOR run on Java.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null
    else
        echo "warning: no java found; caption evaluation (PTB tokenizer, METEOR) needs a JRE" >&2
    fi
fi
PYTHON="$VENV/bin/python"
export PYTHON
