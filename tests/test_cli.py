"""The command line: help texts, the synth -> prepare -> info path, and one-line user errors."""
import pytest
from click.testing import CliRunner

from ptxssl.cli import cli


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return invoke


@pytest.mark.parametrize("command", ["synth", "prepare", "info", "demo"])
def test_every_command_has_help_with_defaults(run, command):
    result = run(command, "--help")
    assert result.exit_code == 0
    assert "Usage:" in result.output
    if command in ("synth", "prepare"):
        assert "[default:" in result.output


def test_synth_prepare_info(run, tmp_path):
    result = run("synth", tmp_path / "data", "--count", 8, "--size", 32, "--format", "siim", "--workers", 1)
    assert result.exit_code == 0, result.output
    assert "8 images" in result.output and "count=8" in result.output
    result = run("prepare", tmp_path / "data" / "siim", "--dataset", "siim", "--out", tmp_path / "c.h5",
                 "--size", 32, "--workers", 1)
    assert result.exit_code == 0, result.output
    result = run("info", tmp_path / "c.h5")
    assert result.exit_code == 0
    assert "siim, 8 images of 32x32" in result.output and "Pneumothorax" in result.output


def test_user_errors_are_one_line_exit_2(run, tmp_path):
    result = run("prepare", tmp_path / "nowhere", "--dataset", "siim", "--out", tmp_path / "c.h5")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and "nowhere" in lines[0] and "Traceback" not in result.output
    result = run("prepare", tmp_path, "--dataset", "siim", "--out", tmp_path / "c.h5", "--split", "0.8,0.2")
    assert result.exit_code == 2 and "--split" in result.output
    result = run("info", tmp_path / "missing.h5")
    assert result.exit_code == 2 and "missing.h5" in result.output
    result = run("prepare", tmp_path, "--dataset", "dicomdir", "--out", tmp_path / "c.h5")
    assert result.exit_code == 2 and "dicomdir" in result.output


def test_quick_demo_runs_every_stage_and_a_rerun_skips_finished_ones(run, tmp_path):
    result = run("demo", "--quick", "--out", tmp_path / "demo")
    assert result.exit_code == 0, result.output
    for stage in ("synth", "prepare siim", "prepare chestxray14", "prepare chexpert", "pretrain vae",
                  "pretrain simclr", "embed", "cluster", "pretrain pseudo", "anomaly", "compare", "report", "done"):
        assert stage in result.output, stage
    demo = tmp_path / "demo"
    assert (demo / "pretrain" / "vae" / "figures" / "samples.png").is_file()
    assert (demo / "cluster" / "vae" / "labels.csv").is_file() and (demo / "compare" / "table.md").is_file()
    assert (demo / "report.html").read_text().count('<img src="data:image/png;base64,') >= 5
    again = run("demo", "--quick", "--out", tmp_path / "demo")
    assert again.exit_code == 0
    assert "synth:" not in again.output and "prepare" not in again.output and "pretrain" not in again.output
    assert "(done before)" in again.output  # finished transfer cells are not trained again
