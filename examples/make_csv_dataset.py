"""Write an example ``--dataset csv`` folder: synthetic scenes as JPEGs with list-form CSVs.

    python examples/make_csv_dataset.py shapes        # 1000 train / 100 val / 400 test, 64 px

``train.csv`` holds one observed positive per image (the single-positive setting),
``val.csv`` and ``test.csv`` every positive of each image, ``*.boxes.csv`` the objects' boxes.
The README's "Your own data" walk-through trains on it.
"""

import argparse
import sys

from pamc.data.synthetic import write_csv_dataset
from pamc.errors import PamcError


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", help="new folder to write")
    p.add_argument("--num-train", type=int, default=1000)
    p.add_argument("--num-val", type=int, default=100)
    p.add_argument("--num-test", type=int, default=400)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    try:
        sizes = write_csv_dataset(args.folder, num_train=args.num_train, num_val=args.num_val,
                                  num_test=args.num_test, image_size=args.image_size, seed=args.seed)
    except PamcError as exc:
        print(f"make_csv_dataset.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {args.folder}: " + ", ".join(f"{n} {split}" for split, n in sizes.items()))


if __name__ == "__main__":
    main()
