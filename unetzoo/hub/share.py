"""Publishing to and pulling from the Hugging Face Hub, through ``huggingface_hub``'s own API.

Uploads go through ``HfApi.create_repo`` + ``HfApi.upload_folder`` and need a real Hub (or a
server that implements its upload API); downloads work against the Hub or any mirror named
by ``HF_ENDPOINT``.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from unetzoo._atomic import atomic_paths, link_or_copy
from unetzoo.hub.card import retarget_card
from unetzoo.hub.load import model_files, read_config
from unetzoo.hub.save import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, save_pretrained
from unetzoo.weights.network import hf_endpoint, network_block_reason

__all__ = ["push_folder", "push_to_hub", "pull"]


def _require_network(action: str) -> str:
    endpoint = hf_endpoint()
    blocked = network_block_reason(endpoint)
    if blocked:
        raise ConnectionError(f"cannot {action}: {endpoint} cannot be used ({blocked})")
    return endpoint


@contextlib.contextmanager
def _network_errors(endpoint: str, action: str) -> Iterator[None]:
    """A transport failure (a reset connection, a proxy that breaks the protocol) as a
    ``ConnectionError`` naming the endpoint; the HTTP client's own exception types are not
    ``OSError``s, so a caller (and the CLI) would otherwise see a raw traceback."""
    try:
        yield
    except Exception as err:
        package = type(err).__module__.split(".")[0]
        if package not in ("httpx", "httpx2", "httpcore", "requests", "urllib3"):
            raise
        raise ConnectionError(
            f"cannot {action}: the connection to {endpoint} failed ({type(err).__name__}: {err}). Check the "
            "network, HF_ENDPOINT and any proxy, then retry"
        ) from err


def check_folder(folder: str | os.PathLike) -> Path:
    """Check that ``folder`` holds a loadable saved model: a readable config, readable
    safetensors, and weights whose names and shapes fit the model the config describes (built
    on the meta device: no memory, no download)."""
    import unetzoo
    from unetzoo.convert import _problems
    from unetzoo.hub.load import _from_json
    from unetzoo.weights.local import read_safetensors

    config_path, weights_path = model_files(folder)
    config = read_config(config_path)
    state = read_safetensors(weights_path)
    args = {k: _from_json(v) for k, v in config["model_args"].items()}
    with torch.device("meta"):
        model = unetzoo.create(config["model_name"], pretrained=False, **args)
    problems = _problems(model, state)
    if problems:
        raise ValueError(f"{weights_path} does not fit the model described by {config_path}: {'; '.join(problems)}; "
                         "save the model again with save_pretrained")
    return Path(folder)


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool = False,
    commit_message: str = "Upload unetzoo model",
    revision: str | None = None,
    create_pr: bool = False,
) -> Any:
    """Upload a folder written by :func:`save_pretrained` (checked first) to ``repo_id``.

    Creates the repository if needed, and the branch ``revision`` names if it is new (the Hub
    refuses a commit to a branch that does not exist), then commits the model's three files
    (nothing else in the folder, such as a killed save's temporary file). ``private=True`` on a
    repository that exists and is public is refused before any upload. Returns
    the ``huggingface_hub.CommitInfo``. Raises ``PermissionError`` (saying how to pass a token)
    when the Hub refuses the token, and ``ConnectionError`` when offline.
    """
    from huggingface_hub import HfApi

    folder = check_folder(Path(folder).expanduser())
    endpoint = _require_network(f"push to {repo_id}")
    api = HfApi(endpoint=endpoint, token=token)
    with _network_errors(endpoint, f"push to {repo_id}"), _explain_refusal(endpoint, repo_id, token):
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        repo_id = getattr(url, "repo_id", None) or repo_id
        if private and api.repo_info(repo_id, repo_type="model").private is False:
            raise ValueError(
                f"{repo_id} already exists on {endpoint} and is public, so nothing was uploaded: private=True "
                "(--private) makes new repositories private only. Make it private in its settings on the Hub "
                f"(or HfApi().update_repo_settings({repo_id!r}, private=True)), or push without --private"
            )
        if _is_new_branch_name(revision) and not create_pr:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        with _with_card_for(folder, repo_id) as upload:
            return api.upload_folder(
                repo_id=repo_id,
                folder_path=upload,
                allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
                repo_type="model",
                commit_message=commit_message,
                revision=revision,
                create_pr=create_pr,
            )


@contextlib.contextmanager
def _explain_refusal(endpoint: str, repo_id: str, token: str | bool | None) -> Iterator[None]:
    """Turn the Hub's 401/403 into a PermissionError that says how to give it a token that may write."""
    from huggingface_hub import get_token
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        if status not in (401, 403):
            raise
        given = token if isinstance(token, str) else (get_token() if token is not False else None)
        which = "the token used" if given else "no token (none was passed and none is stored)"
        raise PermissionError(
            f"{endpoint} refused to let {which} write to {repo_id} (HTTP {status}). Pass a token with write "
            "access: token=... (unetzoo push --token), the HF_TOKEN environment variable, or `hf auth login`."
        ) from err


def _is_new_branch_name(revision: str | None) -> bool:
    """Whether a commit to ``revision`` may need its branch created first: not the default branch,
    a PR ref (``refs/pr/N``) or a commit hash, which cannot be created as branches."""
    if not revision or revision == "main" or revision.startswith("refs/"):
        return False
    return re.fullmatch(r"[0-9a-f]{40}", revision) is None


@contextlib.contextmanager
def _with_card_for(folder: Path, repo_id: str) -> Iterator[Path]:
    """``folder``, or a linked copy of its model files whose ``README.md`` names ``repo_id`` (a
    card written by a plain ``save_pretrained``, e.g. a training run's ``best/``, shows a local
    path, and one saved for another repository shows that one)."""
    card = folder / CARD_NAME
    text = card.read_text(encoding="utf-8") if card.is_file() else None
    new = None if text is None else retarget_card(text, repo_id, read_config(folder / CONFIG_NAME)["model_name"])
    if new == text:
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="unetzoo-push-") as tmp:
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            link_or_copy(folder / name, Path(tmp) / name)
        (Path(tmp) / CARD_NAME).write_text(new, encoding="utf-8")
        yield Path(tmp)


def push_to_hub(
    model: torch.nn.Module,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool = False,
    commit_message: str = "Upload unetzoo model",
    revision: str | None = None,
    create_pr: bool = False,
    **card: Any,
) -> Any:
    """Save ``model`` to a temporary folder and upload it (``card`` kwargs go to :func:`save_pretrained`).

    Example:
        >>> model.push_to_hub("me/unet-drive", private=True, datasets=["drive"], metrics={"dice": 0.81})
    """
    with tempfile.TemporaryDirectory(prefix="unetzoo-push-") as tmp:
        save_pretrained(model, tmp, repo_id=repo_id, **card)
        return push_folder(
            tmp,
            repo_id,
            token=token,
            private=private,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
        )


def pull(repo_id: str, local_dir: str | os.PathLike, *, revision: str | None = None, token=None) -> Path:
    """Download a model repository into ``local_dir``; ``from_pretrained(local_dir)`` then works offline.

    The repository is downloaded and checked beside ``local_dir`` first; only then do its files
    replace those in ``local_dir`` (the model's three together, as :func:`save_pretrained`
    writes them), so a failed or interrupted pull leaves a model already there whole, never
    one revision's config beside another's weights.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    endpoint = _require_network(f"pull {repo_id}")
    target = Path(local_dir).expanduser()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"cannot pull {repo_id} into {target}: it is a file; give a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.pull-", dir=target.parent) as staging:
        try:
            with _network_errors(endpoint, f"pull {repo_id}"):
                snapshot_download(repo_id, revision=revision, token=token, local_dir=staging, endpoint=endpoint)
        except RevisionNotFoundError:
            raise FileNotFoundError(f"{repo_id} on {endpoint} has no revision {revision!r}") from None
        except RepositoryNotFoundError:
            raise FileNotFoundError(f"no repository {repo_id} on {endpoint} (a private one needs token=...)") from None
        check_folder(staging)  # the weights too: a corrupt file is found here, not at the first load
        _install(Path(staging), target)
    return target


PULLED_NAME = ".unetzoo-pull.json"  # the files the last pull installed, so the next one replaces only those


def _install(staging: Path, target: Path) -> None:
    """Move a checked download into ``target``: the repository's other files first, then the
    model's files together (config.json last, the mark of a whole model).

    Files the previous pull installed (listed in :data:`PULLED_NAME`) and the revision no longer
    has are removed; a file of the user's that the revision would overwrite is refused before
    anything moves.
    """
    import json

    model = [n for n in (WEIGHTS_NAME, CARD_NAME, CONFIG_NAME) if (staging / n).is_file()]
    files = sorted(str(p.relative_to(staging)) for p in staging.rglob("*")
                   if p.is_file() and p.relative_to(staging).parts[0] != ".cache")
    try:
        listed = json.loads((target / PULLED_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        listed = []
    before = {n for n in listed if isinstance(n, str) and not Path(n).is_absolute() and ".." not in Path(n).parts}
    theirs = before | {WEIGHTS_NAME, CARD_NAME, CONFIG_NAME}  # a model's own files are always replaced
    clashes = [f for f in files if (target / f).is_dir() or ((target / f).exists() and f not in theirs)]
    if clashes:
        raise FileExistsError(
            f"pulling into {target} would replace {', '.join(clashes[:3])}, which no earlier pull wrote there; "
            "move them, or pull into a new folder"
        )
    for name in files:
        if name not in model:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, target / name)
    for name in sorted(before - set(files)):  # the previous revision's, gone from this one
        (target / name).unlink(missing_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    with atomic_paths([target / n for n in model]) as tmps:
        for name, tmp in zip(model, tmps):
            os.replace(staging / name, tmp)
    with atomic_paths([target / PULLED_NAME]) as (tmp,):
        tmp.write_text(json.dumps(files), encoding="utf-8")
