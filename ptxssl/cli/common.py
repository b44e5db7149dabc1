"""The click group every command registers on, and the small helpers commands share.

A `UserError` from the library becomes one line on stderr and exit code 2; anything else is
a bug and keeps its traceback.
"""
from __future__ import annotations

import click

from ptxssl import __version__
from ptxssl.errors import UserError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(2)


def numbers(text: str, option: str, n: int | None = None, kind: type = float) -> tuple:
    """Parse "0.8,0.1,0.1" for `option` (exactly `n` numbers when given, else one or more),
    or fail with a line saying what was expected."""
    try:
        values = tuple(kind(x) for x in text.split(","))
    except ValueError:
        values = ()
    if not values or (n is not None and len(values) != n):
        count = f"{n} " if n is not None else ""
        example = "0.8,0.1,0.1" if kind is float else "0,1,2"
        raise UserError(f"{option} takes {count}comma-separated {kind.__name__}s like {example} (got {text!r})")
    return values


def echo_config(title: str, config: dict) -> None:
    click.echo(f"{title}: " + ", ".join(f"{k}={v}" for k, v in config.items()))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="ptxssl")
def cli() -> None:
    """Self-supervised chest X-ray encoders for pneumothorax segmentation.

    \b
    Data flow:  synth/real folder -> prepare -> cache.h5 -> pretrain -> embed/cluster/anomaly
                -> transfer/compare -> predict
    Start with `ptxssl demo`, which runs the stages on built-in synthetic data.
    """


def config_options(classes: dict[str, type], skip: tuple[str, ...] = ()):
    """Click options generated from config dataclass fields: one option per field, its help
    text, and its default(s) per config (`classes` maps a label such as a method name to its
    config class). The click default is None, so only what the user typed overrides the
    config file and the method's defaults."""
    import dataclasses

    from ptxssl.engine.config import field_help

    specs: dict[str, tuple[type, str]] = {}
    defaults: dict[str, dict[str, object]] = {}
    for label, cls in classes.items():
        for f in dataclasses.fields(cls):
            specs.setdefault(f.name, field_help(cls)[f.name])
            defaults.setdefault(f.name, {})[label] = f.default

    def shown(name: str) -> str:
        values = defaults[name]
        if len(set(map(str, values.values()))) == 1:
            return f"[default: {next(iter(values.values()))}]"
        return "[" + ", ".join(f"{k}: {v}" for k, v in values.items()) + "]"

    def decorate(fn):
        for name, (kind, help_text) in reversed(specs.items()):
            if name in skip:
                continue
            flag = "--" + name.replace("_", "-")
            decl = f"{flag}/--no-{flag[2:]}" if kind is bool else flag
            fn = click.option(decl, name, type=None if kind is bool else kind, default=None,
                              show_default=False, help=f"{help_text} {shown(name)}")(fn)
        return fn
    return decorate
