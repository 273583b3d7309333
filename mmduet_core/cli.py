"""The `mmduet` command. Every sub-command that produces results prints one JSON object on stdout."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import TYPE_CHECKING

from . import __version__

if TYPE_CHECKING:
    from .stream.settings import DuetSettings


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _cmd_doctor(args) -> int:
    if args.gpu:  # one JSON object: speed, memory and agreement of the 7B-shaped model (tiny on a CPU)
        from .tools.gpucheck import run_gpu_check

        _print_json(run_gpu_check(scale=args.scale, frames=args.frames, adapter=args.adapter, base=args.base,
                                  sequential=not args.no_sequential))
        return 0
    from .tools.doctor import check_environment, format_checks

    checks = check_environment(args.adapter, args.data_root)
    if args.json:
        _print_json([c.__dict__ for c in checks])
    else:
        print(format_checks(checks))
    return 0


def _cmd_reports(args) -> int:
    from .reports.notebooks import run_reports

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


def _cmd_evaluate(args) -> int:
    coverage = "predictions" if args.score_intersection else "gold"
    given = {k: v for k, v in (("window", args.window), ("threshold", args.threshold)) if v is not None}
    if args.benchmark == "highlight":
        from .evaluation.highlight import evaluate_highlight

        given.pop("threshold", None)
        result = evaluate_highlight(args.pred, args.gold, sweep=args.sweep, coverage=coverage, **given)
    elif args.benchmark == "grounding":
        from .evaluation.grounding import evaluate_grounding

        result = evaluate_grounding(args.pred, args.gold, sweep=args.sweep, coverage=coverage, **given)
    elif args.benchmark == "dvc":
        from .evaluation.dvc import evaluate_dvc

        result = evaluate_dvc(args.pred, args.gold, first_caption=args.first_caption,
                              soda_pairing=args.soda_pairing, coverage=coverage, cache_path=args.cache)
    else:
        from .evaluation.magqa import evaluate_magqa

        result = evaluate_magqa(args.pred, args.gold, judge=args.judge, cache_path=args.cache,
                                num_examples=args.num_examples, coverage=coverage)
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    _print_json(result)
    return 0


def _cmd_bench(args) -> int:
    from .tools import bench

    _print_json(bench.run(args.what, args))
    return 0


def _cmd_infer(args) -> int:
    from .model.checkpoint import load_model, resolve_device, resolve_dtype
    from .run.benchmark import check_video_root, get_preset, load_examples, run_benchmark, summary_dict
    from .run.launch import launch_state
    from .run.outputs import check_output, check_resume, run_identity

    # every check that needs no model first: a bad option, file or folder costs no model load
    preset = get_preset(args.benchmark)
    settings = settings_from_args(preset.settings, args)
    device = resolve_device(args.device)
    dtype = str(resolve_dtype(args.dtype, device)).removeprefix("torch.")
    load_examples(args.data, preset.benchmark, args.limit)
    check_video_root(args.video_root)
    check_output(args.out)
    if args.resume:
        check_resume(args.out, run_identity(settings, preset.benchmark, args.model, args.adapter,
                                                          dtype))
    state = launch_state(cpu=device.startswith("cpu"))  # picks this process's GPU before the model moves there
    main_process = state is None or state.is_main_process
    model, tokenizer = load_model(args.model, adapter=args.adapter, dtype=args.dtype, device=device)
    if main_process:
        print(f"loaded: {model.load_report}", file=sys.stderr)
    summary = run_benchmark(model, tokenizer, args.data, args.video_root, args.out, settings,
                                   resume=args.resume, limit=args.limit, benchmark=preset.benchmark,
                                   group_videos=args.group_videos)
    if not main_process:
        return 1 if summary.failed else 0
    _print_json(summary_dict(summary))
    if summary.failed:
        tried = summary.written + summary.failed
        print(f"mmduet infer: {summary.failed} of {tried} examples failed ({summary.status}); why: "
              f"{summary.errors_file}", file=sys.stderr)
        return 1
    return 0


# ---- streaming settings as options ---------------------------------------------------------------------------

# old option names -> the setting that replaced them (accepted, with a note on stderr)
_RENAMED_OPTIONS = {"--threshold": "reply_threshold", "--heads": "score_heads", "--rm-ass-turns": "remove_assistant_turns",
                    "--kv-window": "kv_window_frames"}


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    """One option per `DuetSettings` field (`--reply-threshold` for `reply_threshold`, ...); unset options keep
    the preset's value."""
    import types
    import typing

    from .stream.settings import DuetSettings, setting_docs

    group = parser.add_argument_group("streaming settings (default: the benchmark preset's)")
    hints, docs = typing.get_type_hints(DuetSettings), setting_docs()
    for f in dataclasses.fields(DuetSettings):
        if not f.metadata.get("cli", True):
            continue
        flag, hint = "--" + f.name.replace("_", "-"), hints[f.name]
        kwargs = {"dest": f.name, "default": None, "help": docs[f.name]}
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        base = [a for a in typing.get_args(hint) if a is not type(None)] if optional else [hint]
        if typing.get_origin(base[0]) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(base[0]))
        elif base[0] is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base[0]) is tuple:
            kwargs.update(type=lambda s: tuple(x.strip() for x in s.split(",") if x.strip()), metavar="A,B")
        else:
            kwargs["type"] = base[0]
        group.add_argument(flag, **kwargs)
    for old, new in _RENAMED_OPTIONS.items():
        group.add_argument(old, dest=f"_old_{new}", default=None, help=argparse.SUPPRESS)


def settings_overrides(args) -> dict:
    """The settings given on the command line (old option names mapped to their new fields)."""
    from .stream.settings import DuetSettings

    given = {}
    for f in dataclasses.fields(DuetSettings):
        old = getattr(args, f"_old_{f.name}", None)
        if old is not None:
            flag = next(k for k, v in _RENAMED_OPTIONS.items() if v == f.name)
            print(f"note: {flag} is now --{f.name.replace('_', '-')}", file=sys.stderr)
            given[f.name] = _parse_old(f.name, old)
        if getattr(args, f.name, None) is not None:
            given[f.name] = getattr(args, f.name)
    return given


def settings_from_args(base: DuetSettings, args: argparse.Namespace) -> DuetSettings:
    """`base` (a `DuetSettings`) with the options given on the command line; a bad value is an `InputError`
    naming the option as typed."""
    from .errors import InputError

    given = settings_overrides(args)
    for name, value in given.items():
        try:
            base.replace(**{name: value})
        except InputError as exc:
            reason = str(exc).removeprefix(f"{name} ")  # "fps must be finite" -> "--fps must be finite"
            raise InputError(f"{_flag_used(name, args)} {reason}" if reason != str(exc) else
                             f"{_flag_used(name, args)}: {exc}") from None
    return base.replace(**given)


def _flag_used(name: str, args: argparse.Namespace) -> str:
    if getattr(args, name, None) is None and getattr(args, f"_old_{name}", None) is not None:
        return next(k for k, v in _RENAMED_OPTIONS.items() if v == name)
    return "--" + name.replace("_", "-")


def _parse_old(name: str, value: str):
    from .errors import InputError

    try:
        if name == "score_heads":
            return tuple(x.strip() for x in value.split(","))
        if name == "remove_assistant_turns":
            return {"true": True, "false": False}[value.lower()]
        return float(value) if name == "reply_threshold" else int(value)
    except (KeyError, ValueError):
        raise InputError(f"option for {name}: cannot read {value!r}") from None


def _cmd_toyworld(args) -> int:
    from .toyworld import make_toyworld

    _print_json({"out": args.out, "seed": args.seed, "splits": make_toyworld(args.out, args.seed)})
    return 0


def _cmd_toyeval(args) -> int:
    from pathlib import Path

    from .model.checkpoint import load_model
    from .run.toyeval import evaluate_on_toyworld, evaluate_oracle
    from .toyworld import SPLITS, ensure_splits

    world = Path(args.world)
    ensure_splits(world, args.seed, {args.split: SPLITS[args.split]})
    if args.oracle:
        _print_json(evaluate_oracle(world, args.split, args.oracle))
        return 0
    if args.untrained:
        from .training import build_toy_model

        model, tokenizer = build_toy_model(args.seed)
        model.eval()
    else:
        model, tokenizer = load_model(args.model, device="cpu")
    result = evaluate_on_toyworld(model, tokenizer, world, args.split, out_dir=args.out, limit=args.limit)
    _print_json(result["table"] if not args.full else result)
    return 0


def _cmd_train(args) -> int:
    import contextlib

    import torch

    from .run.launch import is_main_process, launch_state
    from .training import TOY_TRAIN, TrainConfig, train_toy

    if args.toy:
        from pathlib import Path

        from .model.checkpoint import TOY_DIR
        from .toyworld import ensure_splits, install_samples

        world = Path(args.world)
        state = launch_state(cpu=not torch.cuda.is_available())
        with state.main_process_first() if state else contextlib.nullcontext():  # one process makes a missing world
            ensure_splits(world, args.seed)  # a world made by a benchmark notebook has only its test split
        config = TrainConfig(**{**TOY_TRAIN.__dict__, **({"epochs": args.epochs} if args.epochs else {})})
        result = train_toy(world, args.out, config, seed=args.seed, max_steps=args.max_steps)
        if not is_main_process():
            return 0
        if args.install:
            import shutil

            shutil.copytree(Path(result["saved"]), TOY_DIR, dirs_exist_ok=True)
            result["installed"] = [str(TOY_DIR)] + [str(p) for p in install_samples(world, TOY_DIR.parent, args.seed)]
        _print_json({k: v for k, v in result.items() if k != "history"} | {"last_log": result["history"][-1:]})
        return 0
    from .model.checkpoint import load_model
    from .training import build_mixture, train

    model, tokenizer = load_model(args.model, dtype="bfloat16" if args.bf16 else "float32", device=args.device)
    model.requires_grad_(True)
    dataset = build_mixture(args.config, tokenizer, frame_size=model.config.vision_config.image_size,
                            frame_num_tokens=model.frame_num_tokens)
    config = TrainConfig(**({"epochs": args.epochs} if args.epochs else {}),
                         **({"max_steps": args.max_steps} if args.max_steps else {}), deepspeed=args.deepspeed)
    result = train(model, tokenizer, dataset, args.out, config)
    if is_main_process():
        _print_json({k: v for k, v in result.items() if k != "history"})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmduet", description="MMDuet: model, streaming duet, evaluation, reports.")
    parser.add_argument("--version", action="version", version=f"mmduet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("doctor", help="check the environment (torch, GPU, Java, checkpoint, datasets)")
    p.add_argument("--adapter", default="outputs/mmduet")
    p.add_argument("--data-root", default="datasets")
    p.add_argument("--json", action="store_true")
    p.add_argument("--gpu", action="store_true",
                   help="GPU check: 7B-shaped random model, frames/s, memory, bf16/flash agreement (one JSON object)")
    p.add_argument("--scale", choices=["auto", "7b", "tiny"], default="auto",
                   help="--gpu model size: auto = 7b on CUDA, tiny on a CPU")
    p.add_argument("--frames", type=int, default=400, help="--gpu: frames per grounding run")
    p.add_argument("--base", default="llava-hf/llava-onevision-qwen2-7b-ov-hf",
                   help="--gpu: base folder or hub id for the real-weights part (never downloaded)")
    p.add_argument("--no-sequential", action="store_true", help="--gpu: skip the one-frame-per-forward timing")
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

    p = sub.add_parser("evaluate", help="score predictions against gold (prints the metric JSON: keys rounded as "
                                        "the original prints them, full precision under 'unrounded')")
    p.add_argument("benchmark", choices=["highlight", "grounding", "dvc", "magqa"])
    p.add_argument("--pred", required=True, help="inference records (JSONL) or a submission/result file")
    p.add_argument("--gold", required=True)
    p.add_argument("--window", type=int, help="smoothing window (default: the paper's, highlight 2, grounding 6)")
    p.add_argument("--threshold", type=float, help="grounding: normalised relevance threshold (default 0.5)")
    p.add_argument("--sweep", action="store_true", help="every window (and threshold), with the oracle row")
    p.add_argument("--score-intersection", action="store_true",
                   help="score only ids present in both files (default: every gold id; a missing prediction "
                        "scores zero)")
    p.add_argument("--first-caption", choices=["drop", "keep"], default="drop",
                   help="dvc: upstream drops each video's first caption (drop); keep = corrected")
    p.add_argument("--soda-pairing", choices=["paper", "fixed"], default="paper",
                   help="dvc: SODA_c as the paper computed it (paper: the original's string-ordered METEOR "
                        "pairing) or with each score paired with its own prediction (fixed)")
    p.add_argument("--judge", default="offline", help="magqa: offline | hf:<model id> | openai[:<model>]")
    p.add_argument("--cache", help="magqa: file of judged pairs; dvc: file of tokens and METEOR results "
                                   "(both reused across runs)")
    p.add_argument("--num-examples", type=int,
                   help="magqa: examples to average over (missing ones count 1 and 0 turns; upstream: 2000)")
    p.add_argument("--out", help="also write the JSON here")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("bench", help="side-by-side timings in one run, printed as ratios")
    p.add_argument("what", choices=["stream", "generate", "video", "eval"])
    p.add_argument("--repeat", type=int, help="1: each side timed once; N: the fastest of N runs (default: 1 for "
                                              "stream and video, 3 for the quicker generate and eval)")
    p.add_argument("--threads", type=int, default=1,
                   help="stream, generate: torch CPU threads (default 1; more threads than free cores slow every "
                        "forward on a shared machine)")
    p.add_argument("--model", default="auto", help="stream, generate: toy | tiny (random, 49 tokens/frame) | "
                                                   "tiny4 (random, 4 tokens/frame) | auto (stream: toy; generate: tiny)")
    p.add_argument("--frames", type=int, default=120, help="stream: frames in the synthetic stream")
    p.add_argument("--reply-every", type=int, default=10, help="stream: the bench's reply rule, a reply every K frames")
    p.add_argument("--reply-tokens", type=int, default=20, help="stream: tokens per reply (exactly)")
    p.add_argument("--context-frames", type=int, nargs="+", default=[4, 32, 64],
                   help="generate: frames of context before the reply, one row each")
    p.add_argument("--new-tokens", type=int, default=64, help="generate: tokens decoded per row")
    p.add_argument("--videos", nargs="*", help="video: files to decode (default: synthetic 640x360 clips, cached)")
    p.add_argument("--lengths", type=float, nargs="+", default=[20, 120, 600],
                   help="video: seconds of the synthetic clips (made once, kept in ~/.cache/mmduet/bench)")
    p.add_argument("--fps", type=float, default=2.0, help="video: sampling rate")
    p.add_argument("--max-frames", type=int, default=400, help="video: frames kept at most")
    p.add_argument("--gold", help="eval: Charades-STA gold (default: the shared data checkout, else the test subset)")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("infer", help="benchmark inference -> prediction records (JSONL, resumable)")
    p.add_argument("--benchmark", required=True, choices=["youcook2", "magqa", "charades", "qvh"],
                   help="upstream preset (fps, max frames, reply rule)")
    p.add_argument("--data", required=True, help="MMDuet-format test file")
    p.add_argument("--video-root", required=True)
    p.add_argument("--out", required=True, help="predictions JSONL")
    p.add_argument("--model", default="toy", help="toy | folder | hub id of the base model")
    p.add_argument("--adapter", help="LoRA adapter folder or hub id (e.g. outputs/mmduet)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="skip question_ids already in --out (default); --no-resume starts over")
    p.add_argument("--limit", type=int, help="only the first N examples of --data")
    p.add_argument("--group-videos", action=argparse.BooleanOptionalAction, default=True,
                   help="decode and encode each video once for all its queries (default; same records); "
                        "--no-group-videos: once per query, as the original code")
    add_settings_options(p)
    p.set_defaults(func=_cmd_infer)

    p = sub.add_parser("toyworld", help="write the synthetic toy world (videos + every annotation format)")
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_toyworld)

    p = sub.add_parser("toyeval", help="score a model on the toy world's four benchmarks (the metric table)")
    p.add_argument("--model", default="toy")
    p.add_argument("--untrained", action="store_true", help="a freshly initialised toy model, for comparison")
    p.add_argument("--oracle", choices=["exact", "colour", "shape"],
                   help="no model: grounding and highlight scores of perfect relevance (or of colour / shape alone)")
    p.add_argument("--world", default="outputs/toyworld")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int)
    p.add_argument("--out", help="keep the prediction files here")
    p.add_argument("--full", action="store_true", help="print every metric, not only the table")
    p.set_defaults(func=_cmd_toyeval)

    p = sub.add_parser("train", help="train MMDuet (LoRA on a base model, or --toy from scratch)")
    p.add_argument("--toy", action="store_true", help="train the toy model on the toy world")
    p.add_argument("--world", default="outputs/toyworld", help="toy: the toy world (made when missing)")
    p.add_argument("--install", action="store_true", help="toy: copy the result to mmduet_core/assets/toy_model")
    p.add_argument("--config", help="dataset-mixture JSON (upstream's configs/datasets/mmduetit.json form)")
    p.add_argument("--model", default="llava-hf/llava-onevision-qwen2-7b-ov-hf")
    p.add_argument("--out", default="outputs/train")
    p.add_argument("--epochs", type=float)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--deepspeed", help="DeepSpeed config, e.g. configs/deepspeed/zero2.json")
    p.set_defaults(func=_cmd_train)

    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .errors import InputError

    try:
        code = int(args.func(args) or 0)
    except InputError as exc:  # bad input: one clear line, no traceback (anything else is a bug: traceback)
        message = " ".join(str(exc).splitlines())
        print(f"mmduet {args.command}: error: {message}", file=sys.stderr)
        return 2
    _end_process_group()
    return code


def _end_process_group() -> None:
    """Tear down a launched run's process group once the command has finished. Left to interpreter exit, gloo's
    worker threads are destroyed mid-finalisation and a process that did all its work can still abort
    ("terminate called without an active exception"). Only after success: a rank that failed must not wait on
    the others here."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
