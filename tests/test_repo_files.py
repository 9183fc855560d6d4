"""Files of the checkout that the docs tell users to run (issue 19 item 9)."""

from __future__ import annotations

import os
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def test_scripts_named_in_the_docs_can_be_run():
    named = {match for doc in [PROJECT / "README.md", *PROJECT.glob("docs/*.md")]
             for match in re.findall(r"scripts/[\w.-]+\.sh", doc.read_text())}
    assert named
    not_executable = sorted(name for name in named if not os.access(PROJECT / name, os.X_OK))
    assert not_executable == []
