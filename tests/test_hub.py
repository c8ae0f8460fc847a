"""save_pretrained / from_pretrained / push_to_hub, the CLI, and a real Hub-compatible server (olah)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import HfApi, ModelCard
from safetensors.torch import load, save_file

import unetzoo
from unetzoo.cli import main as cli
from unetzoo.hub import FORMAT_VERSION, from_pretrained, save_pretrained
from unetzoo.registry import UnknownModelError
from unetzoo.weights import Preprocessing, transforms_for

torch.set_num_threads(2)
TINY = "unet-mobilenetv3_small_050"
TINY_ARGS = dict(num_classes=3, in_chans=2, decoder_channels=(24, 16, 8, 8, 8), decoder_norm="bn", upsample="transpose")
FILES = {"config.json", "model.safetensors", "README.md"}


def _tiny_model() -> torch.nn.Module:
    """A small model whose every tensor, BN statistics included, differs from a fresh build."""
    torch.manual_seed(0)
    model = unetzoo.create(TINY, **TINY_ARGS).train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, 2, 32, 32))
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[torch.nn.Module, Path, torch.Tensor, torch.Tensor]:
    """(model, its save_pretrained folder, an input, the model's logits on it)."""
    model = _tiny_model()
    folder = save_pretrained(model, tmp_path_factory.mktemp("saved") / "tiny", repo_id="org/tiny")
    x = torch.randn(1, 2, 40, 36)
    with torch.no_grad():
        return model, folder, x, model(x)


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def _copy(folder: Path, dest: Path) -> Path:
    shutil.copytree(folder, dest)
    return dest


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_load_errors_name_the_config_its_version_or_the_override(saved, tmp_path, no_network):
    _, folder, _, _ = saved
    newer = _copy(folder, tmp_path / "newer")
    config = json.loads((newer / "config.json").read_text())
    config["model_args"]["new_option"] = 1  # a constructor option added by a later release
    config["unetzoo_version"] = "9.0.0"
    (newer / "config.json").write_text(json.dumps(config))
    with pytest.raises(TypeError, match=r"newer/config\.json describes a model this unetzoo .* cannot build: .*"
                                        r"new_option.*saved by unetzoo 9\.0\.0; upgrade unetzoo"):
        from_pretrained(newer)
    for key in ("subfolder", "pretrained"):  # refused before anything is downloaded (no_network)
        with pytest.raises(TypeError, match=rf"from_pretrained does not take \['{key}'\]"):
            from_pretrained("org/not-fetched", **{key: "x"})
    with pytest.raises(ValueError, match=r"the override\(s\) \{'in_chans': 1\} change the architecture"):
        from_pretrained(folder, in_chans=1)


# ------------------------------------------------------------------ save / load round trip
def test_round_trip_is_bit_identical_and_never_downloads(saved, monkeypatch, no_network):
    model, folder, x, expected = saved

    def no_encoder_weights(*args, **kwargs):
        raise AssertionError("from_pretrained must not load pretrained encoder weights")

    monkeypatch.setattr("unetzoo.weights.load_pretrained", no_encoder_weights)
    loaded = unetzoo.from_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    assert torch.equal(_logits(loaded, x), expected)
    assert not loaded.training and loaded.config == unetzoo.create(TINY, **TINY_ARGS).config


def test_config_records_every_constructor_argument(saved):
    model, folder, _, _ = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["model_name"] == TINY and config["library_name"] == "unetzoo"
    assert config["format_version"] == FORMAT_VERSION and config["unetzoo_version"] == unetzoo.__version__
    assert config["model_args"] == json.loads(json.dumps(model.config.create_kwargs()))
    assert set(config["model_args"]) >= {"num_classes", "in_chans", *TINY_ARGS, "align_corners", "head_kernel"}
    assert config["preprocessing"] == transforms_for(model).to_dict()
    assert config["pretrained_from"] is None


def test_model_card_metadata_and_usage(tmp_path, no_network):
    model = unetzoo.create("unet-efficientnet_lite0", pretrained=True, num_classes=2)
    folder = model.save_pretrained(tmp_path, repo_id="me/lite", datasets=["drive"], metrics={"dice": 0.8125})
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "unetzoo" and card.data.license == "apache-2.0"
    assert {"unetzoo", "image-segmentation"} <= set(card.data.tags)
    assert card.data.datasets == ["drive"] and card.data.metrics == ["dice"]
    assert 'unetzoo.from_pretrained("me/lite")' in card.text and "0.8125" in card.text
    config = json.loads((folder / "config.json").read_text())
    assert config["pretrained_from"]["tag"] == "in1k" and config["preprocessing"]["mean"] == [0.5] * 3
    resaved = unetzoo.from_pretrained(folder).save_pretrained(tmp_path / "again")
    assert json.loads((resaved / "config.json").read_text())["pretrained_from"] == config["pretrained_from"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_cards_usage_snippet_runs(dtype, tmp_path):
    """The card's snippet crashed for a model saved in bfloat16 (a float32 input)."""
    import re

    torch.manual_seed(0)
    model = unetzoo.create("unet-classic", base_c=4).to(dtype)
    folder = model.save_pretrained(tmp_path / "m")
    text = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    code = re.sub(r'from_pretrained\("[^"]*"\)', f"from_pretrained({str(folder)!r})", code)
    scope = {"image": torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8)}
    exec(code, scope)
    assert scope["logits"].shape == (1, 2, 40, 48) and scope["logits"].dtype == dtype
    assert (dtype == torch.bfloat16) == ("stored in bfloat16" in text)


def test_reloaded_model_uses_the_recorded_preprocessing(saved, tmp_path):
    folder = _copy(saved[1], tmp_path / "m")
    _edit_config(folder, preprocessing={"mean": [0.1, 0.2], "std": [0.3, 0.4], "input_size": None})
    assert transforms_for(unetzoo.from_pretrained(folder)) == Preprocessing((0.1, 0.2), (0.3, 0.4))


def test_an_optimized_model_is_not_saved(tmp_path):
    """Its batch norms are folded away, so its tensors would not load into the config's model."""
    model = unetzoo.optimize_for_inference(_tiny_model(), dtype=torch.float32, mkldnn=False, tune_allocator=False)
    assert model.inference_options["folded_bn"] > 0
    with pytest.raises(ValueError, match=r"optimized for inference \(\d+ batch norms folded.*save the model before"):
        save_pretrained(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_new_num_classes_keeps_all_but_the_head(saved):
    model, folder, _, _ = saved
    with pytest.warns(UserWarning, match=r"re-initialised \['head.weight', 'head.bias'\]|re-initialised \['head.bias'"):
        loaded = from_pretrained(folder, num_classes=7)
    assert loaded.num_classes == 7 and loaded.head.weight.shape[0] == 7
    old, new = model.state_dict(), loaded.state_dict()
    kept = [k for k in old if not k.startswith("head.")]
    assert kept and all(torch.equal(old[k], new[k]) for k in kept)


# ------------------------------------------------------------------ bad input: each names the file and the problem
def test_truncated_weights_are_reported(saved, tmp_path):
    folder = _copy(saved[1], tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"model\.safetensors.*(truncated|corrupt)"):
        from_pretrained(folder)


def test_corrupt_header_is_reported(saved, tmp_path):
    folder = _copy(saved[1], tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ValueError, match=str(folder / "model.safetensors")):
        from_pretrained(folder)


def test_unknown_model_in_config_is_reported(saved, tmp_path):
    folder = _copy(saved[1], tmp_path / "m")
    _edit_config(folder, model_name="unet-nosuchnet9000")
    with pytest.raises(UnknownModelError, match=r"config\.json names the model 'unet-nosuchnet9000'"):
        from_pretrained(folder)


def test_newer_format_version_is_reported(saved, tmp_path):
    folder = _copy(saved[1], tmp_path / "m")
    _edit_config(folder, format_version=FORMAT_VERSION + 1, unetzoo_version="99.0")
    with pytest.raises(ValueError, match=rf"config\.json has format_version {FORMAT_VERSION + 1}.*upgrade"):
        from_pretrained(folder)


@pytest.mark.parametrize("version", [None, "1", 0, True])
def test_invalid_format_version_asks_for_a_re_save(saved, tmp_path, version):
    folder = _copy(saved[1], tmp_path / "m")
    _edit_config(folder, format_version=version)
    with pytest.raises(ValueError, match=r"config\.json has no valid format_version .*Re-save the model") as err:
        from_pretrained(folder)
    assert "upgrade" not in str(err.value)


def test_shape_mismatch_is_reported(saved, tmp_path):
    folder = _copy(saved[1], tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    _edit_config(folder, model_args={**config["model_args"], "in_chans": 1})
    with pytest.raises(ValueError, match=r"model\.safetensors does not fit.*shape"):
        from_pretrained(folder)


def test_missing_files_and_bad_references(saved, tmp_path):
    folder = _copy(saved[1], tmp_path / "m")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is missing"):
        from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="neither a local folder nor a Hub repository"):
        from_pretrained(str(tmp_path / "not" / "here" / "at all"))


# ------------------------------------------------------------------ publishing, up to the huggingface_hub boundary
@pytest.fixture
def fake_hub(monkeypatch):
    """Record HfApi.create_repo / upload_folder calls (and the uploaded files) instead of uploading."""
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = dict(repo_id=repo_id, token=self.token, **kwargs)
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def upload_folder(self, *, folder_path, **kwargs):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        calls["upload_folder"] = dict(files=files, **kwargs)
        return "commit-info"

    def create_branch(self, repo_id, **kwargs):
        calls.setdefault("create_branch", []).append(dict(repo_id=repo_id, **kwargs))

    def repo_info(self, repo_id, **kwargs):  # a repository this fake creates has the visibility asked for
        return type("ModelInfo", (), {"id": repo_id, "private": calls["create_repo"].get("private", False)})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "repo_info", repo_info)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr("unetzoo.hub.share.network_block_reason", lambda url: None)  # no Hub is reachable here
    for var in ("HF_HUB_OFFLINE", "UNETZOO_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return calls


def test_push_to_hub_uploads_exactly_the_saved_folder(saved, fake_hub, tmp_path):
    model, _, x, expected = saved
    result = model.push_to_hub("me/tiny", token="hf_tok", private=True, commit_message="first")
    assert result == "commit-info"
    assert fake_hub["create_repo"] == dict(
        repo_id="me/tiny", token="hf_tok", private=True, exist_ok=True, repo_type="model"
    )
    upload = fake_hub["upload_folder"]
    assert upload["repo_id"] == "me/tiny" and upload["commit_message"] == "first"
    assert set(upload["files"]) == FILES
    for name, data in upload["files"].items():
        (tmp_path / name).write_bytes(data)
    assert torch.equal(_logits(from_pretrained(tmp_path), x), expected)
    assert 'unetzoo.from_pretrained("me/tiny")' in upload["files"]["README.md"].decode()


def test_push_to_a_branch_creates_it_first(saved, fake_hub):
    """The Hub refuses a commit to a missing branch, so a push to one creates it (exist_ok)."""
    assert "create_branch" not in fake_hub
    saved[0].push_to_hub("me/tiny", revision="experiment-1")
    assert fake_hub["create_branch"] == [
        dict(repo_id="me/tiny", branch="experiment-1", repo_type="model", exist_ok=True)
    ]
    assert fake_hub["upload_folder"]["revision"] == "experiment-1"
    # the default branch, a PR ref, a commit hash or a new PR need no branch of their own
    for kwargs in (dict(revision="main"), dict(revision="refs/pr/3"), dict(revision="a" * 40),
                   dict(revision="dev", create_pr=True)):
        saved[0].push_to_hub("me/tiny", **kwargs)
    assert len(fake_hub["create_branch"]) == 1


def test_pushing_a_plain_saved_folder_points_its_card_at_the_repo(fake_hub, tmp_path):
    """A training run's best/ is saved without a repo_id; on the Hub its card must name the repo."""
    folder = save_pretrained(_tiny_model(), tmp_path / "best", metrics={"fg_iou": 0.79}, datasets="nuclei")
    local_card = (folder / "README.md").read_text()
    assert 'from_pretrained("path/to/this/folder")' in local_card
    unetzoo.hub.push_folder(folder, "me/nuclei-unet")
    card = fake_hub["upload_folder"]["files"]["README.md"].decode()
    assert 'from_pretrained("me/nuclei-unet")' in card and "\n# me/nuclei-unet\n" in card
    assert "| fg_iou | 0.79 |" in card and "- nuclei" in card  # metrics and datasets kept
    assert (folder / "README.md").read_text() == local_card  # the local folder is left as it was
    assert fake_hub["upload_folder"]["files"]["model.safetensors"] == (folder / "model.safetensors").read_bytes()


def test_card_takes_a_single_dataset_or_tag_as_one_name(tmp_path):
    card = ModelCard.load(save_pretrained(_tiny_model(), tmp_path, datasets="drive", tags="medical") / "README.md")
    assert card.data.datasets == ["drive"] and "medical" in card.data.tags and "m" not in card.data.tags
    with pytest.raises(TypeError, match="datasets must be a string or a list of strings"):
        save_pretrained(_tiny_model(), tmp_path / "x", datasets={"drive": 1})


def test_the_weights_license_survives_a_reload_and_re_save(tmp_path):
    model = unetzoo.create("unet-efficientnet_lite0", pretrained=True, num_classes=2)
    first = ModelCard.load(model.save_pretrained(tmp_path / "a") / "README.md").data.license
    again = unetzoo.from_pretrained(tmp_path / "a")  # what a fine-tune saved from a reloaded model is
    assert first == "apache-2.0"
    assert ModelCard.load(again.save_pretrained(tmp_path / "b") / "README.md").data.license == first


def test_hub_weights_come_from_the_commit_the_config_came_from(monkeypatch, tmp_path):
    """Two downloads, one revision: a push between them must not pair one commit's config with
    another's weights. The weights are asked for by the commit the config resolved to."""
    import huggingface_hub

    from unetzoo.hub.load import model_files

    calls = []

    def fake_download(repo_id, filename, *, revision=None, **kwargs):
        calls.append((filename, revision))
        commit = "a" * 40 if filename == "config.json" else (revision or "b" * 40)
        path = tmp_path / "snapshots" / commit / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr("unetzoo.hub.load.network_block_reason", lambda url: None)
    config, weights = model_files("org/tiny", revision="main", token=None, cache_dir=tmp_path,
                                  local_files_only=False)
    assert calls == [("config.json", "main"), ("model.safetensors", "a" * 40)]
    assert config.parent == weights.parent


def test_push_refuses_weights_that_do_not_fit_their_config(saved, fake_hub, tmp_path):
    """A config.json edited to 4 classes beside 3-class weights was uploaded, then failed every load."""
    _, folder, _, _ = saved
    edited = _copy(folder, tmp_path / "edited")
    config = json.loads((edited / "config.json").read_text())
    config["model_args"]["num_classes"] = 4
    (edited / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"edited/model\.safetensors does not fit the model described by "
                                         r".*edited/config\.json: .*expected \(4, "):
        unetzoo.hub.push_folder(edited, "org/edited")
    assert "create_repo" not in fake_hub and "upload_folder" not in fake_hub


def test_push_refuses_offline_before_any_hub_call(saved, fake_hub, monkeypatch):
    monkeypatch.setattr("unetzoo.hub.share.network_block_reason", lambda url: "HF_HUB_OFFLINE=1")
    with pytest.raises(ConnectionError, match="HF_HUB_OFFLINE=1"):
        saved[0].push_to_hub("me/tiny")
    assert not fake_hub


def test_cli_push(saved, fake_hub, tmp_path, capsys):
    folder = saved[1]
    assert cli(["push", str(folder), "me/tiny", "--private", "--token", "tok", "--message", "m"]) == 0
    assert fake_hub["create_repo"]["private"] is True and fake_hub["create_repo"]["token"] == "tok"
    assert set(fake_hub["upload_folder"]["files"]) == FILES
    assert fake_hub["upload_folder"]["files"]["model.safetensors"] == (folder / "model.safetensors").read_bytes()
    fake_hub.clear()
    (tmp_path / "empty").mkdir()
    assert cli(["push", str(tmp_path / "empty"), "me/tiny"]) == 1
    assert "config.json is missing" in capsys.readouterr().err and not fake_hub


# ------------------------------------------------------------------ a real Hub-compatible server (olah)
@pytest.fixture
def hub_env(hub_server, tmp_path, monkeypatch):
    """Point huggingface_hub (as unetzoo calls it) at the local olah server, with an empty cache."""
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HF_HUB_OFFLINE", "UNETZOO_OFFLINE", "UNETZOO_WEIGHTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    return hub_server


def test_from_pretrained_repo_through_the_real_client(saved, hub_env, tmp_path, monkeypatch):
    model, folder, x, expected = saved
    first = hub_env.publish("org/tiny", folder)
    cache = tmp_path / "cache"
    loaded = from_pretrained("org/tiny", cache_dir=cache)
    assert torch.equal(_logits(loaded, x), expected)
    assert (cache / "models--org--tiny" / "snapshots" / first / "model.safetensors").is_file()
    # a new commit is served at once; revision= pins the old one
    changed = _copy(folder, tmp_path / "v2")
    _edit_config(changed, preprocessing={"mean": [0.3, 0.3], "std": [0.2, 0.2], "input_size": None})
    hub_env.publish("org/tiny", changed)
    assert transforms_for(from_pretrained("org/tiny", cache_dir=cache)).mean == (0.3, 0.3)
    assert transforms_for(from_pretrained("org/tiny", cache_dir=cache, revision=first)) == transforms_for(model)
    with pytest.raises(FileNotFoundError, match="no repository org/missing"):
        from_pretrained("org/missing", cache_dir=cache)


def test_offline_reload_from_the_filled_cache(saved, hub_env, tmp_path, monkeypatch):
    _, folder, x, expected = saved
    hub_env.publish("org/offline", folder)
    cache = tmp_path / "cache"
    from_pretrained("org/offline", cache_dir=cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("socket.create_connection", lambda *a, **k: pytest.fail("network used while offline"))
    assert torch.equal(_logits(from_pretrained("org/offline", cache_dir=cache), x), expected)
    assert torch.equal(_logits(from_pretrained("org/offline", cache_dir=cache, local_files_only=True), x), expected)
    with pytest.raises(FileNotFoundError, match="not in the Hugging Face cache.*unetzoo pull"):
        from_pretrained("org/never-downloaded", cache_dir=cache)


def _timm_repo(folder: Path, arch: str, tag: str, state: dict[str, torch.Tensor]) -> Path:
    """A folder laid out like timm's Hub repositories: model.safetensors + config.json."""
    folder.mkdir(parents=True)
    save_file(state, folder / "model.safetensors")
    cfg = timm.models.get_pretrained_cfg(f"{arch}.{tag}").to_dict()
    config = {"architecture": arch, "num_classes": 1000, "pretrained_cfg": {"tag": tag, **cfg}}
    (folder / "config.json").write_text(json.dumps(config, default=list))
    return folder


def test_timm_encoder_weights_through_the_hub(hub_env, tmp_path, monkeypatch):
    torch.manual_seed(5)
    state = timm.create_model("resnet18").state_dict()
    hub_env.publish("timm/resnet18.a1_in1k", _timm_repo(tmp_path / "timm", "resnet18", "a1_in1k", state))
    model = unetzoo.create("unet-resnet18", pretrained=True, num_classes=2)
    assert model.weights_spec.location == "resnet18.a1_in1k"
    encoder = model.encoder.model.state_dict()
    assert len(encoder) > 50 and all(torch.equal(v, state[k]) for k, v in encoder.items())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("socket.create_connection", lambda *a, **k: pytest.fail("network used while offline"))
    again = unetzoo.create("unet-resnet18", pretrained=True, num_classes=2)
    assert torch.equal(again.encoder.model.conv1.weight, state["conv1.weight"])


@pytest.fixture
def dropping_server():
    """A TCP server that accepts each connection and closes it at once: a mirror or proxy that
    resets. The network probe gets through; every request then fails."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    listener.close()


def test_timm_weights_come_from_the_cache_when_the_server_resets(hub_env, dropping_server, tmp_path, monkeypatch):
    """Offline first: weights already in the Hugging Face cache load although the endpoint
    resets every connection; uncached ones give the usual error listing where unetzoo looked."""
    from unetzoo.weights import WeightsNotFoundError

    torch.manual_seed(6)
    state = timm.create_model("resnet18").state_dict()
    hub_env.publish("timm/resnet18.a1_in1k", _timm_repo(tmp_path / "timm", "resnet18", "a1_in1k", state))
    unetzoo.create("unet-resnet18", pretrained=True, num_classes=2)  # fills the cache
    monkeypatch.setenv("HF_ENDPOINT", dropping_server)
    again = unetzoo.create("unet-resnet18", pretrained=True, num_classes=2)
    assert torch.equal(again.encoder.model.conv1.weight, state["conv1.weight"])
    with pytest.raises(WeightsNotFoundError, match=r"(?s)resnet34\.a1_in1k.*failed \("):
        unetzoo.create("unet-resnet34", pretrained=True, num_classes=2)


def test_cli_pull_in_a_fresh_process(saved, hub_server, tmp_path):
    _, folder, x, expected = saved
    commit = hub_server.publish("org/pulled", folder)
    env = {**os.environ, "HF_ENDPOINT": hub_server.url, "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    dest = tmp_path / "pulled"
    cmd = [sys.executable, "-m", "unetzoo", "pull", "org/pulled", str(dest), "--revision", commit]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert FILES <= {p.name for p in dest.iterdir()}
    assert torch.equal(_logits(from_pretrained(dest), x), expected)


def test_a_failed_pull_leaves_the_model_already_there_whole(saved, hub_env, tmp_path, monkeypatch):
    """A pull that died after the new config.json arrived left it beside the old weights, and the
    folder loaded with the wrong normalisation; a repository that fails the check left its files."""
    import huggingface_hub

    from unetzoo.hub import pull

    _, folder, x, expected = saved
    hub_env.publish("org/v1", folder)
    dest = pull("org/v1", tmp_path / "model")
    before = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
    assert FILES <= set(before)

    changed = _copy(folder, tmp_path / "v2")
    _edit_config(changed, preprocessing={"mean": [0.0, 0.0], "std": [1.0, 1.0], "input_size": None})
    hub_env.publish("org/v2", changed)
    real = huggingface_hub.snapshot_download

    def dies_after_the_config(repo_id, *, local_dir, **kwargs):
        real(repo_id, local_dir=local_dir, allow_patterns=["config.json"], **kwargs)
        import httpx

        raise httpx.RemoteProtocolError("peer closed connection while sending model.safetensors")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", dies_after_the_config)
    with pytest.raises(ConnectionError, match="cannot pull org/v2"):
        pull("org/v2", dest)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", real)
    after = {p.name: p.read_bytes() for p in dest.iterdir() if p.is_file()}
    assert after == before
    assert torch.equal(_logits(from_pretrained(dest), x), expected)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_bytes((folder / "config.json").read_bytes())  # no weights
    hub_env.publish("org/broken", broken)
    with pytest.raises(FileNotFoundError):
        pull("org/broken", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists() or not any((tmp_path / "fresh").iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fresh.pull-")]

    pull("org/v2", dest)  # and a pull that succeeds replaces the model whole
    assert json.loads((dest / "config.json").read_text())["preprocessing"]["mean"] == [0.0, 0.0]


def test_pull_replaces_what_it_pulled_and_never_a_users_file(saved, hub_env, tmp_path):
    """A pull overwrote the user's notes.txt with the repository's, and kept an earlier
    revision's extra files beside the new model."""
    from unetzoo.hub import pull

    _, folder, _, _ = saved
    first = _copy(folder, tmp_path / "first")
    (first / "model.onnx").write_bytes(b"first revision's export")
    hub_env.publish("org/first", first)
    dest = pull("org/first", tmp_path / "model")
    assert (dest / "model.onnx").is_file()
    (dest / "mine.txt").write_text("my notes")
    hub_env.publish("org/second", folder)  # no model.onnx in this one
    pull("org/second", dest)
    assert not (dest / "model.onnx").exists() and (dest / "mine.txt").read_text() == "my notes"

    theirs = _copy(folder, tmp_path / "theirs")
    (theirs / "mine.txt").write_text("the repository's file")
    hub_env.publish("org/theirs", theirs)
    config = (dest / "config.json").read_bytes()
    with pytest.raises(FileExistsError, match=r"would replace mine\.txt, which no earlier pull wrote there"):
        pull("org/theirs", dest)
    assert (dest / "mine.txt").read_text() == "my notes" and (dest / "config.json").read_bytes() == config


def test_cli_pull_errors(hub_env, tmp_path, capsys, monkeypatch):
    assert cli(["pull", "org/absent", str(tmp_path / "x")]) == 1
    assert "no repository org/absent" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli(["pull", "org/absent", str(tmp_path / "x")]) == 1
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err


# ------------------------------------------------------------------ publishing through the real client
@pytest.fixture
def writer_env(hub_env, hub_writer, monkeypatch):
    """huggingface_hub pointed at the write server; ``hub_env`` (olah) serves what it commits."""
    monkeypatch.setenv("HF_ENDPOINT", hub_writer.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return hub_writer


def _serve_from(monkeypatch, server) -> None:
    monkeypatch.setenv("HF_ENDPOINT", server.url)


def test_push_through_the_real_client_then_pull_it_back(saved, writer_env, hub_env, tmp_path, monkeypatch):
    model, folder, x, expected = saved
    info = model.push_to_hub("pushed/tiny", token=writer_env.token, private=True, commit_message="first")
    assert info.oid == writer_env.ref_sha("pushed/tiny", "main") and writer_env.private["pushed/tiny"] is True
    files = writer_env.files("pushed/tiny")
    assert set(files) == FILES | {".gitattributes"}  # the repository's initial commit, then ours
    pushed, local = load(files["model.safetensors"]), load((folder / "model.safetensors").read_bytes())
    assert pushed.keys() == local.keys() and all(torch.equal(pushed[k], local[k]) for k in local)
    assert 'unetzoo.from_pretrained("pushed/tiny")' in files["README.md"].decode()
    assert writer_env.git("pushed/tiny", "log", "-1", "--format=%s", "main") == "first"

    _serve_from(monkeypatch, hub_env)
    assert torch.equal(_logits(from_pretrained("pushed/tiny", cache_dir=tmp_path / "cache"), x), expected)

    # a second push to the existing repository (create_repo's 409 is fine) commits on top of the first
    _serve_from(monkeypatch, writer_env)
    again = unetzoo.hub.push_folder(folder, "pushed/tiny", token=writer_env.token, commit_message="second")
    assert writer_env.git("pushed/tiny", "rev-parse", f"{again.oid}^") == info.oid


def test_push_to_a_new_branch_through_the_real_client(saved, writer_env, hub_env, tmp_path, monkeypatch):
    model, folder, x, expected = saved
    # the server refuses a commit to a branch that does not exist, as the Hub does ...
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RevisionNotFoundError

    api = HfApi(endpoint=writer_env.url, token=writer_env.token)
    api.create_repo("pushed/branchy")
    with pytest.raises(RevisionNotFoundError):
        api.upload_folder(repo_id="pushed/branchy", folder_path=folder, revision="experiment-1")
    # ... so the push creates the branch first; main keeps only the repository's initial commit
    info = model.push_to_hub("pushed/branchy", token=writer_env.token, revision="experiment-1")
    assert info.oid == writer_env.ref_sha("pushed/branchy", "experiment-1")
    assert set(writer_env.files("pushed/branchy", "experiment-1")) == FILES | {".gitattributes"}
    assert set(writer_env.files("pushed/branchy", "main")) == {".gitattributes"}
    # pushing to the branch again needs no new branch (create_branch's 409 is fine)
    unetzoo.hub.push_folder(folder, "pushed/branchy", token=writer_env.token, revision="experiment-1")

    _serve_from(monkeypatch, hub_env)
    loaded = from_pretrained("pushed/branchy", revision="experiment-1", cache_dir=tmp_path / "cache")
    assert torch.equal(_logits(loaded, x), expected)


def test_push_as_a_pull_request_through_the_real_client(saved, writer_env):
    _, folder, _, _ = saved
    before = unetzoo.hub.push_folder(folder, "pushed/reviewed", token=writer_env.token)
    changed = _copy(folder, writer_env.mirrors.parent / "changed-for-pr")
    _edit_config(changed, preprocessing={"mean": [0.3, 0.3], "std": [0.2, 0.2], "input_size": None})
    info = unetzoo.hub.push_folder(changed, "pushed/reviewed", token=writer_env.token, create_pr=True)
    assert info.pr_url.endswith("/pushed/reviewed/discussions/1")
    assert writer_env.ref_sha("pushed/reviewed", "main") == before.oid  # main is untouched
    assert writer_env.ref_sha("pushed/reviewed", "refs/pr/1") == info.oid
    proposed = json.loads(writer_env.files("pushed/reviewed", "refs/pr/1")["config.json"])
    assert proposed["preprocessing"]["mean"] == [0.3, 0.3]


def test_a_refused_token_says_how_to_give_one(saved, writer_env, capsys):
    _, folder, _, _ = saved
    with pytest.raises(PermissionError, match=r"refused to let the token used write to pushed/x \(HTTP 401\)"):
        unetzoo.hub.push_folder(folder, "pushed/x", token="hf_wrong")
    assert cli(["push", str(folder), "pushed/x"]) == 1
    err = capsys.readouterr().err
    assert "refused to let no token (none was passed and none is stored) write to pushed/x" in err
    assert "--token" in err and "HF_TOKEN" in err
    assert not (writer_env.mirrors / "models" / "pushed" / "x").exists()


def test_cli_push_through_the_real_client(saved, writer_env, capsys):
    _, folder, _, _ = saved
    assert cli(["push", str(folder), "pushed/cli", "--token", writer_env.token, "--revision", "v1",
                "--message", "from the CLI"]) == 0
    sha = writer_env.ref_sha("pushed/cli", "v1")
    assert f"pushed {folder} to pushed/cli: {writer_env.url}/pushed/cli/commit/{sha}" in capsys.readouterr().out
    assert writer_env.git("pushed/cli", "log", "-1", "--format=%s", "v1") == "from the CLI"


# ------------------------------------------------------------------ review fixes (2026-12-06)
def test_a_saved_repo_loads_from_the_cache_when_the_server_resets(saved, hub_env, dropping_server, tmp_path,
                                                                   monkeypatch, capsys):
    """A model already in the Hugging Face cache loads although the endpoint now resets every
    connection; push and pull through it are one-line errors, not an HTTP client's traceback."""
    _, folder, x, expected = saved
    hub_env.publish("org/cached", folder)
    cache = tmp_path / "cache"
    from_pretrained("org/cached", cache_dir=cache)
    monkeypatch.setenv("HF_ENDPOINT", dropping_server)
    assert torch.equal(_logits(from_pretrained("org/cached", cache_dir=cache), x), expected)
    with pytest.raises(FileNotFoundError, match=r"not in the Hugging Face cache .*the download failed: "):
        from_pretrained("org/never-cached", cache_dir=cache)
    assert cli(["pull", "org/cached", str(tmp_path / "pulled")]) == 1
    assert cli(["push", str(folder), "org/cached", "--token", "hf_x"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(f"the connection to {dropping_server} failed" in line for line in err), err


def test_push_uploads_the_model_files_only(saved, writer_env, tmp_path):
    """A killed save leaves a temporary file (weights-sized) in the folder; it is not published."""
    _, folder, _, _ = saved
    messy = _copy(folder, tmp_path / "messy")
    (messy / ".model.safetensors.k2j3h4.tmp").write_bytes(b"half a model")
    (messy / "notes.txt").write_text("mine")
    unetzoo.hub.push_folder(messy, "pushed/clean", token=writer_env.token)
    assert set(writer_env.files("pushed/clean")) == FILES | {".gitattributes"}


def test_private_push_to_an_existing_public_repo_is_refused(saved, writer_env, capsys):
    _, folder, _, _ = saved
    HfApi(endpoint=writer_env.url, token=writer_env.token).create_repo("pushed/public")
    assert cli(["push", str(folder), "pushed/public", "--private", "--token", writer_env.token]) == 1
    err = capsys.readouterr().err
    assert "pushed/public already exists" in err and "is public, so nothing was uploaded" in err
    assert set(writer_env.files("pushed/public")) == {".gitattributes"}  # nothing uploaded
    unetzoo.hub.push_folder(folder, "pushed/private", token=writer_env.token, private=True)  # a new one is fine
    assert writer_env.private["pushed/private"] is True and FILES <= set(writer_env.files("pushed/private"))


def test_a_card_saved_for_one_repo_is_retargeted_to_another(saved, fake_hub):
    _, folder, _, _ = saved  # saved with repo_id="org/tiny"
    unetzoo.hub.push_folder(folder, "lab/final", token="hf_tok")
    card = fake_hub["upload_folder"]["files"]["README.md"].decode()
    assert "\n# lab/final\n" in card and 'from_pretrained("lab/final")' in card and "org/tiny" not in card


def test_pull_checks_the_weights(saved, hub_env, tmp_path, capsys):
    _, folder, _, _ = saved
    broken = _copy(folder, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    hub_env.publish("org/broken", broken)
    assert cli(["pull", "org/broken", str(tmp_path / "pulled")]) == 1
    assert "model.safetensors" in capsys.readouterr().err


def test_save_pretrained_of_a_compiled_model_loads_back(saved, tmp_path):
    model, _, x, expected = saved
    save_pretrained(torch.compile(model), tmp_path / "compiled")  # the wrapper's keys carry _orig_mod.
    assert torch.equal(_logits(from_pretrained(tmp_path / "compiled"), x), expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_model_comes_back_in_its_dtype(saved, tmp_path, dtype):
    model, _, x, _ = saved
    half = _tiny_model().to(dtype)
    folder = save_pretrained(half, tmp_path / "half")
    assert json.loads((folder / "config.json").read_text())["dtype"] == str(dtype).removeprefix("torch.")
    loaded = from_pretrained(folder)
    assert {p.dtype for p in loaded.parameters()} == {dtype}
    assert all(torch.equal(a, b) for a, b in zip(half.state_dict().values(), loaded.state_dict().values()))
    assert "dtype" not in json.loads((save_pretrained(model, tmp_path / "fp32") / "config.json").read_text())


def test_config_keeps_only_the_name_of_a_local_weights_file(tmp_path):
    torch.manual_seed(0)
    private = tmp_path / "home" / "jdoe" / "secret-project" / "mobilenet_ft.safetensors"
    private.parent.mkdir(parents=True)
    save_file(timm.create_model("mobilenetv3_small_050").state_dict(), private)
    model = unetzoo.create(TINY, pretrained=private, num_classes=2)
    folder = save_pretrained(model, tmp_path / "saved")
    config = json.loads((folder / "config.json").read_text())
    assert config["pretrained_from"]["location"] == "mobilenet_ft.safetensors"
    assert "jdoe" not in (folder / "config.json").read_text() + (folder / "README.md").read_text()


def test_from_pretrained_on_a_weights_file_says_what_to_do(tmp_path):
    path = tmp_path / "unet.pth"
    path.write_bytes(b"not read")
    with pytest.raises(FileNotFoundError, match=r"unet\.pth is a file; from_pretrained takes a folder.*checkpoint="):
        from_pretrained(path)


def test_text_files_are_utf8_whatever_the_locale(tmp_path):
    """A card with a non-ASCII metric name saves, reloads and is retargeted under an ASCII locale
    (as on Windows, where the locale encoding is cp1252)."""
    code = (
        "import unetzoo, unetzoo.hub.share as s; from pathlib import Path\n"
        f"d = Path({str(tmp_path / 'm')!r})\n"
        "unetzoo.create('unet-classic', base_c=4).save_pretrained(d, metrics={'Dice \\u2265 0.5': 0.8})\n"
        "unetzoo.from_pretrained(d)\n"
        "with s._with_card_for(d, 'org/x') as up: print((up / 'README.md').read_bytes().decode('utf-8').count('\\u2265'))\n"
    )
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C", "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 1  # the metric's name, read back from the retargeted card
    assert "Dice ≥ 0.5" in (tmp_path / "m" / "README.md").read_bytes().decode("utf-8")
