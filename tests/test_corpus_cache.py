"""The corpus cache: a training split read from files is prepared once (on all cores) into
memory-mapped ids, keyed by everything it depends on, written atomically.

The oracle throughout is the in-memory path, which reads the same files into
:class:`ParallelExample` lists with the readers and encodes them one by one.
"""
from __future__ import annotations

import gzip
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import seqlearn.translation_cache as translation_cache
from seqlearn.batching import BucketBatchSampler
from seqlearn.corpus_cache import default_cache_dir
from seqlearn.datamodules import TranslationDataModule
from seqlearn.errors import DataError
from seqlearn.readers import read_parallel, read_tsv
from seqlearn.subwords import train_sentencepiece
from seqlearn.vocab import Vocab

WORDS = "Ein Hund läuft über die Wiese . Zwei Männer essen Brot , eine Frau liest ein Buch im Park".split()


def write_corpus(folder: Path, n: int = 5000, seed: int = 0, empty_every: int = 997) -> tuple[Path, Path]:
    """``n`` line-aligned pairs (gzip) of random words, more than two reader chunks so that
    preparation runs on worker processes; every ``empty_every``-th target line is blank."""
    rng = random.Random(seed)
    src, tgt = [], []
    for i in range(1, n + 1):
        src.append(" ".join(rng.choices(WORDS, k=rng.randint(1, 20))))
        tgt.append("" if i % empty_every == 0 else " ".join(rng.choices(WORDS, k=rng.randint(1, 20))).upper())
    paths = folder / "train.de.gz", folder / "train.en.gz"
    for path, lines in zip(paths, (src, tgt)):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return paths


def oracle(files, **options) -> TranslationDataModule:
    """The same data through the in-memory path: examples read by the readers."""
    read = ("lowercase", "max_length", "limit", "src_tokenizer", "tgt_tokenizer")
    reader_options = {k: options[k] for k in read if k in options}
    with pytest.warns(UserWarning, match="skipped"):
        examples = read_parallel(*files, **reader_options)
    rest = {k: v for k, v in options.items() if k not in reader_options}
    dm = TranslationDataModule(examples, max_tokens=256, **rest)
    dm.setup("fit")
    return dm


def assert_same_data(cached: TranslationDataModule, expected: TranslationDataModule) -> None:
    assert cached.src_vocab == expected.src_vocab and cached.tgt_vocab == expected.tgt_vocab
    a, b = cached.encoded("train"), expected.encoded("train")
    assert len(a) == len(b) > 0
    assert [a[i] for i in range(len(a))] == [b[i] for i in range(len(b))]
    assert np.array_equal(a.lengths(), b.lengths())


def prepared(files, cache_dir, **options) -> TranslationDataModule:
    dm = TranslationDataModule(tuple(files), max_tokens=256, cache_dir=cache_dir, **options)
    with pytest.warns(UserWarning, match="skipped"):
        dm.prepare_data()
    dm.setup("fit")
    return dm


def entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in Path(cache_dir).iterdir())


# -- what is prepared -------------------------------------------------------------------------
@pytest.mark.parametrize("options", [
    {},
    {"lowercase": True, "min_freq": 3, "max_length": 12},
    {"max_size": 10, "limit": 3000, "src_tokenizer": "nltk:toktok"},
])  # fmt: skip
def test_prepared_ids_and_vocabularies_equal_the_in_memory_path(tmp_path, options):
    files = write_corpus(tmp_path)
    dm = prepared(files, tmp_path / "cache", **options)
    assert isinstance(dm.encoded("train").src.tokens, np.memmap)
    expected = oracle(files, **options)
    assert_same_data(dm, expected)
    # the raw text is read only when asked for, and lines up with the ids
    assert "train" not in dm.examples
    with pytest.warns(UserWarning, match="skipped"):
        assert dm.examples["train"] == expected.examples["train"]


def test_a_second_data_module_maps_the_cache_without_reading_the_files(tmp_path, monkeypatch):
    files = write_corpus(tmp_path)
    first = prepared(files, tmp_path / "cache")
    calls = []
    monkeypatch.setattr(translation_cache, "encode_corpus", lambda *a, **k: calls.append(1))
    again = TranslationDataModule(files, max_tokens=256, cache_dir=tmp_path / "cache")
    again.prepare_data()
    again.setup("fit")  # Lightning calls prepare_data first; setup alone works as well
    assert not calls and len(entries(tmp_path / "cache")) == 1
    assert_same_data(again, first)


def test_given_vocabularies_are_kept_and_used(tmp_path):
    files = write_corpus(tmp_path)
    src_vocab, tgt_vocab = Vocab(["Hund", "die"]), Vocab(["EIN"])
    dm = prepared(files, tmp_path / "cache", src_vocab=src_vocab, tgt_vocab=tgt_vocab)
    assert dm.src_vocab is src_vocab and dm.tgt_vocab is tgt_vocab
    assert_same_data(dm, oracle(files, src_vocab=src_vocab, tgt_vocab=tgt_vocab))


def test_tsv_training_split_and_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "seqlearn" / "corpora"
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{w} a\t{w.upper()} b\n" for w in WORDS * 3), encoding="utf-8")
    dm = TranslationDataModule(tsv, max_tokens=64)
    dm.setup("fit")
    assert len(entries(default_cache_dir())) == 1
    expected = TranslationDataModule(read_tsv(tsv), max_tokens=64)
    expected.setup("fit")
    assert_same_data(dm, expected)


@pytest.mark.parametrize("joint", [True, False])
def test_subword_models_are_trained_at_preparation_and_restored_from_the_cache(tmp_path, joint):
    files = write_corpus(tmp_path, n=3000)
    options = {"subwords": "bpe", "vocab_size": 300, "joint": joint, "lowercase": True, "subword_sample_size": 2000}
    dm = prepared(files, tmp_path / "cache", **options)
    with pytest.warns(UserWarning, match="skipped"):
        examples = read_parallel(*files, lowercase=True)
    expected = TranslationDataModule(examples, max_tokens=256, **options)  # part A's in-memory path
    expected.setup("fit")
    assert dm.src_tokenizer.model_proto == expected.src_tokenizer.model_proto
    assert dm.tgt_tokenizer.model_proto == expected.tgt_tokenizer.model_proto
    assert (dm.src_tokenizer.model_proto == dm.tgt_tokenizer.model_proto) == joint
    assert_same_data(dm, expected)
    # a new data module maps the entry: same model, and other splits are segmented by it
    again = TranslationDataModule(files, files, max_tokens=256, cache_dir=tmp_path / "cache", **options)
    with pytest.warns(UserWarning, match="skipped"):
        again.setup("fit")
    assert again.src_tokenizer.model_proto == dm.src_tokenizer.model_proto
    assert_same_data(again, dm)
    valid = again.encoded("valid")
    assert [valid[i] for i in range(len(valid))] == [dm.encoded("train")[i] for i in range(len(valid))]
    for change in ({"vocab_size": 320}, {"subword_sample_size": 1000}, {"subwords": "unigram"}):
        prepared(files, tmp_path / "cache", **{**options, **change})
    assert len(entries(tmp_path / "cache")) == 4


# -- invalidation ------------------------------------------------------------------------------
CHANGES = {
    "lowercase": {"lowercase": True},
    "max_length": {"max_length": 10},
    "limit": {"limit": 100},
    "min_freq": {"min_freq": 2},
    "max_size": {"max_size": 5},
    "tokenizer": {"tgt_tokenizer": "char"},
    "vocabulary": {"src_vocab": Vocab(["Hund"])},
}


def test_every_option_the_ids_depend_on_keys_a_new_cache(tmp_path):
    files = write_corpus(tmp_path, n=300, empty_every=7)
    cache = tmp_path / "cache"
    prepared(files, cache)
    seen = entries(cache)
    for name, change in CHANGES.items():
        dm = prepared(files, cache, **change)
        assert len(entries(cache)) == len(seen) + 1, name
        seen = entries(cache)
        assert_same_data(dm, oracle(files, **change))


def test_a_changed_file_is_prepared_again_never_read_stale(tmp_path):
    files = write_corpus(tmp_path, n=300, empty_every=7)
    cache = tmp_path / "cache"
    prepared(files, cache)
    write_corpus(tmp_path, n=300, seed=1, empty_every=7)  # new content
    dm = prepared(files, cache)
    assert len(entries(cache)) == 2
    assert_same_data(dm, oracle(files))
    stat = os.stat(files[1])  # same content and size, a new modification time
    os.utime(files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    prepared(files, cache)
    assert len(entries(cache)) == 3


def test_a_sentencepiece_model_file_is_keyed_by_its_bytes(tmp_path):
    files = write_corpus(tmp_path, n=300, empty_every=7)
    lines = gzip.decompress(files[0].read_bytes()).decode("utf-8").splitlines()
    model = tmp_path / "x.model"
    options = {"src_tokenizer": f"sentencepiece:{model}"}
    for vocab_size in (300, 320):  # a new model under the same name
        model.write_bytes(train_sentencepiece(lines, vocab_size=vocab_size))
        assert_same_data(prepared(files, tmp_path / "cache", **options), oracle(files, **options))
    assert len(entries(tmp_path / "cache")) == 2


# -- atomic writes ----------------------------------------------------------------------------
KILLER = """
import os, signal, sys
import seqlearn.corpus_cache as cc
from seqlearn.datamodules import TranslationDataModule

point = sys.argv[3]
if point == "append":  # SIGKILL once the ids of three chunks are written
    real, count = cc.CacheWriter.append, []
    def append(self, *a):
        real(self, *a)
        count.append(1)
        if len(count) == 8:
            os.kill(os.getpid(), signal.SIGKILL)
    cc.CacheWriter.append = append
else:  # everything written and COMPLETE too, killed just before the rename
    def rename(*a):
        os.kill(os.getpid(), signal.SIGKILL)
    cc.os.rename = rename
dm = TranslationDataModule((sys.argv[1] + "/train.de.gz", sys.argv[1] + "/train.en.gz"), cache_dir=sys.argv[2])
dm.prepare_data()
"""


@pytest.mark.parametrize("point", ["append", "rename"])
def test_a_preparation_killed_midway_leaves_nothing_readable(tmp_path, point):
    files = write_corpus(tmp_path)
    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path), str(cache), point], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    (partial,) = entries(cache)
    assert partial.startswith(".tmp-") and (cache / partial / "src.tokens").stat().st_size > 0
    assert (cache / partial / "COMPLETE").exists() == (point == "rename")
    dm = prepared(files, cache)  # prepares anew; the dead process's folder is removed
    assert [e for e in entries(cache) if e.startswith(".tmp-")] == []
    assert_same_data(dm, oracle(files))


# -- bad input ----------------------------------------------------------------------------------
def test_malformed_input_is_a_data_error_with_file_and_line_and_leaves_no_cache(tmp_path):
    src, tgt = write_corpus(tmp_path)
    raw = gzip.decompress(src.read_bytes()).split(b"\n")
    raw[4499] = b"\xff\xfe not utf-8"  # line 4500, past the first chunks: read while workers encode
    src.write_bytes(gzip.compress(b"\n".join(raw)))
    cache = tmp_path / "cache"
    dm = TranslationDataModule((src, tgt), cache_dir=cache)
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    assert (err.value.path, err.value.line) == (str(src), 4500) and "UTF-8" in str(err.value)
    assert entries(cache) == []
    # a limit reached before the bad line: as the readers, never read that far
    limited = TranslationDataModule((src, tgt), cache_dir=cache, limit=2000, max_tokens=256)
    limited.setup("fit")
    assert len(limited.encoded("train")) == 2000
    short = tmp_path / "short.en"
    short.write_text("A\nB\n", encoding="utf-8")
    with pytest.raises(DataError, match="differ in length") as err:
        TranslationDataModule((tgt, short), cache_dir=cache).prepare_data()
    assert err.value.path == str(short) and err.value.line == 3  # the file that ran out
    assert [e for e in entries(cache) if e.startswith(".tmp-")] == []


def test_data_errors_keep_file_and_line_across_processes():
    err = pickle.loads(pickle.dumps(DataError("bad", "x.tsv", 7)))
    assert (err.path, err.line, str(err)) == ("x.tsv", 7, "x.tsv:7: bad")


# -- sharing the mapped files -------------------------------------------------------------------
def mapped_token_files() -> set[str]:
    """The cache's ``.tokens`` files this process maps."""
    maps = Path(f"/proc/{os.getpid()}/maps").read_text()
    return {line.split()[-1] for line in maps.splitlines() if line.endswith(".tokens")}


def _worker_view(batch):
    """Collate in a DataLoader worker: the batch, the worker's pid, and the files it maps."""
    return batch, os.getpid(), mapped_token_files()


@pytest.mark.slow  # spawned workers import torch
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/<pid>/maps")
def test_dataloader_workers_map_the_cache_instead_of_copying_it(tmp_path):
    files = write_corpus(tmp_path)
    dm = prepared(files, tmp_path / "cache")
    pairs = dm.encoded("train")
    folder = Path(pairs.src._files[0])
    assert len(pickle.dumps(pairs)) < 2000 < pairs.src.tokens.nbytes  # pickled as file names
    sampler = BucketBatchSampler(pairs.lengths(), max_tokens=256, seed=1)
    expected = list(DataLoader(pairs, batch_sampler=sampler, collate_fn=lambda b: b))
    # spawn: the workers get the dataset pickled (fork would share it without pickling)
    loader = DataLoader(pairs, batch_sampler=BucketBatchSampler(pairs.lengths(), max_tokens=256, seed=1),
                        collate_fn=_worker_view, num_workers=2, multiprocessing_context="spawn")  # fmt: skip
    got = list(loader)
    assert len({pid for _, pid, _ in got}) == 2
    assert all(maps == {str(folder / "src.tokens"), str(folder / "tgt.tokens")} for _, _, maps in got)
    for (batch, _, _), want in zip(got, expected, strict=True):
        assert torch.equal(batch.index, want.index) and torch.equal(batch.src.ids, want.src.ids)
        assert torch.equal(batch.tgt.ids, want.tgt.ids)


def test_resume_mid_epoch_from_the_cache_with_workers(tmp_path):
    files = write_corpus(tmp_path)
    cache = tmp_path / "cache"

    prepared(files, cache)

    def loader():
        dm = TranslationDataModule(files, max_tokens=256, cache_dir=cache, num_workers=1, seed=3)
        dm.setup("fit")
        return dm.train_dataloader()

    def ids(batches):
        return [(b.index.tolist(), b.src.ids.tolist(), b.tgt.ids.tolist()) for b in batches]

    uninterrupted = loader()
    epochs = ids(uninterrupted) + ids(uninterrupted)
    interrupted = loader()
    seen = ids(interrupted)
    it = iter(interrupted)
    seen += ids(next(it) for _ in range(5))
    state = interrupted.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    assert seen + ids(resumed) == epochs


DDP_RUN = """
import json, os, sys
import pytorch_lightning as pl
import torch
from seqlearn.datamodules import TranslationDataModule

folder, cache, out = sys.argv[1:4]


class Data(TranslationDataModule):
    def prepare_data(self):
        with open(os.path.join(out, "prepared"), "a") as f:
            f.write(str(self.trainer.global_rank) + "\\n")
        super().prepare_data()


class Recorder(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen, self.maps = [], set()

    def training_step(self, batch, batch_idx):
        self.seen.append(batch.index.tolist())
        maps = open(f"/proc/{os.getpid()}/maps").read().splitlines()
        self.maps |= {line.split()[-1] for line in maps if line.endswith(".tokens")}
        return self.layer(batch.src.ids[:, :1].float()).sum()

    def on_train_end(self):
        with open(os.path.join(out, f"rank{self.global_rank}.json"), "w") as f:
            json.dump({"seen": self.seen, "maps": sorted(self.maps)}, f)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


data = Data((folder + "/train.de.gz", folder + "/train.en.gz"), cache_dir=cache, max_tokens=400, seed=2)
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Recorder(), datamodule=data)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/<pid>/maps")
def test_two_ddp_processes_map_the_cache_rank_zero_prepared(tmp_path):
    files = write_corpus(tmp_path, n=3000)
    cache, out = tmp_path / "cache", tmp_path / "out"
    out.mkdir()
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(DDP_RUN))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(cache), str(out)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "prepared").read_text().split() == ["0"]  # the other rank waited
    (entry,) = entries(cache)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["maps"] == [str(cache / entry / "src.tokens"), str(cache / entry / "tgt.tokens")] for r in ranks)
    # the processes shared each global batch: one process with twice the budget sees the union
    single = TranslationDataModule(files, max_tokens=800, seed=2, cache_dir=cache)
    single.setup("fit")
    global_batches = [sorted(b) for b in single.train_dataloader().batch_sampler]
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == len(global_batches)
    for a, b, whole in zip(ranks[0]["seen"], ranks[1]["seen"], global_batches):
        assert sorted(a + b) == whole or (len(whole) == 1 and a == b == whole)


def test_a_tokenizer_the_key_cannot_identify_keeps_the_in_memory_path(tmp_path):
    class Opaque:  # a plugin tokenizer with neither cache_identity() nor a telling repr
        def tokenize(self, text):
            return text.split()

        def detokenize(self, tokens):
            return " ".join(tokens)

    files = write_corpus(tmp_path, n=10, empty_every=7)
    cache = tmp_path / "cache"
    data = TranslationDataModule(files, src_tokenizer=Opaque(), tgt_tokenizer=Opaque(), cache_dir=cache)
    with pytest.warns(UserWarning, match="cache_identity"):
        data.prepare_data()
        data.setup("fit")
    assert not cache.exists() or not any(cache.iterdir())  # nothing that could go stale was written
    cached = TranslationDataModule(files, cache_dir=tmp_path / "other")  # whitespace: the same tokens, cached
    cached.setup("fit")
    assert any((tmp_path / "other").iterdir())
    assert data.src_vocab == cached.src_vocab and data.tgt_vocab == cached.tgt_vocab
    assert [pair[1:] for pair in data.encoded("train")] == [pair[1:] for pair in cached.encoded("train")]
