"""Build ``unet-<name>`` for every timm architecture on the meta device (no memory, no
arithmetic) and list the ones that fail: the check behind the README's "any timm backbone".

    python benchmarks/check_timm_backbones.py            # all of timm.list_models()
    python benchmarks/check_timm_backbones.py 'vit_*'    # an fnmatch pattern

Prints the count that builds and one line per failure; exits 1 if any fails.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import timm
import torch

import unetzoo


def check(names: list[str]) -> dict[str, str]:
    """``{name: error}`` for each timm architecture whose U-Net cannot be built."""
    failed = {}
    for name in names:
        try:
            with torch.device("meta"):
                unetzoo.create(f"unet-{name}", num_classes=2)
        except Exception as err:  # noqa: BLE001 - every failure is reported, none stops the check
            failed[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern over timm.list_models() (default: all)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    names = timm.list_models(args.pattern)
    failed = check(names)
    print(f"timm {timm.__version__}: {len(names) - len(failed)} of {len(names)} architectures build as U-Nets")
    for name, error in failed.items():
        print(f"  {name}: {error}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
