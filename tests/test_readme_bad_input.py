"""The README's bad-input table is what the CLI says: every row's command exits 2 with that one line on
stderr, writes nothing and starts nothing."""
from __future__ import annotations

import os
import re
import shlex

import pytest

from testbed import run as run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rows() -> list[tuple[str, str]]:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    table = text[text.index("Bad input, for example"):text.index("### Flags")]
    out = []
    for line in table.splitlines():
        m = re.match(r"^\| `([^`]+)` \| `([^`]+)`", line)
        if m:
            out.append((m.group(1), m.group(2)))
    return out


def test_the_table_has_the_rows_of_both_papercuts():
    typed = " ".join(cmd for cmd, _ in rows())
    for flag in ("--broker-url", "--launcher local", "--broker-cpus", "--broker-heap"):
        assert flag in typed, flag


@pytest.mark.parametrize("cmd, said", rows())
def test_each_row_is_refused_with_its_line(cmd, said, tmp_path, capsys):
    if "this machine offers CPUs" in said and os.cpu_count() != 2:
        said = said.split("this machine offers CPUs")[0]  # the CPU list is this machine's
    out = tmp_path / "run"
    try:
        rc = run_cli.main([*shlex.split(cmd), "--out", str(out), "--quiet"])
    except SystemExit as exc:  # the parser's own refusals
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"testbed.run: error: {said}"), err
    assert not out.exists()
