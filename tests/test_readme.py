"""The README's promises about itself: two commands first, and CI runs the second."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.rst").read_text()
    head = text.split("\n----\n", 1)[0]
    return [line.strip() for line in head.splitlines() if line.startswith("    ")]


def test_readme_opens_with_exactly_two_one_line_commands():
    demo, tests = readme_commands()
    assert "twistd -n" in demo and "cliproxyd --demo" in demo
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_every_config_key_the_loader_knows_is_documented():
    from cliproxyd.config.load import TOP_LEVEL

    example = (ROOT / "etc" / "cliproxyd.example.yaml").read_text()
    readme = (ROOT / "README.rst").read_text()
    for key in TOP_LEVEL:
        assert re.search(rf"^#?\s*{re.escape(key)}:", example, re.M), key
        assert f"``{key}" in readme, key
