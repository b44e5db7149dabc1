"""Screenshot a demo report: render DEMO_DIR/report.html in a headless browser to a PNG.

    python scripts/screenshot_report.py DEMO_DIR OUT.png [--width 1200] [--height 12000]

A way to look at the report as a reader would (and to check it in CI) without a desktop.
It uses Chromium's own `--headless --screenshot`, so nothing beyond the browser binary is
needed: no Playwright, no Selenium, no driver downloads. The browser is $PTXSSL_BROWSER or
the first of BROWSERS on PATH; on Debian/Ubuntu `apt-get install chromium` provides one
(the toolkit itself never needs it).

Chromium's screenshot has a fixed window size and no full-page mode without a DevTools
client, so the page is rendered into a tall window and the blank space below the content is
cropped off (the report's background is white). A page taller than --height is cut at it.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome",
            "chrome-headless-shell", "headless_shell")


def find_browser() -> str | None:
    """Path of a Chromium-family browser: $PTXSSL_BROWSER, else the first of BROWSERS on PATH."""
    env = os.environ.get("PTXSSL_BROWSER")
    if env:
        return shutil.which(env) or (env if Path(env).is_file() else None)
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def crop_blank_bottom(path: Path, margin: int = 24) -> None:
    """Cut the white rows below the last non-white pixel (keeping `margin` px), in place."""
    from PIL import Image, ImageChops

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    box = ImageChops.difference(rgb, Image.new("RGB", rgb.size, "white")).getbbox()
    if box and box[3] + margin < rgb.height:
        tmp = path.with_name(f".{path.name}.tmp.png")
        rgb.crop((0, 0, rgb.width, box[3] + margin)).save(tmp)
        os.replace(tmp, path)


def screenshot(page: Path, out: Path, width: int = 1200, height: int = 12000, browser: str | None = None,
               timeout: float = 120) -> Path:
    """Render `page` (an HTML file) headless into `out` (PNG); return `out`.

    Raises:
        FileNotFoundError: no browser found, or `page` missing.
        RuntimeError: the browser failed or wrote no file (its stderr tail is in the message).
    """
    page, out = Path(page).resolve(), Path(out).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"{page} not found: run `ptxssl demo` first (it writes report.html)")
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError(f"no headless browser found (tried $PTXSSL_BROWSER and {', '.join(BROWSERS)}); "
                                "install one, e.g. `apt-get install chromium`")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:  # a fresh profile: no lock clash with a running browser
        tmp = Path(profile) / "shot.png"
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}/p",
               f"--window-size={width},{height}", f"--screenshot={tmp}", page.as_uri()]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)
        if not tmp.is_file():
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"{browser} wrote no screenshot (exit {done.returncode}):\n{tail}")
        crop_blank_bottom(tmp)
        shutil.move(tmp, out.with_name(f".{out.name}.tmp"))  # same folder as out, then an atomic rename
        os.replace(out.with_name(f".{out.name}.tmp"), out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demo_dir", type=Path, help="A `ptxssl demo` folder holding report.html.")
    ap.add_argument("out", type=Path, help="The PNG to write.")
    ap.add_argument("--width", type=int, default=1200, help="Window width, px.")
    ap.add_argument("--height", type=int, default=12000, help="Window height, px (blank space is cropped).")
    ap.add_argument("--browser", help="Browser binary (default: $PTXSSL_BROWSER or the first found on PATH).")
    args = ap.parse_args()
    try:
        path = screenshot(args.demo_dir / "report.html", args.out, args.width, args.height, args.browser)
    except (FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
