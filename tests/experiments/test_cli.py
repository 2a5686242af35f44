"""The experiments' verbs hang off ``workbench generate`` and name the generator like ``generate``
does: ``--model DIR`` for a DiffusionSat folder, ``--run RUN`` for a generation run."""

from __future__ import annotations


def test_eval_names_a_generation_run_with_run(home, cli):
    code, out, err = cli("generate", "eval", "--run", "gen-nope", "--seg-run", "none", "--no-progress")
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "gen-nope: no such run under runs/" in lines[0], err
    code, _, err = cli("generate", "eval", "--run", "latest", "--model", "some/folder")
    assert code == 2 and "not allowed with argument" in err


def test_the_experiment_verbs_are_listed_under_generate(cli):
    code, out, _ = cli("generate", "--help")
    assert code == 0 and "eval" in out and "seg-experiment" in out and "train" in out
