"""The `mmduet` command. Every sub-command that produces results prints one JSON object on stdout."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _cmd_doctor(args) -> int:
    from .doctor import check_environment, format_checks

    checks = check_environment(args.adapter, args.data_root)
    if args.json:
        _print_json([c.__dict__ for c in checks])
    else:
        print(format_checks(checks))
    return 0


def _cmd_reports(args) -> int:
    from .reports import run_reports

    summary = run_reports(args.notebooks, args.out, only=args.only)
    failed = [k for k, v in summary["notebooks"].items() if v["status"] != "ok"]
    print(f"reports written to {args.out}/index.html" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def _cmd_convert(args) -> int:
    from .data.benchmarks import write_examples
    from .data.convert import convert

    examples, benchmark = convert(args.source, args.src, args.seed)
    write_examples(examples, args.out)
    _print_json({"source": args.source, "benchmark": benchmark, "examples": len(examples),
                 "videos": len({e["video"] for e in examples}), "out": str(args.out)})
    return 0


def _cmd_validate(args) -> int:
    from .data.benchmarks import read_benchmark

    examples, errors = read_benchmark(args.file, args.benchmark, strict=not args.lenient, on_error="skip")
    for line in errors:
        print(line, file=sys.stderr)
    _print_json({"benchmark": args.benchmark, "valid": len(examples), "invalid": len(errors)})
    return 1 if errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmduet", description="MMDuet: model, streaming duet, evaluation, reports.")
    parser.add_argument("--version", action="version", version=f"mmduet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("doctor", help="check the environment (torch, GPU, Java, checkpoint, datasets)")
    p.add_argument("--adapter", default="outputs/mmduet")
    p.add_argument("--data-root", default="datasets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("reports", help="run every notebook with papermill and render reports/")
    p.add_argument("--notebooks", default="notebooks")
    p.add_argument("--out", default="reports")
    p.add_argument("--only", nargs="*", help="substrings of notebook names to run")
    p.set_defaults(func=_cmd_reports)

    p = sub.add_parser("convert", help="public gold files -> MMDuet benchmark test files")
    p.add_argument("source", choices=["qvh", "charades", "youcook2"])
    p.add_argument("--src", required=True, help="the public gold file")
    p.add_argument("--out", required=True, help="the MMDuet-format JSON to write")
    p.add_argument("--seed", type=int, default=42, help="seed of the prompt draw")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("validate", help="check a benchmark test file; one line per bad example")
    p.add_argument("benchmark", choices=["dvc", "magqa", "grounding", "highlight"])
    p.add_argument("file")
    p.add_argument("--lenient", action="store_true", help="ignore unknown fields")
    p.set_defaults(func=_cmd_validate)

    for register in _REGISTRARS:
        register(sub)
    return parser


# Sub-command modules append a `register(subparsers)` here (kept as one list so `mmduet --help` shows all).
_REGISTRARS: list = []


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:  # bad input: one clear line, no traceback
        print(f"mmduet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
