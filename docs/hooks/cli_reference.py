"""MkDocs hook: ``<!-- cli-reference -->`` in a page becomes every command's ``--help``, taken
from the real parser, so the reference cannot drift from the flags."""

import argparse

MARKER = "<!-- cli-reference -->"


def _help(parser: argparse.ArgumentParser, name: str) -> str:
    text = parser.format_help().replace("```", "'''")
    return f"## `{name}`\n\n```text\n{text}```\n"


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    from keras_transfer.cli.entry_point import build_parser

    parser = build_parser()
    sections = [_help(parser, "keras-transfer")]
    for action in parser._actions:  # argparse keeps its sub-commands only here
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sections.append(_help(sub, f"keras-transfer {name}"))
    return markdown.replace(MARKER, "\n".join(sections))
