"""The STS-B benchmark's recipe run by sentence-transformers' own trainer, as a reference for
minibert's trainer: same model folder, data files, objective (CosineSimilarityLoss: MSE between the
cosine and score/5), epochs, batch size, learning rate, warm-up, weight decay, clipping and dev
schedule as scripts/configs/stsb.toml. The best checkpoint by dev Spearman is scored on test.

    pip install -e .[reference-train]     # sentence-transformers with its trainer (datasets, accelerate)
    python scripts/stsb_reference.py [--seed 1] [--out runs/stsb-reference]
"""

import argparse
import json
import os
from pathlib import Path

from minibert.data import default_data_dir
from minibert.hub import resolve_model
from minibert.train.tasks import read_split

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the reference loads the local folder, never the hub

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=default_data_dir(), type=Path)
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="runs/stsb-reference")
    args = parser.parse_args()

    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    split = {name: read_split("sts", Path(args.data) / "stsb" / f"{name}.tsv") for name in ("train", "dev", "test")}

    def evaluator(name: str) -> EmbeddingSimilarityEvaluator:
        rows = split[name]
        return EmbeddingSimilarityEvaluator([r.a for r in rows], [r.b for r in rows], [r.label for r in rows],
                                            main_similarity="cosine", name=f"sts-{name}", batch_size=64)

    train = Dataset.from_dict({"sentence1": [r.a for r in split["train"]], "sentence2": [r.b for r in split["train"]],
                               "score": [r.label / 5.0 for r in split["train"]]})
    model = SentenceTransformer(str(resolve_model(args.model)), device="cpu")
    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.out, seed=args.seed, num_train_epochs=4, per_device_train_batch_size=16,
        learning_rate=2e-5, warmup_ratio=0.1, lr_scheduler_type="linear", weight_decay=0.01, max_grad_norm=1.0,
        eval_strategy="steps", eval_steps=180, save_strategy="steps", save_steps=180, save_total_limit=1,
        load_best_model_at_end=True, metric_for_best_model="eval_sts-dev_spearman_cosine", greater_is_better=True,
        logging_steps=60, use_cpu=True, report_to="none", dataloader_drop_last=False,
    )
    trainer = SentenceTransformerTrainer(model=model, args=training_args, train_dataset=train,
                                         loss=losses.CosineSimilarityLoss(model), evaluator=evaluator("dev"))
    trainer.train()
    dev_curve = [(h["step"], h["eval_sts-dev_spearman_cosine"]) for h in trainer.state.log_history
                 if "eval_sts-dev_spearman_cosine" in h]
    result = {"seed": args.seed, "dev": dev_curve, "best_checkpoint": trainer.state.best_model_checkpoint,
              "best_dev": trainer.state.best_metric,  # the best model is loaded back: test scores it, once
              "test": evaluator("test")(model)["sts-test_spearman_cosine"]}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
