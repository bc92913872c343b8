"""Fine-tune the multi-task model: `python scripts/train.py --config scripts/configs/multitask.toml`.
Prints the best checkpoint's dev metrics, and its test metrics when the configuration names test files.

Overrides: `--set steps=200 --set tasks.sts.loss_weight=2`. Continue a killed run with `--resume`
(same configuration). Several processes: `torchrun --nproc_per_node 2 scripts/train.py ...`.
"""

import argparse
import json
import logging

from minibert.train import load_config, train

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a TOML or JSON file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/checkpoint.pt")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = train(load_config(args.config, args.set), resume=args.resume)
    best = result["best"] or {}
    summary = {"steps": result["steps"], "best_step": best.get("step"), "dev": best.get("metrics"),
               "test": result.get("test")}
    print(json.dumps({k: v for k, v in summary.items() if v is not None}, indent=2))
