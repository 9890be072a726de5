"""The `zapmulti` command: parse, call the library, print results."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from zapmulti import __version__
from zapmulti.errors import ZapmultiError

logger = logging.getLogger("zapmulti")


def _cmd_train(args: argparse.Namespace) -> int:
    from zapmulti.config import load_config
    from zapmulti.train import resume, train

    if args.resume:
        run_dir = resume(args.resume, show_progress=not args.quiet)
    else:
        if not args.config:
            raise ZapmultiError("train needs a CONFIG.yaml (or --resume RUN_DIR)")
        config = load_config(args.config, args.set)
        out = args.out or str(Path("runs") / Path(args.config).stem)
        run_dir = train(config, out, overwrite=args.overwrite, show_progress=not args.quiet)
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    from zapmulti.evaluate import metrics_table

    print(metrics_table(metrics))
    print(f"run directory: {run_dir}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from zapmulti.evaluate import evaluate, metrics_table, save_evaluation

    result = evaluate(args.run_dir, args.data, batch_size=args.batch_size, device=args.device)
    print(metrics_table(result))
    out = Path(args.out) if args.out else Path(args.run_dir) / "evaluation.json"
    save_evaluation(result, out)
    print(f"metrics written to {out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from zapmulti.predict import predict, write_predictions

    frame = predict(args.run_dir, args.paths, batch_size=args.batch_size, device=args.device)
    if args.out:
        write_predictions(frame, args.out)
        print(f"{len(frame)} prediction(s) written to {args.out}")
    else:
        print(frame.to_csv(index=False), end="")
    return 1 if len(frame) and (frame["error"] != "").all() else 0


def _cmd_download(args: argparse.Namespace) -> int:
    from zapmulti.download import download_ut_zap50k

    dest = download_ut_zap50k(args.to, archives=args.archive)
    print(f"UT-Zap50K is ready in {dest} (use data.source: ut-zap50k, data.root: {dest})")
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
    from zapmulti.config import load_config
    from zapmulti.data.audit import check_data

    report = check_data(load_config(args.config), args.out, workers=args.workers)
    for row in report.itertuples():
        print(f"{row.path}: {row.reason}")
    print(f"{len(report)} bad file(s); list written to {args.out}")
    return 1 if len(report) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zapmulti", description="Multi-task attribute classification of footwear images."
    )
    parser.add_argument("--version", action="version", version=f"zapmulti {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a shared backbone with every head in CONFIG")
    p.add_argument("config", nargs="?", help="YAML config")
    p.add_argument("--out", help="run directory (default: runs/<config name>)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.unfrozen_epochs=2 (repeatable)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="per-head metrics of a trained run")
    p.add_argument("run_dir")
    p.add_argument(
        "--data", help="a config YAML or a data root; default: the run's validation split"
    )
    p.add_argument("--out", help="JSON file (default: RUN_DIR/evaluation.json)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="predict every head for images or folders")
    p.add_argument("run_dir")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--out", help="FILE.csv or FILE.json (default: CSV on stdout)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("download", help="fetch a dataset")
    p.add_argument("dataset", choices=["ut-zap50k"])
    p.add_argument("--to", default="data", help="destination folder (default: ./data)")
    p.add_argument(
        "--archive",
        action="append",
        default=[],
        metavar="ZIP",
        help="use a local copy of an archive instead of downloading it (repeatable)",
    )
    p.set_defaults(func=_cmd_download)

    # -- retrieval commands (issue 3) --
    # -- report command (issue 4) --
    # -- check-data command (issue 5) --
    p = sub.add_parser("check-data", help="audit every image of a catalogue")
    p.add_argument("config", help="YAML config whose data section to audit")
    p.add_argument(
        "--out", default="bad_images.csv", help="CSV of bad files (default: %(default)s)"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="decode processes (default: all cores)"
    )
    p.set_defaults(func=_cmd_check_data)
    return parser


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # SIGTERM ends a run like Ctrl-C: the last completed epoch's checkpoint stays resumable.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return args.func(args)
    except ZapmultiError as exc:
        print(f"zapmulti {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ""
        if args.command == "train":
            hint = "; continue with: zapmulti train --resume RUN_DIR"
        print(f"zapmulti {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
