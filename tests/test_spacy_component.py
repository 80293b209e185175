"""The seqlearn_tagger spaCy component against the Tagger it wraps."""
from __future__ import annotations

import pytest
import pytorch_lightning as pl
import spacy
import torch

from seqlearn.datamodules import TaggingDataModule
from seqlearn.errors import ConfigError
from seqlearn.readers import TaggedSentence
from seqlearn.tagger import Tagger

torch.set_num_threads(1)

NER = [
    ("EU rejects German call to boycott British lamb .", "B-ORG O B-MISC O O O B-MISC O O"),
    ("Peter Blackburn", "B-PER I-PER"),
    ("The European Commission said on Thursday", "O B-ORG I-ORG O O O"),
]
POS = [
    ("EU rejects German call to boycott British lamb .", "PROPN VERB ADJ NOUN PART VERB ADJ NOUN PUNCT"),
    ("Peter Blackburn said", "PROPN PROPN VERB"),
]
SMALL = dict(embedding_dim=16, char_dim=8, char_out_dim=8, hidden_size=16, dropout=0.0, lr=0.05)


def _trained(pairs, tmp_path, **kw) -> tuple[Tagger, str]:
    """A tagger overfitted on ``pairs`` and the path of its checkpoint."""
    torch.manual_seed(0)
    sentences = [TaggedSentence(text.split(), tags.split(), i + 1) for i, (text, tags) in enumerate(pairs)]
    dm = TaggingDataModule(sentences, sentences, **kw)
    dm.setup("fit")
    tagger = Tagger.from_datamodule(dm, **SMALL)
    trainer = pl.Trainer(max_epochs=60, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)  # fmt: skip
    trainer.fit(tagger, dm)
    path = tmp_path / "tagger.ckpt"
    trainer.save_checkpoint(path)
    return tagger.eval(), str(path)


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    return _trained(NER, tmp_path_factory.mktemp("ner"), scheme="BIO")


@pytest.fixture(scope="module")
def pos(tmp_path_factory):
    return _trained(POS, tmp_path_factory.mktemp("pos"))


def test_ner_model_sets_entities_and_confidences(ner):
    tagger, path = ner
    nlp = spacy.blank("en")
    nlp.add_pipe("seqlearn_tagger", config={"model": path})  # found through the entry point
    texts = [text for text, _ in NER]
    for doc, (text, tags), expected in zip(nlp.pipe(texts, batch_size=2), NER, tagger.predict(texts)):
        assert expected.tags == tags.split()  # the sample is learnt
        assert [(e.start, e.end, e.label_) for e in doc.ents] == [(s.start, s.end, s.type) for s in expected.spans]
        assert [t._.seqlearn_confidence for t in doc] == pytest.approx(expected.confidence)


def test_whitespace_tokens_are_skipped(ner):
    _, path = ner
    nlp = spacy.blank("en")
    nlp.add_pipe("seqlearn_tagger", config={"model": path})
    doc = nlp("Peter  Blackburn")  # spaCy makes a whitespace token between the names
    assert [t.is_space for t in doc] == [False, True, False]
    assert [(e.text, e.label_) for e in doc.ents] == [("Peter  Blackburn", "PER")]
    assert doc[1]._.seqlearn_confidence is None


def test_upos_model_sets_pos_and_a_tag_option_sets_tag(pos):
    tagger, path = pos
    text, tags = POS[0]
    nlp = spacy.blank("en")
    nlp.add_pipe("seqlearn_tagger", config={"model": path})
    assert [t.pos_ for t in nlp(text)] == tags.split() == tagger.predict([text])[0].tags
    nlp = spacy.blank("en")
    nlp.add_pipe("seqlearn_tagger", config={"model": path, "attribute": "tag"})
    doc = nlp(text)
    assert [t.tag_ for t in doc] == tags.split() and all(t.pos_ == "" for t in doc)


def test_bad_configurations(ner):
    _, path = ner
    with pytest.raises(ConfigError, match="needs config"):
        spacy.blank("en").add_pipe("seqlearn_tagger")
    with pytest.raises(ConfigError, match="Universal POS"):
        spacy.blank("en").add_pipe("seqlearn_tagger", config={"model": path, "attribute": "pos"})
