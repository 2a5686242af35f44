"""Run folders: the name a run keeps, the one resolver (folder, name, prefix, ``latest``) and its
did-you-mean, and the start-time order of ``list_runs``. Runs are written by hand here (a
``summary.json`` / ``config.yaml`` is all a run folder needs to be found)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
from workbench.train.run_dir import (
    RunDir,
    check_run_name,
    find_run,
    latest_run,
    list_runs,
    resolve_run,
    run_name,
    run_started,
    write_latest,
)


def make_run(task: str, name: str, started: str | None, when: float, checkpoint: bool = False,
             summary: bool = True) -> RunDir:
    """A run folder as the trainer leaves it (summary.json with task / name / started)."""
    run = RunDir.create(task, name, when=when)
    if summary:
        fields = {"run": run.name, "task": task, "name": name, "status": "finished"}
        run.update_summary(**fields, **({"started": started} if started else {}))
    run.config_path.write_text(f"name: {name}\n")
    if checkpoint:
        run.best_checkpoint.write_bytes(b"weights")
    return run


# ---------------------------------------------------------------------- the name a run keeps
@pytest.mark.parametrize("name", ["water-lr3e-4", "water_lr3e-4", "lr=3e-4,bs=8", "unet+dice", "me@home",
                                  "v1.2", "water run", "wässer-€", "a" * 100])
def test_a_valid_folder_name_is_kept_as_given(home, name):
    run = RunDir.create("segmentation", name, when=1_700_000_000)
    assert check_run_name(name) == name
    assert run.name.startswith(f"segmentation-{name}-2023") and run.path.is_dir()
    assert run_name(run.path) == name  # read back from the folder name alone (no summary yet)


@pytest.mark.parametrize("name, why", [
    ("", "cannot be empty"),
    ("water/lr", "cannot contain '/'"),
    ("water\\lr", "cannot contain '\\\\'"),
    ("a<b", "cannot contain '<'"), ("a>b", "cannot contain '>'"), ("a:b", "cannot contain ':'"),
    ('a"b', "cannot contain '\"'"), ("a|b", "cannot contain '|'"), ("a?b", "cannot contain '?'"),
    ("a*b", "cannot contain '*'"),
    ("nul\x00byte", "control characters"), ("tab\tname", "control characters"), ("line\nbreak", "control"),
    ("up..there", "cannot contain '..'"), ("..", "cannot contain '..'"),
    ("-rf", "cannot start with '-'"), (".hidden", "cannot start with '.'"),
    (" padded", "start or end with a space"), ("padded ", "start or end with a space"),
    ("dot.", "cannot end with '.'"),
    ("x" * 101, "too long (101 bytes"), ("é" * 51, "too long (102 bytes"),
])
def test_a_name_that_cannot_be_a_folder_is_one_line_naming_it(home, name, why):
    with pytest.raises(WorkbenchError) as info:
        check_run_name(name, "--name")
    message = str(info.value)
    assert message.startswith("--name ") and why in message and "\n" not in message
    assert repr(name[:40])[1:-1][:10] in message  # the value itself is named
    if "too long" not in why:  # a task may append to a name (generation's <name>-vae): create allows more
        with pytest.raises(WorkbenchError, match="run name"):
            RunDir.create("segmentation", name)
    assert list_runs() == []  # nothing was made


def test_create_keeps_the_folder_name_under_255_bytes(home):
    run = RunDir.create("generation", "n" * 100 + "-vae", when=1_700_000_000)  # a task's suffix fits
    assert run.name.startswith("generation-" + "n" * 100 + "-vae-")
    with pytest.raises(WorkbenchError, match="too long"):
        RunDir.create("generation", "n" * 250)
    assert [p.name for p in (home / "runs").iterdir()] == [run.name]  # nothing else was made


def test_run_dir_unique_names_and_lookup(home):
    a = RunDir.create("seg", "water run", when=1_700_000_000)
    b = RunDir.create("seg", "water run", when=1_700_000_000)
    assert a.path != b.path and b.name == a.name + "-2"
    assert a.name.startswith("seg-water run-") and a.checkpoints.is_dir()
    a.update_summary(status="running")
    b.update_summary(status="finished")
    assert find_run(a.name) == a.path and find_run(str(b.path)) == b.path
    assert find_run(b.name[:-1] + "2") == b.path
    with pytest.raises(WorkbenchError, match="ambiguous"):
        find_run("seg-water")
    with pytest.raises(WorkbenchError, match="nope: no such run under runs/"):
        find_run("nope")
    assert a.plot_path("curve").name == "curve.png" and a.plot_path("curve").parent.is_dir()
    a.append_metrics({"step": 1})
    a.append_metrics({"step": 5})
    with open(a.metrics_path, "a") as fh:
        fh.write('{"step": 6, "torn')  # a killed run can leave half a line
    a.truncate_metrics(4)
    assert a.read_metrics() == [{"step": 1}]


def test_the_trainer_keeps_the_name_in_the_run_folder(home, one_torch_thread):
    from tests.support import tiny_train

    summary = tiny_train.main(["--set", "train.epochs=1", "--set", "size=8", "--set", "val_size=4",
                               "--no-freeze", "--name", "water-lr3e-4"])
    folder = Path(summary["run_dir"]).name
    assert folder.startswith("tiny-water-lr3e-4-"), folder
    assert find_run("water-lr3e-4") == Path(summary["run_dir"])


# ---------------------------------------------------------------------- one resolver
@pytest.fixture
def runs(home) -> dict[str, RunDir]:
    """Three segmentation runs and a classification one; folder stamps disagree with start times
    on purpose (the clock of the second machine was wrong)."""
    return {
        "lr3": make_run("segmentation", "water-lr3e-4", "2026-11-21T10:15:00+00:00", 1_800_000_000, True),
        "lr1": make_run("segmentation", "water-lr1e-3", "2026-11-21T11:30:00+00:00", 1_700_000_000, True),
        "unet": make_run("segmentation", "unet3plus", "2026-11-20T09:00:00+00:00", 1_750_000_000),
        "cls": make_run("classification", "water-lr3e-4", "2026-11-22T08:00:00+00:00", 1_600_000_000, True),
    }


def test_find_run_takes_a_folder_a_name_a_prefix_or_latest(runs, home):
    lr3, lr1, unet, cls = (runs[k].path for k in ("lr3", "lr1", "unet", "cls"))
    assert find_run(lr3) == lr3 and find_run(str(lr3)) == lr3           # a path
    assert find_run(lr3.name) == lr3                                    # a folder name under runs/
    assert find_run(Path("runs") / lr1.name).resolve() == lr1.resolve()  # a path relative to the cwd
    assert find_run("water-lr1e-3") == lr1                              # the --name it was given
    assert find_run("segmentation-unet") == unet                        # a unique prefix
    assert resolve_run("unet3", "segmentation") == unet                 # a prefix without the task
    assert resolve_run("water-lr3e-4", "segmentation") == lr3           # the name, among the task's runs
    assert resolve_run("water-lr3e-4", "classification") == cls
    assert resolve_run(cls.name, "segmentation") == cls                 # an explicit folder is taken as is
    assert find_run("latest") == cls                                    # the last run to start, any task
    assert RunDir.open("latest", task="segmentation").path == lr1 and RunDir.open("unet3plus").path == unet
    assert resolve_run("latest", "segmentation") == lr1                 # newest checkpoint of the task
    write_latest(lr3, "segmentation")
    assert resolve_run("latest", "segmentation") == lr3 == latest_run("segmentation")  # the recorded one


def test_an_ambiguous_name_or_prefix_lists_the_candidates(runs):
    with pytest.raises(WorkbenchError) as info:
        find_run("water-lr3e-4")  # a segmentation and a classification run have this name
    message = str(info.value)
    assert "ambiguous run name" in message and runs["lr3"].name in message and runs["cls"].name in message
    with pytest.raises(WorkbenchError) as info:
        resolve_run("water", "segmentation")
    message = str(info.value)
    assert "ambiguous run prefix" in message and runs["lr3"].name in message and runs["lr1"].name in message
    assert runs["unet"].name not in message and runs["cls"].name not in message


def test_no_such_run_suggests_the_nearest_names(runs, home):
    with pytest.raises(WorkbenchError) as info:
        resolve_run("water-lr3e4", "segmentation")
    message = str(info.value)
    assert message.startswith("water-lr3e4: no such run under runs/")
    suggested = message.split("did you mean: ", 1)[1].rstrip("?").split(", ")
    assert suggested[0] == runs["lr3"].name and runs["cls"].name not in suggested  # the task's runs only
    with pytest.raises(WorkbenchError, match=f"did you mean: {runs['unet'].name}"):
        find_run("segmentation-unet3plus-2026")  # a folder name with a wrong stamp
    with pytest.raises(WorkbenchError) as info:
        find_run("completely-different")
    assert str(info.value) == "completely-different: no such run under runs/"  # nothing close: no list
    (home / "notes").mkdir()
    with pytest.raises(WorkbenchError, match="notes: a folder but not a run"):
        find_run("notes")


def test_latest_with_no_runs_is_a_user_error(home):
    with pytest.raises(WorkbenchError, match="latest: no run under runs/"):
        find_run("latest")
    with pytest.raises(WorkbenchError, match="latest: no segmentation run with a checkpoint"):
        resolve_run("latest", "segmentation")


# ---------------------------------------------------------------------- time order
def test_list_runs_is_in_start_order_not_folder_name_order(runs, home):
    order = [runs[k].path for k in ("unet", "lr3", "lr1", "cls")]
    assert sorted(order) != order  # the folder names alone would sort otherwise
    assert list_runs() == order
    assert list_runs(task="segmentation") == order[:3]


def test_a_run_without_a_start_time_is_placed_by_when_its_config_was_written(home):
    old = make_run("tiny", "b-old", None, 1_800_000_000, summary=False)
    new = make_run("tiny", "a-new", "2026-01-02T00:00:00+00:00", 1_700_000_000)
    when = run_started(new.path) - 3600
    os.utime(old.config_path, (when, when))
    assert run_started(old.path) == when
    assert list_runs() == [old.path, new.path]
    assert run_name(old.path) == "b-old"  # no summary: the name is read from the folder
