"""Config resolution: method defaults < YAML file < command line; unknown keys are errors."""
from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner

from ptxssl.cli import cli
from ptxssl.errors import UserError
from ptxssl.engine.config import flat
from ptxssl.pretrain.methods import METHODS
from ptxssl.pretrain.run import resolve_config


def test_precedence_defaults_file_cli(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("method: vae\nbeta: 4\nepochs: 3\nlr: 0.01\n")
    cfg, mcfg = resolve_config("ae", file, {"lr": 0.002})
    assert cfg.method == "vae" and cfg.epochs == 3  # the file chose the method and epochs
    assert mcfg.beta == 4.0 and isinstance(mcfg.beta, float)  # YAML int coerced to the field's float
    assert mcfg.lr == 0.002  # the command line wins over the file
    assert mcfg.latent_dim == METHODS["vae"].config_class().latent_dim  # untouched default


def test_saved_config_repeats_the_run(tmp_path):
    cfg, mcfg = resolve_config("simclr", None, {"temperature": 0.2, "batch_size": 16})
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(flat(cfg, mcfg)))
    again = resolve_config("ae", saved, {})
    assert flat(*again) == flat(cfg, mcfg)


@pytest.mark.parametrize("text, message", [
    ("lrr: 0.1\n", "unknown key.*lrr"),
    ("epochs: many\n", "epochs must be int"),
    ("- a\n- b\n", "expected a mapping"),
    ("epochs: [1\n", "not valid YAML"),
])
def test_bad_config_files_name_the_file_and_key(tmp_path, text, message):
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        resolve_config("ae", file, {})
    assert "bad.yaml" in str(err.value)


def test_print_config_lists_every_default_of_the_method():
    result = CliRunner().invoke(cli, ["pretrain", "--method", "moco", "--print-config"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    cfg, mcfg = resolve_config("moco", None, {})
    assert printed == flat(cfg, mcfg) and printed["queue_size"] == mcfg.queue_size


def test_an_option_of_another_method_is_refused():
    result = CliRunner().invoke(cli, ["pretrain", "--method", "ae", "--beta", "2", "--print-config"])
    assert result.exit_code == 2 and "--beta" in result.output and "ae" in result.output


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_trains_and_exports_from_the_cli(method, nih_cache, tmp_path):
    args = ["pretrain", "--method", method, "--data", str(nih_cache), "--out", str(tmp_path / method),
            "--max-steps", "2", "--batch-size", "8", "--workers", "0", "--no-probe"]
    if method == "pseudo":
        import pandas as pd

        from ptxssl.datasets.torch_data import CacheDataset
        ids = CacheDataset(nih_cache).all_ids
        pd.DataFrame({"image_id": ids, "label": [i % 3 - 1 for i in range(len(ids))]}).to_csv(
            tmp_path / "labels.csv", index=False)
        args += ["--labels", str(tmp_path / "labels.csv")]
    if method == "moco":
        args += ["--queue-size", "16"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    meta = yaml.safe_load((tmp_path / method / "encoder.json").read_text())
    assert meta["method"] == method and meta["steps"] == 2


def test_print_config_notes_where_a_default_departs_from_the_paper():
    """MoCo's queue is 4096 here, 65536 in MoCo v2: --print-config says so on that line (a YAML
    comment, so the output still reads back as the config), and not once the option matches."""
    shown = CliRunner().invoke(cli, ["pretrain", "--method", "moco", "--print-config"])
    assert shown.exit_code == 0, shown.output
    lines = dict(line.split(":", 1) for line in shown.output.splitlines())
    assert "# the paper: 65536 (MoCo v2" in lines["queue_size"] and "# the paper: 256" in lines["batch_size"]
    assert "# the paper" not in lines["temperature"]  # 0.2, as in MoCo v2
    assert yaml.safe_load(shown.output)["queue_size"] == 4096
    matched = CliRunner().invoke(cli, ["pretrain", "--method", "moco", "--queue-size", "65536", "--print-config"])
    assert "queue_size: 65536\n" in matched.output
