"""The `zapmulti` command: parse, call the library, print results."""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from zapmulti import __version__
from zapmulti.errors import ConfigError, ZapmultiError

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

    result = evaluate(
        args.run_dir,
        args.data,
        batch_size=args.batch_size,
        device=args.device,
        show_progress=not args.quiet,
    )
    print(metrics_table(result))
    out = Path(args.out) if args.out else Path(args.run_dir) / "evaluation.json"
    save_evaluation(result, out)
    print(f"metrics written to {out}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from zapmulti.predict import predict, write_predictions

    # Without --out the CSV goes to stdout, where a progress bar would corrupt it.
    frame = predict(
        args.run_dir,
        args.paths,
        batch_size=args.batch_size,
        device=args.device,
        show_progress=bool(args.out) and sys.stdout.isatty(),
    )
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


def _cmd_add_head(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from zapmulti.config import HeadConfig, format_errors
    from zapmulti.evaluate import metrics_table
    from zapmulti.features import add_head, replacement_head

    if args.replace:
        head = replacement_head(args.run_dir, args.name, args.column, args.min_count)
    elif args.column is None:
        raise ConfigError("--column is required for a new head (which label column it learns)")
    else:
        try:
            head = HeadConfig(name=args.name, column=args.column, min_count=args.min_count or 1)
        except ValidationError as err:
            raise ConfigError(format_errors(err, "add-head options")) from None
    out = add_head(
        args.run_dir,
        head,
        args.out,
        args.epochs,
        args.lr,
        overwrite=args.overwrite,
        show_progress=not args.quiet,
        replace=args.replace,
    )
    scores = json.loads((Path(out) / "metrics.json").read_text())[args.name]
    if "accuracy" in scores:
        print(metrics_table({args.name: scores}))
    else:
        print(f"{args.name}: final training loss {scores['final_training_loss']:.4f}")
    print(f"run directory: {out}")
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
    from zapmulti.config import load_data_config
    from zapmulti.data.audit import check_data

    report = check_data(
        load_data_config(args.config),
        args.out,
        workers=args.workers,
        show_progress=not args.quiet,
    )
    for row in report.itertuples():
        print(f"{row.path}: {row.reason}")
    print(f"{len(report)} bad file(s); list written to {args.out}")
    return 1 if len(report) else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from zapmulti.report import build_report, report_summary

    out = build_report(
        args.run_dir,
        args.data,
        args.out,
        batch_size=args.batch_size,
        device=args.device,
        bias_head=args.bias_head,
        colour_column=args.colour_column,
        top_losses=args.top_losses,
        show_progress=not args.quiet,
    )
    print(report_summary(out))
    print(f"report written to {out / 'index.html'}")
    return 0


# -- retrieval (issue 3): index build / evaluate / add, search --


def _cmd_index_build(args: argparse.Namespace) -> int:
    from zapmulti.retrieval import build_index

    index = build_index(
        args.run_dir,
        args.out,
        data=args.data,
        factory=args.factory,
        embedding=args.embedding,
        batch_size=args.batch_size,
        device=args.device,
        gpu=args.gpu,
        overwrite=args.overwrite,
        show_progress=not args.quiet,
    )
    m = index.manifest
    print(
        f"{m['items']} item(s) indexed in {args.out}: {m['embedding']} embedding, dim {m['dim']}, "
        f"{m['factory_used']} ({m['index_type']}), cosine similarity"
    )
    for note in m["factory_notes"]:
        print(f"note: {note}")
    return 0


def _cmd_index_evaluate(args: argparse.Namespace) -> int:
    from zapmulti.artifacts import write_json
    from zapmulti.retrieval import evaluate_index, evaluation_table, load_index
    from zapmulti.retrieval.metrics import held_out_queries

    name = "evaluation.json" if args.queries == "all" else f"evaluation-{args.queries}.json"
    # Every folder is checked before the first is scored, so a typo fails fast.
    indexes = [load_index(d) for d in args.index_dirs]
    query_sets = [
        held_out_queries(index, args.run) if args.queries == "valid" else None for index in indexes
    ]
    results = []
    for index_dir, index, queries in zip(args.index_dirs, indexes, query_sets, strict=True):
        result = evaluate_index(
            index,
            labels=args.label or None,
            k=args.k,
            max_queries=args.max_queries or None,
            seed=args.seed,
            queries=queries,
        )
        result["query_set"] = args.queries
        results.append(result)
        if not args.out:
            write_json(Path(index_dir) / name, result)
    print(evaluation_table(results))
    if args.out:
        write_json(args.out, results[0] if len(results) == 1 else results)
        print(f"metrics written to {args.out}")
    else:
        written = [str(Path(d) / name) for d in args.index_dirs]
        print(f"metrics written to {', '.join(written)}")
    return 0


def _cmd_index_add(args: argparse.Namespace) -> int:
    from zapmulti.retrieval import add_to_index

    index, added = add_to_index(
        args.index_dir,
        args.data,
        run=args.run,
        batch_size=args.batch_size,
        device=args.device,
        show_progress=not args.quiet,
    )
    print(f"{added} item(s) added to {args.index_dir}; it now holds {len(index)}")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from zapmulti.predict import write_predictions
    from zapmulti.retrieval import load_index, save_grid, search
    from zapmulti.retrieval.grid import grid_format

    if args.grid:
        grid_format(args.grid)  # a bad file name fails before any embedding
    index = load_index(args.index_dir)
    frame = search(
        index,
        args.queries,
        k=args.k,
        where=args.where,
        exclude_self=args.exclude_self,
        run=args.run,
        ef_search=args.ef_search,
        nprobe=args.nprobe,
        device=args.device,
    )
    if args.out:
        write_predictions(frame, args.out)
        print(f"{len(frame)} result(s) written to {args.out}")
    elif not args.grid:
        print(frame.to_csv(index=False), end="")
    if args.grid:
        heads = list(dict.fromkeys(index.manifest.get("head_columns", {}).values()))
        save_grid(frame, args.grid, labels=heads or None)
        print(f"grid written to {args.grid}")
    return 0


def _add_retrieval_commands(sub: argparse._SubParsersAction) -> None:
    index = sub.add_parser("index", help="build, evaluate or extend a similar-shoe search index")
    actions = index.add_subparsers(dest="index_command", required=True)

    p = actions.add_parser("build", help="embed a catalogue with a run and write an index folder")
    p.add_argument("run_dir")
    p.add_argument("--data", help="a config YAML or a data root (default: the run's catalogue)")
    p.add_argument("--out", required=True, help="index folder to write")
    p.add_argument(
        "--factory",
        default="Flat",
        help="faiss factory string: Flat (exact, default), HNSW32, IVF256,Flat, IVF256,PQ16 ...",
    )
    p.add_argument(
        "--embedding",
        default="auto",
        help="auto (embedding head if the run has one, else backbone), backbone, head, or a "
        "head name",
    )
    p.add_argument("--batch-size", type=_at_least(1), default=128)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--gpu", action="store_true", help="build the faiss index on a GPU")
    p.add_argument("--overwrite", action="store_true", help="replace an existing index folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_index_build)

    p = actions.add_parser("evaluate", help="retrieval metrics of one or more index folders")
    p.add_argument("index_dirs", nargs="+", metavar="INDEX_DIR")
    p.add_argument(
        "--label",
        nargs="+",
        action="extend",
        default=[],
        help="label columns or head names to score (default: the run's head columns)",
    )
    p.add_argument("-k", type=_at_least(1), default=10, help="neighbours for agreement and recall")
    p.add_argument(
        "--max-queries",
        type=_at_least(0),
        default=2000,
        help="score a seeded sample of this many queries (default 2000; 0: every query)",
    )
    p.add_argument("--seed", type=_at_least(0), default=0)
    p.add_argument(
        "--queries",
        choices=["all", "valid"],
        default="all",
        help="all: every item is a query; valid: only the items the run held out for validation "
        "(from its split.csv); every item stays a reference either way",
    )
    p.add_argument("--run", help="run whose split.csv --queries valid reads (default: the index's)")
    p.add_argument(
        "--out",
        help="JSON file (default: INDEX_DIR/evaluation.json, or evaluation-valid.json with "
        "--queries valid)",
    )
    p.set_defaults(func=_cmd_index_evaluate)

    p = actions.add_parser("add", help="add new catalogue items to an index without a rebuild")
    p.add_argument("index_dir")
    p.add_argument("--data", required=True, help="a config YAML or a data root")
    p.add_argument("--run", help="run directory (default: the one that built the index)")
    p.add_argument("--batch-size", type=_at_least(1), default=128)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_index_add)

    p = sub.add_parser("search", help="find the catalogue items most similar to query images")
    p.add_argument("index_dir")
    p.add_argument("queries", nargs="+", metavar="QUERY_IMAGE", help="image files or folders")
    p.add_argument("-k", type=_at_least(1), default=10, help="neighbours per query (default 10)")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep items whose KEY equals VALUE (KEY!=VALUE to leave them out); repeat a key "
        "for alternatives, different keys must all hold",
    )
    p.add_argument(
        "--exclude-self", action="store_true", help="leave a query out of its own results"
    )
    p.add_argument("--out", help="FILE.csv or FILE.json (default: CSV on stdout)")
    p.add_argument("--grid", help="PNG of each query beside its neighbours")
    p.add_argument("--run", help="run directory (default: the one that built the index)")
    p.add_argument("--ef-search", type=_at_least(1), default=None, help="HNSW search depth")
    p.add_argument("--nprobe", type=_at_least(1), default=None, help="IVF lists to visit")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.set_defaults(func=_cmd_search)


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
    p.add_argument("--batch-size", type=_at_least(1), default=128)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("predict", help="predict every head for images or folders")
    p.add_argument("run_dir")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--out", help="FILE.csv or FILE.json (default: CSV on stdout)")
    p.add_argument("--batch-size", type=_at_least(1), default=64)
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
    _add_retrieval_commands(sub)
    # -- report command (issue 4) --
    p = sub.add_parser(
        "report", help="HTML error analysis of every head, with a colour-bias section"
    )
    p.add_argument("run_dir")
    p.add_argument(
        "--data", help="a config YAML or a data root; default: the run's validation split"
    )
    p.add_argument("--out", help="report folder (default: RUN_DIR/report), replaced whole")
    p.add_argument(
        "--bias-head", help="head whose error is broken down by colour (default: gender)"
    )
    p.add_argument(
        "--colour-column",
        help="colour label column to check the computed colour against (default: found by name)",
    )
    p.add_argument("--top-losses", type=_at_least(0), default=16, help="images per top-losses grid")
    p.add_argument("--batch-size", type=_at_least(1), default=128)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "add-head", help="add a head to a trained run, trained in seconds on cached features"
    )
    p.add_argument("run_dir")
    p.add_argument("--name", required=True, help="name of the new head")
    p.add_argument(
        "--column", help="label column it learns (with --replace: default, the head's own)"
    )
    p.add_argument(
        "--min-count",
        type=_at_least(1),
        default=None,
        help="fold rarer classes into 'other' (default 1; with --replace: the head's own)",
    )
    p.add_argument("--out", required=True, help="the new run directory")
    p.add_argument(
        "--epochs", type=_at_least(1), default=10, help="epochs over the cached features"
    )
    p.add_argument("--lr", type=_positive_float, default=1e-2)
    p.add_argument(
        "--replace",
        action="store_true",
        help="retrain the existing head of this name, keeping its settings and place",
    )
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_add_head)

    # -- check-data command (issue 5) --
    p = sub.add_parser("check-data", help="audit every image of a catalogue")
    p.add_argument("config", help="YAML config whose data section to audit")
    p.add_argument(
        "--out", default="bad_images.csv", help="CSV of bad files (default: %(default)s)"
    )
    p.add_argument(
        "--workers", type=_at_least(1), default=None, help="decode processes (default: all cores)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_check_data)
    return parser


def _at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer no smaller than `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
    return value


def _command(args: argparse.Namespace) -> str:
    """The command as typed: `index build`, not `index`."""
    sub_command = getattr(args, "index_command", None)
    return f"{args.command} {sub_command}" if sub_command else args.command


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # fastai's layers module scripts two activations at import; torch 2.10+ warns about it on
    # every command. The warning is about fastai's code, not the user's, so the CLI hides it.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")
    if hasattr(args, "quiet") and not sys.stdout.isatty():
        args.quiet = True  # progress bars redirected to a file or pipe are only noise
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)  # a warning is one log line, not a source line dump
    if not args.verbose:
        logging.getLogger("faiss").setLevel(logging.WARNING)  # its CPU-feature probing notes
    # SIGTERM ends a run like Ctrl-C: the last completed epoch's checkpoint stays resumable.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return args.func(args)
    except ZapmultiError as exc:
        print(f"zapmulti {_command(args)}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ""
        if args.command == "train":
            run_dir = args.resume or args.out or str(Path("runs") / Path(args.config or "").stem)
            hint = f"; continue with: zapmulti train --resume {run_dir}"
        print(f"zapmulti {_command(args)}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
