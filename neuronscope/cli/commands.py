"""The ``neuronscope`` subcommands, one class each, in the order ``--help`` lists them."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys

from ..errors import ConfigError
from ..logs import Progress
from .base import Command
from .flags import add_flags, config_from_args

CONFIG_HELP = "run.yaml with record/explain/llm/causal sections; flags override it"


def _one_neuron(parser: argparse.ArgumentParser) -> None:
    """RUN --layer L --neuron N: the neuron a command is about."""
    parser.add_argument("run")
    parser.add_argument("--layer", type=int, required=True)
    parser.add_argument("--neuron", type=int, required=True)


class Demo(Command):
    name, help = "demo", "the whole pipeline on the embedded defaults"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", help="run folder or s3:// URI (default: runs/demo-<time>)")
        add_flags(parser, "record")
        add_flags(parser, "explain", skip=("layers", "neurons"))
        add_flags(parser, "llm")
        add_flags(parser, "causal")
        parser.add_argument("--config", help=CONFIG_HELP)

    def run(self, args: argparse.Namespace, progress: Progress) -> None:
        from .. import stages

        out = args.out or os.path.join("runs", "demo-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
        index = stages.run_demo(out, config_from_args(args, stages.DEMO_OVERRIDES), progress)
        _print_run(out)
        print(f"atlas: {index}")


def _print_run(out: str) -> None:
    """The run's scores beside their controls (and its causal check), then where it is."""
    from ..store import Store
    from ..summary import summary_table

    print(summary_table(Store.open(out)))
    print(f"run: {out}")


class Record(Command):
    name, help = "record", "record top-k activations per neuron"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", required=True, help="run folder or s3:// URI")
        add_flags(parser, "record")
        parser.add_argument("--config", help=CONFIG_HELP)

    def run(self, args: argparse.Namespace, progress: Progress) -> None:
        from .. import stages

        summary = stages.run_record(config_from_args(args), args.out, progress)
        print(f"recorded {summary}")
        print(f"run: {args.out}")


class Explain(Command):
    name, help = "explain", "explain recorded neurons"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--records", required=True, help="run (folder or s3:// URI) holding records/")
        parser.add_argument("--out", help="run to write explanations into (default: the records run)")
        add_flags(parser, "explain")
        add_flags(parser, "llm")
        add_flags(parser, "causal")
        parser.add_argument("--config", help=CONFIG_HELP)

    def run(self, args: argparse.Namespace, progress: Progress) -> None:
        from .. import stages
        from ..summary import estimate_line

        out, cfg = args.out or args.records, config_from_args(args)
        result = stages.run_explain(cfg, args.records, out, progress)
        if isinstance(result, stages.Estimate):
            print(estimate_line(result))
            return
        if cfg.causal.enabled:
            stages.run_causal(cfg, args.records, out, progress)
        _print_run(out)


class Causal(Command):
    name, help = "causal", "check each explained mode causally: the neuron ablated where it fires, beside a control"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--records", required=True, help="run (folder or s3:// URI) holding records/")
        parser.add_argument("--out", help="run holding the explanations, written into (default: the records run)")
        add_flags(parser, "causal", skip=("enabled",))
        parser.add_argument("--config", help=CONFIG_HELP)

    def run(self, args: argparse.Namespace, progress: Progress) -> None:
        from .. import stages
        from ..store import Store
        from ..summary import causal_line

        out = args.out or args.records
        stages.run_causal(config_from_args(args), args.records, out, progress)
        print(causal_line(Store.open(out)))
        print(f"run: {out}")


class Show(Command):
    name, help = "show", "one neuron's explanations, output tokens and top exemplars in the terminal"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _one_neuron(parser)
        parser.add_argument("--transcript", action="store_true", help="also print the agents' transcript (JSON lines)")

    def run(self, args: argparse.Namespace, progress: Progress) -> None:
        from ..show import show_neuron

        print(show_neuron(args.run, args.layer, args.neuron, transcript=args.transcript))


class Status(Command):
    name, help = "status", "each stage's state, neuron counts, token spend and last error"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", help="run folder or s3:// URI")

    def run(self, args: argparse.Namespace, progress: Progress) -> None:
        from ..status import run_status

        print(run_status(args.run))


class Score(Command):
    name, help = "score", "score your own explanation of a neuron, beside a control"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", help="run (folder or s3:// URI) holding records/")
        parser.add_argument("explanation", help="the explanation to score, e.g. 'month names'")
        parser.add_argument("--layer", type=int, required=True)
        parser.add_argument("--neuron", type=int, required=True)
        parser.add_argument(
            "--scorer",
            help="scorers, comma-separated, or 'all' (default: the run's decision scorer; simulation, "
            "detection and fuzzing start the LLM)",
        )
        parser.add_argument(
            "--json", action="store_true", help='print one JSON object {"scores": {...}, "default": ...}'
        )
        parser.add_argument("--config", help="run.yaml with explain/llm sections; flags override it")
        add_flags(parser, "llm")

    def run(self, args: argparse.Namespace, progress: Progress) -> None:
        from .. import stages
        from ..hypothesis import Hypothesis, render, score_hypothesis
        from ..scoring import LLM_SCORERS, SCORERS

        names = None if args.scorer is None else list(SCORERS) if args.scorer == "all" else args.scorer.split(",")
        unknown = [n for n in names or () if n not in SCORERS]
        if unknown:
            raise ConfigError(f"unknown scorer {unknown[0]!r}; known: {', '.join(SCORERS)}, or all")
        cfg = config_from_args(args)
        llm = None
        if any(n in LLM_SCORERS for n in names or (cfg.explain.scorer,)):
            stages.ensure_ray()
            llm = stages.start_llm(cfg, progress)
        hypothesis = Hypothesis(args.run, args.layer, args.neuron, args.explanation)
        result = score_hypothesis(hypothesis, names, cfg, llm=llm)
        print(json.dumps(_strict(result)) if args.json else render(result, args.explanation))


def _strict(result: dict) -> dict:
    """``score --json``: strict JSON, an unscorable set null, not NaN."""
    from ..results import jsonable

    keys = ("score", "interval", "lexical", "lexical_interval", "control", "control_interval")
    scores = {k: {key: jsonable(v[key]) for key in keys} for k, v in result["scores"].items()}
    return {
        "scores": scores,
        "default": result["default"],
        "lexical_explanation": result["lexical_explanation"],
        "control_explanation": result["control_explanation"],
    }


class Import(Command):
    name, help = "import", "records from OpenAI NeuronRecord JSON or their neuron puzzles"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("src", help="a NeuronRecord .json file or a folder of them; or a puzzles .json file")
        parser.add_argument("--format", choices=["openai", "puzzles"], default="openai")
        parser.add_argument("--out", required=True, help="run folder or s3:// URI")

    def run(self, args: argparse.Namespace, progress: Progress) -> None:
        from ..record import interop
        from ..store import Store

        store = Store.open(args.out)
        store.check_writable()
        load = interop.import_openai if args.format == "openai" else interop.import_puzzles
        print(f"imported {load(args.src, store)}")
        print(f"run: {args.out}")


class Export(Command):
    name, help = "export", "one neuron's records as OpenAI NeuronRecord JSON (stdout)"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        _one_neuron(parser)

    def run(self, args: argparse.Namespace, progress: Progress) -> None:
        from ..record.interop import export_neuron

        print(json.dumps(export_neuron(args.run, args.layer, args.neuron)))


class Atlas(Command):
    name = "atlas"
    help = (
        "the neuron atlas of a run: table, search indexes, static site; "
        "`atlas serve RUN` serves it with search by meaning"
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("run", metavar="RUN", help="run folder or s3:// URI (or the word serve, then RUN)")
        parser.add_argument("serve_run", nargs="?", metavar="RUN", help=argparse.SUPPRESS)
        parser.add_argument("--out", help="atlas folder or s3:// URI (default: RUN/atlas)")
        parser.add_argument(
            "--port", type=int, default=8000, help="serve: the port on 127.0.0.1 (default: 8000; 0 picks one)"
        )

    def run(self, args: argparse.Namespace, progress: Progress) -> None:
        from ..atlas import build_atlas

        if args.serve_run is None:
            print(f"atlas: {build_atlas(args.run, args.out, progress)}")
            return
        if args.run != "serve":
            raise ConfigError(
                f"unexpected argument {args.serve_run!r}: use `neuronscope atlas RUN` or `neuronscope atlas serve RUN`"
            )
        _serve(args, progress)


def _serve(args: argparse.Namespace, progress: Progress) -> None:
    """``atlas serve``: until Ctrl-C."""
    import threading

    from ..atlas.serve import start

    server = start(args.serve_run, args.out, args.port, progress)
    host, port = server.socket.getsockname()[:2]
    print(f"serving the atlas of {args.serve_run} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


class Search(Command):
    name, help = "search", "neurons by the meaning of their explanations, or by a token they fire on or promote"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "run", metavar="RUN", help="run folder or s3:// URI (its atlas indexes are built if missing)"
        )
        parser.add_argument("query", help="what to look for, e.g. 'dates'; with --token a token, e.g. ' king'")
        parser.add_argument("-k", type=int, default=10, help="how many hits (default: 10)")
        parser.add_argument("--layers", help="only these layers, e.g. 3,5-7")
        parser.add_argument("--min-score", type=float, help="only hits scored at least this")
        parser.add_argument(
            "--token",
            action="store_true",
            help="neurons whose top activating tokens include QUERY, then those whose output promotes it",
        )
        parser.add_argument("--out", help="the atlas folder or s3:// URI (default: RUN/atlas)")

    def run(self, args: argparse.Namespace, progress: Progress) -> None:
        from ..atlas import atlas_store, load_index
        from ..selection import parse_selection
        from ..store import Store

        if not args.query.strip():
            raise ConfigError("the search query is empty")
        if args.k < 1:
            raise ConfigError(f"-k {args.k}: ask for at least 1 hit")
        run = Store.open(args.run)
        index = load_index(run, atlas_store(run, args.out), progress)
        layers = None
        if args.layers:
            layers = set(parse_selection(args.layers, int(index.neurons["layer"].max()) + 1, "layer"))
        hits = index.search(args.query, args.k, layers, args.min_score, token=args.token)
        for hit in hits:
            print(hit.line())
        if not hits:
            print("no neuron matches", file=sys.stderr)


COMMANDS: tuple[Command, ...] = (
    Demo(),
    Record(),
    Explain(),
    Causal(),
    Show(),
    Status(),
    Score(),
    Import(),
    Export(),
    Atlas(),
    Search(),
)
