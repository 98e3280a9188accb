"""Every command's flags, defaults, types and help texts, pinned against ``tests/cli_options.json``.

The fixture was written from the single-file ``cli.py`` before it became the ``lesionbench.cli`` package, so
this test shows the split changed no option of any command. A deliberate change of a flag updates the
fixture in the same commit: ``python tests/test_cli_options.py --write`` (and review the diff)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path, PurePath

import pytest

from lesionbench.cli import build_parser

FIXTURE = Path(__file__).with_name("cli_options.json")


def _default(value):
    if isinstance(value, PurePath):
        return f"Path({str(value)!r})"
    return list(value) if isinstance(value, tuple) else value


def describe(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> dict:
    """``{"run": {...}, "leaderboard build": {...}, "": the top level}``: each parser's arguments in order."""
    out: dict = {}
    args = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                out.update(describe(sp, (*path, name)))
            args.append({"subcommands": [[c.dest, c.help] for c in a._choices_actions], "required": a.required, "metavar": a.metavar})
            continue
        args.append({
            "options": list(a.option_strings) or [a.dest],
            "dest": a.dest,
            "action": type(a).__name__,
            "help": a.help,
            "default": _default(a.default),
            "required": a.required,
            "choices": list(a.choices) if a.choices is not None else None,
            "nargs": a.nargs,
            "metavar": list(a.metavar) if isinstance(a.metavar, tuple) else a.metavar,
            "type": None if a.type is None else getattr(a.type, "__name__", repr(a.type)),
        })  # fmt: skip
    out[" ".join(path)] = {
        "description": parser.description,
        "arguments": args,
        "exclusive": [sorted(x.dest for x in g._group_actions) + [f"required={g.required}"] for g in parser._mutually_exclusive_groups],
        "defaults": sorted(k for k in parser._defaults if k != "func"),
    }
    return out


def _current() -> dict:
    return json.loads(json.dumps(describe(build_parser()), sort_keys=True))


EXPECTED = json.loads(FIXTURE.read_text())


def test_same_commands():
    assert sorted(_current()) == sorted(EXPECTED)


@pytest.mark.parametrize("command", sorted(EXPECTED), ids=lambda c: c or "top-level")
def test_command_options_unchanged(command):
    now = _current()[command]
    want = EXPECTED[command]
    assert [a.get("options") for a in now["arguments"]] == [a.get("options") for a in want["arguments"]]
    for got, expected in zip(now["arguments"], want["arguments"]):
        assert got == expected, f"{command or 'lesionbench'} {expected.get('options')}"
    assert now == want


def test_every_command_has_a_runner():
    parser = build_parser()
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            if name == "leaderboard":
                sub = sub._subparsers._group_actions[0].choices["build"]
            assert callable(sub._defaults.get("func")), name


def test_help_exits_zero_for_every_command(capsys):
    from lesionbench.cli import main

    for command in [c for c in EXPECTED if c]:
        assert main([*command.split(), "--help"]) == 0
        assert "usage: lesionbench " + command in capsys.readouterr().out


def test_import_is_cheap():
    """``lesionbench --help`` must not pay for torch, pandas or numpy: every command imports them when it runs."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import lesionbench.cli"],
                         capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])  # fmt: skip
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "pandas", "numpy", "mlflow", "SimpleITK", "sklearn"}


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    FIXTURE.write_text(json.dumps(describe(build_parser()), indent=1, sort_keys=True) + "\n")
