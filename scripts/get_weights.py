"""Put a model into weights/NAME without any model hub: `python scripts/get_weights.py all-MiniLM-L6-v2`."""

import argparse

from minibert.hub import DEFAULT_MODEL, REPO_WEIGHTS, download

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", nargs="?", default=DEFAULT_MODEL)
    parser.add_argument("--dest", default=str(REPO_WEIGHTS))
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    print(f"{args.name}: {download(args.name, dest=args.dest, force=args.force)}")
