"""`cage-eval train`: trains the digits models from scratch, reproducibly, and fails cleanly."""

import json

from click.testing import CliRunner

from cage_eval.cli import cli

TINY = ["--set", "data.n_digits=20", "--set", "data.draws=1", "--set", "vae.max_steps=3",
        "--set", "obs_classifier.max_steps=3"]


def test_train_writes_a_reproducible_bundle(tmp_path):
    runner = CliRunner()
    outs = []
    for k in range(2):
        result = runner.invoke(cli, ["train", "--out", str(tmp_path / f"w{k}"), "--cache-dir",
                                     str(tmp_path / "cache"), "--seed", "5", *TINY])
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()  # progress lines go to stderr
        assert lines[0].startswith("dataset: 20 images")
        assert lines[1].startswith("vae: 3 steps, final loss")
        assert "observation classifier (held-out accuracy on reconstructions): thick " in lines[2]
        assert any(line.startswith("wrote ") and "digits_vae.pt" in line for line in lines)
        outs.append(json.loads((tmp_path / f"w{k}" / "digits_weights.json").read_text()))
    assert outs[0]["sha256"] == outs[1]["sha256"]
    assert outs[0]["configs"]["vae"]["seed"] == 5 and outs[0]["configs"]["data"]["seed"] == 5
    assert (tmp_path / "w0" / "digits_vae.pt").read_bytes() == (
        tmp_path / "w1" / "digits_vae.pt").read_bytes()


def test_train_into_a_file_is_an_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = CliRunner().invoke(cli, ["train", "--out", str(target), *TINY])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "not a directory" in result.output
    result = CliRunner().invoke(cli, ["train", "--out", str(target / "sub"), *TINY])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "cannot write the weights" in result.output
    assert len(result.output.splitlines()) == 1


def test_train_rejects_other_kinds_and_bad_fields(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--experiment", "mog", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "trains the 'digits' and 'morphomnist' kinds" in result.output
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path), "--set", "vae.epochz=3"])
    assert result.exit_code == 1
    assert "[vae] epochz: unknown field" in result.output
    result = CliRunner().invoke(cli, ["train", "--out", str(tmp_path), "--set", "vae.epochs=0"])
    assert result.exit_code == 1 and "[vae] epochs = 0: must be at least 1" in result.output
