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


def recorded_call(script, recording_venv, tmp_path, **settings):
    venv, calls = recording_venv
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHON", "LR", "MAX_UPDATE")}
    environment.update(UNIGROUND_VENV=str(venv), SAVE_DIR=str(tmp_path / "save"), **settings)
    result = subprocess.run(["sh", script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)
    return result, calls.read_text().split() if calls.exists() else []


def option(words, name):
    return words[words.index(name) + 1]


def test_a_recipe_names_its_settings_and_the_environment_overrides_them(recording_venv, tmp_path):
    _, words = recorded_call("run_scripts/caption/train.sh", recording_venv, tmp_path)
    assert [option(words, o) for o in ("--task", "--max-update", "--lr", "--best-checkpoint-metric")] == \
        ["caption", "600", "2e-3", "cider"]
    assert '"max_len_b": 24}' in " ".join(words)
    recording_venv[1].unlink()
    _, words = recorded_call("run_scripts/caption/train.sh", recording_venv, tmp_path, LR="5e-4", MAX_UPDATE="10")
    assert (option(words, "--lr"), option(words, "--max-update")) == ("5e-4", "10")


def test_a_recipe_with_an_unknown_or_missing_setting_is_refused(recording_venv, tmp_path):
    scripts = tmp_path / "repo" / "run_scripts"  # train_common.sh works from the checkout two levels up
    (scripts / "recipe").mkdir(parents=True)
    for name in ("train_common.sh", "interpreter.sh"):
        (scripts / name).symlink_to(os.path.join(ROOT, "run_scripts", name))
    recipe, common = scripts / "recipe" / "train.sh", scripts / "train_common.sh"
    recipe.write_text(f'. "{common}"\ntrain_task --task caption --data x.tsv --updates 5 --lr 1e-3 --best-metric cider '
                      '--max-output-tokens 8 --warmup 3\n')
    result, words = recorded_call(str(recipe), recording_venv, tmp_path)
    assert result.returncode == 2 and "unknown option --warmup" in result.stderr and words == []
    recipe.write_text(f'. "{common}"\ntrain_task --task caption --data x.tsv --updates 5 --lr 1e-3\n')
    result, words = recorded_call(str(recipe), recording_venv, tmp_path)
    assert result.returncode == 2 and "needs --task, --data" in result.stderr and words == []
