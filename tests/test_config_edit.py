"""config.yaml edits: comments and mode survive, bad changes write nothing, edits never lose one another."""

from __future__ import annotations

import os
import shutil
import stat

import pytest
import pytest_twisted
import yaml
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.threads import deferToThread

from cliproxyd.config import ConfigError
from cliproxyd.config.edit import ConfigFile, delete_path, set_path, to_node

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "etc", "cliproxyd.example.yaml")

COMMENTED = b"""\
# The operator's notes.
port: 8317   # the usual port

# Keys for clients.
api-keys:
  - "sk-one"   # alice

# Where routing goes.
routing:
  strategy: 'round-robin'   # or fill-first

# Management.
remote-management:
  allow-remote: false
# the end
"""


def sync(f, *args):
    return maybeDeferred(f, *args)


def result_of(d: Deferred):
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def failure_of(d: Deferred, kind: type[BaseException]) -> BaseException:
    results = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    assert hasattr(results[0], "check") and results[0].check(kind), results[0]
    return results[0].value


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(COMMENTED)
    return path


def leftovers(path) -> list[str]:
    return sorted(n for n in os.listdir(path.parent) if n != path.name)


def test_an_edit_changes_one_line_and_keeps_comments_order_and_quotes(conf):
    config, returned = result_of(ConfigFile(str(conf), sync).edit(
        lambda doc: set_path(doc, ("routing", "strategy"), "fill-first") or "done"))
    assert returned == "done"
    assert config.routing.strategy == "fill-first"
    # ruamel keeps an end-of-line comment at its column (aligned comments stay aligned).
    assert conf.read_bytes() == COMMENTED.replace(b"'round-robin'   #", b"'fill-first'    #")
    assert leftovers(conf) == []


def test_the_example_config_survives_an_edit_but_for_the_changed_lines(tmp_path):
    path = tmp_path / "config.yaml"
    shutil.copy(EXAMPLE, path)

    def mutate(doc):
        set_path(doc, ("routing", "strategy"), "fill-first")
        doc["api-keys"].append(to_node("sk-new"))

    before = path.read_text()
    result_of(ConfigFile(str(path), sync).edit(mutate))
    assert path.read_text() == before.replace('  strategy: "round-robin"', '  strategy: "fill-first"').replace(
        '  - "sk-client-change-me"\n', '  - "sk-client-change-me"\n  - sk-new\n')


def test_the_file_mode_survives(conf):
    os.chmod(conf, 0o640)
    result_of(ConfigFile(str(conf), sync).edit(lambda doc: set_path(doc, ("port",), 9000)))
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o640
    assert b"port: 9000   # the usual port" in conf.read_bytes()


def test_a_change_that_does_not_validate_leaves_the_file_byte_identical(conf):
    e = failure_of(ConfigFile(str(conf), sync).edit(
        lambda doc: set_path(doc, ("routing", "strategy"), "random")), ConfigError)
    assert str(e).startswith(f"{conf}: routing.strategy: unknown strategy 'random'")
    assert conf.read_bytes() == COMMENTED
    assert leftovers(conf) == []


def test_an_error_in_mutate_leaves_the_file_byte_identical(conf):
    def mutate(doc):
        set_path(doc, ("port",), 1)
        raise ValueError("no such credential")

    e = failure_of(ConfigFile(str(conf), sync).edit(mutate), ValueError)
    assert str(e) == "no such credential"
    assert conf.read_bytes() == COMMENTED
    assert leftovers(conf) == []


def test_an_edit_rereads_the_file_every_time(conf):
    cf = ConfigFile(str(conf), sync)
    result_of(cf.edit(lambda doc: set_path(doc, ("debug",), True)))
    # The operator edits the file by hand in between.
    conf.write_bytes(conf.read_bytes().replace(b"port: 8317", b"port: 9999"))
    config, _ = result_of(cf.edit(lambda doc: set_path(doc, ("request-retry",), 2)))
    assert (config.port, config.debug, config.request_retry) == (9999, True, 2)


def test_a_change_that_changes_nothing_does_not_rewrite_the_file(conf):
    inode = os.stat(conf).st_ino
    result_of(ConfigFile(str(conf), sync).edit(lambda doc: set_path(doc, ("port",), 8317)))
    assert os.stat(conf).st_ino == inode
    assert conf.read_bytes() == COMMENTED


class Queued:
    """
    A run_in_thread whose jobs run when the test says so, in rounds: every
    job waiting runs before any job those queue, as a thread pool would
    interleave them.
    """

    def __init__(self):
        self.jobs = []

    def __call__(self, f, *args):
        d = Deferred()
        self.jobs.append((d, f, args))
        return d

    def drain(self):
        while self.jobs:
            batch, self.jobs = self.jobs, []
            for d, f, args in batch:
                maybeDeferred(f, *args).chainDeferred(d)


def test_twenty_edits_at_once_all_land(conf):
    threads = Queued()
    cf = ConfigFile(str(conf), threads)
    done = gatherResults([
        cf.edit(lambda doc, i=i: doc["api-keys"].append(to_node(f"sk-{i}"))) for i in range(20)
    ])
    threads.drain()
    result_of(done)
    keys = yaml.safe_load(conf.read_bytes())["api-keys"]
    assert sorted(keys) == sorted(["sk-one"] + [f"sk-{i}" for i in range(20)])
    assert b'"sk-one"   # alice' in conf.read_bytes()


@pytest_twisted.ensureDeferred
async def test_twenty_edits_at_once_in_real_threads_all_land(conf, reactor):
    cf = ConfigFile(str(conf), deferToThread)
    await gatherResults([
        cf.edit(lambda doc, i=i: doc["api-keys"].append(to_node(f"sk-{i}"))) for i in range(20)
    ])
    assert len(yaml.safe_load(conf.read_bytes())["api-keys"]) == 21
    assert (await cf.read()).startswith(b"# The operator's notes.\n")
    assert leftovers(conf) == []


def test_a_missing_or_empty_file_is_an_empty_mapping(tmp_path):
    path = tmp_path / "new.yaml"
    cf = ConfigFile(str(path), sync)
    assert result_of(cf.read()) == b""
    seen = []
    result_of(cf.edit(lambda doc: seen.append(dict(doc)) or set_path(doc, ("routing", "strategy"), "ff")))
    assert seen == [{}]
    assert path.read_bytes() == b"routing:\n  strategy: ff\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # it holds keys
    path.write_bytes(b"")
    result_of(cf.edit(lambda doc: None))
    assert path.read_bytes() == b""


def test_a_file_of_only_comments_keeps_them(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"# nothing yet\n\n#  set keys below\n")
    result_of(ConfigFile(str(path), sync).edit(lambda doc: set_path(doc, ("port",), 9000)))
    assert path.read_bytes() == b"# nothing yet\n\n#  set keys below\nport: 9000\n"


def test_a_broken_file_is_a_config_error_naming_the_line(conf):
    conf.write_bytes(b"port: 1\nrouting:\n  strategy: [rr\n")
    e = failure_of(ConfigFile(str(conf), sync).edit(lambda doc: None), ConfigError)
    assert str(e).startswith(f"{conf}: YAML syntax error: line ")
    conf.write_bytes(b"- a\n")
    e = failure_of(ConfigFile(str(conf), sync).edit(lambda doc: None), ConfigError)
    assert str(e) == f"{conf}: must be a mapping, not a list"


# -- replace -----------------------------------------------------------------------


def test_replace_validates_then_writes_keeping_the_mode(conf):
    os.chmod(conf, 0o640)
    config = result_of(ConfigFile(str(conf), sync).replace(b"port: 9000\n"))
    assert config.port == 9000
    assert conf.read_bytes() == b"port: 9000\n"
    assert stat.S_IMODE(os.stat(conf).st_mode) == 0o640


def test_replace_refuses_a_yaml_syntax_error_naming_the_line(conf):
    e = failure_of(ConfigFile(str(conf), sync).replace(b"port: 1\nrouting:\n  strategy: [rr\n"), ConfigError)
    assert str(e).startswith(f"{conf}: YAML syntax error: line 4 column 1: ")
    assert conf.read_bytes() == COMMENTED
    assert leftovers(conf) == []


def test_replace_refuses_an_invalid_config_naming_the_path(conf):
    e = failure_of(ConfigFile(str(conf), sync).replace(b"port: 70000\n"), ConfigError)
    assert str(e) == f"{conf}: port: must be between 1 and 65535, not 70000"
    assert conf.read_bytes() == COMMENTED
    assert leftovers(conf) == []


# -- the helpers ---------------------------------------------------------------------


def edited(conf, mutate) -> bytes:
    result_of(ConfigFile(str(conf), sync).edit(mutate))
    return conf.read_bytes()


def test_set_path_creates_mappings_and_refuses_to_go_through_a_scalar(conf):
    out = edited(conf, lambda doc: set_path(doc, ("routing", "warmup", "ttl-seconds"), 30))
    assert out.endswith(b"  strategy: 'round-robin'   # or fill-first\n  warmup:\n    ttl-seconds: 30\n\n"
                        b"# Management.\nremote-management:\n  allow-remote: false\n# the end\n")
    with pytest.raises(ValueError, match=r"port.x: port is not a mapping"):
        set_path(to_node({"port": 1}), ("port", "x"), 1)
    with pytest.raises(ValueError, match=r"api-keys\[5\]: no such list item"):
        set_path(to_node({"api-keys": ["a"]}), ("api-keys", 5), "b")


def test_set_path_into_a_list_item(conf):
    out = edited(conf, lambda doc: set_path(doc, ("api-keys", 0), "sk-uno"))
    assert b'  - "sk-uno"   # alice\n' in out


def test_delete_path_takes_the_entry_and_its_heading_and_leaves_the_next_heading(conf):
    removed = []
    out = edited(conf, lambda doc: removed.extend(
        [delete_path(doc, ("api-keys",)), delete_path(doc, ("nope", "x")), delete_path(doc, ("port", "x"))]))
    assert removed == [True, False, False]
    assert out == (b"# The operator's notes.\nport: 8317   # the usual port\n\n# Where routing goes.\nrouting:\n"
                   b"  strategy: 'round-robin'   # or fill-first\n\n# Management.\nremote-management:\n"
                   b"  allow-remote: false\n# the end\n")
    out = edited(conf, lambda doc: delete_path(doc, ("remote-management",)))
    assert out.endswith(b"  strategy: 'round-robin'   # or fill-first\n# the end\n")


def test_an_item_appended_to_a_list_lands_above_the_next_heading(conf):
    out = edited(conf, lambda doc: doc["api-keys"].append(to_node("sk-two")))
    assert b'  - "sk-one"   # alice\n  - sk-two\n\n# Where routing goes.\n' in out


def test_a_new_list_follows_the_files_indentation(tmp_path):
    flush = tmp_path / "flush.yaml"
    flush.write_bytes(b"api-keys:\n- a\n")
    deep = tmp_path / "deep.yaml"
    deep.write_bytes(b"api-keys:\n    -   a\nrouting:\n    strategy: ff\n")
    plain = tmp_path / "plain.yaml"
    plain.write_bytes(b"port: 1\n")
    provider = {"name": "x", "base-url": "http://h/v1", "api-keys": ["k"], "models": [{"name": "m"}]}
    mutate = lambda doc: set_path(doc, ("openai-compatibility",), [provider])  # noqa: E731
    assert edited(flush, mutate).endswith(
        b"openai-compatibility:\n- name: x\n  base-url: http://h/v1\n  api-keys:\n  - k\n  models:\n  - name: m\n")
    assert edited(deep, mutate).endswith(
        b"openai-compatibility:\n    -   name: x\n        base-url: http://h/v1\n        api-keys:\n"
        b"            -   k\n        models:\n            -   name: m\n")
    assert edited(plain, mutate).endswith(
        b"openai-compatibility:\n  - name: x\n    base-url: http://h/v1\n    api-keys:\n      - k\n"
        b"    models:\n      - name: m\n")


def test_an_explicit_document_start_is_kept(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"# head\n\n---\n# port\nport: 1\n")
    assert edited(path, lambda doc: set_path(doc, ("port",), 2)) == b"# head\n\n---\n# port\nport: 2\n"


@pytest.mark.parametrize("value", [
    "yes", "on", "No", "1:20", "2024-01-01", "null", "~", "12", "0x1f", "1e3", ".inf", "", " padded ",
    "a: b", "- x", "#x", "multi\nline", 1e20, 1.5e-7, 0.1, 3, True, None, float("inf"),
    {"on": ["yes", {"n": None}]}, [],
])
def test_to_node_values_read_back_the_same_in_yaml_1_1(conf, value):
    out = edited(conf, lambda doc: set_path(doc, ("timeouts-note",), value))
    assert yaml.safe_load(out)["timeouts-note"] == value


def test_to_node_writes_block_style(conf):
    out = edited(conf, lambda doc: set_path(doc, ("oauth-model-alias",), {"gemini-cli": [{"name": "a", "alias": "b"}]}))
    assert out.endswith(b"# the end\n")
    assert b"oauth-model-alias:\n  gemini-cli:\n    - name: a\n      alias: b\n" in out


def test_to_node_refuses_what_yaml_cannot_hold():
    with pytest.raises(ValueError, match="cannot write a bytes"):
        to_node({"k": b"raw"})
