"""The README's settings table and the code cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path

from housekeeper.config import SETTINGS

README = Path(__file__).resolve().parent.parent / "README.md"


def _settings_rows() -> dict[str, str]:
    text = README.read_text()
    section = text.split("## Settings", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\| `([A-Z0-9_]+)` \| `([^`]*)` \|", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def test_readme_settings_table_lists_every_setting_with_its_default():
    rows = _settings_rows()
    assert rows == {doc.name: doc.default for doc in SETTINGS}


def test_readme_shows_the_two_commands():
    text = README.read_text()
    assert "make run" in text
    assert "make test" in text
