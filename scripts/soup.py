"""Average several fine-tuned runs of one task into one model, chosen on dev (a greedy model soup):
`python scripts/soup.py --models runs/a/best runs/b/best --task sts --dev ../shared/data/stsb/dev.tsv
--out runs/soup`. Score the result on test with scripts/evaluate.py."""

import argparse

from minibert.train.soup import greedy_soup, save_soup
from minibert.train.tasks import read_split

from minibert.multitask import MultiTaskModel

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", required=True, help="folders written by MultiTaskModel.save")
    parser.add_argument("--task", required=True, help="the task whose dev score decides")
    parser.add_argument("--dev", required=True, help="the task's dev file (never the test file)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    models = {path: MultiTaskModel.load(path, device=args.device) for path in args.models}
    dev = read_split(models[args.models[0]].spec(args.task).type, args.dev)
    soup, log = greedy_soup(models, args.task, dev, args.batch_size)
    for row in log:
        print(f"{'kept   ' if row['kept'] else 'dropped'} {row['model']}: dev {row['dev']:.4f}, "
              f"soup dev {row['soup_dev']:.4f}")
    save_soup(soup, log, args.out, args.task, args.dev)
    print(f"soup of {sum(r['kept'] for r in log)} runs written to {args.out}")
