"""The masked-language-model head against transformers' *ForMaskedLM, every family, and BERT's masking rule
by its statistics.

Each folder is a small random ``AutoModelForMaskedLM`` that transformers builds and saves, with a tokenizer of
the family's kind (tests/differential.py's). minibert loads it and must give the same logits, loss and
gradients (of every parameter, the tied word embeddings included), on the reference and fast paths; what it
saves must load in transformers with the same logits; fill-mask must equal transformers' pipeline.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from minibert.masking import IGNORE_INDEX, mask_tokens
from minibert.mlm import HEADS, MaskedLanguageModel
from minibert.weights import split_qkv

from folders import SENTENCES, choices, hf_config, hf_tokenizer

transformers = pytest.importorskip("transformers", reason="transformers builds the reference models")
FAMILIES = ["bert", "distilbert", "roberta", "xlm-roberta", "mpnet"]
TEXTS = [s for s in SENTENCES if s][:8]


@pytest.fixture(scope="module")
def mlm_dirs(tmp_path_factory) -> dict[str, Path]:
    folders = {}
    for i, family in enumerate(FAMILIES):
        folder = tmp_path_factory.mktemp(f"mlm-{family}")
        c = choices(family)
        tokenizer = hf_tokenizer(c, transformers)
        torch.manual_seed(i)
        model = transformers.AutoModelForMaskedLM.from_config(hf_config(c, len(tokenizer), transformers))
        with torch.no_grad():  # away from the initial values, so that every tensor matters
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
        folders[family] = folder
    return folders


def reference(folder: Path):
    return transformers.AutoModelForMaskedLM.from_pretrained(str(folder), attn_implementation="eager").eval()


def masked_batch(model: MaskedLanguageModel, seed: int = 0):
    batch = model.tokenizer(TEXTS)
    maskable = batch.attention_mask.bool() & ~torch.isin(batch.input_ids, torch.tensor(sorted(
        model.tokenizer.special_ids)))
    mask_id = model.tokenizer.backend.token_to_id(model.tokenizer.mask_token)
    inputs, labels = mask_tokens(batch.input_ids, maskable, mask_id, torch.arange(model.tokenizer.vocab_size),
                                 torch.Generator().manual_seed(seed), probability=0.3)
    return inputs, batch.attention_mask, labels


@pytest.mark.parametrize("path", ["reference", "fast"])
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_loss_and_gradients_equal_transformers(mlm_dirs, family, path):
    ours = MaskedLanguageModel.from_pretrained(mlm_dirs[family], path=path).train()
    theirs = reference(mlm_dirs[family]).train()
    for module in (*ours.modules(), *theirs.modules()):  # dropout off, the rest in training mode
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ours.bert.set_dropout(0.0)
    inputs, mask, labels = masked_batch(ours)
    assert (labels != IGNORE_INDEX).sum() > 5
    out, ref = ours(inputs, mask, labels=labels), theirs(input_ids=inputs, attention_mask=mask, labels=labels)
    real = mask.bool()
    assert_close(out.logits[real], ref.logits[real], atol=1e-5, rtol=1e-5)
    assert_close(out.loss, ref.loss, atol=1e-5, rtol=1e-5)
    out.loss.backward()
    ref.loss.backward()
    theirs_params = dict(theirs.named_parameters())
    grads = split_qkv({n: p.grad for n, p in ours.bert.named_parameters()})  # the fast path's QKV as three
    key_map = ours.bert.key_map(ours.bert.config, ours.bert.pooler is not None)
    word = key_map["embeddings.word.weight"]
    for name, grad in grads.items():  # the tied embeddings: their input and output gradients summed
        expected = theirs.get_input_embeddings().weight.grad if key_map[name] == word else \
            theirs_params[ours.bert.hf_prefix + key_map[name]].grad
        assert_close(grad, expected, atol=1e-5, rtol=1e-4, msg=name)
    keys = HEADS[ours.bert.config.model_type][0]
    for name, param in ours.head.named_parameters():
        assert_close(param.grad, theirs_params[keys[name]].grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_what_minibert_saves_transformers_loads(mlm_dirs, family, tmp_path):
    ours = MaskedLanguageModel.from_pretrained(mlm_dirs[family])
    ours.save_pretrained(tmp_path / "saved")
    again = reference(tmp_path / "saved")
    batch = ours.tokenizer(TEXTS)
    with torch.no_grad():
        assert_close(again(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                     ours(batch.input_ids, batch.attention_mask).logits, atol=1e-5, rtol=1e-5)


def assert_same_fills(mine: list[list[dict]], theirs: list, what: str) -> None:
    """One text's fills against the pipeline's (a flat list where the text has one mask): every field."""
    theirs = [theirs] if isinstance(theirs[0], dict) else theirs
    assert len(mine) == len(theirs), what
    for got, expected in zip(mine, theirs, strict=True):
        for key in ("token", "token_str", "sequence"):
            assert [g[key] for g in got] == [e[key] for e in expected], f"{what}: {key}"
        assert_close(torch.tensor([g["score"] for g in got]), torch.tensor([e["score"] for e in expected]),
                     atol=1e-5, rtol=1e-4, msg=what)


@pytest.mark.parametrize("family", FAMILIES)
def test_fill_mask_equals_transformers_pipeline(mlm_dirs, family):
    """Every field of every fill (the text with the token in, too), with and without targets (a word outside the
    vocabulary counts as its first token), one text or several, one mask or two."""
    ours = MaskedLanguageModel.from_pretrained(mlm_dirs[family])
    mask = ours.tokenizer.mask_token
    texts = [f"A man is playing a {mask}.", f"{mask} WORLD, this Is {mask} case!", f"It's {mask} , isn't it ?"]
    pipe = transformers.pipeline("fill-mask", model=str(mlm_dirs[family]), device="cpu")
    targets = ["man", "the", "guitarist", ",", "zzzq"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the targets outside the vocabulary are said to be so)
        for options in ({"top_k": 4}, {"top_k": 3, "targets": targets}, {"top_k": 9, "targets": targets}):
            for text, mine in zip(texts, ours.fill_mask(texts, batch_size=2, **options), strict=True):
                assert_same_fills(mine, pipe(text, **options), f"{text!r}, {options}")
        assert_same_fills(ours.fill_mask(texts[0]), pipe(texts[0]), "one string")


def test_fill_mask_reads_the_tokenizer_files_as_transformers_does(mlm_dirs, tmp_path):
    """A sentence-transformers module config (lowercasing, a token limit) is not the masked-language model's:
    transformers' pipeline reads the tokenizer files alone, and cuts no text where the positions reach."""
    import json
    import shutil

    folder = tmp_path / "roberta"
    shutil.copytree(mlm_dirs["roberta"], folder)
    (folder / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "",
                                                      "type": "sentence_transformers.models.Transformer"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 6, "do_lower_case": True}))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 8}))
    ours = MaskedLanguageModel.from_pretrained(folder)
    text = "Hello WORLD <mask> STOCK, and a much longer tail that goes on past eight tokens. <mask>"
    pipe = transformers.pipeline("fill-mask", model=str(folder), device="cpu", top_k=3)
    assert_same_fills(ours.fill_mask([text], top_k=3)[0], pipe(text), "module config and model_max_length")


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta"])
def test_the_filled_text_is_cleaned_up_where_the_tokenizer_says(mlm_dirs, tmp_path, family):
    """clean_up_tokenization_spaces joins " ," and " 's" in decoded text, except in BPE's (transformers skips it
    there)."""
    import json
    import shutil

    folder = tmp_path / family
    shutil.copytree(mlm_dirs[family], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "clean_up_tokenization_spaces": True}))
    ours = MaskedLanguageModel.from_pretrained(folder)
    text = f"It 's {ours.tokenizer.mask_token} , is n't it ? Yes !"
    pipe = transformers.pipeline("fill-mask", model=str(folder), device="cpu", top_k=3)
    mine = ours.fill_mask(text, top_k=3)
    assert_same_fills(mine, pipe(text), "cleaned up")
    assert (" ," in mine[0][0]["sequence"]) == (family == "roberta")


def test_fill_mask_spells_special_tokens_as_the_pipeline_does(mlm_dirs, tmp_path):
    """A special token among the likeliest (here made the likeliest by its output bias) is shown as the
    pipeline shows it ("[SEP]"), not as an empty string."""
    model = reference(mlm_dirs["bert"])
    sep = transformers.AutoTokenizer.from_pretrained(str(mlm_dirs["bert"])).sep_token_id
    with torch.no_grad():
        model.cls.predictions.bias[sep] = 50.0
    model.save_pretrained(str(tmp_path))
    transformers.AutoTokenizer.from_pretrained(str(mlm_dirs["bert"])).save_pretrained(str(tmp_path))
    text = "A man is playing a [MASK]."
    theirs = transformers.pipeline("fill-mask", model=str(tmp_path), device="cpu", top_k=3)(text)
    mine = MaskedLanguageModel.from_pretrained(tmp_path).fill_mask([text], top_k=3)[0][0]
    assert [g["token_str"] for g in mine] == [e["token_str"] for e in theirs] and mine[0]["token"] == sep
    assert mine[0]["token_str"] == "[SEP]"


def test_a_folder_without_a_head_is_refused(minilm_dir):
    with pytest.raises(ValueError, match=r"holds no masked-language-model head \(none of cls.predictions"):
        MaskedLanguageModel.from_pretrained(minilm_dir)


def test_an_output_layer_transformers_would_not_tie_is_refused(mlm_dirs, tmp_path):
    """transformers ties the output layer to the word embeddings only where tie_word_embeddings is true and the
    folder stores no other: a stored one that differs runs as stored, and with the flag false the output layer
    is the model's own (stored, or drawn at random; a stored copy equal to the word embeddings trains apart from
    them). minibert's is the word embeddings: both are refused; a stored one equal to the word embeddings (in the
    dtype the model runs in) is tied, as transformers ties it. The same holds for the output layer's bias."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    def folder_with(name: str, decoder: str | None, tie: bool) -> Path:
        folder = tmp_path / name
        shutil.copytree(mlm_dirs["bert"], folder)
        tensors = load_file(str(folder / "model.safetensors"))
        embeddings, bias = tensors["bert.embeddings.word_embeddings.weight"], tensors["cls.predictions.bias"]
        if decoder is not None:
            tensors["cls.predictions.decoder.weight"] = embeddings + 0.5 if decoder == "other" else embeddings.clone()
            tensors["cls.predictions.decoder.bias"] = bias + 0.5 if decoder == "other bias" else bias.clone()
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": tie}))
        return folder

    inputs, mask, _ = masked_batch(MaskedLanguageModel.from_pretrained(mlm_dirs["bert"]))
    with torch.no_grad():
        tied = reference(mlm_dirs["bert"])(input_ids=inputs, attention_mask=mask).logits
        for decoder, tie in (("other", True), ("other bias", True), ("other", False), (None, False),
                             ("equal", False)):
            folder = folder_with(f"{decoder}-{tie}", decoder, tie)
            untied = reference(folder)(input_ids=inputs, attention_mask=mask).logits
            if decoder != "equal":  # (an equal copy gives the same logits, but trains apart from the embeddings)
                assert (untied - tied).abs().max() > 0.1  # transformers runs an output layer other than the tied one
            with pytest.raises(ValueError, match="differs from (the word embeddings|cls.predictions.bias)"
                                                 "|tie_word_embeddings is false"):
                MaskedLanguageModel.from_pretrained(folder)
        folder = folder_with("equal-True", "equal", True)
        assert_close(MaskedLanguageModel.from_pretrained(folder)(inputs, mask).logits, tied, atol=1e-5, rtol=1e-5)
        ours = MaskedLanguageModel.from_pretrained(folder, dtype=torch.bfloat16)  # equal in the dtype it runs in
        theirs = transformers.AutoModelForMaskedLM.from_pretrained(str(folder), dtype=torch.bfloat16).eval()
        assert_close(ours(inputs, mask).logits.float(), theirs(input_ids=inputs, attention_mask=mask).logits.float(),
                     atol=0.1, rtol=0.05)


@pytest.mark.parametrize("family, bias", [("bert", "cls.predictions.bias"), ("roberta", "lm_head.bias")])
def test_the_heads_bias_stored_only_as_the_output_layers_loads(mlm_dirs, tmp_path, family, bias):
    """transformers ties the output layer's bias to the head's: stored under the first name only, it is both."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / family
    shutil.copytree(mlm_dirs[family], folder)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors[bias.replace(".bias", ".decoder.bias")] = tensors.pop(bias)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    inputs, mask, _ = masked_batch(MaskedLanguageModel.from_pretrained(mlm_dirs[family]))
    with torch.no_grad():
        expected = reference(folder)(input_ids=inputs, attention_mask=mask).logits
        assert_close(MaskedLanguageModel.from_pretrained(folder)(inputs, mask).logits, expected, atol=1e-5, rtol=1e-5)


def within(rate: torch.Tensor, p: float, n: int) -> bool:
    """A measured rate within five standard errors of p (a false alarm about once in 1.7 million runs)."""
    return abs(float(rate) - p) < 5 * (p * (1 - p) / n) ** 0.5


def test_the_masking_rule_by_its_statistics():
    """15% of the maskable tokens chosen, never another; of those 80% [MASK], 10% random, 10% kept; whole-word
    masking chooses all of a word's pieces or none, 15% of the words. Over 400k tokens, each rate within five
    standard errors of BERT's."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (400, 1000), generator=generator)
    maskable = torch.rand(ids.shape, generator=generator) < 0.9  # the rest: specials, padding
    random_ids = torch.arange(10, 1000)
    inputs, labels = mask_tokens(ids, maskable, 3, random_ids, generator)
    chosen = labels != IGNORE_INDEX
    assert not chosen[~maskable].any() and (labels[chosen] == ids[chosen]).all()
    assert within(chosen.sum() / maskable.sum(), 0.15, int(maskable.sum()))
    n = int(chosen.sum())
    assert within((inputs[chosen] == 3).sum() / n, 0.8, n)
    kept = 0.1 + 0.1 / len(random_ids)  # a random draw may give the token back
    assert within((inputs[chosen] == ids[chosen]).sum() / n, kept, n)
    assert torch.isin(inputs[chosen & (inputs != 3)], random_ids).all()  # drawn from random_ids alone
    assert (inputs[~chosen] == ids[~chosen]).all()
    words = torch.arange(1000).div(3, rounding_mode="floor").expand(400, -1)  # three pieces a word
    _, labels = mask_tokens(ids, torch.ones_like(maskable), 3, random_ids, generator, word_ids=words)
    per_word = (labels != IGNORE_INDEX)[:, :999].reshape(400, 333, 3)
    assert (per_word.all(-1) | ~per_word.any(-1)).all()  # all of a word's pieces, or none
    assert within(per_word[..., 0].float().mean(), 0.15, 400 * 333)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_the_masked_lm_task_has_transformers_loss_and_starts_from_the_checkpoints_head(mlm_dirs, family):
    """The task scores only the masked positions; its loss is transformers' *ForMaskedLM loss on the same
    masked batch, and its head starts as the checkpoint's own."""
    from minibert.data import MaskedText
    from minibert.multitask import MultiTaskModel

    model = MultiTaskModel.from_encoder(mlm_dirs[family], [{"name": "mlm", "type": "masked_lm", "probability": 0.3}],
                                        path="reference")
    examples = [MaskedText(t) for t in TEXTS]
    batch = model.collate("mlm", examples)
    assert torch.equal(batch["input_ids"], model.collate("mlm", examples)["input_ids"])  # the same texts, same masks
    assert not torch.equal(batch["input_ids"], model.collate("mlm", examples[1:] + examples[:1])["input_ids"][
        [len(TEXTS) - 1, *range(len(TEXTS) - 1)]])  # other batch-mates, other masks
    out = model("mlm", batch)
    full = torch.full(batch["input_ids"].shape, IGNORE_INDEX)
    full[batch["predict"]] = batch["labels"]
    with torch.no_grad():
        expected = reference(mlm_dirs[family])(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                               labels=full).loss
    assert_close(out.loss, expected, atol=1e-5, rtol=1e-5)
    # an encoder drawn at random gets a fresh head: the checkpoint's fits only the checkpoint's word embeddings
    fresh = MultiTaskModel.from_encoder(mlm_dirs[family], [{"name": "mlm", "type": "masked_lm"}], random_encoder=True)
    loaded = model.heads["mlm"].mlm_head.dense.weight
    assert not torch.equal(fresh.heads["mlm"].mlm_head.dense.weight, loaded)
    with pytest.raises(ValueError, match=r"task 'mlm': seed must be in \[0, 2\*\*64\), got -1"):
        MultiTaskModel.from_encoder(mlm_dirs[family], [{"name": "mlm", "type": "masked_lm", "seed": -1}])


def test_masked_lm_beside_other_tasks_trains_fills_and_prints(tiny_model_dir, tiny_data, tmp_path, capsys):
    """A run with masked_lm beside STS on a randomly initialised tiny BERT: its loss falls, the saved model fills
    in a [MASK] (minibert fill-mask, minibert predict), and its MLM saves in transformers' layout."""
    from minibert.cli import main
    from minibert.multitask import MultiTaskModel

    from conftest import train_tiny

    text = tmp_path / "text.txt"
    text.write_text("\n".join(["the cat sat on the mat .", "the dog sat on the rug .", "a man plays a guitar ."] * 30))
    tasks = [{"name": "mlm", "type": "masked_lm", "train": str(text), "dev_split": 0.1},
             {"name": "sts", "type": "sts", "train": str(tiny_data / "sts.tsv")}]
    losses = train_tiny(tiny_model_dir, tiny_data, tmp_path / "run", tasks=tasks, steps=40,
                        optim={"lr": 3e-3, "head_lr": 3e-3}, eval={"every": 40})
    mlm = [r["mlm"] for r in losses if "mlm" in r]
    assert sum(mlm[-3:]) < 0.9 * sum(mlm[:3])  # from ln(30522) = 10.3, the frequent tokens first
    model = MultiTaskModel.load(tmp_path / "run" / "final")
    assert main(["fill-mask", "--model", str(tmp_path / "run" / "final"), "the cat sat on the [MASK] ."]) == 0
    assert "mask 1:" in capsys.readouterr().out
    assert main(["fill-mask", "--model", str(tmp_path / "run" / "final"), "--target", "rug", "the cat sat on the "
                 "[MASK] .", "--target", "mat"]) == 0
    shown = capsys.readouterr().out.split("mask 1:")[1].split()
    assert sorted(shown[::2]) == ["'mat'", "'rug'"], shown
    assert main(["predict", "--model", str(tmp_path / "run" / "final"), "the [MASK] sat on the mat ."]) == 0
    assert "mlm" in capsys.readouterr().out
    model.masked_lm().save_pretrained(tmp_path / "hf")
    with torch.no_grad():
        batch = model.encoder.tokenizer(["the cat sat on the [MASK] ."])
        assert_close(reference(tmp_path / "hf")(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits,
                     model.masked_lm().to_path("reference")(batch.input_ids, batch.attention_mask).logits,
                     atol=1e-5, rtol=1e-5)
    pipe = transformers.pipeline("fill-mask", model=str(tmp_path / "hf"), device="cpu")
    text = "The CAT sat on the [MASK], and a much longer tail follows it here."  # (case, and past max_seq_length)
    assert_same_fills(model.masked_lm().fill_mask(text), pipe(text), "the saved multi-task model's masked LM")
