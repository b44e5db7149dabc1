"""Transfer commands: `transfer` (one UNet run), `compare` (a grid of runs), `rescore`, `predict`."""
from __future__ import annotations

from pathlib import Path

import click

from ptxssl.cli.common import cli, config_options, echo_config, numbers
from ptxssl.engine.device import DEVICE_HELP, PRECISION_HELP, PRECISIONS
from ptxssl.errors import UserError
from ptxssl.transfer.metrics import POSTPROCESS_MODES
from ptxssl.transfer.model import TTA_MODES


@cli.command()
@click.argument("dicom_dir", type=click.Path(path_type=Path))
@click.option("--model", "run_dir", required=True, type=click.Path(path_type=Path),
              help="Transfer run folder (holding model/ and ptxssl.json).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Submission CSV to write (ImageId,EncodedPixels; SIIM RLE, -1 = empty).")
@click.option("--overlays", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write one PNG per image with the mask in red to this folder.")
@click.option("--batch-size", default=8, help="Images per forward pass.")
@click.option("--on-error", default="stop", type=click.Choice(["stop", "skip"]),
              help="skip: leave unreadable DICOMs out of the CSV and list them.")
@click.option("--classifier", type=click.Path(path_type=Path), default=None,
              help="A `transfer --task classify` run: images it calls negative get an empty mask (a cascade).")
@click.option("--device", default="auto", help=DEVICE_HELP)
@click.option("--precision", default="auto", type=click.Choice(PRECISIONS), help=PRECISION_HELP)
def predict(dicom_dir: Path, run_dir: Path, out: Path, overlays: Path | None, batch_size: int,
            on_error: str, classifier: Path | None, device: str, precision: str) -> None:
    """Segment every DICOM under DICOM_DIR with a trained UNet; write a SIIM submission CSV.

    Uses the run's image size, normalisation and tuned threshold / minimum area; masks come
    back at each DICOM's own size. ImageId is the SOPInstanceUID. With --classifier, images
    the classifier calls negative (below its val-tuned threshold) are written empty (-1).
    """
    from ptxssl.transfer.predict import predict_dicoms

    echo_config("predict", {"model": run_dir, "dicoms": dicom_dir, "out": out, "overlays": overlays,
                            "batch_size": batch_size, "on_error": on_error, "classifier": classifier,
                            "device": device, "precision": precision})
    summary = predict_dicoms(run_dir, dicom_dir, out, overlays_dir=overlays, batch_size=batch_size,
                             on_error=on_error, classifier=classifier, device=device, precision=precision)
    for path, reason in summary["skipped"]:
        click.echo(f"  skipped {path}: {reason}")
    if summary["duplicates"]:
        click.echo(f"  note: {len(summary['duplicates'])} ImageIds (SOPInstanceUIDs) occur in several "
                   f"files, e.g. {summary['duplicates'][0]}; SIIM scoring unions their rows")
    click.echo(f"wrote {out}: {summary['images']} images, {summary['positive']} with a mask"
               + (f", {summary['gated']} called negative by the classifier" if classifier else "")
               + (f", {len(summary['skipped'])} skipped" if summary["skipped"] else "")
               + (f"; overlays in {overlays}" if overlays else ""))


def _transfer_config_class() -> dict[str, type]:
    from ptxssl.transfer.run import TransferConfig

    return {"transfer": TransferConfig}


@cli.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML file of options (unknown keys are an error); command-line options win.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from checkpoints/last.ckpt.")
@click.option("--overwrite", is_flag=True, help="Start again in an --out that already holds a run.")
@click.option("--print-config", is_flag=True, help="Print the resolved config (every default) and exit.")
@config_options(_transfer_config_class())
def transfer(config_file: Path | None, resume: bool, overwrite: bool, print_config: bool, **options) -> None:
    """Train a UNet (encoder from --encoder, arch --arch) on a SIIM cache and score the test split.

    \b
    --encoder: random | imagenet | imagenet:FILE (ImageNet weights on disk, e.g. torchvision's
               resnet34 state_dict) | an encoder.safetensors | a `ptxssl pretrain` run folder.
    --arch:    any smp encoder name; by default an encoder file's own arch, else resnet34.
    Post-processing (threshold and minimum mask area, or --postprocess triplet) is tuned on val,
    then applied to test.
    """
    import yaml

    from ptxssl.engine.config import flat
    from ptxssl.transfer.run import resolve_config, transfer as run

    overrides = {k: v for k, v in options.items() if v is not None}
    if resume and not config_file and options.get("out") and (Path(options["out"]) / "config.yaml").is_file():
        config_file = Path(options["out"]) / "config.yaml"  # a resumed run keeps its own config
    cfg = resolve_config(config_file, overrides)
    if print_config:
        click.echo(yaml.safe_dump(flat(cfg), sort_keys=False).rstrip())
        return
    echo_config("transfer", flat(cfg))
    metrics = run(cfg, resume=resume, overwrite=overwrite)
    if metrics.get("task") == "classify":
        test = metrics["test"]
        click.echo(f"test image AUROC {test['image_auroc']:.4f}, precision {test['precision']:.4f}, recall "
                   f"{test['recall']:.4f}, F1 {test['f1']:.4f} ({test['n_images']} images; threshold "
                   f"{test['threshold']:.4g} tuned for F1 on val)")
        click.echo(f"classifier in {Path(cfg.out) / 'classifier.safetensors'}; metrics in {Path(cfg.out) / 'metrics.json'}")
    elif metrics:
        test, tuned = metrics["test"], metrics["val_tuned"]
        click.echo(f"test SIIM score {test['siim_dice']:.4f}, positive-image Dice {test['positive_dice']:.4f}, "
                   f"image AUROC {test['image_auroc']:.4f} ({metrics['test_images']} images; threshold "
                   f"{tuned['threshold']:g}, min area {tuned['min_area_fraction']:g} of the image, "
                   + (f"mask at {tuned['bottom']:g}, " if "bottom" in tuned else "")
                   + f"{'fixed' if cfg.postprocess == 'fixed' else 'tuned on val'})")
        click.echo(f"model in {Path(cfg.out) / 'model'} (smp from_pretrained); metrics in {Path(cfg.out) / 'metrics.json'}")


@cli.command()
@click.option("--encoder", "encoders", multiple=True, required=True,
              help="An encoder init, repeatable; NAME=INIT names it (e.g. vae=runs/vae).")
@click.option("--protocol", default=None,
              help="Start from a published evaluation protocol (e.g. gloria; see ptxssl/transfer/protocols/).")
@click.option("--fractions", default=None, help="Label fractions, comma-separated [default: 0.01,0.1,1.0].")
@click.option("--seeds", default=None, help="Seeds, comma-separated [default: 0,1,2].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML file of transfer options for every cell; command-line options win.")
@config_options(_transfer_config_class(), skip=("encoder", "label_fraction", "label_count", "seed", "fold", "task"))
def compare(encoders: tuple[str, ...], protocol: str | None, fractions: str | None, seeds: str | None,
            config_file: Path | None, **options) -> None:
    """Transfer every --encoder at every label fraction and seed; summarise with paired intervals.

    Writes OUT/results.csv (one row a run), OUT/table.md (mean ± std, an all-empty baseline,
    the perfect-detector bound and the difference from ImageNet, or random, with a paired
    bootstrap 95% interval) and OUT/dice_vs_fraction.png. Finished cells are skipped when the
    command is rerun. With --protocol, the protocol's options are the defaults; anything
    changed on top is listed in the table as a departure from the protocol. A grid has one
    encoder arch: --arch, or the one the encoder files share (random / imagenet rows use it too).
    """
    from ptxssl.engine.config import flat
    from ptxssl.encoders import parse_encoders
    from ptxssl.transfer.compare import compare as run
    from ptxssl.transfer.protocol import check_protocol_keys, departures, load_protocol
    from ptxssl.transfer.run import TransferConfig, resolve_config

    preset = load_protocol(protocol) if protocol else None
    if preset:
        check_protocol_keys(preset, TransferConfig)
    fraction_list = list(numbers(fractions, "--fractions")) if fractions else preset["fractions"] if preset else [0.01, 0.1, 1.0]
    seed_list = list(numbers(seeds, "--seeds", kind=int)) if seeds else preset["seeds"] if preset else [0, 1, 2]
    named = parse_encoders(list(encoders))
    cfg = resolve_config(config_file, {k: v for k, v in options.items() if v is not None},
                         preset["transfer"] if preset else None)
    if not cfg.out:
        raise click.UsageError("--out is required: the folder for the grid")
    notes = []
    if preset:
        moved = departures(preset, cfg, fraction_list, seed_list)
        notes.append(f"Protocol `{protocol}`: {preset['about']}"
                     + (f" This run departs from it: {'; '.join(moved)}." if moved else ""))
    echo_config("compare", {"protocol": protocol or "none", "encoders": named, "fractions": fraction_list,
                            "seeds": seed_list, **flat(cfg)})
    run(cfg, named, fraction_list, seed_list, cfg.out, echo=click.echo, notes=notes)
    out = Path(cfg.out)
    click.echo((out / "table.md").read_text().rstrip())
    click.echo(f"wrote {out / 'results.csv'}, {out / 'table.md'}, {out / 'dice_vs_fraction.png'}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--postprocess", default="tuned", type=click.Choice(POSTPROCESS_MODES),
              help="Post-processing rule to tune on the run's val images.")
@click.option("--tta", default="none", type=click.Choice(TTA_MODES), help="Test-time augmentation.")
@click.option("--threshold", default=0.5, help="Threshold of --postprocess fixed.")
@click.option("--data", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The cache the run was trained on [default: the one its config.yaml names].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write both sets of metrics and the difference to this JSON file.")
@click.option("--device", default="auto", help=DEVICE_HELP)
@click.option("--precision", default="auto", type=click.Choice(PRECISIONS), help=PRECISION_HELP)
def rescore(run_dir: Path, postprocess: str, tta: str, threshold: float, data: Path | None,
            out: Path | None, device: str, precision: str) -> None:
    """Score a finished segmentation run again under another --postprocess / --tta.

    Neither option changes training, so this answers "would the triplet rule or flip TTA have
    helped this run?" on its saved UNet, without training again: the rule is tuned on the
    run's val images and applied to its test images, and the run as trained is printed beside
    it with the paired 95 % interval of the difference over the test images.
    """
    from ptxssl.files import write_json
    from ptxssl.engine.config import load_yaml
    from ptxssl.transfer.metrics import tuned_rule
    from ptxssl.transfer.rescore import against_run
    from ptxssl.transfer.rescore import rescore as rescore_run

    if not (run_dir / "metrics.json").is_file():
        raise UserError(f"{run_dir}: no metrics.json; pass a finished `ptxssl transfer` run folder")
    if data is None:
        config = run_dir / "config.yaml"
        saved = load_yaml(config).get("data") if config.is_file() else None
        data = Path(saved) if saved else None
        if data is None or not data.is_file():
            raise UserError(f"{run_dir}: the cache it was trained on ({data}) is not there; pass --data")
    echo_config("rescore", {"run": run_dir, "data": data, "postprocess": postprocess, "tta": tta,
                            "device": device, "precision": precision})
    new = rescore_run(run_dir, data, postprocess, tta, threshold, device=device, precision=precision)
    report = against_run(run_dir, new)
    old = report["trained"]

    def line(label: str, test: dict, tuned: dict) -> str:
        cut, area, bottom = tuned_rule(tuned)
        rule = f"threshold {cut:.2f}, min area {area:.3g}" + (f", bottom {bottom:.2f}" if bottom else "")
        return (f"  {label:<28} SIIM Dice {test['siim_dice']:.3f}  positive Dice {test['positive_dice']:.3f}  "
                f"image AUROC {test['image_auroc']:.3f}  ({rule})")

    click.echo(line(f"as trained ({old['postprocess']}, {old['tta']})", old["test"], old["val_tuned"]))
    click.echo(line(f"rescored ({postprocess}, {tta})", new["test"], new["val_tuned"]))
    d, lo, hi = report["siim_difference"]
    click.echo(f"  Δ SIIM Dice {d:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired 95 % interval over "
               f"{len(new['dice'])} test images)")
    if out:
        write_json(out, {"postprocess": postprocess, "tta": tta, "threshold": threshold,
                         "val_tuned": new["val_tuned"], "test": new["test"], "trained": old,
                         "siim_difference": list(report["siim_difference"])})
        click.echo(f"wrote {out}")
