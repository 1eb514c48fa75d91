"""Every example in every ``--help`` text runs as written.

The examples are read from the commands' own help texts (so a new one is tested the day it is
written). Each one is parsed by the real command line: no ``Missing option``, no unknown option,
no bad choice. Then the ones that can run here are run as written, in a directory holding a small
digits run at ``runs/digits``, with a local stand-in where they would reach a service: the local
MTurk-protocol endpoint (``--endpoint-url``) for the MTurk commands, a copy of the run's answers
for a file the example names. An example not run says why (:data:`NOT_RUN`); every example is in
exactly one of the two lists.
"""

from __future__ import annotations

import shlex
import shutil

import click
import pytest
from click.testing import CliRunner

from cage_eval import runs
from cage_eval.cli import cli


def _examples(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``(command path, example line)`` for every ``cage-eval ...`` line of every help text
    (``\\`` continuations joined, ``# comments`` dropped)."""
    out = []
    lines = (command.help or "").replace("\\\\\n", "\\\n").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("Example: "):
            line = line[len("Example: "):]
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1].rstrip() + " " + lines[i].strip()
        if line.startswith("cage-eval "):
            out.append((" ".join(path) or "cage-eval", line.split("  #")[0].split(" # ")[0].strip()))
        i += 1
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            out += _examples(sub, (*path, name))
    return out


EXAMPLES = _examples(cli)

#: Examples run as written, with the local stand-in each needs (appended options, or files
#: made first); ``None``: nothing.
RUN: dict[str, str | None] = {
    "cage-eval hits runs/digits --attention-rate 0.1": None,
    "cage-eval export-batch runs/digits --out batch/ --image-base-url https://example.org/hits":
        None,
    "cage-eval publish runs/digits --dry-run --reward 0.05 --lifetime 3d --duration 10m "
    "--auto-approve 3d": None,
    "cage-eval publish runs/digits --sandbox --reward 0.05 --lifetime 3d --duration 10m "
    "--auto-approve 3d": "mturk",
    "cage-eval publish runs/digits --sandbox --reward 0.05 --assignments 3 --lifetime 3d "
    "--duration 10m --auto-approve 3d --attention-rate 0.1": "mturk",
    "cage-eval status runs/digits": "mturk",
    "cage-eval collect runs/digits": "mturk",
    "cage-eval review runs/digits --reject-failed-attention --feedback \"The attention check (a "
    "clearly damaged image) was answered wrongly.\"": "mturk",
    "cage-eval expire runs/digits": "mturk",
    "cage-eval report runs/digits": None,
    "cage-eval report runs/digits --out digits-report.html": None,
    "cage-eval simulate runs/digits --p-cause 'thick->bright=0.75' --spammers 0.1": "answers",
    "cage-eval analyze runs/digits/results.csv": "answers",
    "cage-eval analyze Batch_5012345_batch_results.csv --run runs/digits --correction holm":
        "answers",
    "cage-eval power --dags 4 --p-expected 0.6 --annotators 3": None,
    "cage-eval power --run runs/digits": None,
}

#: Examples parsed but not run here, and why.
NOT_RUN = {
    "cage-eval generate --out runs/digits": "the full digits run (minutes); the tests' small "
    "digits run is this command with smaller --set values (conftest.py)",
    "cage-eval generate": "the same as `generate --out runs/digits`",
    "cage-eval generate --experiment mog --out runs/mog": "trains a flow (minutes); "
    "tests/cli/test_generate.py runs -e mog with smaller --set values",
    "cage-eval generate -e mog_reversed --seed 3 --set cage.k=5000": "trains a flow (minutes)",
    "cage-eval generate -e my_experiment.toml --force": "the user's own file",
    "cage-eval generate -e celebahq_stylegan2 --device cuda": "needs a GPU and the user's "
    "StyleGAN2 weights (docs/generators.md)",
    "cage-eval train": "trains the digits models (minutes); tests/cli/test_train.py trains small ones",
    "cage-eval train --out cage/experiments/digits/weights": "the same training",
    "cage-eval train --seed 3 --out w3/": "the same training",
    "cage-eval train -e morphomnist --out cage/experiments/mnist/weights": "trains a Glow on MNIST "
    "(hours)",
    "cage-eval analyze prolific.csv --format tidy --out tables/": "a file from another "
    "platform; the analysis tests read the tidy format",
    "cage-eval turkle serve --home lab": "runs in the foreground until Ctrl-C; "
    "tests/cli/test_turkle.py runs the Turkle session on a real server",
    "cage-eval turkle serve --home lab --port 8000": "the same server",
    "cage-eval turkle add-workers --home lab alice bob carol": "needs the running server",
    "cage-eval turkle publish runs/digits --home lab": "needs the running server",
    "cage-eval turkle publish runs/digits --home lab --assignments 3": "needs the running server",
    "cage-eval turkle status runs/digits --home lab": "needs the running server",
    "cage-eval turkle collect runs/digits --home lab": "needs the running server",
    "cage-eval turkle serve --home lab --allowed-host study.example.org --behind-https-proxy":
        "a server in the foreground behind the user's HTTPS proxy",
    **{line: "Prolific's API and the running server behind a public HTTPS address; "
             "tests/cli/test_prolific.py runs these commands against a local Prolific stand-in"
       for line in (
           "cage-eval prolific bonus runs/digits --csv bonuses.csv",
           "cage-eval prolific collect runs/digits --home lab",
           "cage-eval prolific publish runs/digits --home lab --public-url "
           "https://study.example.org --reward 1.50 --minutes 10 --places 10 "
           "--tasks-per-participant 20",
           "cage-eval prolific publish runs/digits --home lab --public-url "
           "https://study.example.org --reward 1.50 --minutes 10 --places 10 "
           "--tasks-per-participant 20 --dry-run",
           "cage-eval prolific review runs/digits",
           "cage-eval prolific review runs/digits --reject-failed-attention --dry-run",
           "cage-eval prolific status runs/digits --home lab")},
}


def test_every_example_is_run_or_says_why_not():
    lines = {line for _, line in EXAMPLES}
    assert len(lines) >= 30
    assert lines == set(RUN) | set(NOT_RUN), (lines - set(RUN) - set(NOT_RUN),
                                               (set(RUN) | set(NOT_RUN)) - lines)
    assert not set(RUN) & set(NOT_RUN)


@pytest.mark.parametrize("where, line", EXAMPLES, ids=[line for _, line in EXAMPLES])
def test_every_example_parses_as_written(where, line, tmp_path, monkeypatch):
    """The command line accepts the example: every required option is there, every value valid
    (the top-level help once showed `publish --sandbox` without --reward). Run where
    ``runs/digits`` exists, as the examples assume."""
    (tmp_path / "runs" / "digits").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    command: click.Command = cli
    rest = shlex.split(line)[1:]
    while isinstance(command, click.Group):
        name, rest = rest[0], rest[1:]
        command = command.commands[name]
    with command.make_context(name, list(rest)) as ctx:
        assert ctx.command is command


def _run(line: str, extra: tuple[str, ...] = ()):
    res = CliRunner().invoke(cli, [*shlex.split(line)[1:], *extra], catch_exceptions=False)
    assert res.exit_code == 0, f"{line}\n{res.output}"
    return res


@pytest.mark.slow
def test_the_examples_run_as_written(tiny_digits_run, tmp_path, monkeypatch, aws_env, fake):
    """Two directories: one publishes runs/digits on the local MTurk endpoint, the other answers
    it with simulated workers and analyses them; each example runs there as written."""
    mturk_dir, answers_dir = tmp_path / "mturk", tmp_path / "answers"
    for base in (mturk_dir, answers_dir):
        shutil.copytree(tiny_digits_run, base / "runs" / "digits")
    order = [line for line in RUN if RUN[line] != "answers"]
    monkeypatch.chdir(mturk_dir)
    for line in order:
        _run(line, ("--endpoint-url", fake.url) if RUN[line] == "mturk" else ())
    assert (mturk_dir / "runs/digits" / runs.LEDGER).is_file()
    assert (mturk_dir / "digits-report.html").is_file() and (mturk_dir / "batch").is_dir()

    monkeypatch.chdir(answers_dir)
    for line in ("cage-eval hits runs/digits --attention-rate 0.1",
                 *(line for line in RUN if RUN[line] == "answers")):
        if line.startswith("cage-eval analyze Batch_"):
            shutil.copy(answers_dir / "runs/digits" / runs.RESULTS,
                        answers_dir / "Batch_5012345_batch_results.csv")
        _run(line)
    assert (answers_dir / "runs/digits/analysis/table2.csv").is_file()


def test_the_top_level_session_publishes_with_every_required_option():
    lines = [line for where, line in EXAMPLES if where == "cage-eval"]
    publish = [line for line in lines if line.startswith("cage-eval publish")]
    assert publish and all("--reward" in line for line in publish)


def test_generate_help_names_everything_it_writes():
    text = CliRunner().invoke(cli, ["generate", "--help"]).output
    for name in ("report.html", "directions.csv", "classifiers.csv", "pairs.csv", "images/",
                 "sheets/*.png", "plots/*.png", "manifest.json", "~/.cache/cage-eval/"):
        assert name in text, name


def test_report_on_a_folder_of_runs_names_them(tiny_digits_run, tmp_path):
    shutil.copytree(tiny_digits_run, tmp_path / "runs" / "digits", ignore=shutil.ignore_patterns(
        "images", "sheets", "plots", "*.npz"))
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "runs")])
    assert res.exit_code == 1
    assert res.output == (f"Error: {tmp_path / 'runs' / runs.MANIFEST}: missing; "
                          f"{tmp_path / 'runs'} is not a cage-eval run directory. It holds the "
                          f"run(s) {tmp_path / 'runs' / 'digits'}: name one of them, e.g. "
                          f"{tmp_path / 'runs' / 'digits'}\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(cli, ["report", str(empty)])
    assert res.exit_code == 1 and "make one with `cage-eval generate --out" in res.output
    assert not (empty / runs.REPORT).exists()


def test_example_lines_are_read_whole():
    assert ("cage-eval", "cage-eval publish runs/digits --sandbox --reward 0.05 --lifetime 3d "
            "--duration 10m --auto-approve 3d") in EXAMPLES
    assert not any(line.endswith("\\") or "#" in line for _, line in EXAMPLES)


def _paths(examples) -> set[str]:
    return {where for where, _ in examples}


def test_every_command_with_help_has_an_example():
    """The README promises every command has --help with an example."""
    commands = {" ".join(p) for p in _leaves(cli)}
    assert commands - _paths(EXAMPLES) == set(), commands - _paths(EXAMPLES)


def _leaves(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, sub in group.commands.items():
        if isinstance(sub, click.Group):
            out += _leaves(sub, (*path, name))
        else:
            out.append((*path, name))
    return out
