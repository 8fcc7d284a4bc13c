"""Check the DVC remote before a push or pull: one line, exit 0 when usable, 1 when not.

    python scripts/remote_check.py            # this clone's default remote (`core.remote`, set per machine)
    python scripts/remote_check.py -r NAME    # another remote

It reads the same merged configuration `dvc push` reads (`.dvc/config` + `.dvc/config.local`),
catches the usual mistakes before DVC turns them into a stack of retries and tracebacks (the
placeholder bucket, committed or missing credentials, an emulator without anonymous login or with
gcsfs's gRPC probing on, an endpoint nobody listens on, a bucket that does not exist), then lists
at most one object under the remote's folder with the remote's own dvc-gs client.
See docs/remote.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import warnings
from pathlib import Path
from urllib.parse import urlsplit

PLACEHOLDER_BUCKET = "CHANGE-ME"
GCS_HOST, GCS_PORT = "storage.googleapis.com", 443
HNS_ENV = "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"


class CheckError(Exception):
    """A problem with the remote, said in one line."""


def _endpoint(url: str | None) -> tuple[str, int, str]:
    if not url:
        return GCS_HOST, GCS_PORT, f"https://{GCS_HOST}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CheckError(f"endpointurl '{url}' is not an http(s) URL; e.g. http://127.0.0.1:9023 for an emulator")
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), url.rstrip("/")


def _credentials(root: Path, name: str, conf: dict, repo_conf: dict) -> str:
    """How the client will authenticate, or a CheckError."""
    if "credentialpath" in repo_conf.get("remote", {}).get(name, {}):
        raise CheckError(
            f"remote '{name}': credentialpath is set in the committed .dvc/config; move it to "
            f".dvc/config.local (dvc remote modify --local {name} credentialpath /abs/path/key.json) "
            f"and drop it from .dvc/config (dvc remote modify --unset {name} credentialpath)"
        )
    if conf.get("allow_anonymous_login"):
        return "anonymous"
    credpath = conf.get("credentialpath")
    if credpath:
        path = Path(credpath) if Path(credpath).is_absolute() else root / credpath
        if not path.is_file():
            raise CheckError(
                f"remote '{name}': credentialpath '{credpath}' does not exist; "
                f"fix it with dvc remote modify --local {name} credentialpath /abs/path/key.json"
            )
        return f"service-account key {credpath}"
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        creds, project = google.auth.default()
    except DefaultCredentialsError:
        raise CheckError(
            f"remote '{name}': no Google credentials; run `gcloud auth application-default login`, "
            "or export GOOGLE_APPLICATION_CREDENTIALS=/abs/path/key.json, or "
            f"dvc remote modify --local {name} credentialpath /abs/path/key.json"
        ) from None
    return f"application-default credentials ({type(creds).__name__}{', project ' + project if project else ''})"


def check(root: Path, remote: str | None, timeout: float) -> str:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except NotDvcRepoError:
        raise CheckError(f"'{root}' is not a DVC repository; run this from the project root") from None
    config = repo.config
    name = remote or config["core"].get("remote")
    if not name:
        declared = ", ".join(config["remote"]) or "none"
        raise CheckError(
            f"no default DVC remote on this machine (declared: {declared}); make one the default with "
            "`dvc remote default --local gcs` (scripts/setup_tpu_vm.sh --bucket does it), or check one with -r NAME"
        )
    conf = config["remote"].get(name)
    if conf is None:
        known = ", ".join(config["remote"]) or "none"
        raise CheckError(f"no DVC remote named '{name}' (remotes: {known})")
    url = conf["url"]
    parts = urlsplit(url)
    if parts.scheme != "gs":
        raise CheckError(f"remote '{name}' is {url}; this check covers gs:// remotes (dvc-gs)")
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not bucket or bucket == PLACEHOLDER_BUCKET:
        raise CheckError(
            f"remote '{name}' still points at the placeholder {url}; set your bucket with "
            f"`dvc remote modify {name} url gs://YOUR-BUCKET/lora-finetune` (or --local to keep it to this clone)"
        )
    endpoint = conf.get("endpointurl")
    host, port, shown = _endpoint(endpoint)
    if endpoint and os.environ.get(HNS_ENV, "true").strip().lower() not in ("false", "0"):
        raise CheckError(
            f"remote '{name}' uses endpoint {shown} but {HNS_ENV} is not 'false': gcsfs would probe it "
            f"over gRPC/TLS and wait 60 s per call; export {HNS_ENV}=false"
        )
    if endpoint and not conf.get("allow_anonymous_login") and not conf.get("credentialpath"):
        raise CheckError(
            f"remote '{name}' uses endpoint {shown} without allow_anonymous_login: google-auth would look "
            f"for cloud credentials (and the metadata server 169.254.169.254); run "
            f"dvc remote modify --local {name} allow_anonymous_login true"
        )
    auth = _credentials(root, name, conf, config.load_one("repo"))

    try:
        socket.create_connection((host, port), timeout=min(timeout, 5)).close()
    except OSError as err:
        raise CheckError(
            f"remote '{name}': cannot reach {shown} ({err.strerror or err}); "
            + ("is the emulator running?" if endpoint else "are you online?")
        ) from None

    from fsspec.exceptions import FSTimeoutError

    fs = repo.cloud.get_remote(name).fs.fs  # the gcsfs client dvc push would use, same options
    try:
        fs.call(
            "GET",
            "b/{}/o",
            bucket,
            prefix=f"{prefix}/" if prefix else "",
            maxResults=1,
            json_out=True,
            timeout=timeout,
        )
    except FileNotFoundError:
        raise CheckError(
            f"remote '{name}': bucket '{bucket}' does not exist at {shown}; create it "
            f"(gcloud storage buckets create gs://{bucket}) or fix the url "
            f"(dvc remote modify {name} url gs://BUCKET/PATH)"
        ) from None
    except FSTimeoutError:
        raise CheckError(f"remote '{name}': {shown} did not answer within {timeout:g} s") from None
    except OSError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if first.startswith("Forbidden"):
            raise CheckError(
                f"remote '{name}': {auth} may not list gs://{bucket}/{prefix} (403); grant "
                "roles/storage.objectAdmin on the bucket to that identity"
            ) from None
        raise CheckError(f"remote '{name}': {first}") from None
    except Exception as err:  # gcsfs HttpError and friends: keep it to one line
        code = getattr(err, "code", None)
        what = f"HTTP {code}: " if code else ""
        msg = (getattr(err, "message", None) or str(err) or type(err).__name__).splitlines()[0]
        if code == 401:
            raise CheckError(
                f"remote '{name}': {auth} rejected (401: {msg}); refresh them "
                "(gcloud auth application-default login) or fix credentialpath"
            ) from None
        raise CheckError(f"remote '{name}': {what}{msg}") from None
    return f"remote '{name}' OK: {url} at {shown}, {auth}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-r", "--remote", help="remote name (default: core.remote)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the bucket")
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="project root (default: cwd)")
    args = parser.parse_args(argv)
    # gcsfs logs tracebacks on the way to an exception; this tool says one line instead
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    try:
        print(check(args.repo.resolve(), args.remote, args.timeout))
        return 0
    except CheckError as err:
        print(f"error: {err}", file=sys.stderr)
    except Exception as err:  # noqa: BLE001 - anything else, still one line
        print(f"error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
