"""Command-line entry point: ``python -m vramlib`` or ``vramlib``.

Defined in Chapter 0, "Which device am I on?" (the ``device`` command).
"""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_device(args: argparse.Namespace) -> int:
    from .device import describe_device, device_info

    print(json.dumps(device_info(args.device), indent=2) if args.json else describe_device(args.device))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vramlib", description="GPU memory tools of the executable book.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    d = sub.add_parser("device", help="describe the device the book's experiments would run on")
    d.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best available)")
    d.add_argument("--json", action="store_true", help="print the facts as JSON")
    d.set_defaults(func=_cmd_device)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except (ValueError, TypeError) as e:
        print(f"vramlib: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
