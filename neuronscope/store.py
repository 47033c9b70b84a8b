"""The run store: one API over a local folder or an ``s3://bucket/prefix``.

Backends implement a handful of byte-level primitives (``_get``, ``_put``, ``_put_if_absent``,
``_exists``, ``_list``, ``_delete``) plus ``_describe`` (what an exception means, in words);
JSON, Parquet, prefix reads, key checks and error messages are written once in ``Store``.
Every write is atomic: readers see the old object or the whole new one, never a part.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import secrets
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import StoreError

TMP_PREFIX = ".tmp-"  # in-flight local writes (and probes); never listed, never a valid key name
MULTIPART_THRESHOLD = 64 << 20  # S3 objects above this go up as multipart uploads
PART_SIZE = 64 << 20  # S3 parts must be >= 5 MiB (except the last)
READ_THREADS = 16  # parallel GETs for prefix reads: many small objects, latency-bound
REPLACES = b"neuronscope.replaces"  # Parquet metadata: the keys a compacted object stands for


def _check_key(key: str, *, prefix: bool = False) -> str:
    """``key`` if it is a clean relative '/'-path inside the run; a prefix may be '' or end in '/'."""
    if not isinstance(key, str):
        raise StoreError(f"store key must be a string, got {key!r}")
    body = key[:-1] if prefix and key.endswith("/") else key
    if prefix and body == "":
        return key
    parts = body.split("/")
    if key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in key:
        raise StoreError(f"invalid store key {key!r}: keys are relative paths without '..', '.' or '//'")
    if not prefix and parts[-1].startswith(TMP_PREFIX):
        raise StoreError(f"invalid store key {key!r}: names starting with {TMP_PREFIX!r} are reserved")
    return key


def _replaced(metadata) -> set[str]:
    return set(json.loads(metadata[REPLACES])) if metadata and REPLACES in metadata else set()


class Store(ABC):
    """A run root. ``Store.open(uri)`` picks the backend; ``uri`` is the normalised root."""

    uri: str
    local_root: Path | None  # the folder, for local stores only (tests and tools that want paths)

    @classmethod
    def open(cls, uri: str) -> Store:
        if not isinstance(uri, (str, os.PathLike)) or not str(uri):
            raise StoreError(f"run location must be a path or s3://bucket/prefix URI, got {uri!r}")
        uri = str(uri)
        if uri.startswith("s3://"):
            return S3Store(uri)
        if uri.startswith("file://"):
            parsed = urlparse(uri)
            if parsed.netloc not in ("", "localhost"):
                raise StoreError(f"file URI {uri!r} names a remote host; use a local path")
            return LocalStore(parsed.path)
        if "://" in uri:
            raise StoreError(f"unsupported run location {uri!r}: use a local path, file:// or s3://")
        return LocalStore(uri)

    # Pickles as its URI only: backends hold clients/sockets that must not travel to Ray tasks.
    def __reduce__(self):
        return (Store.open, (self.uri,))

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Store) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def url(self, key: str) -> str:
        return self.uri.rstrip("/") + "/" + key

    @contextlib.contextmanager
    def _errors(self, action: str, target: str):
        """Turn backend exceptions into a StoreError naming ``target`` and the reason."""
        try:
            yield
        except StoreError:
            raise
        except Exception as e:
            message = self._describe(e, action, target)
            if message is None:
                raise
            raise StoreError(message) from e

    # -- bytes ---------------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        _check_key(key)
        with self._errors("check", self.url(key)):
            return self._exists(key)

    def read_bytes(self, key: str) -> bytes:
        _check_key(key)
        with self._errors("read", self.url(key)):
            return self._get(key)

    def write_bytes(self, key: str, data: bytes) -> None:
        _check_key(key)
        with self._errors("write", self.url(key)):
            self._put(key, bytes(data))

    def write_bytes_if_absent(self, key: str, data: bytes) -> bool:
        """Create-only write (locks, claims): True if this call created the object."""
        _check_key(key)
        with self._errors("write", self.url(key)):
            return self._put_if_absent(key, bytes(data))

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error (as on S3)."""
        _check_key(key)
        with self._errors("delete", self.url(key)):
            self._delete(key)

    @abstractmethod
    def prune(self) -> None:
        """Remove the folders left empty under this store, itself included (a local folder keeps
        them after its objects are deleted; S3 has none). Only for a store no one else writes to."""

    def list(self, prefix: str = "") -> list[str]:
        """Keys under the folder ``prefix`` ('' = the whole run), recursive, sorted."""
        _check_key(prefix, prefix=True)
        folder = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        with self._errors("list", self.url(folder)):
            keys = self._list(folder)
        return sorted(k for k in keys if not k.rsplit("/", 1)[-1].startswith(TMP_PREFIX))

    def list_info(self, prefix: str = "") -> builtins.list[tuple[str, int, str]]:
        """(key, size, version) of every object under the folder ``prefix``, sorted by key; the
        version is the S3 ETag, or a local file's mtime in ns. Metadata only: nothing is read."""
        _check_key(prefix, prefix=True)
        folder = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        with self._errors("list", self.url(folder)):
            found = self._list_info(folder)
        return sorted(e for e in found if not e[0].rsplit("/", 1)[-1].startswith(TMP_PREFIX))

    def object_info(self, key: str) -> tuple[int, str] | None:
        """(size, version) of the object ``key`` (as ``list_info``), or None if there is none."""
        _check_key(key)
        with self._errors("check", self.url(key)):
            return self._object_info(key)

    def arrow_filesystem(self):
        """(pyarrow filesystem, path of the root in it), with this store's endpoint and credentials:
        for readers that take a pyarrow filesystem (Ray Data's)."""
        return self._arrow_fs()

    def check_writable(self) -> None:
        """Create the root if needed and write + delete a probe, so a bad location fails early."""
        probe = f"{TMP_PREFIX}probe-{secrets.token_hex(6)}"
        with self._errors("write to run location", self.uri):
            self._prepare_root()
            self._put(probe, b"")
            self._delete(probe)

    # -- json / parquet ------------------------------------------------------------------------
    def read_json(self, key: str):
        data = self.read_bytes(key)
        try:
            return json.loads(data)
        except ValueError as e:
            raise StoreError(f"{self.url(key)} is not valid JSON: {e}") from e

    def write_json(self, key: str, obj) -> None:
        self.write_bytes(key, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))

    def write_parquet(
        self,
        key: str,
        table: pa.Table,
        replaces: builtins.list[str] | None = None,
        row_group_size: int | None = None,
        dictionary: builtins.list[str] | None = None,
    ) -> None:
        """``replaces``: keys whose rows this object now holds (compaction). Until they are
        deleted, folder reads skip them, so a merge interrupted before its deletes duplicates nothing.
        ``dictionary``: the only columns dictionary-encoded (default: all)."""
        if replaces:
            meta = dict(table.schema.metadata or {})
            meta[REPLACES] = json.dumps(sorted(_check_key(k) for k in replaces)).encode()
            table = table.replace_schema_metadata(meta)
        sink = pa.BufferOutputStream()
        # statistics serve row-group filters on scalar columns; on list columns they cost a fifth
        # of the write of an exemplar table and filter nothing
        scalars = [f.name for f in table.schema if not pa.types.is_nested(f.type)]
        pq.write_table(
            table,
            sink,
            compression="zstd",
            row_group_size=row_group_size,
            use_dictionary=dictionary or True,
            write_statistics=scalars,
        )
        self.write_bytes(key, sink.getvalue().to_pybytes())

    def read_parquet(self, key_or_prefix: str) -> pa.Table:
        """One Parquet object, or every ``*.parquet`` under a folder (sorted by key), concatenated."""
        keys = self._parquet_keys(key_or_prefix)
        with ThreadPoolExecutor(min(READ_THREADS, len(keys))) as pool:
            blobs = list(pool.map(self.read_bytes, keys))
        by_key = {}
        for key, blob in zip(keys, blobs):
            try:
                by_key[key] = pq.read_table(pa.BufferReader(blob))
            except pa.ArrowException as e:
                raise StoreError(f"{self.url(key)} is not a readable Parquet file: {e}") from e
        gone = set().union(*(_replaced(t.schema.metadata) for t in by_key.values()))
        tables = [t.replace_schema_metadata(None) for k, t in by_key.items() if k not in gone]
        try:
            return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="default")
        except pa.ArrowException as e:
            raise StoreError(f"Parquet objects under {self.url(key_or_prefix)} have incompatible schemas: {e}") from e

    def _parquet_keys(self, key_or_prefix: str) -> builtins.list[str]:
        if not key_or_prefix.endswith("/") and key_or_prefix and self.exists(key_or_prefix):
            return [key_or_prefix]
        keys = [k for k in self.list(key_or_prefix) if k.endswith(".parquet")]
        if not keys:
            raise StoreError(f"cannot read {self.url(key_or_prefix)}: no Parquet object there or under it")
        return keys

    def read_parquet_where(
        self,
        keys: str | builtins.list[str],
        where=None,
        columns: builtins.list[str] | None = None,
        schema: pa.Schema | None = None,
    ) -> pa.Table:
        """The rows matching ``where`` (a ``pyarrow.dataset`` expression) of the given Parquet
        objects (or of every one under a folder), read in place: row groups whose statistics rule
        ``where`` out are never fetched, nor are unneeded columns. Replaced objects are skipped,
        as in ``read_parquet``. ``schema``: read the objects as it (a column an object lacks, one
        written before it existed, reads as nulls); default: the first object's."""
        import pyarrow.dataset as ds

        keys = self._parquet_keys(keys) if isinstance(keys, str) else [_check_key(k) for k in keys]
        fs, root = self._arrow_fs()
        where_text = self.url(keys[0]) if len(keys) == 1 else f"{len(keys)} Parquet objects under {self.uri}"
        with self._errors("read", where_text):
            fmt = ds.ParquetFileFormat()
            frags = [fmt.make_fragment(f"{root}/{k}", filesystem=fs) for k in keys]
            metas = [f.physical_schema.metadata for f in frags]
            gone = set().union(*(_replaced(m) for m in metas))
            kept = [f for k, f in zip(keys, frags) if k not in gone]
            dataset = ds.FileSystemDataset(kept, schema or kept[0].physical_schema.remove_metadata(), fmt, fs)
            try:
                return dataset.to_table(filter=where, columns=columns)
            except pa.ArrowInvalid as e:  # not Parquet, or a column/filter the objects lack
                raise StoreError(f"cannot read {where_text}: {e}") from e

    def parquet_schema(self, key: str) -> pa.Schema:
        """The Parquet object's schema, from its footer alone."""
        import pyarrow.parquet as pq

        fs, root = self._arrow_fs()
        with self._errors("read", self.url(key)):
            try:
                with fs.open_input_file(f"{root}/{_check_key(key)}") as f:
                    return pq.read_schema(f)
            except pa.ArrowInvalid as e:
                raise StoreError(f"{self.url(key)} is not a readable Parquet file: {e}") from e

    @abstractmethod
    def _arrow_fs(self):
        """(pyarrow filesystem, path of the run root in it), for reads that fetch only byte ranges."""

    # -- backend primitives --------------------------------------------------------------------
    @abstractmethod
    def _prepare_root(self) -> None:
        """Make the run location exist, where a backend needs that (a bucket's prefix does not)."""

    @abstractmethod
    def _describe(self, exc: Exception, action: str, target: str) -> str | None:
        """What ``exc`` means, in words naming ``target``; None: not a store error (raised as is)."""

    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _get(self, key: str) -> bytes: ...

    @abstractmethod
    def _put(self, key: str, data: bytes) -> None:
        """Write atomically: a reader sees the old object or the whole new one."""

    @abstractmethod
    def _put_if_absent(self, key: str, data: bytes) -> bool:
        """Create-only write; True if this call created the object."""

    @abstractmethod
    def _delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""

    @abstractmethod
    def _list(self, folder: str) -> builtins.list[str]:
        """Every key under ``folder`` ('' or ending in '/'), recursive, in any order."""

    @abstractmethod
    def _list_info(self, folder: str) -> builtins.list[tuple[str, int, str]]:
        """``_list`` with each key's size and version."""

    @abstractmethod
    def _object_info(self, key: str) -> tuple[int, str] | None:
        """The object's (size, version); None if it does not exist."""


class LocalStore(Store):
    """A folder. Writes go to a ``.tmp-*`` sibling, are fsynced, then renamed into place."""

    local_root: Path

    def __init__(self, path: str):
        self.local_root = Path(os.path.abspath(os.path.expanduser(path)))
        self.uri = str(self.local_root)

    def _path(self, key: str) -> Path:
        return self.local_root / key

    def _describe(self, exc, action, target):
        if isinstance(exc, FileNotFoundError):
            reason = "does not exist"
        elif isinstance(exc, FileExistsError):  # mkdir where a regular file stands
            reason = "not a directory"
        elif isinstance(exc, OSError):
            reason = (exc.strerror or str(exc)).lower()
        else:
            return None
        return f"cannot {action} {target}: {reason}"

    def _arrow_fs(self):
        from pyarrow import fs

        return fs.LocalFileSystem(), self.local_root.as_posix()

    def _prepare_root(self):
        if self.local_root.exists() and not self.local_root.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        self.local_root.mkdir(parents=True, exist_ok=True)

    def _exists(self, key):
        return self._path(key).is_file()

    def _get(self, key):
        return self._path(key).read_bytes()

    def _write_tmp(self, key: str, data: bytes) -> Path:
        """A complete, fsynced copy of ``data`` next to ``key``; removed again if anything fails."""
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f"{TMP_PREFIX}{secrets.token_hex(8)}"
        # os.open, not mkstemp: mkstemp makes 0600 files, and a run folder is shared.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with io.FileIO(fd, "wb") as f:
                view = memoryview(data)
                while view:
                    view = view[f.write(view) :]
                os.fsync(f.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _put(self, key, data):
        tmp = self._write_tmp(key, data)
        try:
            os.replace(tmp, self._path(key))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _put_if_absent(self, key, data):
        # link() fails if the name exists, and publishes the whole file at once (O_EXCL would not).
        tmp = self._write_tmp(key, data)
        try:
            os.link(tmp, self._path(key))
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _delete(self, key):
        self._path(key).unlink(missing_ok=True)

    def prune(self) -> None:
        if not self.local_root.is_dir():
            return
        for dirpath, _, _ in sorted(os.walk(self.local_root), key=lambda d: -len(d[0])):  # deepest first
            with contextlib.suppress(OSError):  # not empty: it holds an object
                os.rmdir(dirpath)

    def _list(self, folder):
        base = self._path(folder) if folder else self.local_root
        if not base.is_dir():
            return []
        keys = []

        def fail(err):
            raise err

        for dirpath, _, files in os.walk(base, onerror=fail):
            rel = Path(dirpath).relative_to(self.local_root).as_posix()
            keys += [f if rel == "." else f"{rel}/{f}" for f in files]
        return keys

    def _list_info(self, folder):
        out = []
        for key in self._list(folder):
            st = self._path(key).stat()
            out.append((key, st.st_size, str(st.st_mtime_ns)))
        return out

    def _object_info(self, key):
        path = self._path(key)
        if not path.is_file():
            return None
        st = path.stat()
        return st.st_size, str(st.st_mtime_ns)


# Settings that decide which endpoint/credentials a client uses: a change makes a new client.
_AWS_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)
_CLIENTS: dict = {}


def _s3_client(uri: str):
    """One boto3 S3 client per process and AWS settings: building one costs ~0.3 s of model loading."""
    settings = (os.getpid(),) + tuple(os.environ.get(k) for k in _AWS_VARS)
    if settings not in _CLIENTS:
        import boto3
        from botocore.config import Config

        try:
            session = boto3.session.Session()
            region = os.environ.get("AWS_REGION") or session.region_name or "us-east-1"
            config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=60)
            _CLIENTS[settings] = session.client("s3", region_name=region, config=config)
        except Exception as e:  # malformed endpoint URL, broken AWS config file, ...
            raise StoreError(f"cannot set up an S3 client for {uri}: {e}") from e
    return _CLIENTS[settings]


class S3Store(Store):
    """``s3://bucket/prefix`` through boto3; endpoint, region and credentials from AWS_* settings."""

    def __init__(self, uri: str):
        parsed = urlparse(uri)
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        if not self.bucket:
            raise StoreError(f"S3 URI {uri!r} names no bucket: use s3://bucket/prefix")
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.local_root = None
        self._client = None
        self._arrow: tuple[Any, str] | None = None  # pyarrow's S3 filesystem, made on first use

    @property
    def client(self):
        # Lazy: a client holds sockets and never crosses a pickle (see Store.__reduce__).
        if self._client is None:
            self._client = _s3_client(self.uri)
        return self._client

    @property
    def endpoint(self) -> str:
        return self.client.meta.endpoint_url

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def prune(self) -> None:
        pass  # S3 has no folders to leave empty

    def _prepare_root(self) -> None:
        pass  # a bucket's prefix exists once an object is under it

    def _arrow_fs(self):
        # pyarrow ignores AWS_ENDPOINT_URL*: hand it the endpoint and credentials boto3 resolved.
        from pyarrow import fs

        if self._arrow is not None:
            return self._arrow
        with self._errors("connect to", self.uri):
            import boto3

            creds = boto3.session.Session().get_credentials()
            frozen = creds.get_frozen_credentials() if creds else None
            url = urlparse(self.endpoint)
            s3 = fs.S3FileSystem(
                access_key=frozen and frozen.access_key,
                secret_key=frozen and frozen.secret_key,
                session_token=frozen and frozen.token,
                region=self.client.meta.region_name,
                endpoint_override=url.netloc,
                scheme=url.scheme or "https",
            )
        self._arrow = s3, f"{self.bucket}/{self.prefix}".rstrip("/")
        return self._arrow

    def _describe(self, exc, action, target):
        from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError, NoCredentialsError
        from botocore.exceptions import ConnectionError as BotoConnectionError

        if isinstance(exc, ClientError):
            err, meta = exc.response.get("Error", {}), exc.response.get("ResponseMetadata", {})
            code, status = err.get("Code", ""), meta.get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return f"bucket '{self.bucket}' does not exist ({target})"
            if code in ("NoSuchKey", "404") or status == 404:
                return f"cannot {action} {target}: does not exist"
            if code == "AccessDenied":  # known credentials, without the right to do this
                return f"permission denied by {self.endpoint} to {action} {target} (AccessDenied)"
            # HEAD answers carry no body, so a refused signature there is a bare 403.
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "403") or status == 403:
                return f"credentials rejected by {self.endpoint} for {target} ({code or status})"
            return f"cannot {action} {target}: S3 error {code or status}: {err.get('Message', exc)}"
        if isinstance(exc, NoCredentialsError):
            return f"no S3 credentials for {target}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):  # refused, DNS, TLS, timeouts, resets
            return f"cannot reach S3 endpoint {self.endpoint} to {action} {target} ({type(exc).__name__})"
        if isinstance(exc, BotoCoreError):
            return f"cannot {action} {target}: {exc}"
        if isinstance(exc, OSError):  # pyarrow's S3 client: its message names the cause
            return f"cannot {action} {target}: {exc}"
        return None

    def _exists(self, key):
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as e:
            # HEAD has no body, so a missing bucket also reads as a plain 404: "not there".
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise

    def _get(self, key):
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def _put(self, key, data):
        if len(data) <= MULTIPART_THRESHOLD:  # one PUT: a managed transfer costs threads per object
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
            return
        from boto3.s3.transfer import TransferConfig

        # A managed multipart upload: the object appears only on completion, and a failed upload is
        # aborted, so no parts linger. "classic": s3transfer over this very client (its endpoint,
        # retries, timeouts), never the optional CRT one.
        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=PART_SIZE, preferred_transfer_client="classic"
        )
        self.client.upload_fileobj(io.BytesIO(data), self.bucket, self._key(key), Config=config)

    def _put_if_absent(self, key, data):
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except ClientError as e:
            # 412: it exists; 409: a concurrent conditional write is in flight -- someone else's.
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                return False
            raise

    def _delete(self, key):
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def _list(self, folder):
        return [key for key, _, _ in self._list_info(folder)]

    def _list_info(self, folder):
        strip = len(self._key(""))
        found = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(folder)):
            found += [(obj["Key"][strip:], obj["Size"], obj["ETag"].strip('"')) for obj in page.get("Contents", [])]
        return found

    def _object_info(self, key):
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as e:
            if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return None
            raise
        return head["ContentLength"], head["ETag"].strip('"')
