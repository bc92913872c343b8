"""Score a saved multi-task model on a labelled file: `python scripts/evaluate.py --model runs/x/best
--task sts --file ../shared/data/stsb/test.tsv`. The reader follows the task's type."""

import argparse
import json

from minibert.device import check_device
from minibert.multitask import MultiTaskModel
from minibert.train.evaluate import evaluate_task

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a folder written by MultiTaskModel.save")
    parser.add_argument("--task", required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    model = MultiTaskModel.load(args.model, device=check_device(args.device))
    examples = model.task(args.task).read(args.file)
    metrics = evaluate_task(model, args.task, examples, args.batch_size)
    print(json.dumps({"task": args.task, "file": args.file, "examples": len(examples), **metrics}, indent=2))
