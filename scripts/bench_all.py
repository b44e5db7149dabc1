"""Run every benchmark and write BENCHMARKS.md: the machine, then each benchmark's command and table.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_all.py            # small: ~10 min on 2 cores
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/bench_all.py --full     # the docstrings' commands: ~1.5 h
    .venv/bin/python scripts/bench_all.py --smoke --out /tmp/BENCH.md        # ~1 min: checks the plumbing only

Runs scripts/bench_data.py (twice: the data path, the loader's overhead), bench_pretrain.py,
bench_device.py (on the CPU) and bench_analysis.py, each as its own subprocess (a fresh process, so its memory peak and thread pools are its own), streams their
output to the console and turns it into Markdown tables. Every figure is shown beside the
baseline the benchmark measured in the same run, and as their ratio: a number from this
machine means little on another, a ratio against a plain run on the same machine at the same
moment travels. A GPU section runs bench_device.py's GPU table (224 / 512 px, fp32 and mixed
precision) when `torch.cuda.is_available()`, and says plainly that no GPU was available
otherwise.

Options of a benchmark pass through: `--pretrain-args "--methods simclr --steps 50"` is
appended after the preset's arguments, and the benchmark's argparse keeps the last value.
`--only data,gpu` runs a subset. The header records the CPU, cores, RAM, torch, GPU, the
load average before and after (the machine may be shared: a high load means slow, noisy
figures) and OMP_WAIT_POLICY. BENCHMARKS.md is rewritten atomically after each section and
says whether the run is complete, so a killed run never leaves a file that looks finished.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ptxssl.files import write_text

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = {"data": "bench_data.py", "loader": "bench_data.py", "pretrain": "bench_pretrain.py",
           "device": "bench_device.py", "analysis": "bench_analysis.py", "gpu": "bench_device.py"}
TITLES = {"data": "Data path", "loader": "Loader overhead", "pretrain": "Pretraining loop (CPU)",
          "device": "Memory format and the UNet on the CPU", "analysis": "Embedding analysis",
          "gpu": "GPU: fp32 and mixed precision, channels-last"}
CPU_DEVICE = "--device cpu --pretrain-size 64 --unet-size 128 --pretrain-batch 16 --unet-batch 8"
PRESETS = {  # section -> arguments; `full` = the commands in each script's docstring
    "smoke": {"data": "--count 16 --size 64 --prepare-count 8",
              "loader": "--loader-sizes 64 --loader-count 64",
              "pretrain": "--methods ae --size 32 --batch-size 8 --steps 4 --images 48",
              "device": "--device cpu --pretrain-size 32 --unet-size 32 --pretrain-batch 8 --unet-batch 4 "
                        "--steps 4 --images 48 --unet-images 48",
              "analysis": "--sizes 1000 --steps kmeans",
              "gpu": "--steps 5 --images 200"},
    "small": {"data": "--count 200 --size 256 --prepare-count 50",
              "loader": "--loader-sizes 256,512 --loader-count 2000",
              "pretrain": "--methods ae,vae,simclr --size 64 --steps 15 --images 800",
              "device": CPU_DEVICE + " --steps 12 --images 400 --unet-images 400",
              "analysis": "--sizes 10000",
              "gpu": ""},  # bench_device's defaults: 224 / 512 px, 25 steps (scripts/gpu_check.sh)
    # --images 1600: bench_pretrain's advice, the 30 timed steps fit in one epoch (as in the README)
    "full": {"data": "--count 2000 --size 256 --prepare-count 200",
             "loader": "--loader-sizes 256,512 --loader-count 2000",
             "pretrain": "--methods ae,vae,simclr --size 64 --steps 30 --images 1600",
             "device": CPU_DEVICE + " --steps 20 --images 800 --unet-images 400",
             "analysis": "--sizes 10000,50000,112120",
             "gpu": ""},
}
READING = {
    "data": "Ratio = reading the HDF5 cache / decoding the DICOM on every access, same loader settings "
            "(higher = the cache helps more). Synth and prepare have no in-run baseline: they are "
            "absolute rates on this machine.",
    "pretrain": "Ratio = ptxssl's engine (Lightning, checkpoints, logging) / a hand-written loop around the "
                "same method, steady state (1.00 = the engine costs nothing; higher = faster than plain).",
    "analysis": "Ratio = ptxssl's time / the bare scikit-learn or umap-learn calls doing the same work on the same "
                "data (same standardisation, solver, inits, seeds), in the same process (lower = faster than "
                "plain). ARI is against the planted clusters.",
}
READING["loader"] = ("Ratio = ptxssl's CacheDataset / a bare h5py Dataset reading the same rows as float tensors, "
                     "same DataLoader (batch 32, shuffled), same run (1.00 = the cache costs nothing over h5py).")
READING["device"] = ("ptxssl's engine beside a plain PyTorch loop on the same model, batch and data, channels-last "
                     "(the default); `auto` precision is 32-true on the CPU, so there is no mixed-precision row. The "
                     "last table measures the memory-format default itself.")
READING["gpu"] = READING["device"].split(";")[0] + ", fp32 and mixed precision; peak GPU memory; post-fit " \
    "evaluation of the trained UNet on the device."
PASS_THROUGH = ("analysis", "loader", "device", "gpu")  # scripts that print their own Markdown tables


@dataclass
class Section:
    name: str
    command: list[str]
    stdout: list[str] = field(default_factory=list)
    stderr_tail: str = ""
    returncode: int | None = None
    seconds: float = 0.0


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    import torch

    cpu = next((ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines()
                if ln.startswith("model name")), platform.processor() or "unknown")
    mem = re.search(r"MemTotal:\s+(\d+) kB", _read("/proc/meminfo"))
    gpu = torch.cuda.is_available()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"CPU": cpu, "cores": str(os.cpu_count()),
            "RAM": f"{int(mem.group(1)) / 2**20:.1f} GB" if mem else "unknown",
            "torch": f"{torch.__version__} ({torch.get_num_threads()} threads)",
            "GPU": torch.cuda.get_device_name(0) if gpu else "none (torch.cuda.is_available() is False)",
            "Python": platform.python_version(), "commit": commit,
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)")}


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def run_section(section: Section, echo=print) -> Section:
    """Run the benchmark, streaming its stdout (kept) and keeping stderr's tail (for failures)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(section.command, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
        for line in proc.stdout:
            echo(f"  {line.rstrip()}")
            section.stdout.append(line.rstrip("\n"))
        section.returncode = proc.wait()
        err.seek(0)
        section.stderr_tail = "\n".join(err.read().strip().splitlines()[-15:])
    section.seconds = time.perf_counter() - t0
    return section


# ---- turning each benchmark's printout into a table ----

DATA_RATE = re.compile(r"^(?P<what>(synth|prepare) .+?): (?P<rate>[\d,.]+) images/s")
DATA_LOADER = re.compile(r"^DataLoader (?P<px>\d+)px, (?P<w>\d+) workers: cache (?P<c>[\d,.]+) images/s, "
                         r"decoding sources (?P<s>[\d,.]+) images/s, ratio (?P<r>[\d.]+)x")
PRETRAIN_ROW = re.compile(r"^\s*(?P<m>\S+): ptxssl\s+(?P<e>[\d.]+) img/s \(peak (?P<em>[\d,]+) MB\) \| plain loop\s+"
                          r"(?P<p>[\d.]+) img/s \(peak (?P<pm>[\d,]+) MB\) \| ratio (?P<r>[\d.]+)")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def to_markdown(name: str, lines: list[str]) -> tuple[list[str], list[str]]:
    """(Markdown lines, lines not understood) for one benchmark's stdout."""
    rows, other, text = [], [], []
    if name in PASS_THROUGH:
        tables = [ln for ln in lines if ln.startswith("|") or ln.startswith("Device:") or not ln.strip()]
        while tables and not tables[0].strip():
            tables.pop(0)
        return tables, [ln for ln in lines if ln.strip() and not (ln.startswith("|") or ln.startswith("Device:"))]
    for ln in lines:
        if name == "data" and (m := DATA_RATE.match(ln)):
            rows.append([m["what"], m["rate"], "—", "—", "— (no baseline)"])
        elif name == "data" and (m := DATA_LOADER.match(ln)):
            rows.append([f"DataLoader from the cache, {m['px']} px, {m['w']} workers", m["c"],
                         "decoding the DICOM each time", m["s"], f"**{m['r']}×**"])
        elif name in ("pretrain", "gpu") and (m := PRETRAIN_ROW.match(ln)):
            rows.append([m["m"], m["e"], m["p"], f"**{m['r']}**", f"{m['em']} / {m['pm']}"])
        elif name in ("pretrain", "gpu") and " px, batch " in ln:
            text.append(f"Settings: {ln.strip()}.")
        elif ln.strip():
            other.append(ln)
    if not rows:
        return text, other
    header = (["step", "ptxssl images/s", "baseline", "baseline images/s", "ratio"] if name == "data" else
              ["method", "ptxssl img/s", "plain loop img/s", "ratio", "peak MB ptxssl / plain"])
    return text + ([""] if text else []) + _table(header, rows), other


def _shown(command: list[str]) -> str:
    """The command as a user would type it from the repository root."""
    exe = Path(command[0])
    exe_shown = os.path.relpath(exe, REPO) if exe.is_relative_to(REPO) else "python"
    env = f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']} " if "OMP_WAIT_POLICY" in os.environ else ""
    return env + shlex.join([exe_shown, *command[1:]])


def render(info: dict, preset: str, sections: list[Section], pending: list[str], started: str, loads: list[str],
           gpu: bool) -> str:
    """BENCHMARKS.md from the machine info and the sections run so far."""
    intro = (f"Measured {started} with `scripts/bench_all.py` (preset `{preset}`). Each figure sits beside the "
             "baseline the benchmark measured in the same run, and their ratio: compare ratios between machines, "
             "not raw rates.")
    out = ["# ptxssl benchmarks", "", intro, ""]
    status = "complete" if not pending else f"**incomplete** — still to run: {', '.join(pending)}"
    out += _table(["machine", ""], [[k, v] for k, v in info.items()]
                  + [["load average (1 / 5 / 15 min)", " → ".join(loads) + " (start → end)"], ["status", status]])
    for s in sections:
        out += ["", f"## {TITLES[s.name]}", "", "```", _shown(s.command), "```", "",
                f"{READING[s.name]} Took {s.seconds:.0f} s.", ""]
        table, other = to_markdown(s.name, s.stdout)
        out += table
        if s.returncode:
            out += ["", f"**Failed** (exit {s.returncode}); the end of its error output:", "", "```",
                    s.stderr_tail, "```"]
        if other:
            out += ["", "Other output:", "", "```", *other, "```"]
    if not gpu and "gpu" not in pending:
        no_gpu = ("**No GPU was available on this machine** (`torch.cuda.is_available()` is False), so no GPU "
                  f"figure was measured. With one, this section runs `{' '.join(['bench_device.py', PRESETS[preset]['gpu']]).strip()}` "
                  "(as `bash scripts/gpu_check.sh` does).")
        out += ["", f"## {TITLES['gpu']}", "", no_gpu]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_const", dest="preset", const="smoke",
                      help="Tiny settings (~1 min): checks that everything runs; the figures mean nothing.")
    size.add_argument("--full", action="store_const", dest="preset", const="full",
                      help="The commands in each benchmark's docstring (about 1.5 h on 2 cores).")
    ap.set_defaults(preset="small")
    ap.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="Markdown file to write.")
    ap.add_argument("--only", default=",".join(SCRIPTS), help="Comma-separated subset of sections.")
    for name in SCRIPTS:
        ap.add_argument(f"--{name}-args", default="", metavar="ARGS",
                        help=f"Extra arguments for {SCRIPTS[name]} (quoted), after the preset's.")
    args = ap.parse_args()
    only = [s for s in args.only.split(",") if s]
    bad = sorted(set(only) - set(SCRIPTS))
    if bad:
        ap.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SCRIPTS)}")
    info = machine()
    gpu = not info["GPU"].startswith("none")
    names = [n for n in SCRIPTS if n in only and (n != "gpu" or gpu)]
    started, loads = datetime.now().astimezone().isoformat(sep=" ", timespec="seconds"), [_load()]
    done: list[Section] = []
    for i, name in enumerate(names):
        cmd = [sys.executable, str(Path("scripts") / SCRIPTS[name]),
               *shlex.split(PRESETS[args.preset][name]), *shlex.split(getattr(args, f"{name}_args"))]
        print(f"[{name}] {_shown(cmd)}", flush=True)
        done.append(run_section(Section(name, cmd)))
        write_text(args.out, render(info, args.preset, done, names[i + 1:], started, loads + [_load()], gpu))
    if not names:
        write_text(args.out, render(info, args.preset, done, [], started, loads + [_load()], gpu))
    print(f"wrote {args.out}")
    sys.exit(1 if any(s.returncode for s in done) else 0)


if __name__ == "__main__":
    main()
