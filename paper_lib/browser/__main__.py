"""``python -m paper_lib.browser --profile cpu [--serve] [--port 8000] [--screenshot PNG [--page lua.html]]``:
build the run's feature browser (cached), and optionally serve it on localhost or save a screenshot of one page
(headless Chromium: ``make browser-deps``)."""

from __future__ import annotations

import argparse
import sys

from ..core.config import ConfigError, load_config
from .render import serve, site_dir, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--serve", action="store_true", help="serve the site on http://127.0.0.1:PORT")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--screenshot", metavar="PNG", help="save a screenshot of --page to this file")
    parser.add_argument("--page", default="lua.html", help="the page --screenshot shows (default: lua.html)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.profile)
    except ConfigError as err:
        print(f"[browser] {err}", file=sys.stderr)
        return 2
    path = site_dir(cfg)
    print(f"[browser] {summary(path)}", flush=True)
    if args.screenshot:
        from .screenshot import BrowserMissing, screenshot

        try:
            print(f"[browser] wrote {screenshot(path, args.screenshot, args.page)}", flush=True)
        except (BrowserMissing, FileNotFoundError) as err:
            print(f"[browser] {err}", file=sys.stderr)
            return 2
    if args.serve:
        serve(path, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
