"""The ``neuronscope`` command. Stage flags are generated from the pydantic config models."""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .config import ExplainConfig, LLMConfig, RecordConfig, RunConfig, load_config
from .errors import ConfigError, NeuronScopeError

# (section, model, flag prefix)
SECTIONS: dict[str, tuple[type[BaseModel], str]] = {
    "record": (RecordConfig, ""),
    "explain": (ExplainConfig, ""),
    "llm": (LLMConfig, "llm-"),
}


def add_flags(p: argparse.ArgumentParser, section: str, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of a config section (``SECTIONS``), except those in ``skip``."""
    model, prefix = SECTIONS[section]
    group = p.add_argument_group(f"{section} settings")
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + prefix + name.replace("_", "-")
        # Values stay strings here: pydantic validates and converts them, naming any bad one.
        group.add_argument(flag, dest=f"{section}.{name}", default=None, metavar=name.upper(), help=flag_help(field))


def flag_help(field: FieldInfo) -> str:
    """A config field's description, its allowed values when it is a Literal, and its default."""
    allowed = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
    one_of = f"one of: {', '.join(map(str, allowed))}; " if allowed else ""
    # argparse %-formats help strings
    return f"{field.description or ''} ({one_of}default: {field.default})".replace("%", "%%")


def config_from_args(args: argparse.Namespace, base: dict | None = None) -> RunConfig:
    """The --config file (or the defaults) with ``base`` and then the flags given on top, validated."""
    overrides: dict[str, dict] = {k: dict(v) for k, v in (base or {}).items()}
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".", 1)
            overrides.setdefault(section, {})[name] = value
    return load_config(args.config, overrides)


def names_a_hub_id(args: argparse.Namespace) -> bool:
    """Whether the command's models name a Hugging Face hub id (to be fetched) rather than only
    bundled models and local folders (which need no network, and then no hub call is made)."""
    if not hasattr(args, "config"):
        return False
    try:
        cfg = config_from_args(args)
    except NeuronScopeError:
        return False  # the command itself reports the bad config
    names = (cfg.record.model, cfg.llm.model, cfg.explain.embedder)
    return any(not n.startswith("bundled:") and not Path(n).expanduser().exists() for n in names)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neuronscope", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="the whole pipeline on the embedded defaults")
    demo.add_argument("--out", help="run folder or s3:// URI (default: runs/demo-<time>)")
    add_flags(demo, "record")
    add_flags(demo, "explain", skip=("layers", "neurons"))
    add_flags(demo, "llm")

    rec = sub.add_parser("record", help="record top-k activations per neuron")
    rec.add_argument("--out", required=True, help="run folder or s3:// URI")
    add_flags(rec, "record")

    exp = sub.add_parser("explain", help="explain recorded neurons")
    exp.add_argument("--records", required=True, help="run (folder or s3:// URI) holding records/")
    exp.add_argument("--out", help="run to write explanations into (default: the records run)")
    add_flags(exp, "explain")
    add_flags(exp, "llm")

    show = sub.add_parser("show", help="one neuron's explanations in the terminal")
    show.add_argument("run")
    show.add_argument("--layer", type=int, required=True)
    show.add_argument("--neuron", type=int, required=True)
    show.add_argument("--transcript", action="store_true", help="also print the agents' transcript (JSON lines)")

    st = sub.add_parser("status", help="each stage's state, neuron counts, token spend and last error")
    st.add_argument("run", help="run folder or s3:// URI")

    sc = sub.add_parser("score", help="score your own explanation of a neuron, beside a control")
    sc.add_argument("run", help="run (folder or s3:// URI) holding records/")
    sc.add_argument("explanation", help="the explanation to score, e.g. 'month names'")
    sc.add_argument("--layer", type=int, required=True)
    sc.add_argument("--neuron", type=int, required=True)
    sc.add_argument("--scorer", help="one scorer (default: every scorer; all but embedding start the LLM)")
    sc.add_argument("--json", action="store_true", help='print one JSON object {"scores": {...}, "default": ...}')
    sc.add_argument("--config", help="run.yaml with explain/llm sections; flags override it")
    add_flags(sc, "llm")

    imp = sub.add_parser("import", help="records from OpenAI NeuronRecord JSON or their neuron puzzles")
    imp.add_argument("src", help="a NeuronRecord .json file or a folder of them; or a puzzles .json file")
    imp.add_argument("--format", choices=["openai", "puzzles"], default="openai")
    imp.add_argument("--out", required=True, help="run folder or s3:// URI")

    ex = sub.add_parser("export", help="one neuron's records as OpenAI NeuronRecord JSON (stdout)")
    ex.add_argument("run")
    ex.add_argument("--layer", type=int, required=True)
    ex.add_argument("--neuron", type=int, required=True)

    atl = sub.add_parser(
        "atlas",
        help="the neuron atlas of a run: table, search indexes, static site; "
        "`atlas serve RUN` serves it with search by meaning",
    )
    atl.add_argument("run", metavar="RUN", help="run folder or s3:// URI (or the word serve, then RUN)")
    atl.add_argument("serve_run", nargs="?", metavar="RUN", help=argparse.SUPPRESS)
    atl.add_argument("--out", help="atlas folder or s3:// URI (default: RUN/atlas)")
    atl.add_argument("--port", type=int, default=8000, help="serve: the port on 127.0.0.1 (default: 8000; 0 picks one)")

    se = sub.add_parser("search", help="neurons by the meaning of their explanations, or by a token they fire on")
    se.add_argument("run", metavar="RUN", help="run folder or s3:// URI (its atlas indexes are built if missing)")
    se.add_argument("query", help="what to look for, e.g. 'dates'; with --token a token, e.g. ' king'")
    se.add_argument("-k", type=int, default=10, help="how many hits (default: 10)")
    se.add_argument("--layers", help="only these layers, e.g. 3,5-7")
    se.add_argument("--min-score", type=float, help="only hits scored at least this")
    se.add_argument("--token", action="store_true", help="neurons whose top activating tokens include QUERY")
    se.add_argument("--out", help="the atlas folder or s3:// URI (default: RUN/atlas)")

    for s in (demo, rec, exp):
        s.add_argument("--config", help="run.yaml with record/explain/llm sections; flags override it")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    # before anything imports huggingface_hub, which reads it once
    os.environ.setdefault("HF_HUB_OFFLINE", "0" if names_a_hub_id(args) else "1")
    from . import stages
    from .logs import printer
    from .store import Store
    from .summary import estimate_line, summary_table

    progress = printer()
    try:
        if args.command == "demo":
            out = args.out or os.path.join("runs", "demo-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
            cfg = config_from_args(args, stages.DEMO_OVERRIDES)
            index = stages.run_demo(out, cfg, progress)
            print(summary_table(Store.open(out)))
            print(f"run: {out}")
            print(f"atlas: {index}")
        elif args.command == "record":
            summary = stages.run_record(config_from_args(args), args.out, progress)
            print(f"recorded {summary}")
            print(f"run: {args.out}")
        elif args.command == "explain":
            out = args.out or args.records
            cfg = config_from_args(args)
            result = stages.run_explain(cfg, args.records, out, progress)
            if isinstance(result, stages.Estimate):
                print(estimate_line(result))
            else:
                print(summary_table(Store.open(out)))
                print(f"run: {out}")
        elif args.command == "show":
            from .show import show_neuron

            print(show_neuron(args.run, args.layer, args.neuron, transcript=args.transcript))
        elif args.command == "status":
            from .status import run_status

            print(run_status(args.run))
        elif args.command == "score":
            _score(args, progress)
        elif args.command == "import":
            from .record import interop

            store = Store.open(args.out)
            store.check_writable()
            load = interop.import_openai if args.format == "openai" else interop.import_puzzles
            print(f"imported {load(args.src, store)}")
            print(f"run: {args.out}")
        elif args.command == "export":
            import json

            from .record.interop import export_neuron

            print(json.dumps(export_neuron(args.run, args.layer, args.neuron)))
        elif args.command == "atlas":
            _atlas(args, progress)
        elif args.command == "search":
            _search(args, progress)
    except NeuronScopeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


def _score(args: argparse.Namespace, progress) -> None:
    import json

    from . import stages
    from .hypothesis import render, score_hypothesis
    from .scoring import LLM_SCORERS, SCORERS

    if args.scorer is not None and args.scorer not in SCORERS:
        raise ConfigError(f"unknown scorer {args.scorer!r}; known: {', '.join(SCORERS)}")
    cfg = config_from_args(args)
    names = [args.scorer] if args.scorer else list(SCORERS)
    llm = None
    if any(n in LLM_SCORERS for n in names):
        stages.ensure_ray()
        llm = stages.start_llm(cfg, progress)
    result = score_hypothesis(args.run, args.layer, args.neuron, args.explanation, names, cfg, llm=llm)
    if args.json:

        def finite(x):  # strict JSON: an unscorable set is null, not NaN
            return x if x == x else None

        print(
            json.dumps(
                {
                    "scores": {
                        k: {"score": finite(v["score"]), "control": finite(v["control"])}
                        for k, v in result["scores"].items()
                    },
                    "default": result["default"],
                }
            )
        )
    else:
        print(render(result, args.explanation))


def _atlas(args: argparse.Namespace, progress) -> None:
    from .atlas import build_atlas

    if args.serve_run is None:
        print(f"atlas: {build_atlas(args.run, args.out, progress)}")
        return
    if args.run != "serve":
        raise ConfigError(
            f"unexpected argument {args.serve_run!r}: use `neuronscope atlas RUN` or `neuronscope atlas serve RUN`"
        )
    import threading

    from .atlas.serve import start

    server = start(args.serve_run, args.out, args.port, progress)
    host, port = server.socket.getsockname()[:2]
    print(f"serving the atlas of {args.serve_run} at http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


def _search(args: argparse.Namespace, progress) -> None:
    from .atlas import atlas_store, load_index
    from .selection import parse_selection
    from .store import Store

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


def job(command: str) -> None:
    """Entry for ``ray_jobs/*.py``: ``command`` with the job's own arguments."""
    sys.exit(main([command, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
