"""``cage-eval generate`` through click's CliRunner, on a shrunken mog experiment."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from cage_eval import runs
from cage_eval.cli import cli

SMALL = ["--set", "flow.steps=60", "--set", "data.n=600", "--set", "cage.k=400",
         "--set", "cage.n_null=10", "--set", "cage.mmd_n=40", "--set", "cage.mmd_permutations=10",
         "--set", "cage.k_null_observation=100", "--set", "cage.alphas=[0.5, 1]"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _generate(*args):
    return CliRunner().invoke(cli, ["generate", *args], catch_exceptions=False)


@pytest.mark.slow
def test_generate_writes_a_complete_reproducible_run(tmp_path, cache):
    out = tmp_path / "run"
    res = _generate("--experiment", "mog", "--out", str(out), "--cache-dir", str(cache), *SMALL)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()  # the result; progress lines go to stderr
    assert lines[0].startswith("mog: run ") and f"written to {out}" in lines[0]
    table = [line for line in lines if line.startswith("m_c / m_e") and line.endswith("]")]
    assert [line.split()[3] for line in table] == ["latent", "observation"]
    assert f"plots: {out / runs.PLOTS_DIR}/ (delta_tau__*, null__*, mmd__*)" in lines
    assert lines[-1].startswith("call rule (controlled): an arrow needs a significant GATE")
    assert ("p-values: level 0.05 for the study, Bonferroni-corrected over its 2 pairs x "
            "variants: 0.025 per call; 10 draws per null, set in [cage] n_null, so the smallest "
            "possible p is 0.0909; that cannot reach 0.025: no arrow is possible (n_null >= 79)"
            ) in lines
    assert any(line.startswith("calibration control: Δτ with each outcome recalibrated")
               for line in lines)
    for line in table:
        call, paper = line.split("  ")[-1].rsplit(" ", 1)
        assert call in ("independent (⊥)", "m_c -> m_e", "m_e -> m_c") \
            or call.startswith("undetermined (?): ")
        assert paper in ("[⊥]", "[?]", "[->]", "[<-]")
    words = lines[lines.index("in words:") + 1:][:2]
    assert all(w.startswith("  CAGE finds ") for w in words)
    manifest = runs.read_manifest(out)
    assert manifest["complete"] and manifest["config"]["cage"]["k"] == 400
    assert manifest["setup"]["flow"]["cached"] is False
    for name in (runs.DIRECTIONS, runs.CLASSIFIERS, runs.ALPHA_SWEEP, runs.NULL_DRAWS,
                 runs.ARTIFACTS):
        assert (out / name).is_file()
    assert len(list((out / runs.PLOTS_DIR).glob("*.png"))) == 4

    again = tmp_path / "again"
    res = _generate("-e", "mog", "-o", str(again), "--cache-dir", str(cache), *SMALL)
    assert res.exit_code == 0, res.output
    assert json.loads((again / runs.MANIFEST).read_text())["setup"]["flow"]["cached"] is True
    for name in (runs.DIRECTIONS, runs.CLASSIFIERS, runs.ALPHA_SWEEP, runs.NULL_DRAWS):
        assert (out / name).read_bytes() == (again / name).read_bytes()

    # An existing run is refused without --force and replaced with it.
    res = _generate("-e", "mog", "-o", str(out), "--cache-dir", str(cache), *SMALL)
    assert res.exit_code == 1
    assert res.output.strip() == (f"Error: {out}: directory exists and is not empty; "
                                  "pass --force to replace it")
    res = _generate("-e", "mog", "-o", str(out), "--cache-dir", str(cache), "--force", "--seed", "1",
                    *SMALL)
    assert res.exit_code == 0, res.output
    assert runs.read_manifest(out)["seeds"]["master"] == 1


@pytest.mark.parametrize("args, message", [
    (["-e", "nope"], "Error: unknown experiment 'nope'; choose one of"),
    (["--set", "cage.alpha=0"], "Error: built-in:mog: [cage] alpha: alpha = 0.0 must be a positive"),
    (["--set", "cage.alphas=[0.5, -1]"], "Error: built-in:mog: [cage] alphas: alpha = -1.0 must"),
    (["--set", "cage.k=1"], "Error: built-in:mog: [cage] k = 1: need at least 2 prior latents"),
    (["--set", "cage.pairs=[['m_c', 'm_x']]"],
     "Error: built-in:mog: [cage] pairs: unknown attribute 'm_x'; this experiment has m_c, m_e"),
    (["--set", "data.cut=100"], "Error: attribute 'm_e' has a single class (0 zeros, 600 ones)"),
    (["--set", "flow.hidden=[0]"], "Error: built-in:mog: [flow] hidden = [0]: must be a list"),
    (["--set", "flow.colour=1"], "Error: built-in:mog: [flow] colour: unknown field"),
    (["--set", "pairs.dags=['m_c->m_e']"],
     "Error: built-in:mog: [pairs]: unknown section for a mog experiment"),
])
def test_bad_input_is_one_error_line_and_leaves_nothing(tmp_path, cache, args, message):
    out = tmp_path / "run"
    # The mog experiment, shrunk; a later "-e" in args overrides it (click keeps the last value).
    res = _generate("-e", "mog", "-o", str(out), "--cache-dir", str(cache), *SMALL, *args)
    assert res.exit_code == 1
    # One Error line, last; before it only the progress lines of the stages that ran.
    *progress_lines, last = res.output.strip().splitlines()
    assert last.startswith(message), res.output
    assert all(re.match(r"^\[ *\d+\.\d s\] ", line) for line in progress_lines), res.output
    assert list(tmp_path.iterdir()) == []
    quiet = CliRunner().invoke(cli, ["--quiet", "generate", "-e", "mog", "-o", str(out),
                                     "--cache-dir", str(cache), *SMALL, *args])
    assert quiet.exit_code == 1 and quiet.output.strip() == last


def test_malformed_toml_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[experiment]\nname = "x"\nkind = \n')
    res = _generate("-e", str(bad), "-o", str(tmp_path / "run"))
    assert res.exit_code == 1
    assert res.output.startswith(f"Error: {bad}: malformed TOML")
    assert not (tmp_path / "run").exists()


def test_list_and_help():
    res = _generate("--list")
    assert res.exit_code == 0
    names = [line.split()[0] for line in res.output.splitlines()]
    assert "mog" in names and "mog_reversed" in names
    res = _generate("--help")
    assert res.exit_code == 0 and "Run CAGE on an experiment" in res.output
    assert "--set SECTION.KEY=VALUE" in res.output


def test_ctrl_c_after_checkpoints_names_the_folder_and_what_to_do(tmp_path, monkeypatch):
    """Interrupted once eq. 9's work is checkpointed: the message names the hidden folder, how to
    resume (the same command) and how to start over (delete it)."""
    import cage.run.pipeline
    from cage.compute.checkpoints import checkpoint_dir

    out = tmp_path / "runs" / "mog"

    def interrupted(config, out, **kwargs):
        folder = checkpoint_dir(out)
        folder.mkdir(parents=True)
        (folder / "part-r0-abc.npz").write_bytes(b"x" * 2_000_000)
        raise KeyboardInterrupt

    monkeypatch.setattr(cage.run.pipeline, "run_experiment", interrupted)
    res = CliRunner().invoke(cli, ["generate", "-e", "mog", "--out", str(out)])
    assert res.exit_code == 1
    folder = tmp_path / "runs" / ".mog.checkpoints"
    assert res.stderr == (
        f"Interrupted: the eq. 9 work done so far is saved in {folder}/ (1 file(s), 2.0 MB). Run "
        "the same command again to resume from it (it is deleted once the run completes), or "
        "delete that folder to start over.\n\nAborted: nothing more was done.\n")

    # Interrupted before any checkpoint: only the usual line.
    monkeypatch.setattr(cage.run.pipeline, "run_experiment",
                        lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    res = CliRunner().invoke(cli, ["generate", "-e", "mog", "--out", str(tmp_path / "other")])
    assert res.exit_code == 1 and res.stderr == "\nAborted: nothing more was done.\n"
