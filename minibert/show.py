"""How the command line and the app show predictions: a label, entity spans, a score, the tokens at a mask."""

from __future__ import annotations


def short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def format_label(result: dict) -> str:
    top = sorted(result["probabilities"].items(), key=lambda kv: -kv[1])[:3]
    return f"{result['label']} ({result['probability']:.2f})   [" + ", ".join(f"{k} {v:.2f}" for k, v in top) + "]"


def format_prediction(task, result: dict, tokenizer=None) -> str:
    """One task's prediction on one line, by what it holds: a label, entity spans or a score."""
    if "label" in result:
        return format_label(result)
    if "entities" in result:
        return ", ".join(f"{e['text']} [{e['type']}]" for e in result["entities"]) or "(none)"
    if "fills" in result:  # a masked_lm task: the likeliest tokens at each mask of the text (ids without a tokenizer)
        def name(token: int) -> str:
            if tokenizer is None:
                return str(token)
            return repr(tokenizer.backend.decode([token], skip_special_tokens=False))
        return "; ".join(", ".join(f"{name(t)} {p:.2f}" for t, p in tops[:3]) for tops in result["fills"]) \
            or "(no mask token in the text)"
    if "score" in result:  # on the gold scale 0..max_score, or a plain cosine
        scale = getattr(task, "max_score", None)
        return f"{result['score']:.2f} / {scale:g}" if scale else f"{result['score']:.4f}"
    return str(result)


def print_predictions(model, sentences: list[str], batch_size: int = 32) -> None:
    from minibert.predict import predict

    for row in predict(model, sentences, batch_size):
        print(f"{row['text']}")
        for name, task in model.tasks.items():
            if name in row:
                print(f"  {name:12} {format_prediction(task, row[name], model.encoder.tokenizer)}")
        preview = ", ".join(f"{v:+.3f}" for v in row["embedding"][:4])
        print(f"  {'embedding':12} {len(row['embedding'])} dims [{preview}, ...]")


def print_pair_predictions(model, a: list[str], b: list[str], batch_size: int = 32) -> None:
    from minibert.predict import predict_pairs

    for row in predict_pairs(model, a, b, batch_size):
        print(f"{row['a']!r}  vs  {row['b']!r}")
        for name, task in model.tasks.items():
            if name in row:
                print(f"  {name:12} {format_prediction(task, row[name])}")
        print(f"  {'cosine':12} {row['similarity']:.4f}")


def print_fills(texts: list[str], fills: list[list[list[dict]]]) -> None:
    """Each text, then each of its masks: the likeliest tokens there and their probabilities."""
    for text, masks in zip(texts, fills, strict=True):
        print(text)
        for i, top in enumerate(masks):
            print(f"  mask {i + 1}: " + "  ".join(f"{t['token_str']!r} {t['score']:.3f}" for t in top))
