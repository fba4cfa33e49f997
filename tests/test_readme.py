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


def keys_the_loader_reads() -> set[tuple[str, str]]:
    """
    (section, key) for every key the loader knows, at any depth: recorded
    from the known-key sets it checks each mapping against while it reads a
    config that has every section and one item in every list (the
    config.example.yaml inventory, plus cliproxyd's own sections).
    """
    from cliproxyd.config import load
    from tests.test_config_inventory import INVENTORY, build_config

    seen: set[tuple[str, str]] = set()
    check = load._Reader.check_keys

    def recording(self, known, not_yet=frozenset()):
        known = set(known)
        section = re.sub(r"\[\d+\]", "[]", self.path)
        seen.update((section, key) for key in known)
        return check(self, known, not_yet)

    data = build_config(INVENTORY)
    data["oauth-quota-groups"] = [{"id": "g", "providers": ["p"], "models": ["m*"]}]
    data["openai-compatibility"][0]["api-keys"] = ["legacy-key"]
    data["routing"]["warmup"] = {"enabled": False}
    data["client-keys"] = [{"name": "n", "key": "k"}]
    load._Reader.check_keys = recording
    try:
        load.parse_config(data)
    finally:
        load._Reader.check_keys = check
    return seen


def test_every_key_the_loader_reads_at_any_depth_is_in_the_readme_and_the_example():
    example = (ROOT / "etc" / "cliproxyd.example.yaml").read_text()
    readme = (ROOT / "README.rst").read_text()
    keys = keys_the_loader_reads()
    assert ("tls", "cert") in keys and ("openai-compatibility[].models[]", "display-name") in keys
    assert ("client-keys[]", "daily-tokens") in keys
    for section, key in sorted(keys):
        where = f"{section}.{key}" if section else key
        assert f"``{key}" in readme or f"``{where}" in readme, f"{where} is not in README.rst"
        assert re.search(rf"^\s*#?\s*(- )?{re.escape(key)}:", example, re.M), \
            f"{where} is not in etc/cliproxyd.example.yaml"
