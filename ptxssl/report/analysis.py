"""The report's analysis sections: clustering into pseudo-labels, and anomaly detection.

Both read what `ptxssl cluster` / `ptxssl anomaly` wrote (metrics.json, umap*.png,
histogram.png). The anomaly section compares embeddings with a `random` baseline; what that
baseline is (which arch) is read from the embeddings files, so the page does not claim an
arch the demo did not use.
"""
from __future__ import annotations

from pathlib import Path

from ptxssl.report.names import demo_arch, embeddings_attr, random_note, shared_arch
from ptxssl.report.read import fmt, missing, read_json
from ptxssl.report.render import Figure, Heading, Note, Table, Text

UMAP_CAPTION = (
    "Each dot is one image, placed by UMAP so that images with similar embeddings sit close "
    "together (fitted on the PCA-reduced features the clusterer saw; the distances between "
    "far-apart groups mean little). Left: coloured by the cluster each image was assigned, "
    "which becomes its pseudo-label for `pretrain --method pseudo` (noise in grey). Right: the "
    "same dots coloured by the label in the panel title. Colours that follow the groups mean the "
    "encoder separates that label without being told; evenly mixed colours mean it does not.")


def cluster_section(d: Path) -> list:
    """Per clustered embedding: the cluster sizes and quality, label agreement, UMAP figures."""
    out = [Heading("Clustering into pseudo-labels")]
    folders = sorted(p for p in (d / "cluster").glob("*") if p.is_dir())
    if not folders:
        return out + [missing("Clustering", d / "cluster")]
    for folder in folders:
        out.append(Heading(f"{folder.name} embeddings", 3))
        m = read_json(folder / "metrics.json")
        if not isinstance(m, dict):
            out.append(missing("Cluster metrics", folder / "metrics.json"))
        else:
            fit, sizes = m.get("fit", {}), m.get("sizes", {})
            out.append(Text(
                f"{fit.get('method', '?')} on a {fit.get('pca', {}).get('components', '?')}-d PCA of the embeddings: "
                f"**{m.get('n_clusters')} clusters** of {', '.join(str(v) for v in sizes.values())} images "
                f"({100 * m.get('noise_fraction', 0):.0f}% noise), **silhouette {fmt(m.get('silhouette'))}** "
                "(−1…1: above 0.5 well separated, near 0 overlapping)."))
            agree = m.get("agreement", {})
            keep = [k for k in ("finding", "anomaly") if k in agree]
            keep += sorted((k for k in agree if k not in keep), key=lambda k: -(agree[k].get("nmi") or 0))[:3]
            rows = [[k] + [fmt(agree[k].get(c)) for c in ("nmi", "ari", "purity", "purity_baseline")] for k in keep]
            out += [Text("Do the clusters follow the labels? NMI 0 = independent of the label, 1 = the same "
                         "partition; ARI is 0 for chance; purity only means something above its majority-class "
                         "baseline. `finding` is each image's single finding (or no finding / multiple), "
                         "`anomaly` the planted QC anomalies; then the three findings with the highest NMI."),
                    Table(["label", "NMI", "ARI", "purity", "majority baseline"], rows)]
        umaps = sorted(folder.glob("umap*.png"))
        out += [Figure(umap.relative_to(d), UMAP_CAPTION) for umap in umaps]
        if not umaps:
            out.append(missing("UMAP", folder / "umap.png", "it is skipped by `ptxssl cluster --no-umap`"))
    return out


def _scored_attr(d: Path, name: str, m: dict | None, key: str = "arch") -> str | None:
    """An attribute ("arch", "bn") of the embeddings anomaly run `name` scored: the file its
    metrics.json names, else the demo's `embed/<name>.h5` (the path recorded may be relative to
    another folder)."""
    recorded = (m or {}).get("config", {}).get("embeddings")
    for path in ([Path(recorded)] if recorded else []) + [d / "embed" / f"{name}.h5"]:
        if path.is_file():
            return embeddings_attr(path, key)
    return None


def _random_note(d: Path, names: list[str], metrics: dict[str, dict]) -> str:
    """What `random` is here: its own embeddings' arch, else the arch of the others or the demo's
    ("the same" only while no other scored embedding recorded another arch)."""
    archs = {name: _scored_attr(d, name, metrics.get(name)) for name in names}
    others = shared_arch(a for n, a in archs.items() if n != "random")
    arch = archs.get("random") or others or demo_arch(d)
    mixed = {a for n, a in archs.items() if n != "random" and a} - {arch}
    return random_note(arch, same=not mixed, bn=_scored_attr(d, "random", metrics.get("random"), "bn"))


def anomaly_section(d: Path) -> list:
    """Detection quality per planted anomaly kind and embedding, then each embedding's histogram."""
    out = [Heading("Anomaly detection")]
    folders = sorted((p for p in (d / "anomaly").glob("*") if p.is_dir()), key=lambda p: (p.name == "random", p.name))
    metrics = {p.name: read_json(p / "metrics.json") for p in folders}
    metrics = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    if not folders:
        return out + [missing("Anomaly scores", d / "anomaly")]
    names = [p.name for p in folders]
    note = _random_note(d, names, metrics) if "random" in names else ""
    labelled = {k: v["labels"] for k, v in metrics.items() if "labels" in v}
    if labelled:
        kinds = sorted({kind for lab in labelled.values() for kind in lab.get("per_kind", {})})
        first = next(iter(labelled.values()))
        rows = []
        for kind in [*kinds, None]:
            row = [kind or "**all anomalies**",
                   fmt((first["per_kind"].get(kind, {}) if kind else first).get("images"))]
            for lab in labelled.values():
                r = lab.get("per_kind", {}).get(kind, {}) if kind else lab
                row += [fmt(r.get("auroc")), fmt(r.get("average_precision"))]
            rows.append(row)
        header = ["anomaly kind", "images"] + [f"{h} ({name})" for name in labelled for h in ("AUROC", "AP")]
        out += [Text("How well the anomaly score separates each kind of planted anomaly from the normal images, "
                     "for each embedding" + (f" (`random` = {note})" if note else "") + ". AUROC: the chance that "
                     "an anomalous image scores above a normal one (0.5 = chance, 1 = perfect). AP: average "
                     "precision, whose chance level is the anomalies' share of the images."), Table(header, rows)]
    elif metrics:
        out.append(Note("The images carry no anomaly labels, so no AUROC / AP is reported."))
    for folder in folders:
        m = metrics.get(folder.name)
        if m is None:
            out.append(missing(f"Anomaly metrics ({folder.name})", folder / "metrics.json"))
        hist = folder / "histogram.png"
        if not hist.is_file():
            out.append(missing(f"Anomaly histogram ({folder.name})", hist))
            continue
        cfg = (m or {}).get("config", {})
        who = f"`{folder.name}` embeddings" + (f" ({note})" if folder.name == "random" else "")
        out.append(Figure(hist.relative_to(d), (
            f"Anomaly scores of every image from the {who}, one outline per group: normal images in grey and "
            f"each planted anomaly kind in colour (the legend gives the image counts). The score is the x-axis "
            f"label ({cfg.get('method', 'the')} scorer fitted on the {cfg.get('reference', 'reference')} images); "
            f"higher = more unusual. The dashed line is the threshold, the {fmt(cfg.get('percentile'), 0)}th "
            "percentile of the reference images' scores: images right of it are flagged. A good score puts the "
            "coloured outlines to the right of the grey one.")))
    return out
