"""The report's pretraining section: one row per run, then each run's figures with captions.

A run is named by its folder, titled by the method it recorded (the registry's human name)
and described by the arch it recorded, so the page says what was trained even when a folder
was renamed or the run used a non-default `--arch`.
"""
from __future__ import annotations

from pathlib import Path

from ptxssl.report.names import arch_title, method_rank, method_title, run_arch, run_method
from ptxssl.report.read import fmt, last, missing, read_csv, read_json
from ptxssl.report.render import Figure, Heading, Table, Text

FIGURE_CAPTIONS = {  # pretrain/<run>/figures/<name> -> what it shows and how to read it
    "reconstructions.png": (
        "Top row: a few training images; bottom row: the {method} model's reconstruction of each "
        "from its latent code (the posterior mean μ for a VAE). Compare each column top to bottom: "
        "lungs, heart and diaphragm in the right place mean the code keeps the anatomy; blur is "
        "expected (fine texture is the first thing a small latent loses), a grey average chest "
        "that is the same in every column means the model ignores its input."),
    "samples.png": (
        "Sixteen images decoded from random latent vectors z ~ N(0, I), drawn with a fixed seed so "
        "figures of two runs compare. They show what the VAE has learnt a chest X-ray looks like "
        "without any input: varied chest-like images mean the prior region of the latent space is "
        "filled; noise or sixteen near-identical blobs mean it is not (too short a run, or β too small)."),
    "views.png": (
        "Top row: training images; rows 2 and 3: two random augmentations of each (crop, small "
        "rotation and shift, brightness / contrast / gamma, blur, noise; no left-right flip, since "
        "the heart's side matters). {method} learns to embed the two views in a column close together "
        "(contrastive methods also push them away from the other images), so whatever differs between "
        "the rows is what the encoder learns to ignore: views that still show a recognisable chest are "
        "what it should see."),
}
OTHER_FIGURE = "A figure written by the {method} run (`{file}`)."


def pretrain_section(d: Path) -> list:
    """The runs under `d/pretrain`, in registry order of their methods."""
    out = [Heading("Pretraining")]
    runs = [(p, run_method(p)) for p in (d / "pretrain").glob("*") if p.is_dir()]
    runs.sort(key=lambda r: (method_rank(r[1]), r[0].name))
    if not runs:
        return out + [missing("Pretraining runs", d / "pretrain")]
    rows = []
    for run, method in runs:
        meta = read_json(run / "encoder.json")
        meta = meta if isinstance(meta, dict) else {}
        log = read_csv(run / "metrics.csv")
        arch = run_arch(run)
        rows.append([run.name, fmt(meta.get("steps")), fmt(last(log, "loss_epoch", "loss_step"), 1),
                     fmt(last(log, "probe_auroc")), method_title(method), arch_title(arch) if arch else "—"])
    out += [Text("One run per method on the ChestX-ray14-format images. The linear-probe AUROC is a ridge "
                 "classifier on the frozen embeddings predicting the findings on the val split (mean over "
                 "findings; 0.5 = chance; — when the probe was off, as in `--quick`): a quick check that the "
                 "representation carries label information. "
                 "The final loss is each method's own objective, not comparable between methods. "
                 "The encoder is the arch each run recorded (`--arch`)."),
            Table(["run", "steps", "final loss", "linear-probe AUROC", "method", "encoder"], rows)]
    for run, method in runs:
        title = method_title(method)
        figures = sorted((run / "figures").glob("*.png"))
        out.append(Heading(run.name if title == run.name else f"{run.name}: {title}", 3))
        if not figures:
            out.append(Text(f"No figures: the `{method}` method draws none."))
        for fig in figures:
            caption = FIGURE_CAPTIONS.get(fig.name, OTHER_FIGURE)
            out.append(Figure(fig.relative_to(d), caption.format(method=title, file=fig.name)))
    return out
