# Sourced from the repository root by the run scripts: PYTHON, unless already set, is the interpreter
# of the environment run_scripts/setup_env.sh makes ($UNIGROUND_VENV, else .venv). POSIX sh.
VENV=${UNIGROUND_VENV:-$(pwd)/.venv}
PYTHON=${PYTHON:-$VENV/bin/python}
export PYTHON
