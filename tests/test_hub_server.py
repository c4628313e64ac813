"""Contract suite for the loopback Hub (tests/hub_server.py): the real, unmocked huggingface_hub and datasets
clients against it, flow by flow (hub-server.md §4.1), plus the raw wire details the clients depend on.

If a client upgrade changes the wire protocol, these tests are the ones that fail first.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.conftest import build_dataset, stored_cells


def raw(hub, method: str, path: str, *, token: str | None = None, headers: dict | None = None,
        body: bytes | None = None):
    """One HTTP request to the server: (status, headers, body); errors are answers too."""
    req = urllib.request.Request(hub.url + path, data=body, method=method, headers=dict(headers or {}))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def model_repo(hub):
    api = hub.api()
    repo_id = hub.repo_id("m")
    api.create_repo(repo_id)
    return repo_id


# -- repos ---------------------------------------------------------------------------------------------------------
def test_create_info_exists_and_409_carries_url(hub):
    api = hub.api()
    for repo_type in ("model", "dataset"):
        repo_id = hub.repo_id(f"r-{repo_type}")
        url = api.create_repo(repo_id, repo_type=repo_type)
        assert url.repo_id == repo_id and url.endpoint == hub.url
        assert api.create_repo(repo_id, repo_type=repo_type, exist_ok=True).repo_id == repo_id  # reads url after 409
        assert api.repo_exists(repo_id, repo_type=repo_type)
        assert not api.repo_exists(repo_id + "-nope", repo_type=repo_type)
        info = api.repo_info(repo_id, repo_type=repo_type)
        assert info.id == repo_id and info.private is False and len(info.sha) == 40
        assert [s.rfilename for s in info.siblings] == [".gitattributes"]  # as the Hub creates repos
    space = hub.repo_id("space")
    api.create_repo(space, repo_type="space", space_sdk="gradio")
    assert api.space_info(space).sdk == "gradio"
    status, headers, body = raw(hub, "POST", "/api/repos/create", token=hub.tokens["alice"],
                                headers={"Content-Type": "application/json"},
                                body=json.dumps({"name": space.split("/")[1], "type": "space", "sdk": "gradio"}).encode())
    assert status == 409 and json.loads(body)["url"] == f"{hub.url}/spaces/{space}"


def test_whoami_and_push_without_namespace(hub):
    from huggingface_hub import ModelCard

    api = hub.api()
    assert api.whoami()["name"] == "alice"
    name = hub.repo_id("plain").split("/")[1]
    url = api.create_repo(name)  # no namespace: the token's user
    assert url.repo_id == f"alice/{name}"
    ds_name = hub.repo_id("plain-ds").split("/")[1]
    build_dataset(n=4).push_to_hub(ds_name)  # datasets: RepoNotFound on the bare name -> create under alice
    assert api.repo_exists(f"alice/{ds_name}", repo_type="dataset")
    assert isinstance(ModelCard("---\nlicense: mit\n---\nhi"), ModelCard)


def test_delete_repo_and_settings(hub, model_repo):
    api = hub.api()
    api.update_repo_settings(model_repo, private=True)
    assert api.model_info(model_repo).private is True
    api.update_repo_settings(model_repo, private=False)
    assert api.model_info(model_repo).private is False
    api.delete_repo(model_repo)
    assert not api.repo_exists(model_repo)


# -- files ---------------------------------------------------------------------------------------------------------
def test_regular_and_lfs_upload_download_round_trip(hub, model_repo):
    from huggingface_hub import HfFileSystem, hf_hub_download

    api = hub.api()
    small = b"hello, loopback hub\n"
    blob = os.urandom(300_000) + b"\0"   # binary -> LFS, like the Hub
    api.upload_file(path_or_fileobj=small, path_in_repo="notes.txt", repo_id=model_repo)
    api.upload_file(path_or_fileobj=blob, path_in_repo="w/weights.safetensors", repo_id=model_repo)
    with open(hf_hub_download(model_repo, "notes.txt"), "rb") as f:
        assert f.read() == small
    with open(hf_hub_download(model_repo, "w/weights.safetensors"), "rb") as f:
        assert f.read() == blob
    files = {f.path: f for f in api.list_repo_tree(model_repo, recursive=True) if hasattr(f, "size")}
    assert files["notes.txt"].lfs is None
    assert files["w/weights.safetensors"].lfs.sha256 == __import__("hashlib").sha256(blob).hexdigest()
    # HEAD + Range as HfFileSystem and streaming use them
    status, headers, _ = raw(hub, "HEAD", f"/{model_repo}/resolve/main/w/weights.safetensors")
    assert status == 200 and int(headers["X-Linked-Size"]) == len(blob) and headers["X-Repo-Commit"]
    status, headers, body = raw(hub, "GET", f"/{model_repo}/resolve/main/notes.txt", headers={"Range": "bytes=7-14"})
    assert status == 206 and body == small[7:15] and headers["Content-Range"] == f"bytes 7-14/{len(small)}"
    fs = HfFileSystem(endpoint=hub.url)
    with fs.open(f"{model_repo}/w/weights.safetensors", "rb") as f:
        f.seek(-8, 2)
        assert f.read() == blob[-8:]
    assert sorted(fs.glob(f"{model_repo}/**/*.safetensors")) == [f"{model_repo}/w/weights.safetensors"]


def test_commit_add_delete_tree_paths_info_commits(hub, model_repo):
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import EntryNotFoundError

    api = hub.api()
    api.create_commit(model_repo, operations=[
        CommitOperationAdd("a/one.txt", b"1"), CommitOperationAdd("a/two.txt", b"2"),
        CommitOperationAdd("b/arr.npy", np.arange(10).tobytes())], commit_message="three files")
    api.create_commit(model_repo, operations=[CommitOperationDelete("a/one.txt"), CommitOperationDelete("b/")],
                      commit_message="delete a file and a folder")
    assert sorted(api.list_repo_files(model_repo)) == [".gitattributes", "a/two.txt"]
    top = {e.path: type(e).__name__ for e in api.list_repo_tree(model_repo)}
    assert top == {".gitattributes": "RepoFile", "a": "RepoFolder"}
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(model_repo, path_in_repo="missing"))
    info = api.get_paths_info(model_repo, ["a/two.txt", "a", "nope"], expand=True)
    assert [p.path for p in info] == ["a/two.txt", "a"] and info[0].last_commit.title == "three files"
    titles = [c.title for c in api.list_repo_commits(model_repo)]
    assert titles == ["delete a file and a folder", "three files", "initial commit"]
    api.delete_file("a/two.txt", model_repo)
    assert api.list_repo_files(model_repo) == [".gitattributes"]
    with pytest.raises(EntryNotFoundError):
        api.delete_file("a/two.txt", model_repo)


def test_unchanged_file_is_not_committed_again(hub, model_repo):
    api = hub.api()
    first = api.upload_file(path_or_fileobj=b"same", path_in_repo="x.txt", repo_id=model_repo)
    second = api.upload_file(path_or_fileobj=b"same", path_in_repo="x.txt", repo_id=model_repo)
    assert first.oid == second.oid  # preupload returned the file's oid, the client skipped the empty commit


def test_branches_tags_and_sha_revisions(hub, model_repo):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError

    api = hub.api()
    v1 = api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id=model_repo).oid
    api.create_tag(model_repo, tag="v1")
    api.create_branch(model_repo, branch="dev")
    api.upload_file(path_or_fileobj=b"dev", path_in_repo="f.txt", repo_id=model_repo, revision="dev")
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="f.txt", repo_id=model_repo)

    def read(rev):
        with open(hf_hub_download(model_repo, "f.txt", revision=rev), "rb") as f:
            return f.read()

    assert (read("main"), read("dev"), read("v1"), read(v1)) == (b"v2", b"dev", b"v1", b"v1")
    refs = api.list_repo_refs(model_repo)
    assert {b.name for b in refs.branches} == {"main", "dev"} and [t.name for t in refs.tags] == ["v1"]
    assert refs.tags[0].target_commit == v1
    with pytest.raises(HfHubHTTPError) as e:
        api.create_branch(model_repo, branch="dev")
    assert e.value.response.status_code == 409
    api.create_branch(model_repo, branch="dev", exist_ok=True)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(model_repo, "f.txt", revision="nope")
    api.delete_branch(model_repo, branch="dev")
    api.delete_tag(model_repo, tag="v1")
    refs = api.list_repo_refs(model_repo)
    assert [b.name for b in refs.branches] == ["main"] and refs.tags == []


# -- auth ----------------------------------------------------------------------------------------------------------
def test_private_repo_rules(hub):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    alice, bob, anon, reader = hub.api("alice"), hub.api("bob"), hub.api(None), hub.api("alice-read")
    repo_id = hub.repo_id("secret")
    alice.create_repo(repo_id, private=True)
    alice.upload_file(path_or_fileobj=b"s", path_in_repo="s.txt", repo_id=repo_id)
    assert alice.model_info(repo_id).private is True and reader.model_info(repo_id).id == repo_id
    with pytest.raises(RepositoryNotFoundError) as e:
        anon.model_info(repo_id)
    assert e.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError) as e:
        bob.model_info(repo_id)
    assert e.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo_id, "s.txt", token=hub.tokens["bob"])
    with pytest.raises(RepositoryNotFoundError):  # writing to a private repo you cannot see: it does not exist
        bob.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    # writes on a public repo
    public = hub.repo_id("public")
    alice.create_repo(public)
    for api, status in ((bob, 403), (reader, 403), (anon, 401)):
        with pytest.raises(HfHubHTTPError) as e:
            api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=public)
        assert e.value.response.status_code == status
    with pytest.raises(HfHubHTTPError) as e:
        bob.create_repo(hub.repo_id("squat", user="alice"))
    assert e.value.response.status_code == 403
    bad = type(alice)(endpoint=hub.url, token="hf_not_a_token")
    with pytest.raises(HfHubHTTPError) as e:
        bad.model_info(public)
    assert e.value.response.status_code == 401 and "Invalid credentials" in str(e.value)


def test_xet_is_refused_with_a_hint(hub, model_repo):
    status, headers, _ = raw(hub, "GET", f"/api/models/{model_repo}/xet-write-token/main", token=hub.tokens["alice"])
    assert status == 501 and "HF_HUB_DISABLE_XET" in headers["X-Error-Message"]


# -- cards and the mixin -------------------------------------------------------------------------------------------
def test_cards_validate_yaml_and_card_data(hub, model_repo):
    from huggingface_hub import ModelCard

    api = hub.api()
    card = ModelCard("---\nlicense: mit\ntags:\n- hf_unlearnable\n---\n# A model\n")
    api.upload_file(path_or_fileobj=str(card).encode(), path_in_repo="README.md", repo_id=model_repo)
    info = api.model_info(model_repo)
    assert info.card_data.license == "mit" and info.tags == ["hf_unlearnable"]
    loaded = ModelCard.load(model_repo)
    assert loaded.data.license == "mit" and "# A model" in loaded.text
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=b"---\nlicense: [unclosed\n---\n", path_in_repo="README.md",
                        repo_id=model_repo)


def test_pytorch_model_hub_mixin_round_trip(hub):
    import torch
    from huggingface_hub import PyTorchModelHubMixin

    class Tiny(torch.nn.Module, PyTorchModelHubMixin):
        def __init__(self, width: int = 3):
            super().__init__()
            self.lin = torch.nn.Linear(width, 2)

    torch.manual_seed(0)
    model = Tiny(width=4)
    repo_id = hub.repo_id("mixin")
    model.push_to_hub(repo_id)
    back = Tiny.from_pretrained(repo_id)
    assert back.lin.in_features == 4 and torch.equal(back.lin.weight, model.lin.weight)


# -- datasets ------------------------------------------------------------------------------------------------------
def test_dataset_push_load_shards_streaming_configs_revision(hub):
    import datasets

    ds = build_dataset(n=24)
    repo_id = hub.repo_id("ds")
    ds.push_to_hub(repo_id, max_shard_size="8KB")
    files = hub.api().list_repo_files(repo_id, repo_type="dataset")
    assert sum(f.endswith(".parquet") for f in files) > 1
    back = datasets.load_dataset(repo_id, split="train")
    assert back.features == ds.features
    assert [c["bytes"] for c in stored_cells(back)] == [c["bytes"] for c in stored_cells(ds)]
    assert back["caption"] == ds["caption"] and back["label"] == ds["label"]
    streamed = list(datasets.load_dataset(repo_id, split="train", streaming=True))
    assert [np.asarray(r["img"]).tobytes() for r in streamed] == [np.asarray(im).tobytes() for im in ds["img"]]
    # a second config in the same repo, and a branch
    ds.select(range(5)).push_to_hub(repo_id, config_name="small", split="test")
    assert sorted(datasets.get_dataset_config_names(repo_id)) == ["default", "small"]
    assert datasets.load_dataset(repo_id, "small", split="test").num_rows == 5
    ds.select(range(3)).push_to_hub(repo_id, revision="dev")
    assert datasets.load_dataset(repo_id, split="train", revision="dev").num_rows == 3
    assert datasets.load_dataset(repo_id, split="train").num_rows == 24


def test_request_log_has_no_headers(hub):
    text = hub.log_path.read_text()
    assert "POST /api/repos/create 200" in text
    assert not any(tok in text for tok in hub.tokens.values())
    assert "Authorization" not in text and "Bearer" not in text


def test_subprocess_start_prints_listening(tmp_path):
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "tests.hub_server", "--port", "0", "--data-dir", str(tmp_path),
                             "--token", "carol=hf_carol:write"], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("LISTENING http://127.0.0.1:")
        url = line.split()[1]
        req = urllib.request.Request(url + "/api/whoami-v2", headers={"Authorization": "Bearer hf_carol"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.load(r)["name"] == "carol"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
