"""The STS-B benchmark's recipe run by sentence-transformers' own trainer, as a reference for
minibert's trainer. Model, data files, steps, batch size, learning rate, warm-up, schedule, weight
decay, clipping and dev interval are read from the same configuration (scripts/configs/stsb.toml);
the objective is CosineSimilarityLoss (MSE between the cosine and score/5). The best checkpoint by
dev Spearman is scored on test. sentence-transformers' trainer has no sharpness-aware minimisation,
so the reference takes plain AdamW steps and says so when the configuration sets optim.sam_rho: compare it
with minibert's runs of the plain recipe (`scripts/train.py ... --set optim.sam_rho=0`), not with the SAM runs.

    pip install -e .[reference-train]     # sentence-transformers with its trainer (datasets, accelerate)
    python experiments/stsb/reference.py [--config scripts/configs/stsb.toml] [--seed 1] [--out runs/stsb-reference]
"""

import argparse
import json
import os
import sys
from pathlib import Path

from minibert.data import read_sts_tsv
from minibert.hub import resolve_model
from minibert.train import load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the reference loads the local folder, never the hub

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="scripts/configs/stsb.toml")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="runs/stsb-reference")
    args = parser.parse_args()
    cfg = load_config(args.config)
    task = cfg.tasks[0]
    if (len(cfg.tasks) != 1 or task.type != "sts" or task.head.get("loss", "cosine_mse") != "cosine_mse"
            or not isinstance(task.train, str) or not task.dev or not task.test):
        raise SystemExit(f"{args.config}: the reference runs one STS task with the cosine_mse loss and one "
                         "train, dev and test file each")
    if cfg.optim.sam_rho:
        print(f"{args.config}: optim.sam_rho={cfg.optim.sam_rho} is not used: sentence-transformers' trainer "
              "has no SAM, so the reference runs the recipe with plain AdamW steps", file=sys.stderr)

    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    split = {name: read_sts_tsv(cfg.data_path(getattr(task, name))) for name in ("train", "dev", "test")}

    def evaluator(name: str) -> EmbeddingSimilarityEvaluator:
        rows = split[name]
        return EmbeddingSimilarityEvaluator([r.a for r in rows], [r.b for r in rows], [r.label for r in rows],
                                            main_similarity="cosine", name=f"sts-{name}", batch_size=64)

    train = Dataset.from_dict({"sentence1": [r.a for r in split["train"]], "sentence2": [r.b for r in split["train"]],
                               "score": [r.label / 5.0 for r in split["train"]]})
    model = SentenceTransformer(str(resolve_model(cfg.model)), device="cpu")
    training_args = SentenceTransformerTrainingArguments(
        output_dir=args.out, seed=args.seed, max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.optim.lr, warmup_ratio=cfg.schedule.warmup_ratio, lr_scheduler_type=cfg.schedule.shape,
        weight_decay=cfg.optim.weight_decay, max_grad_norm=cfg.optim.max_grad_norm,
        eval_strategy="steps", eval_steps=cfg.eval.every, save_strategy="steps", save_steps=cfg.eval.every,
        save_total_limit=1,
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
