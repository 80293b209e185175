"""Names of seqlearn 0.1.0 keep working: a caller's old keyword gives a FutureWarning naming
the new one and the model it would have built; a 0.1.0 checkpoint loads without a word
(its outputs are checked in test_checkpoint_compat.py)."""
from __future__ import annotations

import inspect
import io
import warnings
from pathlib import Path

import pytest
import torch

import seqlearn.tagger
from seqlearn import LanguageModel, Seq2Seq, Tagger, Vocab, cli
from seqlearn.batching import pad
from seqlearn.errors import ConfigError
from seqlearn.renamed import RENAMED
from seqlearn.tagger_cli import tag_lines

FIXTURES = Path(__file__).parent / "fixtures" / "v0_1_0"
WORDS, TAGS = Vocab(["a", "b"]), Vocab(["O", "B-X", "I-X"], specials=("<pad>",))


def tagger(**options) -> Tagger:
    torch.manual_seed(0)
    return Tagger(WORDS, TAGS, char_features=None, hidden_size=4, **options)


def lm(**options) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(WORDS, embedding_dim=4, hidden_size=6, num_layers=1, **options)


def test_tagger_word_dim_is_embedding_dim():
    with pytest.warns(FutureWarning, match="Tagger: word_dim is deprecated, use embedding_dim"):
        old = tagger(word_dim=6)
    new = tagger(embedding_dim=6)
    assert old.hparams.embedding_dim == 6 and "word_dim" not in old.hparams
    assert old.word_embedding.weight.shape == (len(WORDS), 6)
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))


def test_tagger_lr_decay_is_the_inverse_time_schedule():
    with pytest.warns(FutureWarning, match="lr_decay is deprecated, use lr_scheduler='inverse-time' with lr_gamma"):
        model = tagger(lr_decay=0.05)
    assert (model.hparams.lr_scheduler, model.hparams.lr_gamma) == ("inverse-time", 0.05)
    with pytest.warns(FutureWarning):
        assert tagger(lr_decay=0.0).hparams.lr_scheduler == "none"  # 0.1.0's "no decay"


@pytest.mark.parametrize("options, message", [
    ({"word_dim": 6, "embedding_dim": 6}, "word_dim is the old name of embedding_dim; pass only embedding_dim"),
    ({"lr_decay": 0.5, "lr_scheduler": "step"}, "pass only lr_scheduler"),
    ({"lr_decay": -1.0}, "lr_decay must be a number >= 0"),
])  # fmt: skip
def test_old_names_that_cannot_be_mapped_are_clear_errors(options, message):
    with pytest.raises(ConfigError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        tagger(**options)


def test_language_model_tie_weights_is_tie_embeddings():
    with pytest.warns(FutureWarning, match="LanguageModel: tie_weights is deprecated, use tie_embeddings"):
        untied = lm(tie_weights=False)
    assert untied.hparams.tie_embeddings is False and untied.output.weight is not untied.embedding.weight
    tied = lm()
    assert tied.hparams.tie_embeddings is True and tied.output.weight is tied.embedding.weight


def test_init_state_takes_batch_size_and_still_batch():
    model = lm()
    assert {v.shape[0] for v in model.init_state(batch_size=3).values()} == {3}
    with pytest.warns(FutureWarning, match="LanguageModel: batch is deprecated, use batch_size"):
        assert {v.shape[0] for v in model.init_state(batch=2).values()} == {2}
    causal = tagger(bidirectional=False, head="softmax")
    with pytest.warns(FutureWarning, match="Tagger: batch is deprecated"):
        assert {v.shape[0] for v in causal.init_state(batch=2).values()} == {2}


def test_seq2seq_step_is_search_step():
    torch.manual_seed(0)
    model = Seq2Seq(WORDS, WORDS, embedding_dim=4, hidden_size=6).eval()
    state = model.start(pad([[4, 5, 3]], 0))
    prev = torch.tensor([2])
    with pytest.warns(FutureWarning, match="Seq2Seq.step is deprecated, use Seq2Seq.search_step"):
        old = model.step(prev, state)
    new = model.search_step(prev, state)
    torch.testing.assert_close(old[0], new[0], rtol=0, atol=0)


def test_tag_lines_moved_to_the_command_line_module():
    with pytest.warns(FutureWarning, match="moved to seqlearn.tagger_cli.tag_lines"):
        assert seqlearn.tagger.tag_lines is tag_lines


def test_checkpoints_of_0_1_0_load_silently_with_the_new_names():
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        old_tagger = Tagger.load_from_checkpoint(FIXTURES / "tagger_crf_chars.ckpt")  # saved with word_dim, lr_decay
        old_lm = LanguageModel.load_from_checkpoint(FIXTURES / "language_model_tied.ckpt")  # saved with tie_weights
    assert old_tagger.hparams.embedding_dim == 8 and "word_dim" not in old_tagger.hparams
    assert (old_tagger.hparams.lr_scheduler, old_tagger.hparams.lr_gamma) == ("inverse-time", 0.5)
    assert old_lm.hparams.tie_embeddings is True and "tie_weights" not in old_lm.hparams
    # saved again, it is a checkpoint of today's names
    buffer = io.BytesIO()
    torch.save({"state_dict": old_lm.state_dict(), "hyper_parameters": dict(old_lm.hparams)}, buffer)
    assert "tie_weights" not in torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)["hyper_parameters"]


def test_the_table_names_only_methods_that_exist_and_new_names_they_take():
    classes = {"Tagger": Tagger, "LanguageModel": LanguageModel}
    for where, renames in RENAMED.items():
        owner, method = where.split(".")
        params = inspect.signature(getattr(classes[owner], method)).parameters
        for old, (new, mapping) in renames.items():
            assert old not in params
            sample = 0.5 if old == "lr_decay" else 1
            assert set(mapping(sample)) <= set(params), where


def test_a_config_with_an_old_name_says_the_new_one(tmp_path, capsys):
    config = tmp_path / "old.yaml"
    config.write_text("model:\n  class_path: seqlearn.Tagger\n  init_args: {word_dim: 8}\n"
                      f"data: {{train: {tmp_path / 'missing.txt'}}}\n", encoding="utf-8")  # fmt: skip
    assert cli.main(["fit", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert "word_dim" in error and "(word_dim was renamed: use embedding_dim)" in error
