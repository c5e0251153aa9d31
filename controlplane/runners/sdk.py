"""The runner SDK: a runner's side of the jobs API, over HTTP only.

A runner is any machine that reaches the API with a ``runner`` token. It claims a job by
presenting a data contract, keeps the lease alive with heartbeats, fetches every input and
checks it against the digest the job pins, and reports the output (digest, URI, metrics,
MLflow run id) or a failure reason.

Where input bytes come from, in order:

1. the version's URI, when it is a ``file://`` path that exists on this machine (a shared
   filesystem, or the same machine): copied into the job's work directory;
2. otherwise the control plane's content store (``GET /v1/projects/{p}/content/{digest}``):
   dataset and rubric content is stored at registration, models and outputs are uploaded
   (``controlplane job upload``, and runners upload their outputs); a directory arrives as
   its manifest and then file by file, each checked by its line of the manifest.

Either way the copy is digested (a directory by its sorted manifest) and compared with the
job's digest *after* it is in the work directory, so what is checked is what is trained on.
A mismatch is never "repaired" from the other source: the runner refuses to train and
reports the job failed with the reason.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse
from urllib.request import url2pathname

from controlplane.client.api import ApiClient, ApiError
from controlplane.registry.digests import digest_bytes, digest_path, manifest
from controlplane.runners.content import parse_manifest

Presented = dict[str, Any] | str


class RunnerError(Exception):
    """Something a runner reports (as the job's failure reason, or to its operator)."""


class LeaseLost(RunnerError):
    """The claim is no longer this runner's (lease expired, job cancelled): stop working."""


class ContractRefused(RunnerError):
    """The server refused a claim under the presented contract (recorded in the ledger)."""


class InputMismatch(RunnerError):
    """Input bytes whose digest is not the one the job pins: never trained on."""


class InputUnavailable(RunnerError):
    """Input bytes that are neither at their URI on this machine nor in the content store."""


def local_path(uri: str) -> Path | None:
    """The local path of a ``file://`` URI (``None`` for any other scheme or host)."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost"):
        return None
    return Path(url2pathname(parsed.path))


def _slot(ref: str) -> str:
    """A file name for an input: ``dataset/prefs@2`` -> ``dataset--prefs--v2``."""
    kind, _, rest = ref.partition("/")
    name, _, version = rest.partition("@")
    return f"{kind}--{name}--v{version}"


class RunnerClient:
    """Typed calls of the jobs and content API for one runner principal."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api

    # -- jobs ----------------------------------------------------------------------------------

    def claim_next(
        self,
        project: str,
        contract: Presented | None,
        *,
        lease_seconds: int | None = None,
        trainers: list[str] | None = None,
    ) -> dict[str, Any] | None:
        """The oldest queued job this contract covers, now claimed; ``None`` if there is none.

        Raises :class:`ContractRefused` when the server refuses the contract.
        """
        body: dict[str, Any] = {"contract": contract}
        if lease_seconds is not None:
            body["lease_seconds"] = lease_seconds
        if trainers:
            body["trainers"] = trainers
        try:
            data = self.api.post(f"/v1/projects/{quote(project, safe='')}/jobs/claim", body)
        except ApiError as exc:
            raise _refused(exc) from None
        return data.get("job")  # type: ignore[no-any-return]

    def claim(
        self, job_id: int, contract: Presented | None, *, lease_seconds: int | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"contract": contract}
        if lease_seconds is not None:
            body["lease_seconds"] = lease_seconds
        try:
            return self.api.post(f"/v1/jobs/{job_id}/claim", body)  # type: ignore[no-any-return]
        except ApiError as exc:
            raise _refused(exc) from None

    def heartbeat(self, job: Mapping[str, Any], progress: Mapping[str, Any] | None = None) -> Any:
        return self._held(job, "heartbeat", {"progress": dict(progress or {})})

    def release(self, job: Mapping[str, Any], reason: str) -> Any:
        return self._held(job, "release", {"reason": reason[:2000]})

    def fail(self, job: Mapping[str, Any], reason: str) -> Any:
        return self._held(job, "fail", {"reason": reason[:2000] or "failed"})

    def finish(
        self,
        job: Mapping[str, Any],
        *,
        digest: str,
        uri: str,
        metrics: Mapping[str, float] | None = None,
        mlflow_run_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Any:
        return self._held(
            job,
            "finish",
            {
                "digest": digest,
                "uri": uri,
                "metrics": dict(metrics or {}),
                "mlflow_run_id": mlflow_run_id,
                "parameters": dict(parameters or {}),
            },
        )

    def _held(self, job: Mapping[str, Any], verb: str, body: dict[str, Any]) -> Any:
        try:
            return self.api.post(
                f"/v1/jobs/{job['id']}/{verb}", {"claim": job["claim_seq"], **body}
            )
        except ApiError as exc:
            if exc.status == 409:
                raise LeaseLost(exc.detail) from None
            raise

    def job(self, job_id: int) -> dict[str, Any]:
        return self.api.get(f"/v1/jobs/{job_id}")  # type: ignore[no-any-return]

    # -- content -------------------------------------------------------------------------------

    def content(self, project: str, digest: str) -> tuple[bytes, str] | None:
        """Stored bytes of ``digest`` and their kind (file or manifest), checked; or None."""
        try:
            response = self.api.request(
                "GET", f"/v1/projects/{quote(project, safe='')}/content/{digest}"
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        data = response.content
        if digest_bytes(data) != digest:
            raise InputMismatch(
                f"the content store sent bytes with digest {digest_bytes(data)} for {digest}"
            )
        return data, response.headers.get("X-Content-Kind", "file")

    def put_content(self, project: str, data: bytes, kind: str = "file") -> str:
        digest = digest_bytes(data)
        self.api.request(
            "PUT",
            f"/v1/projects/{quote(project, safe='')}/content/{digest}",
            params={"kind": kind},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return digest

    def upload(self, project: str, path: Path) -> str:
        """Store a file, or a directory (its files, then its manifest); the digest."""
        if path.is_dir():
            text = manifest(path)
            for entry in parse_manifest(text.encode()):
                data = (path / entry.path).read_bytes()
                if digest_bytes(data) != entry.digest:
                    raise RunnerError(f"{path / entry.path} changed while it was uploaded")
                self.put_content(project, data)
            return self.put_content(project, text.encode(), "manifest")
        return self.put_content(project, path.read_bytes())

    def fetch(self, project: str, item: Mapping[str, Any], directory: Path) -> Path:
        """Bring one input (``{ref, digest, uri}``) into ``directory`` and check its digest.

        Raises :class:`InputMismatch` or :class:`InputUnavailable`; never returns bytes that
        do not match.
        """
        ref, expected = str(item["ref"]), str(item["digest"])
        target = directory / _slot(ref)
        if target.exists():
            _remove(target)
        directory.mkdir(parents=True, exist_ok=True)
        source = local_path(str(item["uri"]))
        if source is not None and (source.exists() or source.is_symlink()):
            if source.is_symlink():
                raise InputMismatch(f"input {ref}: {source} is a symbolic link; refusing it")
            if source.is_dir():
                shutil.copytree(source, target, symlinks=True)
            else:
                shutil.copyfile(source, target)
            origin = str(source)
        else:
            stored = self.content(project, expected)
            if stored is None:
                raise InputUnavailable(
                    f"input {ref}: its bytes are neither at {item['uri']} on this machine nor "
                    f"in the content store (upload them with 'controlplane job upload')"
                )
            data, kind = stored
            if kind == "manifest":
                target.mkdir()
                for entry in parse_manifest(data):
                    blob = self.content(project, entry.digest)
                    if blob is None:
                        raise InputUnavailable(
                            f"input {ref}: file {entry.path} of its manifest is not stored"
                        )
                    file = target / entry.path
                    file.parent.mkdir(parents=True, exist_ok=True)
                    file.write_bytes(blob[0])
            else:
                target.write_bytes(data)
            origin = "the content store"
        try:
            actual = digest_path(target)
        except ValueError as exc:
            raise InputMismatch(f"input {ref}: {exc}") from None
        if actual != expected:
            raise InputMismatch(
                f"input {ref}: the bytes read from {origin} have digest {actual}, but the job "
                f"pins {expected}; refusing to train on them"
            )
        return target


def _refused(exc: ApiError) -> Exception:
    if exc.status == 403 and exc.problem.get("type", "").endswith("/contract-rejected"):
        return ContractRefused(exc.detail)
    if exc.status == 409:
        return LeaseLost(exc.detail)
    return exc


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


__all__ = [
    "ContractRefused",
    "InputMismatch",
    "InputUnavailable",
    "LeaseLost",
    "RunnerClient",
    "RunnerError",
    "local_path",
]
