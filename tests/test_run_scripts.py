"""Every run script finds the interpreter as run_scripts/setup_env.sh makes it: $PYTHON if set, else
$UNIGROUND_VENV/bin/python, else .venv/bin/python."""
import glob
import os
import subprocess

import pytest

from conftest import ROOT

SOURCED = {"run_scripts/averaging/common.sh", "run_scripts/slurm/rank_env.sh", "run_scripts/slurm/rendezvous.sh"}
SCRIPTS = sorted(path for path in (os.path.relpath(p, ROOT) for p in glob.glob(f"{ROOT}/run_scripts/*/*.sh"))
                 if path not in SOURCED)


@pytest.fixture()
def recording_venv(tmp_path):
    """A virtual environment whose python only writes down how it was called."""
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "$0 $*" >> {tmp_path / "calls"}\n')
    python.chmod(0o755)
    return tmp_path / "venv", tmp_path / "calls"


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_run_script_uses_the_interpreter_of_unigrounds_venv(script, recording_venv, tmp_path):
    venv, calls = recording_venv
    environment = {key: value for key, value in os.environ.items() if key != "PYTHON"}
    environment.update(UNIGROUND_VENV=str(venv), OUT=str(tmp_path / "out"), RESULTS=str(tmp_path / "results"),
                       SAVE_DIR=str(tmp_path / "save"))
    result = subprocess.run(["sh", script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = calls.read_text().splitlines()
    assert lines and all(line.startswith(f"{venv}/bin/python ") for line in lines)
    assert any(entry in line for line in lines for entry in ("train.py", "evaluate.py"))
