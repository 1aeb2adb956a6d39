"""Render the README's screenshot of the HTML report (docs/report.png).

By default this probes the built-in ``deep-sigmoid`` example (vanishing
gradients; probe only, no search), renders its report and photographs the top
of it in headless Chromium (driven by Selenium; ``apt-get install chromium
chromium-driver`` and ``pip install selenium``).  ``--json`` renders a saved diagnosis instead.

The picture ends below the gradient-flow chart (``--until``), at most
``--max-height`` pixels down, and is reduced to a 256-colour palette
with Pillow when it is installed, so the file stays small enough to live in
the repository (the script fails rather than write one over ``--max-bytes``).

Usage, from a checkout::

    python scripts/make_screenshot.py
    python scripts/make_screenshot.py --json diagnosis.json --output docs/report.png
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
# The browser driver is a test helper, kept with the tests rather than in the package.
sys.path.insert(0, str(ROOT / "tests"))
EXAMPLE = "deep-sigmoid"


def build_diagnosis(steps: int, batch_size: int):
    """Probe the example model and return its diagnosis (imports TensorFlow)."""
    from gradadvisor.api import diagnose
    from gradadvisor.examples import build_example

    model, x, y = build_example(EXAMPLE)
    return diagnose(model, x, y, steps=steps, batch_size=batch_size,
                    command=f"gradadvisor diagnose --example {EXAMPLE} --steps {steps} "
                            f"--batch-size {batch_size} --no-search --report report.html")


def compress(png: bytes) -> bytes:
    """The same picture as a palette PNG, when Pillow is there to make one.

    A report is mostly flat colours and anti-aliased text, which 256 colours
    without dithering keep sharp at a fraction of the size.
    """
    try:
        from PIL import Image
    except ImportError:
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB")
    palette = image.quantize(colors=256, method=Image.Quantize.MEDIANCUT,
                             dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", optimize=True)
    smaller = buffer.getvalue()
    return smaller if len(smaller) < len(png) else png


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path,
                        help="render this diagnosis JSON instead of probing the example")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "report.png",
                        help="where to write the PNG (default: docs/report.png)")
    parser.add_argument("--html", type=Path, help="also keep the rendered HTML here")
    parser.add_argument("--width", type=int, default=1200, help="viewport width in pixels")
    parser.add_argument("--max-height", type=int, default=3000,
                        help="never show more than this many pixels of the page")
    parser.add_argument("--until", default="#gradient-flow figure",
                        help="CSS selector of the last element to show (default: the "
                             "gradient-flow chart); empty for the whole page")
    parser.add_argument("--max-bytes", type=int, default=300_000,
                        help="fail if the PNG would be larger than this")
    parser.add_argument("--steps", type=int, default=30, help="probe steps for the example")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size for the example")
    args = parser.parse_args(argv)

    from gradadvisor.analysis.diagnosis import Diagnosis
    from gradadvisor.files import atomic_output
    from browser import Browser, BrowserError, file_url
    from selenium.common.exceptions import WebDriverException
    from gradadvisor.report.html import render_html

    if args.json is not None:
        diagnosis = Diagnosis.from_json(args.json.read_text(encoding="utf-8"))
    else:
        diagnosis = build_diagnosis(args.steps, args.batch_size)
    html = render_html(diagnosis)
    if args.html is not None:
        args.html.write_text(html, encoding="utf-8")

    with tempfile.TemporaryDirectory(prefix="gradadvisor-screenshot-") as folder:
        page_path = Path(folder) / "report.html"
        page_path.write_text(html, encoding="utf-8")
        try:
            with Browser() as browser:
                page = browser.open(file_url(page_path), width=args.width, height=900)
                if page.errors or page.requests != [page.url]:
                    print(f"The report did not load cleanly: errors {page.errors}, "
                          f"requests {page.requests}.", file=sys.stderr)
                    return 1
                height = args.max_height
                if args.until:
                    # Stop just below the element, so the picture ends on a whole chart.
                    selector = json.dumps(args.until)
                    bottom = page.evaluate(
                        f"(function () {{ const e = document.querySelector({selector}); return e"
                        " ? e.getBoundingClientRect().bottom + window.scrollY : null; })()")
                    if bottom is not None:
                        height = min(height, int(bottom) + 24)
                png = page.screenshot(max_height=height)
        except (BrowserError, WebDriverException) as error:
            print(error, file=sys.stderr)
            return 1

    png = compress(png)
    if len(png) > args.max_bytes:
        print(f"The screenshot is {len(png):,} bytes, over --max-bytes {args.max_bytes:,}. "
              "Lower --max-height or --width.", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(args.output) as tmp:
        Path(tmp).write_bytes(png)
    print(f"wrote {args.output} ({len(png):,} bytes, HTML {len(html.encode()):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
