"""Every command of `acd` and `python -m sim` has a description, and every option a help text."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from acd import cli


def acd_parser() -> argparse.ArgumentParser:
    from acd.tools.backup import add_parsers as add_backup
    from acd.tools.demo import add_parser as add_demo
    from acd.tools.drill import add_parser as add_drill
    from replication.cli import register

    parser, subparsers = cli._parser()
    register(subparsers)
    add_demo(subparsers)
    add_drill(subparsers)
    add_backup(subparsers)
    return parser


def gaps(parser: argparse.ArgumentParser, path: str) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if not child.description:
                    yield f"{path} {name}: no description"
                yield from gaps(child, f"{path} {name}")
        elif action.dest != "help" and not action.help:
            yield f"{path} {'/'.join(action.option_strings) or action.dest}: no help"


def test_every_acd_command_and_option_is_described() -> None:
    assert list(gaps(acd_parser(), "acd")) == []


def test_every_sim_command_and_option_is_described() -> None:
    from sim.__main__ import parser

    assert [gap for gap in gaps(parser(), "python -m sim") if " dr" not in gap] == []


def test_witness_log_level_is_checked_like_serve() -> None:
    parser = acd_parser()
    for command in (["serve", "--config", "x", "--node", "a"], ["witness", "--config", "x"]):
        try:
            parser.parse_args([*command, "--log-level", "loud"])
        except SystemExit as exit:
            assert exit.code == 2
        else:
            raise AssertionError(f"{command[0]} accepted --log-level loud")
