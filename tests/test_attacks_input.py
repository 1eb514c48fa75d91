"""Fault injection, input side: text encodings, oversized and extra fields in results files, and
the user's own code (a generator that raises, has a syntax error, or returns the wrong thing).

Every attack ends either in correct results or in one ``Error:`` line naming what is at fault;
a traceback only with ``cage-eval --debug``.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from analysis_fixtures import make_analysis_run, simulate, write_results
from click.testing import CliRunner
from crowd_fixtures import DEFAULT_RUN_ID
from generator_fixtures import label_folder, write_image_folder
from report_fixtures import make_report_run
from tiny_models import ImageStats, make_generator

from cage_eval import runs
from cage_eval.cli import cli

SUPPORT = Path(__file__).resolve().parent / "support"


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def analyze(results: Path):
    return invoke("analyze", results, "--n-boot", 0, "--no-gee", "-q")


@pytest.fixture()
def answered(tmp_path):
    """A hand-made run the report can read, with HIT items and answers (not analysed)."""
    run, items = make_analysis_run(tmp_path / "run", pairs_per_cell=6)
    make_report_run(run, run_id=DEFAULT_RUN_ID)
    write_results(run / runs.RESULTS, simulate(items, p_cause=0.8, seed=2), DEFAULT_RUN_ID)
    return run


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


def _write(path: Path, columns: list[str], rows: list[dict[str, str]], encoding="utf-8") -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    data = buf.getvalue().encode(encoding)
    path.write_bytes(data)
    return data


def _workers(run: Path) -> str:
    return (run / "analysis" / "workers.csv").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- encodings


def test_utf8_e_acute_straddling_64_kib_is_read_as_utf8(answered):
    results = answered / runs.RESULTS
    columns, rows = _rows(results)
    for row in rows[-6:]:
        row["WorkerId"] = "José"
    data = _write(results, columns, rows)
    # Pad the first row's free-text feedback so that one é straddles byte 65,536.
    head = data.index(b"\n") + 1
    at = data.index(rows[0]["AssignmentId"].encode(), head)
    pad_start = data.index(b",,", at)  # an empty field after AssignmentId
    need = 65535 - (pad_start + 1)
    assert need > 0
    rows[0]["AutoApprovalTime"] = "x" * need + "é"
    data = _write(results, columns, rows)
    assert data[65535:65537] == "é".encode(), data[65530:65540]
    assert len(data) > 70_000
    res = analyze(results)
    assert res.exit_code == 0, res.output
    assert "José" in _workers(answered) and "JosÃ©" not in _workers(answered)
    assert "Warning" not in res.output


def test_cp1252_file_is_read_with_a_warning(answered):
    results = answered / runs.RESULTS
    columns, rows = _rows(results)
    for row in rows[-6:]:
        row["WorkerId"] = "José"
    data = _write(results, columns, rows, encoding="cp1252")
    offset = data.index(b"\xe9")
    line = data[:offset].count(b"\n") + 1
    res = analyze(results)
    assert res.exit_code == 0, res.output
    assert "José" in _workers(answered)
    assert (f"Warning: {results}: not UTF-8 (byte 0xe9 at offset {offset:,}, line {line}); "
            "read as Windows-1252 (cp1252)") in res.stderr


def test_a_bad_byte_deep_in_the_file_is_named_by_offset_and_line(answered):
    results = answered / runs.RESULTS
    columns, rows = _rows(results)
    rows[0]["RequesterFeedback"] = "p" * 70_000  # the bad byte lies past the first 64 KiB
    rows[-3]["RequesterFeedback"] = "fine"
    data = _write(results, columns, rows)
    offset = data.index(b"fine")
    data = data[:offset] + b"\x81" + data[offset + 1:]
    results.write_bytes(data)
    line = data[:offset].count(b"\n") + 1
    assert offset > 70_000
    res = analyze(results)
    assert res.exit_code == 1
    assert res.output.strip() == (
        f"Error: {results}: undecodable byte 0x81 at offset {offset:,} (line {line}), neither "
        "UTF-8 nor Windows-1252; save it as UTF-8 CSV")


# --------------------------------------------------------------------------- field sizes, extra fields


def test_a_field_over_128_kib_gives_the_same_answers_to_analyze_and_report(answered):
    results = answered / runs.RESULTS
    columns, rows = _rows(results)
    rows[2]["RequesterFeedback"] = "y" * (200 * 1024)
    _write(results, columns, rows)
    res = analyze(results)
    assert res.exit_code == 0, res.output
    html = (answered / runs.REPORT).read_text(encoding="utf-8")
    assert "unreadable" not in html and "Per cell" in html
    res = invoke("report", answered)
    assert res.exit_code == 0, res.output
    assert "Per cell" in (answered / runs.REPORT).read_text(encoding="utf-8")


def test_a_field_over_the_limit_is_refused_alike_by_both(answered):
    from cage_eval.textfiles import MAX_FIELD_CHARS

    results = answered / runs.RESULTS
    columns, rows = _rows(results)
    rows[4]["RequesterFeedback"] = "y" * (MAX_FIELD_CHARS + 1)
    data = _write(results, columns, rows)
    line = data[:data.index(b"yyyy")].count(b"\n") + 1
    res = analyze(results)
    assert res.exit_code == 1
    message = (f"{results}: line {line}: a field of over {MAX_FIELD_CHARS:,} characters; "
               "a results file holds short answers: repair the file or download it again")
    assert res.output.strip() == f"Error: {message}"
    invoke("report", answered)
    html = (answered / runs.REPORT).read_text(encoding="utf-8")
    assert "over 1,048,576 characters" in html


def test_rows_with_extra_trailing_fields_are_set_aside_and_counted(answered):
    results = answered / runs.RESULTS
    columns, rows = _rows(results)
    data = _write(results, columns, rows)
    lines = data.decode().split("\n")
    lines[3] += ",surplus"
    lines[7] += ",a,b"
    results.write_text("\n".join(lines))
    res = analyze(results)
    assert res.exit_code == 0, res.output
    assert (f"Warning: {results}: 2 row(s) have more fields than the header (lines 4, 8); set "
            "aside, not analysed") in res.stderr
    analysis = json.loads((answered / "analysis" / "analysis.json").read_text())
    assert analysis["n_rows"] == len(rows) - 2 if "n_rows" in analysis else True
    html = (answered / runs.REPORT).read_text(encoding="utf-8")
    assert f"{len(rows) - 2} assignment row" in html or "Per cell" in html


# --------------------------------------------------------------------------- the user's code

BAD_MODELS = '''
import numpy as np
import torch
from tiny_models import make_generator


class Wrapped:
    def __init__(self, inner, mode):
        self.inner, self.mode, self.calls = inner, mode, 0
        self.latent_dim = inner.latent_dim

    def sample(self, n, seed):
        return self.inner.sample(n, seed)

    def decode(self, z):
        self.calls += 1
        if self.mode == "raise":
            raise ValueError("the weights are not loaded")
        if self.mode == "zero":
            return torch.zeros(z.shape[0], 3, 0, 0)
        x = self.inner.decode(z)
        if self.mode == "numpy" and self.calls > 3:
            return x.detach().numpy()
        return x


def make_raising():
    return Wrapped(make_generator(), "raise")


def make_zero():
    return Wrapped(make_generator(), "zero")


def make_late_numpy():
    return Wrapped(make_generator(), "numpy")


def make_failing():
    raise RuntimeError("no GPU memory")


def bad_encoder(x):
    raise KeyError("encoder weights")


def bad_classifier(x):
    return {"bright": torch.full((x.shape[0],), 0.5)} if x.shape[0] < 3 else 1 / 0
'''


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    (root / "src").mkdir()
    shutil.copy(SUPPORT / "tiny_models.py", root / "src" / "tiny_models.py")
    (root / "src" / "bad_models.py").write_text(BAD_MODELS)
    (root / "src" / "broken.py").write_text("def make(:\n    pass\n")
    folder, _ = write_image_folder(root / "faces", make_generator(), n=40, seed=1)
    label_folder(folder, ImageStats(), celeba=True)
    return root


def _experiment(root: Path, factory: str, encoder: str = "inversion") -> Path:
    path = root / f"exp_{factory.replace(':', '_')}_{encoder.replace(':', '_')}.toml"
    path.write_text(textwrap.dedent(f"""
        [experiment]
        name = "usercode"
        kind = "generator"
        [cage]
        pairs = [["bright", "red"]]
        outcomes = ["latent"]
        alphas = [1.0]
        alpha = 1.0
        k = 200
        n_null = 4
        baselines = false
        mmd_n = 20
        mmd_permutations = 4
        min_accuracy = 0.5
        [generator]
        factory = "{factory}"
        python_path = ["src"]
        [labels]
        source = "folder"
        images = "faces"
        attributes = "list_attr.txt"
        encoder = "{encoder}"
        {"inversion = { steps = 5, lr = 0.1 }" if encoder == "inversion" else ""}
        [pairs]
        n_same_source = 0
        n_same_destination = 0
    """))
    return path


@pytest.mark.parametrize("factory, says", [
    ("bad_models:make_raising", "decode raised ValueError: the weights are not loaded"),
    ("bad_models:make_failing", "make_failing(...) raised RuntimeError: no GPU memory"),
    ("broken:make", "cannot import module 'broken' (SyntaxError: "),
    ("bad_models:make_zero", "decode(z) returned shape (2, 3, 0, 0)"),
    ("bad_models:make_late_numpy", "decode returned ndarray; expected a torch tensor"),
])
def test_the_users_code_failing_is_one_error_line(user_code, tmp_path, factory, says):
    exp = _experiment(user_code, factory)
    out = tmp_path / "run"
    args = ("generate", "-e", exp, "--out", out, "--cache-dir", tmp_path / "cache")
    with torch.random.fork_rng():
        res = invoke("--quiet", *args)
    assert res.exit_code == 1, res.output
    text = res.output.strip()
    assert "\n" not in text and "Traceback" not in text, text
    assert text.startswith(f"Error: {exp}: [generator] factory = '{factory}': "), text
    assert says in text, text
    assert not out.exists()
    with torch.random.fork_rng():
        res = invoke("--debug", "--quiet", *args)
    assert res.exit_code == 1
    assert "Traceback (most recent call last)" in res.output
    assert res.output.strip().splitlines()[-1] == text


def test_the_users_encoder_failing_is_one_error_line(user_code, tmp_path):
    exp = _experiment(user_code, "tiny_models:make_generator", "bad_models:bad_encoder")
    res = invoke("--quiet", "generate", "-e", exp, "--out", tmp_path / "run")
    assert res.exit_code == 1, res.output
    assert res.output.strip() == (f"Error: {exp}: [labels] encoder = 'bad_models:bad_encoder': "
                                  "bad_encoder raised KeyError: 'encoder weights'")
    assert not (tmp_path / "run").exists()


def test_the_users_classifier_failing_mid_run_is_one_error_naming_it(user_code, monkeypatch):
    from cage.config.sections import Section
    from cage.labels.observation import from_section
    from cage_eval.errors import UserCodeError

    monkeypatch.syspath_prepend(str(user_code / "src"))
    section = Section({"kind": "callable", "callable": "bad_models:bad_classifier",
                       "batch_size": 4}, source="exp.toml", name="observation_classifier")
    classifier, _ = from_section(section, generator_device="cpu")
    assert set(classifier(torch.zeros(2, 3, 4, 4))) == {"bright"}
    with pytest.raises(UserCodeError) as info:
        classifier(torch.zeros(3, 3, 4, 4))  # a later batch, of 3 images, fails
    assert str(info.value) == ("exp.toml: [observation_classifier] callable = "
                               "'bad_models:bad_classifier': bad_classifier raised "
                               "ZeroDivisionError: division by zero")
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_an_attributes_file_in_windows_1252_is_read_with_a_warning(tmp_path):
    from cage.labels.attributes_file import read_attribute_table
    from cage_eval.errors import CageEvalWarning, InputFileError

    path = tmp_path / "labels.csv"
    path.write_bytes("file,smiling\nJosé.png,1\nAna.png,0\n".encode("cp1252"))
    with pytest.warns(CageEvalWarning, match=r"not UTF-8 \(byte 0xe9 at offset 16, line 2\)"):
        table = read_attribute_table(path, names=True)
    assert table.names == ["José.png", "Ana.png"]
    path.write_bytes(b"file,smiling\nA.png,1\nB\x81.png,0\n")
    with pytest.raises(InputFileError, match=r"undecodable byte 0x81 at offset 22 \(line 3\)"):
        read_attribute_table(path, names=True)
