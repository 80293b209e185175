"""seqlearn's entry points print nothing the user cannot act on: Lightning's advertisements
and torch's LeafSpec deprecation (raised inside Lightning) are dropped there, and only there."""
from __future__ import annotations

import logging
import subprocess
import sys
import warnings

from pytorch_lightning.utilities._pytree import _tree_flatten

from seqlearn import cli
from seqlearn.notices import quiet_third_party_notices

LIGHTNING = logging.getLogger("pytorch_lightning.utilities.rank_zero")


def test_advertisements_go_and_other_lightning_messages_stay(caplog):
    quiet_third_party_notices()
    quiet_third_party_notices()  # idempotent
    with caplog.at_level(logging.INFO, logger=LIGHTNING.name):
        LIGHTNING.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        LIGHTNING.info("`Trainer.fit` stopped: `max_epochs=1` reached.")
    assert [r.getMessage() for r in caplog.records] == ["`Trainer.fit` stopped: `max_epochs=1` reached."]


def test_lightnings_leafspec_deprecation_goes_and_other_future_warnings_stay():
    with warnings.catch_warnings(record=True) as seen:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        _tree_flatten([1, 2])  # Lightning's own code builds a LeafSpec
        assert [w.category for w in seen] == [FutureWarning] and "LeafSpec" in str(seen[0].message)
        seen.clear()
        quiet_third_party_notices()
        _tree_flatten([1, 2])
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning)  # not from Lightning
    assert [str(w.message) for w in seen] == ["`isinstance(treespec, LeafSpec)` is deprecated"]


def test_the_command_quiets_them_and_importing_seqlearn_does_not():
    for handler_filter in list(LIGHTNING.filters):
        LIGHTNING.removeFilter(handler_filter)
    assert cli.main(["plugins"]) == 0
    assert LIGHTNING.filters
    code = ("import logging, warnings, seqlearn, seqlearn.seq2seq, seqlearn.tagger; "
            "print(len(logging.getLogger('pytorch_lightning.utilities.rank_zero').filters), "
            "any('LeafSpec' in str(f[1]) for f in warnings.filters))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "False"]
