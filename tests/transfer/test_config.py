"""The transfer options: one dataclass for both tasks, each option of one task refused by the other."""
from __future__ import annotations

from dataclasses import fields, replace

import pytest

from ptxssl.errors import UserError
from ptxssl.transfer.config import TASKS, TransferConfig, check_task, resolve_config

TASK_FIELDS = [f for f in fields(TransferConfig) if "task" in f.metadata]


def _changed(f) -> object:
    """A value for field `f` other than its default."""
    if isinstance(f.default, str):
        return f.default + "x"
    return not f.default if isinstance(f.default, bool) else f.default + 1


def test_every_task_option_belongs_to_a_known_task():
    assert {f.name for f in TASK_FIELDS} >= {"loss", "postprocess", "threshold", "mask_input"}
    assert {f.metadata["task"] for f in TASK_FIELDS} <= set(TASKS)


@pytest.mark.parametrize("f", TASK_FIELDS, ids=lambda f: f.name)
def test_an_option_of_the_other_task_is_a_one_line_error_naming_it(f):
    own = f.metadata["task"]
    other = next(t for t in TASKS if t != own)
    cfg = replace(resolve_config(), **{f.name: _changed(f)})
    check_task(replace(cfg, task=own))  # its own task takes it
    with pytest.raises(UserError) as err:
        check_task(replace(cfg, task=other))
    message = str(err.value)
    assert "\n" not in message and f"--{f.name.replace('_', '-')} is for --task {own}" in message


def test_defaults_pass_and_an_unknown_task_is_named():
    for task in TASKS:
        check_task(resolve_config(overrides={"task": task}))
    with pytest.raises(UserError, match="--task must be segment or classify"):
        check_task(resolve_config(overrides={"task": "detect"}))


def test_several_foreign_options_are_named_together():
    cfg = resolve_config(overrides={"task": "classify", "loss": "bce:1", "postprocess": "fixed"})
    with pytest.raises(UserError, match="--loss and --postprocess are for --task segment"):
        check_task(cfg)
