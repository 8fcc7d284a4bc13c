"""The DVC remote on Google Cloud Storage (dvc-gs), against a GCS emulator on 127.0.0.1.

The real dvc + dvc-gs + gcsfs client talks to `gcp-storage-emulator`, started and killed here on a
free port. One tiny `dvc repro` is trained, committed to a bare git "origin" and pushed once for
the whole module (conftest's `make_repo` at module scope); each test then works on its own copy
or clone.

Nothing may leave 127.0.0.1: every dvc process (and the stages it runs) starts with a
`sitecustomize` guard on PYTHONPATH that refuses connections and name lookups off loopback and
logs each attempt; every call asserts that log is still empty. The remote gets the emulator's
`endpointurl`, `allow_anonymous_login` and GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false, the settings
docs/remote.md gives users for an emulator.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, urlencode
from urllib.request import ProxyHandler, build_opener

import pytest
import yaml
from configobj import ConfigObj
from conftest import ROOT, make_repo, run, write_params

OUTS = ("data/prepared", "data/tokenized", "models/classifier")
PREFIX = "store"  # folder inside the bucket: gs://BUCKET/store
# the test pipeline stops at train: that makes the datasets and the adapter, and the later stages
# (evaluate, report, export...) would add minutes of CPU, not coverage of the remote
STAGES = ("prepare", "tokenize", "train")
# on top of conftest's tiny params: a few training steps are enough to make an adapter to ship around
FAST = {"data": {"max_train_rows": 48}, "train": {"epochs": 1, "batch_size": 16, "checkpoint_every": 0}}
LOCAL_HTTP = build_opener(ProxyHandler({}))  # the test's own requests to the emulator skip any proxy

GUARD = r'''
"""Test guard: refuse sockets and name lookups that would leave 127.0.0.1, and log them."""
import errno, ipaddress, os, socket

_LOG = os.environ.get("LOOPBACK_GUARD_LOG")


def _loopback(host):
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _block(what):
    if _LOG:
        with open(_LOG, "a") as log:
            log.write(f"{os.getpid()} {what}\n")
    raise OSError(errno.ENETUNREACH, f"loopback guard: blocked {what}")


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        _block(f"connect {address!r}")
    return _connect(self, address)


def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        _block(f"connect {address!r}")
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if host is not None and not _loopback(host):
        _block(f"resolve {host!r}")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
'''


class Sandbox:
    """The environment every subprocess here runs in: loopback guard on, proxies and cloud credentials off."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sitecustomize.py").write_text(GUARD)
        (folder / "gcloud").mkdir(exist_ok=True)
        self.log = folder / "blocked.log"
        no_proxy = {
            k: "" for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
        }
        self.env = {
            **no_proxy,
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "PYTHONPATH": str(folder),
            "LOOPBACK_GUARD_LOG": str(self.log),
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            "GOOGLE_APPLICATION_CREDENTIALS": "",
            "CLOUDSDK_CONFIG": str(folder / "gcloud"),  # no gcloud application-default credentials
        }

    def blocked(self) -> str:
        text = self.log.read_text() if self.log.exists() else ""
        self.log.unlink(missing_ok=True)
        return text

    def run(
        self, cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        result = run(cmd, cwd, check=check, env={**self.env, **(env or {})}, timeout=300)
        blocked = self.blocked()
        assert not blocked, f"{' '.join(cmd)} tried to leave 127.0.0.1:\n{blocked}"
        return result

    def dvc(self, args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-m", "dvc", *args], cwd, check=check)

    def popen(self, args: list[str], cwd: Path, out: Path) -> subprocess.Popen:
        env = {
            **os.environ,
            **self.env,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        with out.open("w") as handle:
            return subprocess.Popen(
                [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT
            )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Emulator:
    """gcp-storage-emulator on 127.0.0.1 with one bucket; in memory, or on disk to survive restarts."""

    def __init__(self, folder: Path, bucket: str, sandbox: Sandbox, on_disk: bool = False):
        self.folder, self.bucket, self.sandbox = folder, bucket, sandbox
        self.data_dir = folder / "gcs-data" if on_disk else None
        self.port = free_port()
        self.logs: list[Path] = []  # one per start
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Emulator:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / f"emulator-{self.port}-{len(self.logs)}.log"
        self.logs.append(log)
        cmd = [sys.executable, "-m", "gcp_storage_emulator"]
        cmd += ["-d", str(self.data_dir)] if self.data_dir else []
        cmd += ["start", "--host", "127.0.0.1", "--port", str(self.port), "--default-bucket", self.bucket]
        cmd += [] if self.data_dir else ["--in-memory"]
        with log.open("wb") as handle:
            self.proc = subprocess.Popen(
                cmd, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **self.sandbox.env}
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"emulator exited {self.proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                self.get(f"/storage/v1/b/{self.bucket}")
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"emulator not answering on {self.url}:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.1)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def get(self, path: str, **params) -> bytes:
        url = self.url + path + (f"?{urlencode(params)}" if params else "")
        with LOCAL_HTTP.open(url, timeout=30) as response:
            return response.read()

    def objects(self) -> dict[str, str]:
        """Object name -> generation, for everything under PREFIX/."""
        found, token = {}, None
        while True:
            params = {"prefix": f"{PREFIX}/", **({"pageToken": token} if token else {})}
            page = json.loads(self.get(f"/storage/v1/b/{self.bucket}/o", **params))
            found.update({item["name"]: item["generation"] for item in page.get("items", [])})
            token = page.get("nextPageToken")
            if not token:
                return found

    def read(self, name: str) -> bytes:
        return self.get(f"/download/storage/v1/b/{self.bucket}/o/{quote(name, safe='')}", alt="media")

    def uploads(self, start: int | None = None) -> int:
        """Upload requests served so far (by one start of the emulator, or by all)."""
        logs = self.logs if start is None else [self.logs[start]]
        return sum(
            line.count("/upload/storage/") for log in logs for line in log.read_text(errors="replace").splitlines()
        )


def remote_name() -> str:
    """The GCS remote .dvc/config declares (not as the default: each machine chooses its own)."""
    config = ConfigObj(str(ROOT / ".dvc" / "config"))
    (name,) = [key.split('"')[1] for key in config if key.startswith("remote ")]
    return name


def point_at(repo: Path, emulator: Emulator) -> None:
    """What `dvc remote modify --local <remote> url|endpointurl|allow_anonymous_login` writes."""
    (repo / ".dvc" / "config.local").write_text(
        f"[core]\n    remote = {remote_name()}\n"
        f"['remote \"{remote_name()}\"']\n"
        f"    url = gs://{emulator.bucket}/{PREFIX}\n"
        f"    endpointurl = {emulator.url}\n"
        "    allow_anonymous_login = true\n"
    )


def make_study(dest: Path, model: Path) -> Path:
    """conftest's repository for the tiny model, with the pipeline cut after train and fewer steps."""
    make_repo(dest, model)
    write_params(dest, FAST)
    pipeline = yaml.safe_load((dest / "dvc.yaml").read_text())
    pipeline["stages"] = {name: stage for name, stage in pipeline["stages"].items() if name in STAGES}
    pipeline.pop("plots", None)  # they read evaluate's outputs
    (dest / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    run(["git", "commit", "-qam", "remote tests: pipeline up to train"], dest)
    return dest


def git_identity(repo: Path) -> None:
    run(["git", "config", "user.email", "test@example.com"], repo)
    run(["git", "config", "user.name", "test"], repo)


def clone(origin: Path, dest: Path, emulator: Emulator) -> Path:
    run(["git", "clone", "-q", str(origin), str(dest)], origin.parent)
    git_identity(dest)
    point_at(dest, emulator)
    return dest


def snapshot(repo: Path, outs: tuple[str, ...] = OUTS) -> dict[str, str]:
    """sha256 of every file of the cached outputs."""
    return {
        str(path.relative_to(repo)): hashlib.sha256(path.read_bytes()).hexdigest()
        for out in outs
        for path in sorted((repo / out).rglob("*"))
        if path.is_file()
    }


def remote_key(md5: str) -> str:
    return f"{PREFIX}/files/md5/{md5[:2]}/{md5[2:]}"


def pushable(repo: Path) -> dict[str, bytes]:
    """Remote object name -> bytes for every cached output of the workspace, read from the local cache.

    These are what `dvc push` owes the remote: each cached output's object and, for a folder, its
    `.dir` listing and every file in it. (`cache: false` outputs go to git instead.)
    """
    from dvc.repo import Repo

    cache = repo / ".dvc" / "cache" / "files" / "md5"
    objects = {}
    with Repo(str(repo)) as dvc_repo:
        hashes = [out.hash_info.value for out in dvc_repo.index.outs if out.use_cache and out.hash_info]
    for md5 in hashes:
        data = (cache / md5[:2] / md5[2:]).read_bytes()
        objects[remote_key(md5)] = data
        if md5.endswith(".dir"):
            for entry in json.loads(data):
                objects[remote_key(entry["md5"])] = (cache / entry["md5"][:2] / entry["md5"][2:]).read_bytes()
    return objects


def drop_cache_and_outputs(repo: Path) -> None:
    shutil.rmtree(repo / ".dvc" / "cache")
    for out in OUTS:
        shutil.rmtree(repo / out)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Sandbox:
    return Sandbox(tmp_path_factory.mktemp("sandbox"))


@pytest.fixture(scope="module")
def gcs(tmp_path_factory, sandbox):
    emulator = Emulator(tmp_path_factory.mktemp("gcs"), "lora-dvc-test", sandbox).start()
    yield emulator
    emulator.stop()


@dataclass
class Published:
    work: Path  # the trained, committed, pushed workspace
    origin: Path  # bare git remote holding its commit
    files: dict[str, str]  # snapshot() of its outputs
    push: subprocess.CompletedProcess
    uploads: int  # upload requests the first push made
    in_bucket: dict[str, str]  # the bucket's objects right after it


@pytest.fixture(scope="module")
def published(tmp_path_factory, tiny_model, sandbox, gcs) -> Published:
    base = tmp_path_factory.mktemp("published")
    origin = base / "origin.git"
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], base)
    work = make_study(base / "work", tiny_model)
    # the documented recipe for an emulator, through dvc's own commands
    name = remote_name()
    for key, value in (
        ("url", f"gs://{gcs.bucket}/{PREFIX}"),
        ("endpointurl", gcs.url),
        ("allow_anonymous_login", "true"),
    ):
        sandbox.dvc(["remote", "modify", "--local", name, key, value], work)
    sandbox.dvc(["remote", "default", "--local", name], work)
    sandbox.dvc(["repro"], work)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "trained"], work)
    run(["git", "remote", "add", "origin", str(origin)], work)
    run(["git", "push", "-q", "origin", "main"], work)
    before = gcs.uploads()
    push = sandbox.dvc(["push"], work)
    return Published(work, origin, snapshot(work), push, gcs.uploads() - before, gcs.objects())


def test_committed_config_declares_a_gs_remote_but_no_default_and_no_secrets():
    config = ConfigObj(str(ROOT / ".dvc" / "config"))
    assert config["core"]["analytics"] == "false" and config["core"]["check_update"] == "false"
    # no committed default: a fresh clone never looks up the placeholder bucket (each machine sets
    # its own with `dvc remote default --local gcs`)
    assert "remote" not in config["core"]
    remote = config[f'remote "{remote_name()}"']
    assert remote["url"].startswith("gs://CHANGE-ME/"), "the placeholder bucket docs/remote.md tells users to change"
    # credentials and emulator settings belong in .dvc/config.local, which git ignores
    assert not {"credentialpath", "endpointurl", "allow_anonymous_login"} & set(remote)
    assert "/config.local" in (ROOT / ".dvc" / ".gitignore").read_text().split()


def test_loopback_guard_blocks_the_metadata_server(sandbox, gcs, tmp_path):
    code = (
        "import socket, urllib.request\n"
        f"urllib.request.urlopen('{gcs.url}/storage/v1/b', timeout=10).read()\n"  # loopback: allowed
        "socket.create_connection(('169.254.169.254', 80), timeout=2)\n"
    )
    result = run([sys.executable, "-c", code], tmp_path, check=False, env=sandbox.env)
    assert result.returncode != 0 and "loopback guard: blocked" in result.stderr
    assert "169.254.169.254" in sandbox.blocked()


def test_push_sends_every_cached_object_byte_for_byte(published, gcs):
    owed = pushable(published.work)
    in_bucket = published.in_bucket
    assert set(in_bucket) == set(owed)
    assert f"{len(owed)} files pushed" in published.push.stdout
    assert published.uploads >= len(owed)
    for name, data in owed.items():
        assert gcs.read(name) == data, name
        if not name.endswith(".dir"):
            assert hashlib.md5(data).hexdigest() == "".join(name.split("/")[-2:]), name

    # every output of dvc.lock, the trained adapter included, is there file by file
    lock = yaml.safe_load((published.work / "dvc.lock").read_text())["stages"]
    for stage, out in (("prepare", "data/prepared"), ("tokenize", "data/tokenized"), ("train", "models/classifier")):
        md5 = next(o["md5"] for o in lock[stage]["outs"] if o["path"] == out)
        entries = json.loads(gcs.read(remote_key(md5)))
        assert {e["relpath"] for e in entries} == {
            p[len(out) + 1 :] for p in published.files if p.startswith(out + "/")
        }
        assert all(remote_key(e["md5"]) in in_bucket for e in entries)
    assert any(
        e["relpath"] == "adapter_model.safetensors"
        for e in json.loads(
            gcs.read(remote_key(next(o["md5"] for o in lock["train"]["outs"] if o["path"] == "models/classifier")))
        )
    )


def test_second_push_uploads_nothing(published, sandbox, gcs):
    objects, uploads = gcs.objects(), gcs.uploads()
    again = sandbox.dvc(["push"], published.work)
    assert "Everything is up to date" in again.stdout
    assert gcs.uploads() == uploads, "a push of unchanged outputs sent bytes again"
    assert gcs.objects() == objects  # same objects, same generations


def test_pull_restores_deleted_cache_and_outputs(published, sandbox, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(published.work, work, symlinks=True)
    drop_cache_and_outputs(work)
    assert not any((work / out).exists() for out in OUTS)
    sandbox.dvc(["pull"], work)
    assert snapshot(work) == published.files


def test_fresh_clone_pulls_results_instead_of_retraining(published, sandbox, gcs, tmp_path):
    mine = clone(published.origin, tmp_path / "clone", gcs)
    assert not (mine / "models" / "adapter").exists()
    sandbox.dvc(["pull"], mine)
    assert snapshot(mine) == published.files
    repro = sandbox.dvc(["repro"], mine)
    assert "Running stage" not in repro.stdout and "up to date" in repro.stdout, repro.stdout


def test_experiments_travel_with_exp_push_and_pull(published, sandbox, gcs, tmp_path):
    alice = clone(published.origin, tmp_path / "alice", gcs)
    sandbox.dvc(["pull"], alice)
    ran = sandbox.dvc(["exp", "run", "-n", "lora-r2", "-S", "lora.r=2"], alice)
    assert "Running stage 'train'" in ran.stdout and "Running stage 'tokenize'" not in ran.stdout
    trained = snapshot(alice)
    assert json.loads((alice / "models/classifier/adapter_config.json").read_text())["r"] == 2
    assert trained != published.files

    uploads = gcs.uploads()
    sandbox.dvc(["exp", "push", "origin", "lora-r2"], alice)
    assert gcs.uploads() > uploads, "exp push sent no outputs to the bucket"

    bob = clone(published.origin, tmp_path / "bob", gcs)
    sandbox.dvc(["exp", "pull", "origin", "lora-r2"], bob)
    sandbox.dvc(["exp", "apply", "lora-r2"], bob)
    assert snapshot(bob) == trained
    assert json.loads((bob / "models/classifier/adapter_config.json").read_text())["r"] == 2
    assert yaml.safe_load((bob / "params.yaml").read_text())["lora"]["r"] == 2


class Gate:
    """A TCP relay in front of the emulator that can hold uploads back, so that a test can stop a
    push at an exact point: after `limit` uploads it parks every new upload request unanswered,
    until `release()` drops them (the client sees the connection reset) and lets traffic through."""

    def __init__(self, target: Emulator):
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.cond = threading.Condition()
        self.uploads = 0
        self.limit: int | None = None
        self.active = 0
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                client.close()
                return
            head += chunk
        with self.cond:
            if b"/upload/storage/" in head.split(b"\r\n", 1)[0]:
                if self.limit is not None and self.uploads >= self.limit:
                    self.held.append(client)
                    self.cond.notify_all()
                    return
                self.uploads += 1
            self.active += 1
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target.port))
            upstream.sendall(head)
            pipe = threading.Thread(target=self._copy, args=(client, upstream), daemon=True)
            pipe.start()
            self._copy(upstream, client)
            pipe.join()
        except OSError:
            pass
        finally:
            client.close()
            with self.cond:
                self.active -= 1
                self.cond.notify_all()

    @staticmethod
    def _copy(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def hold_after(self, more: int) -> None:
        with self.cond:
            self.limit = self.uploads + more

    def wait_held(self, push: subprocess.Popen, log: Path) -> None:
        """Until an upload is parked and nothing is in flight to the emulator."""
        deadline = time.monotonic() + 120
        with self.cond:
            while not (self.held and self.active == 0):
                assert push.poll() is None, f"push ended before it reached the gate:\n{log.read_text()}"
                assert time.monotonic() < deadline, "the push never reached the gate"
                self.cond.wait(0.1)

    def release(self) -> None:
        with self.cond:
            for client in self.held:
                client.close()
            self.held.clear()
            self.limit = None

    def close(self) -> None:
        self.release()
        self.server.close()


def test_interrupted_pushes_and_an_emulator_restart_lose_nothing(published, sandbox, tmp_path):
    """A push killed after 3 uploads; the next push stopped after 2 more while the emulator
    (on-disk store) is killed and restarted on the same port: the push completes, re-sends nothing
    the bucket already holds, and a pull from an empty cache returns identical bytes."""
    gcs = Emulator(tmp_path / "gcs", "lora-dvc-restart", sandbox, on_disk=True).start()
    gate = Gate(gcs)
    pushes: list[subprocess.Popen] = []
    try:
        work = tmp_path / "work"
        shutil.copytree(published.work, work, symlinks=True)
        point_at(work, gcs)
        sandbox.dvc(["remote", "modify", "--local", remote_name(), "endpointurl", gate.url], work)
        expected = pushable(work)
        logs = [tmp_path / "push-killed.log", tmp_path / "push-restarted.log"]

        # 1. the client dies after 3 uploads
        gate.hold_after(3)
        pushes.append(sandbox.popen(["push"], work, logs[0]))
        gate.wait_held(pushes[0], logs[0])
        pushes[0].kill()
        pushes[0].wait(timeout=60)
        gate.release()
        after_kill = gcs.objects()
        assert len(after_kill) == 3 and set(after_kill) <= set(expected)

        # 2. the next push is parked after 2 more uploads; meanwhile the emulator is killed and
        #    restarted; then the parked requests are dropped and the push carries on
        gate.hold_after(2)
        pushes.append(sandbox.popen(["push"], work, logs[1]))
        gate.wait_held(pushes[1], logs[1])
        gcs.kill()  # SIGKILL, while the push waits for answers
        gcs.start()  # same port, same data folder
        gate.release()
        pushes[1].wait(timeout=240)
        assert gcs.uploads(0) == 5, "the first emulator should have received exactly 3 + 2 uploads"
        survived = gcs.objects()
        assert {name: survived.get(name) for name in after_kill} == after_kill, "push re-sent objects the bucket held"

        # 3. one more push completes whatever is missing, and only that
        final = sandbox.dvc(["push"], work)
        missing = len(expected) - len(survived)
        assert (f"{missing} file" in final.stdout) if missing else ("Everything is up to date" in final.stdout), (
            final.stdout
        )
        after = gcs.objects()
        assert set(after) == set(expected)
        assert {name: after[name] for name in survived} == survived, "push re-sent objects the bucket held"
        assert gcs.uploads() == len(expected), "some object was uploaded twice"
        for name, data in expected.items():
            assert gcs.read(name) == data, name

        drop_cache_and_outputs(work)
        sandbox.dvc(["pull"], work)
        assert snapshot(work) == published.files
    finally:
        for push in pushes:
            if push.poll() is None:
                push.kill()
                push.wait()
        gate.close()
        gcs.stop()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_imported_dataset_is_versioned_pushed_and_read_by_prepare(published, sandbox, gcs, tmp_path):
    """scripts/fetch_data.py against a local mirror: import-url, push, then pull with the mirror gone."""
    payload = (ROOT / "tests/fixtures/banglasenti/val.csv").read_bytes()
    www = tmp_path / "www"
    www.mkdir()
    (www / "banglasenti.csv").write_bytes(payload)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/banglasenti.csv"
    try:
        alice = clone(published.origin, tmp_path / "alice", gcs)
        fetched = sandbox.run(
            [sys.executable, "scripts/fetch_data.py", "banglasenti", "--url", f"banglasenti.csv={url}"], alice
        )
        assert "dvc push" in fetched.stdout and "data.path=data/external/banglasenti/banglasenti.csv" in fetched.stdout
        dvcfile = alice / "data/external/banglasenti/banglasenti.csv.dvc"
        meta = yaml.safe_load(dvcfile.read_text())
        md5 = hashlib.md5(payload).hexdigest()
        assert meta["outs"][0]["md5"] == md5 and meta["deps"][0]["path"] == url and meta["frozen"] is True
        run(["git", "add", str(dvcfile), str(dvcfile.parent / ".gitignore")], alice)
        run(["git", "commit", "-qm", "Track full banglasenti"], alice)
        pushed = sandbox.dvc(["push"], alice)
        assert "1 file pushed" in pushed.stdout
        assert gcs.read(remote_key(md5)) == payload
    finally:
        server.shutdown()
        server.server_close()

    # the source is gone: the bucket is the only copy left
    bob = clone(alice, tmp_path / "bob", gcs)
    sandbox.dvc(["pull", "data/external/banglasenti/banglasenti.csv.dvc"], bob)
    assert (bob / "data/external/banglasenti/banglasenti.csv").read_bytes() == payload
    write_params(bob, {"data": {"dataset": "banglasenti", "path": "data/external/banglasenti/banglasenti.csv"}})
    prepared = sandbox.dvc(["repro", "prepare"], bob)
    assert "Running stage 'prepare'" in prepared.stdout
    assert json.loads((bob / "data/prepared/labels.json").read_text()) == ["negative", "positive", "neutral"]


def _one_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_remote_check_says_what_is_wrong_in_one_line(published, sandbox, gcs, tmp_path):
    mine = clone(published.origin, tmp_path / "clone", gcs)
    local = mine / ".dvc" / "config.local"
    check = [sys.executable, "scripts/remote_check.py"]

    ok = sandbox.run(check, mine)
    assert _one_line(ok) == f"remote '{remote_name()}' OK: gs://{gcs.bucket}/{PREFIX} at {gcs.url}, anonymous"

    def fails(config_local: str | None, env: dict | None = None) -> str:
        if config_local is None:
            local.unlink(missing_ok=True)
        else:
            local.write_text(config_local)
        result = sandbox.run(check, mine, check=False, env=env)
        assert result.returncode == 1
        return _one_line(result)

    default = f"[core]\n    remote = {remote_name()}\n"
    head = default + f"['remote \"{remote_name()}\"']\n"
    emulator = f"    endpointurl = {gcs.url}\n    allow_anonymous_login = true\n"
    no_default = fails(None)  # a fresh clone: the remote is declared, no default chosen yet
    assert "no default DVC remote" in no_default and f"dvc remote default --local {remote_name()}" in no_default
    placeholder = fails(default)
    assert "placeholder" in placeholder and "dvc remote modify" in placeholder
    assert "bucket 'no-such-bucket' does not exist" in fails(head + "    url = gs://no-such-bucket/x\n" + emulator)
    closed = f"http://127.0.0.1:{free_port()}"
    assert f"cannot reach {closed}" in fails(
        head + f"    url = gs://{gcs.bucket}/x\n    endpointurl = {closed}\n    allow_anonymous_login = true\n"
    )
    assert "allow_anonymous_login" in fails(head + f"    url = gs://{gcs.bucket}/x\n    endpointurl = {gcs.url}\n")
    assert "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT" in fails(
        head + f"    url = gs://{gcs.bucket}/x\n" + emulator, env={"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "true"}
    )

    # a real bucket and no credentials anywhere: google-auth goes looking for the metadata server
    local.write_text(head + "    url = gs://some-team-bucket/lora-finetune\n")
    result = run(check, mine, check=False, env=sandbox.env)
    assert result.returncode == 1 and "no Google credentials" in _one_line(result)
    assert "169.254.169.254" in sandbox.blocked(), "the guard saw no metadata-server lookup"
