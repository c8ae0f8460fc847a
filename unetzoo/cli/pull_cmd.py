"""``unetzoo pull REPO_ID DIR``: download a model repository into a folder (for offline use)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pull",
        help="download a model from the Hugging Face Hub into a folder",
        description="Download the Hub repository REPO_ID into DIR; unetzoo.from_pretrained(DIR) then works "
        "without network. HF_ENDPOINT selects a mirror.",
    )
    p.add_argument("repo_id", metavar="REPO_ID", help="Hub repository, e.g. me/unet-drive")
    p.add_argument("dir", metavar="DIR", help="destination folder (created if needed)")
    p.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    p.add_argument("--token", default=None, help="Hub token for private repositories")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unetzoo.hub import pull

    try:
        folder = pull(args.repo_id, args.dir, revision=args.revision, token=args.token)
    except (OSError, ValueError, KeyError) as err:
        print(f"unetzoo pull: error: {err}", file=sys.stderr)
        return 1
    print(f"pulled {args.repo_id} into {folder}; load it with unetzoo.from_pretrained({str(folder)!r})")
    return 0
