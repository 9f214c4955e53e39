"""``heat attribute``: attribute one text's next token from the command line, with HEAT or any registered method
(``--method``; the choices are the method registry's names), or — with ``--generate`` / ``--continuation`` —
explain an answer token by token (a matrix: each answer token over the prompt and the answer before it), for a plain
prompt or a chat conversation (``--chat``, ``--messages``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from heat_module.attribution.registry import available_methods, build, method_entry
from heat_module.config import DEFAULT_CURVATURE, MASKS, PRESETS, SINKS, HEATConfig, s_estimator, s_estimator_names
from heat_module.heat.estimator import HEAT
from heat_module.lm.loading import load_model

#: the options that configure HEAT only (refused with another ``--method``)
HEAT_OPTIONS = ("foil", "beta", "gamma", "alpha", "curvature", "probes", "mask", "sink", "window", "seed", "progress")


def method_name(value: str) -> str:
    """The registered name of ``value`` (a name or an alias), for argparse."""
    try:
        return method_entry(value).name
    except KeyError as e:
        raise argparse.ArgumentTypeError(e.args[0]) from None


def option_pair(value: str) -> tuple[str, object]:
    """``KEY=VALUE`` -> (key, value parsed as JSON, else the string)."""
    key, sep, raw = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"Expected KEY=VALUE, got {value!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="heat attribute",
        description="HEAT attribution of a text's next token, or of every token of an answer (--generate N, "
                    "--continuation TEXT; a chat with --chat or --messages).",
        epilog="Example: heat attribute --chat --text 'Name a fruit.' --generate 8 --html answer.html")
    p.add_argument("--model", default="smollm2", help="'smollm2' (offline default), a local HF folder or a hub id")
    p.add_argument("--text", default=None, help="the context to attribute (with --chat: the user's message)")
    p.add_argument("--method", default="heat", type=method_name, choices=available_methods(), metavar="METHOD",
                   help="the attribution method, a name of the method registry (or an alias): "
                        + ", ".join(available_methods()) + " (default heat)")
    p.add_argument("--option", action="append", type=option_pair, default=[], metavar="KEY=VALUE",
                   help="an option of a --method other than heat (repeatable; VALUE read as JSON when it parses, "
                        "e.g. --option steps=16)")
    g = p.add_argument_group("explaining an answer (a matrix: one row per answer token)")
    g.add_argument("--generate", type=int, default=None, metavar="N",
                   help="generate up to N tokens greedily (stopping at the end-of-sequence token) and explain each")
    g.add_argument("--continuation", default=None,
                   help="explain this given answer token by token instead of generating one")
    g.add_argument("--chat", action="store_true",
                   help="--text is the user's message of a chat, rendered with the tokenizer's chat template")
    g.add_argument("--messages", default=None, metavar="FILE",
                   help="a JSON file with a chat conversation: a list of {\"role\": ..., \"content\": ...}")
    g.add_argument("--keep-special", action="store_true",
                   help="keep chat-template and special tokens in the scores and pictures (hidden by default)")
    g.add_argument("--color", default="auto", choices=["auto", "always", "never"],
                   help="colour the terminal matrix (auto: when the output is a terminal and NO_COLOR is unset)")
    p.add_argument("--target", default=None,
                   help="target token (a token string or an integer id); a text of several tokens is attributed at "
                        "the sentence level (eq. 23)")
    p.add_argument("--foil", default=None,
                   help="contrast token (string or id): explain log P(target) - log P(foil)")
    p.add_argument("--preset", default="default", choices=list(PRESETS),
                   help="the configuration the options below change (HEATConfig.preset): 'default' is HEATConfig(), "
                        "eq. 5 with the Fisher S, the exact I and normalize='sum' (the choice study's pick); 'mi' is "
                        "M·I (beta 0, no Hessian term; what a --foil needs, or 'exact'); 'exact' / 'paper' / "
                        "'fisher' / 'fast' are eq. 5 with S (beta = gamma = 0.5)")
    # every field option below defaults to None: not given = the preset's value
    p.add_argument("--beta", type=float, default=None, help="weight of S (eq. 5); 0 turns S off (M·I)")
    p.add_argument("--gamma", type=float, default=None, help="weight of I (eq. 5)")
    p.add_argument("--alpha", type=float, default=None, help="weight of the first-order term (eq. 22)")
    p.add_argument("--curvature", default=None, choices=s_estimator_names(),
                   help="the estimator of S, with its default settings (needs beta > 0)")
    p.add_argument("--probes", type=int, default=None, help="Rademacher probes of S's estimator (needs beta > 0)")
    p.add_argument("--mask", default=None, choices=list(MASKS), help="what replaces a token's embedding for I")
    p.add_argument("--sink", default=None, choices=list(SINKS), help="attention-sink handling of M")
    p.add_argument("--window", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--level", default="tokens", choices=["tokens", "words", "sentences"],
                   help="show (and write) token scores, or scores merged into words / sentences")
    p.add_argument("--reduce", default="sum", choices=["sum", "max", "mean"], help="how --level merges scores")
    p.add_argument("--progress", default=None, choices=["auto", "on", "off"], help="progress bar (default auto)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--html", default=None, help="write an HTML heatmap to this path")
    p.add_argument("--png", default=None, help="write a PNG heatmap to this path")
    return p


def estimator_changes(args: argparse.Namespace) -> dict:
    """``curvature`` and ``information`` of the preset changed by ``--curvature``, ``--probes`` and ``--mask`` (the
    preset's own estimator kept where the flags name no other)."""
    base = HEATConfig.preset(args.preset)
    out: dict = {}
    if args.curvature is not None or args.probes is not None:
        same = base.curvature is not None and args.curvature in (None, base.curvature.name)
        s = base.curvature if same else s_estimator(args.curvature or DEFAULT_CURVATURE)
        out["curvature"] = s if args.probes is None else s.replace(probes=args.probes)
    if args.mask is not None:
        if base.information is None:
            raise ValueError(f"Expected a preset that computes I for --mask (the mask replaces x_i in I's masked "
                             f"runs), got --preset {args.preset}, which does not compute I")
        out["information"] = base.information.replace(mask=args.mask)
    return out


def read_messages(path: str) -> list[dict[str, str]]:
    """The chat conversation of ``--messages``: a JSON list of ``{"role", "content"}`` objects."""
    from heat_module.data.generation_prompts import check_messages

    with open(path, encoding="utf-8") as f:
        try:
            messages = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: Expected a JSON list of chat messages, got invalid JSON ({e.msg})") from e
    problem = check_messages(messages)
    if problem is not None:
        raise ValueError(f"{path}: {problem}")
    return messages


def use_color(choice: str) -> bool:
    """Whether to colour the terminal matrix: ``always`` / ``never``, or (``auto``) when stdout is a terminal and
    the ``NO_COLOR`` convention is not set."""
    if choice != "auto":
        return choice == "always"
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def explain_answer(args: argparse.Namespace, attributor: object) -> int:
    """``--generate`` / ``--continuation``: the per-step matrix of an answer, printed and written as asked."""
    if args.messages and (args.chat or args.text is not None):
        raise ValueError("Expected either --messages FILE or --text (with --chat), got both")
    if args.generate is not None and args.generate < 1:
        raise ValueError(f"Expected --generate N with N >= 1, got {args.generate}")
    if args.generate is not None and args.continuation is not None:
        raise ValueError("Expected --generate N (a generated answer) or --continuation TEXT (a given one), got both")
    if args.target is not None or args.level == "sentences":
        raise ValueError("Expected no --target / --level sentences when explaining an answer (the answer is "
                         "--continuation, or generated with --generate)")
    messages = read_messages(args.messages) if args.messages else None
    if args.chat:
        messages = [{"role": "user", "content": args.text}]
    kw = {} if args.foil is None else {"foil": int(args.foil) if args.foil.lstrip("-").isdigit() else args.foil}
    result = attributor.attribute_generation(
        None if messages else args.text, messages=messages, continuation=args.continuation,
        max_new_tokens=args.generate, keep_special=args.keep_special, **kw)
    if args.level == "words":
        result = result.aggregate("words", reduce=args.reduce)
    title = args.text if messages is None else f"{messages[-1]['role']}: {messages[-1]['content']}"
    if args.html:
        result.save_html(args.html, title=title)
    if args.png:
        result.save_png(args.png, title=title)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(result.to_text(color=use_color(args.color)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``heat attribute``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    answer = args.generate is not None or args.continuation is not None
    if args.text is None and not (answer and args.messages):
        parser.error("the following arguments are required: --text (or --messages FILE with --generate N)")
    if (args.chat or args.messages or args.keep_special) and not answer:
        parser.error("--chat, --messages and --keep-special explain an answer: add --generate N or --continuation")
    given = dict(beta=args.beta, gamma=args.gamma, alpha=args.alpha, sink=args.sink, window=args.window, seed=args.seed)
    changes = {k: v for k, v in given.items() if v is not None}
    if args.progress is not None:
        changes["progress"] = {"auto": None, "on": True, "off": False}[args.progress]
    try:
        target, foil = (int(v) if v is not None and v.lstrip("-").isdigit() else v for v in (args.target, args.foil))
        if args.method == "heat":
            if args.option:
                raise ValueError(f"Expected no --option with --method heat (its options are the flags above), got "
                                 f"{[k for k, _ in args.option]}")
            config = HEATConfig.preset(args.preset, **changes, **estimator_changes(args))
            model, tokenizer = load_model(args.model)
            heat = HEAT(model, tokenizer, config)
            if answer:
                return explain_answer(args, heat)
            result = heat.attribute(args.text, target=target, foil=foil)
        else:
            heat_only = [f"--{k}" for k in HEAT_OPTIONS if getattr(args, k) is not None]
            heat_only += ["--preset"] if args.preset != "default" else []
            if heat_only:
                raise ValueError(f"Expected no HEAT options with --method {args.method}, got {heat_only}")
            model, tokenizer = load_model(args.model)
            method = build(args.method, model, tokenizer, None, **dict(args.option))
            if answer:
                return explain_answer(args, method)
            result = method.attribute(args.text, target)
        if args.level != "tokens":
            result = result.aggregate(args.level, reduce=args.reduce, tokenizer=tokenizer)
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as err:
        print(f"heat attribute: error: {err}", file=sys.stderr)
        return 2
    if args.html:
        result.save_html(args.html, title=args.text)
    if args.png:
        result.save_png(args.png)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        foil_note = f" rather than {result.extra['foil']!r}" if "foil" in result.extra else ""
        print(f"target: {result.target!r} (id {result.target_id}){foil_note}")
        for rank, (i, tok, score) in enumerate(result.topk(args.topk), 1):
            print(f"{rank:>2}. [{i:>3}] {tok!r:<16} {score:.5g}")
    return 0
