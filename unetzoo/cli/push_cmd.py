"""``unetzoo push DIR REPO_ID``: publish a folder written by ``save_pretrained`` to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "push",
        help="upload a saved model folder to the Hugging Face Hub",
        description="Upload DIR (model.safetensors + config.json + README.md, as written by save_pretrained) to "
        "the Hub repository REPO_ID, creating it if needed. The folder is checked first.",
    )
    p.add_argument("dir", metavar="DIR", help="folder written by model.save_pretrained(DIR)")
    p.add_argument("repo_id", metavar="REPO_ID", help="Hub repository, e.g. me/unet-drive")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login)")
    p.add_argument("--message", default="Upload unetzoo model", help="commit message")
    p.add_argument("--revision", default=None, help="branch to push to, created if it is new (default: main)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from unetzoo.hub import push_folder

    try:
        info = push_folder(
            args.dir,
            args.repo_id,
            token=args.token,
            private=args.private,
            commit_message=args.message,
            revision=args.revision,
        )
    except (OSError, ValueError, KeyError) as err:
        print(f"unetzoo push: error: {err}", file=sys.stderr)
        return 1
    print(f"pushed {args.dir} to {args.repo_id}: {getattr(info, 'commit_url', None) or info}")
    return 0
