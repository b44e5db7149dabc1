"""The demo report: every stage's figures and key numbers on one page, as Markdown and HTML.

`ptxssl demo` leaves its results in a dozen folders; a reader wants one page that says what
each picture shows and how to read it. `write_report` collects whatever stage outputs exist
in a demo folder (a stage that has not run, or whose files were moved, is noted and skipped,
never an error) and writes two files:

- report.md links the PNGs by relative path, so it reads well inside the folder (an IDE,
  GitHub) and stays small;
- report.html embeds every PNG as a base64 data URI, so the one file opens anywhere, mailed
  or copied away from the folder (no JavaScript, no network).

The content is built once as a list of blocks (heading, text, note, table, figure) and
rendered twice, so the two files cannot drift apart. Stage outputs are read from their
documented files only (metrics.json, table.md, results.csv, figures), never recomputed.
"""
from __future__ import annotations

import csv
import json
import time
from datetime import datetime
from pathlib import Path

from ptxssl.files import write_json, write_text
from ptxssl.report.render import Figure, Heading, Note, Table, Text, render_html, render_markdown

TIMINGS = "timings.json"  # StageTimer's file: {"runs": n, "stages": {stage text: seconds}}
DISPLAY_NAMES = {"vae": "β-VAE", "ae": "autoencoder", "simclr": "SimCLR", "moco": "MoCo", "byol": "BYOL"}
METHOD_ORDER = ("ae", "vae", "simclr", "moco", "byol", "supervised", "pseudo")  # page order: as the demo runs them
FEW_TEST_IMAGES = 50  # below this many test images a Dice difference is mostly noise
RANDOM_NOTE = "the same ResNet-34 with untrained random weights, the floor a learned encoder must beat"
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


def write_report(demo_dir: str | Path) -> tuple[Path, Path]:
    """Write `demo_dir/report.md` and `demo_dir/report.html` from the stage outputs present.

    Returns:
        (report.md path, report.html path).
    """
    demo_dir = Path(demo_dir)
    blocks = build_report(demo_dir)
    md, page = demo_dir / "report.md", demo_dir / "report.html"
    write_text(md, render_markdown(blocks))
    write_text(page, render_html(blocks, demo_dir))
    return md, page


def build_report(d: Path) -> list:
    """The report's blocks, in page order."""
    intro = Text(f"Outputs of `ptxssl demo` in `{d}`, collected on {datetime.now():%Y-%m-%d %H:%M}. "
                 "Each figure's caption says what it shows and how to read it. The demo runs on small "
                 "synthetic images for a few steps, so it shows that every stage works and what its "
                 "outputs look like, not how good the methods are.")
    blocks = [Heading("ptxssl demo report", 1), intro]
    for section in (_timings, _pretrain, _cluster, _anomaly, _compare):
        try:
            blocks += section(d)
        except (KeyError, TypeError, ValueError, AttributeError) as e:  # a hand-edited or foreign file
            blocks.append(Note(f"Skipped a section ({section.__name__.lstrip('_')}): unexpected content in its "
                               f"files ({type(e).__name__}: {e})."))
    return blocks


def _missing(what: str, path: Path,
             how: str = "rerun `ptxssl demo` (it continues after the last finished stage)") -> Note:
    return Note(f"{what}: not available (`{path}` is missing); {how}.")


def _json(path: Path) -> dict | list | None:
    """A stage's JSON, or None when it is absent or unreadable (reported as missing)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(x, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


class StageTimer:
    """Adds up the wall-clock time of each `ptxssl demo` stage in `demo_dir/timings.json`.

    A stage's time is known when the next stage starts. Times are summed over every run into
    the folder, keyed by the stage's text: a rerun skips finished stages, so rerunning the demo
    (to refresh the report, or to resume after Ctrl-C) keeps what the earlier run measured, and a
    resumed stage shows its parts together. Paths inside the folder are shown relative to it.
    Indented lines (compare's per-run echoes) belong to the stage above them and are not stages.
    """

    def __init__(self, demo_dir: str | Path) -> None:
        self.path = Path(demo_dir) / TIMINGS
        self.prefix = f"{demo_dir}/"  # dropped from the stage text: short rows, same keys if the folder moves
        old = _json(self.path)
        self.stages: dict[str, float] = old.get("stages", {}) if isinstance(old, dict) else {}
        self.runs = (old.get("runs", 0) if isinstance(old, dict) else 0) + 1
        self.current: tuple[str, float] | None = None

    def stage(self, text: str) -> None:
        """Close the running stage and open `text` (at the current time)."""
        if text.startswith(" "):
            return
        now = time.perf_counter()
        if self.current:
            name, start = self.current
            self.stages[name] = round(self.stages.get(name, 0.0) + now - start, 1)
        self.current = (text.replace(self.prefix, ""), now)
        write_json(self.path, {"runs": self.runs, "stages": self.stages})


def _timings(d: Path) -> list:
    log = _json(d / TIMINGS)
    out = [Heading("Stage timings")]
    if not isinstance(log, dict) or not log.get("stages"):
        return out + [_missing("Stage timings", d / TIMINGS, "they are written by `ptxssl demo` as it runs")]
    rows = [[name, f"{sec:.1f}"] for name, sec in log["stages"].items() if not name.startswith("info ")]
    total = sum(log["stages"].values())
    text = (f"Wall-clock time of each stage, summed over the {log.get('runs', 1)} `ptxssl demo` run(s) into this "
            "folder (a rerun skips finished stages, so a stage resumed after an interruption shows its parts "
            f"added up); {total:.0f} s in all. The report's own stage is timed from the next run on.")
    return out + [Text(text), Table(["stage", "took, s"], rows)]


def _last(rows: list[dict], *columns: str) -> float | None:
    """The last non-empty value of the first of `columns` present in a metrics.csv."""
    for col in columns:
        values = [r[col] for r in rows if r.get(col) not in (None, "")]
        if values:
            return float(values[-1])
    return None


def _pretrain(d: Path) -> list:
    out = [Heading("Pretraining")]
    runs = sorted((p for p in (d / "pretrain").glob("*") if p.is_dir()),
                  key=lambda p: (METHOD_ORDER.index(p.name) if p.name in METHOD_ORDER else len(METHOD_ORDER), p.name))
    if not runs:
        return out + [_missing("Pretraining runs", d / "pretrain")]
    rows = []
    for run in runs:
        meta = _json(run / "encoder.json") or {}
        try:
            with open(run / "metrics.csv", newline="") as f:
                log = list(csv.DictReader(f))
        except OSError:
            log = []
        rows.append([run.name, _fmt(meta.get("steps")), _fmt(_last(log, "loss_epoch", "loss_step"), 1),
                     _fmt(_last(log, "probe_auroc"))])
    out += [Text("One run per method on the ChestX-ray14-format images. The linear-probe AUROC is a ridge "
                 "classifier on the frozen embeddings predicting the findings on the val split (mean over "
                 "findings; 0.5 = chance; — when the probe was off, as in `--quick`): a quick check that the "
                 "representation carries label information. "
                 "The final loss is each method's own objective, not comparable between methods."),
            Table(["run", "steps", "final loss", "linear-probe AUROC"], rows)]
    for run in runs:
        method = (_json(run / "encoder.json") or {}).get("method", run.name)
        figures = sorted((run / "figures").glob("*.png"))
        out.append(Heading(f"{run.name}", 3))
        if not figures:
            out.append(Text(f"No figures: the `{method}` method draws none."))
        name = DISPLAY_NAMES.get(method, method)
        for fig in figures:
            caption = FIGURE_CAPTIONS.get(fig.name, "A figure written by the {method} run (`{file}`).")
            out.append(Figure(fig.relative_to(d), caption.format(method=name, file=fig.name)))
    return out


def _cluster(d: Path) -> list:
    out = [Heading("Clustering into pseudo-labels")]
    folders = sorted(p for p in (d / "cluster").glob("*") if p.is_dir())
    if not folders:
        return out + [_missing("Clustering", d / "cluster")]
    for folder in folders:
        out.append(Heading(f"{folder.name} embeddings", 3))
        m = _json(folder / "metrics.json")
        if not isinstance(m, dict):
            out.append(_missing("Cluster metrics", folder / "metrics.json"))
        else:
            fit, sizes = m.get("fit", {}), m.get("sizes", {})
            out.append(Text(
                f"{fit.get('method', '?')} on a {fit.get('pca', {}).get('components', '?')}-d PCA of the embeddings: "
                f"**{m.get('n_clusters')} clusters** of {', '.join(str(v) for v in sizes.values())} images "
                f"({100 * m.get('noise_fraction', 0):.0f}% noise), **silhouette {_fmt(m.get('silhouette'))}** "
                "(−1…1: above 0.5 well separated, near 0 overlapping)."))
            agree = m.get("agreement", {})
            keep = [k for k in ("finding", "anomaly") if k in agree]
            keep += sorted((k for k in agree if k not in keep), key=lambda k: -(agree[k].get("nmi") or 0))[:3]
            rows = [[k] + [_fmt(agree[k].get(c)) for c in ("nmi", "ari", "purity", "purity_baseline")] for k in keep]
            out += [Text("Do the clusters follow the labels? NMI 0 = independent of the label, 1 = the same "
                         "partition; ARI is 0 for chance; purity only means something above its majority-class "
                         "baseline. `finding` is each image's single finding (or no finding / multiple), "
                         "`anomaly` the planted QC anomalies; then the three findings with the highest NMI."),
                    Table(["label", "NMI", "ARI", "purity", "majority baseline"], rows)]
        for umap in sorted(folder.glob("umap*.png")):
            out.append(Figure(umap.relative_to(d), (
                "Each dot is one image, placed by UMAP so that images with similar embeddings sit close "
                "together (fitted on the PCA-reduced features the clusterer saw; the distances between "
                "far-apart groups mean little). Left: coloured by the cluster each image was assigned, "
                "which becomes its pseudo-label for `pretrain --method pseudo` (noise in grey). Right: the "
                "same dots coloured by the label in the panel title. Colours that follow the groups mean the "
                "encoder separates that label without being told; evenly mixed colours mean it does not.")))
        if not list(folder.glob("umap*.png")):
            out.append(_missing("UMAP", folder / "umap.png", "it is skipped by `ptxssl cluster --no-umap`"))
    return out


def _anomaly(d: Path) -> list:
    out = [Heading("Anomaly detection")]
    folders = sorted((p for p in (d / "anomaly").glob("*") if p.is_dir()), key=lambda p: (p.name == "random", p.name))
    metrics = {p.name: _json(p / "metrics.json") for p in folders}
    metrics = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    if not folders:
        return out + [_missing("Anomaly scores", d / "anomaly")]
    labelled = {k: v["labels"] for k, v in metrics.items() if "labels" in v}
    if labelled:
        kinds = sorted({kind for lab in labelled.values() for kind in lab.get("per_kind", {})})
        first = next(iter(labelled.values()))
        rows = []
        for kind in [*kinds, None]:
            row = [kind or "**all anomalies**",
                   _fmt((first["per_kind"].get(kind, {}) if kind else first).get("images"))]
            for lab in labelled.values():
                r = lab.get("per_kind", {}).get(kind, {}) if kind else lab
                row += [_fmt(r.get("auroc")), _fmt(r.get("average_precision"))]
            rows.append(row)
        header = ["anomaly kind", "images"] + [f"{h} ({name})" for name in labelled for h in ("AUROC", "AP")]
        out += [Text("How well the anomaly score separates each kind of planted anomaly from the normal images, "
                     "for each embedding (`random` = " + RANDOM_NOTE + "). AUROC: the chance that an anomalous "
                     "image scores above a normal one (0.5 = chance, 1 = perfect). AP: average precision, whose "
                     "chance level is the anomalies' share of the images."), Table(header, rows)]
    elif metrics:
        out.append(Note("The images carry no anomaly labels, so no AUROC / AP is reported."))
    for folder in folders:
        m = metrics.get(folder.name)
        if m is None:
            out.append(_missing(f"Anomaly metrics ({folder.name})", folder / "metrics.json"))
        hist = folder / "histogram.png"
        if not hist.is_file():
            out.append(_missing(f"Anomaly histogram ({folder.name})", hist))
            continue
        cfg = (m or {}).get("config", {})
        who = f"`{folder.name}` embeddings" + (f" ({RANDOM_NOTE})" if folder.name == "random" else "")
        out.append(Figure(hist.relative_to(d), (
            f"Anomaly scores of every image from the {who}, one outline per group: normal images in grey and "
            f"each planted anomaly kind in colour (the legend gives the image counts). The score is the x-axis "
            f"label ({cfg.get('method', 'the')} scorer fitted on the {cfg.get('reference', 'reference')} images); "
            f"higher = more unusual. The dashed line is the threshold, the {_fmt(cfg.get('percentile'), 0)}th "
            "percentile of the reference images' scores: images right of it are flagged. A good score puts the "
            "coloured outlines to the right of the grey one.")))
    return out


def _compare(d: Path) -> list:
    out = [Heading("Segmentation transfer: Dice by encoder and label budget")]
    grid = d / "compare"
    table = grid / "table.md"
    if table.is_file():
        lines = [ln.strip() for ln in table.read_text().splitlines() if ln.strip()]
        cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.startswith("|")]
        out += [Text(ln) for ln in lines if not ln.startswith("|")]
        if len(cells) >= 2:
            out.append(Table(cells[0], [c for c in cells[2:]]))
        tests = [(_json(p) or {}).get("test", {}).get("n_images") for p in sorted(grid.glob("runs/*/*/metrics.json"))]
        n = next((t for t in tests if t), None)
        if n is not None and n < FEW_TEST_IMAGES:
            out.append(Note(f"Only {n} test images: differences between encoders at this size are mostly noise "
                            "(see the bootstrap intervals). Run `ptxssl demo` without `--quick`, or on real data."))
    else:
        out.append(_missing("Comparison table", table))
    try:
        with open(grid / "results.csv", newline="") as f:
            seconds = [float(r["seconds"]) for r in csv.DictReader(f) if r.get("seconds") not in (None, "", "nan")]
        if seconds:
            out.append(Text(f"{len(seconds)} UNet trainings took {sum(seconds):.0f} s in total "
                            f"({min(seconds):.0f}–{max(seconds):.0f} s each)."))
    except (OSError, KeyError, ValueError):
        pass
    plot = grid / "dice_vs_fraction.png"
    if plot.is_file():
        out.append(Figure(plot.relative_to(d), (
            "Test SIIM score (Dice per image averaged over the test set; an empty prediction on an empty mask "
            "scores 1) against the fraction of labelled training images used (log scale), one line per "
            "encoder initialisation of the same UNet; error bars are the std over seeds (none with one seed). "
            "A pretrained encoder helps where its line lies above `random`, above all at the small fractions; "
            "lines with equal scores hide one another (the table above has every value).")))
    else:
        out.append(_missing("Dice-vs-fraction plot", plot))
    return out


# ---- rendering ----
