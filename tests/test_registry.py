"""The registry against real installed plugin distributions (built and pip-installed here)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from seqlearn import registry
from seqlearn.errors import DuplicateComponentError, PluginLoadError, UnknownComponentError

GOOD = """
from seqlearn import registry

@registry.tokenizers.register("shout")
class ShoutTokenizer:
    def __init__(self, suffix="!"):
        self.suffix = suffix
    def tokenize(self, text):
        return [t.upper() + self.suffix for t in text.split()]
    def detokenize(self, tokens):
        return " ".join(tokens)
"""

BROKEN = """
raise RuntimeError("this plugin is broken on purpose")
"""


def test_builtins_are_entry_points_of_seqlearn():
    prov = registry.tokenizers.provenance("whitespace")
    assert prov.builtin and prov.distribution == "seqlearn" and prov.version
    assert ("whitespace", f"built-in (seqlearn {prov.version})") in registry.tokenizers.listing()


def test_plugin_is_discovered_listed_and_usable(plugin_env):
    reg = registry.Registry("tokenizers")
    assert "shout" not in reg
    plugin_env("shout-plugin", "1.2.3", {"shout_plugin": GOOD}, {"seqlearn.tokenizers": {"shout": "shout_plugin:ShoutTokenizer"}})
    # installed into a folder already on sys.path, as %pip install does in a kernel: the cache hides it ...
    assert "shout" not in reg
    # ... until refresh()
    registry.refresh()
    assert ("shout", "shout-plugin 1.2.3") in reg.listing()
    tok = reg.build("shout", suffix="?")
    assert tok.tokenize("a b") == ["A?", "B?"]
    assert tok.provenance.as_dict() == {
        "kind": "tokenizers", "name": "shout", "distribution": "shout-plugin", "version": "1.2.3",
        "module": "shout_plugin",
    }


def test_broken_plugin_is_isolated_until_asked_for(plugin_env):
    plugin_env("broken-plugin", "0.0.1", {"broken_plugin": BROKEN}, {"seqlearn.cells": {"broken": "broken_plugin:Cell"}})
    reg = registry.Registry("cells")
    # listing does not import it, and other components still load
    assert ("broken", "broken-plugin 0.0.1") in reg.listing()
    assert registry.Registry("tokenizers").build("whitespace").tokenize("a b") == ["a", "b"]
    with pytest.raises(PluginLoadError) as err:
        reg.get("broken")
    msg = str(err.value)
    assert "broken = broken_plugin:Cell" in msg and "broken-plugin 0.0.1" in msg and "seqlearn.cells" in msg
    assert isinstance(err.value.__cause__, RuntimeError)
    assert "broken on purpose" in str(err.value.__cause__)


def test_two_distributions_with_one_name_is_an_error_naming_both(plugin_env):
    plugin_env("first-plugin", "1.0", {"first_plugin": GOOD}, {"seqlearn.tokenizers": {"shout": "first_plugin:ShoutTokenizer"}})
    plugin_env("second-plugin", "2.0", {"second_plugin": GOOD}, {"seqlearn.tokenizers": {"shout": "second_plugin:ShoutTokenizer"}})
    registry.refresh()
    reg = registry.Registry("tokenizers")
    with pytest.raises(DuplicateComponentError, match=r"first-plugin 1\.0.*second-plugin 2\.0|second-plugin 2\.0.*first-plugin 1\.0"):
        reg.get("shout")
    assert dict(reg.listing())["shout"].startswith("CONFLICT")


def test_plugin_cannot_shadow_a_builtin(plugin_env):
    plugin_env("sneaky-plugin", "0.1", {"sneaky_plugin": GOOD}, {"seqlearn.tokenizers": {"whitespace": "sneaky_plugin:ShoutTokenizer"}})
    registry.refresh()
    with pytest.raises(DuplicateComponentError, match=r"seqlearn .*sneaky-plugin 0\.1|sneaky-plugin 0\.1.*seqlearn"):
        registry.Registry("tokenizers").get("whitespace")


def test_decorator_cannot_shadow_a_builtin_or_overwrite():
    reg = registry.Registry("tokenizers")
    with pytest.raises(DuplicateComponentError, match="built-ins cannot be shadowed"):
        reg.register("whitespace", type("Mine", (), {}))

    class A:
        pass

    class B:
        pass

    reg.register("mine", A)
    with pytest.raises(DuplicateComponentError, match="already registered"):
        reg.register("mine", B)
    assert reg.get("mine") is A


def test_rerunning_a_notebook_cell_replaces_its_own_definition():
    reg = registry.Registry("cells")
    namespace: dict = {"__name__": "__main__", "reg": reg}
    cell = "@reg.register('mycell')\nclass MyCell:\n    pass\n"
    exec(cell, namespace)
    first = reg.get("mycell")
    exec(cell, namespace)
    assert reg.get("mycell") is namespace["MyCell"] is not first
    assert reg.provenance("mycell").origin == "local (__main__)"


def test_unknown_name_lists_names_and_suggests():
    with pytest.raises(UnknownComponentError) as err:
        registry.tokenizers.get("whitspace")
    msg = str(err.value)
    assert "unknown tokenizer 'whitspace'" in msg
    assert "char" in msg and "nltk:toktok" in msg
    assert "Did you mean 'whitespace'?" in msg


def test_parametrized_names_pass_their_argument():
    class Echo:
        def __init__(self, arg):
            self.arg = arg

    reg = registry.Registry("tokenizers")
    reg.register("echo", Echo)
    built = reg.build("echo:de")
    assert built.arg == "de" and built.provenance.name == "echo:de"
    with pytest.raises(UnknownComponentError):
        reg.build("nope:de")


def test_cli_lists_every_kind_with_origins():
    out = subprocess.run([sys.executable, "-m", "seqlearn.cli", "plugins"], capture_output=True, text=True, check=True).stdout
    for kind in ("cells:", "attentions:", "decoders:", "tokenizers:"):
        assert kind in out
    for name in ("whitespace", "char", "nltk:toktok", "nltk:treebank", "spacy"):
        assert any(line.split()[:1] == [name] and "built-in" in line for line in out.splitlines()), name
