"""HIT images on S3: private objects in a bucket the user names, shown through presigned GET URLs.

The objects are uploaded without any ACL, so they stay private (the bucket's defaults apply; a
public bucket policy would defeat that, and is the user's choice). Workers' browsers fetch them
with presigned URLs, which SigV4 limits to 7 days (604,800 s): a HIT that lives longer needs its
URLs re-signed, so a longer ``expires_in`` is refused rather than silently cut short. Presigned
URLs also die with the credentials that signed them: sign with long-term credentials, not with a
session that expires before the HIT does.

The client is a ready boto3 S3 client (``mturk.aws.make_client("s3", ...)``); this module never
builds one and never sees keys.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cage_eval.errors import BackendError, ConfigError
from hitgen.hosting import ImageReader, mime_type

#: SigV4 presigned URLs are valid for at most 7 days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3ImageHost:
    """Serve ``RUN/images/<name>`` from ``s3://bucket/prefix<name>`` through presigned GET URLs.

    Parameters
    ----------
    client : a boto3 S3 client.
    bucket : the bucket the user named (must exist; it is never created here).
    run_dir : the run directory whose ``images/`` are uploaded.
    prefix : key prefix, e.g. ``"cage-eval/5e1f0c2a/"``; keys are ``prefix + image name``.
    expires_in : seconds each URL stays valid; at least the HIT lifetime, at most 604,800.
    max_workers : concurrent uploads.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        run_dir: Path,
        *,
        prefix: str = "",
        expires_in: int,
        max_workers: int = 8,
    ) -> None:
        if not bucket or not bucket.strip():
            raise ConfigError("no S3 bucket given; name an existing bucket with --s3-bucket")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in < 1:
            raise ConfigError(f"presigned URL lifetime {expires_in!r} must be a positive number of seconds")
        if expires_in > MAX_PRESIGN_SECONDS:
            raise ConfigError(
                f"images must stay visible for {expires_in:,} s, but SigV4 presigned URLs last at most "
                f"{MAX_PRESIGN_SECONDS:,} s (7 days); shorten the HIT lifetime to 7 days or less, or "
                "publish in rounds and re-sign the URLs for each"
            )
        if prefix.startswith("/") or ".." in prefix.split("/"):
            raise ConfigError(f"S3 key prefix {prefix!r} must be relative, without '..'")
        self.client = client
        # botocore presigns S3 URLs with SigV2 in the classic regions unless the client was made with
        # signature_version="s3v4"; SigV2 is deprecated and would make the 7-day check meaningless.
        # A handler registered first on the client's own event system picks SigV4 for presigning.
        client.meta.events.register_first("choose-signer.s3", _presign_with_sigv4,
                                          unique_id="cage-eval-presign-sigv4")
        self.bucket = bucket
        self.run_dir = Path(run_dir)
        self.prefix = prefix
        self.expires_in = expires_in
        self.max_workers = max(1, int(max_workers))
        self.reader = ImageReader(self.run_dir)

    def key(self, image_name: str) -> str:
        """The object key of an image."""
        return f"{self.prefix}{image_name}"

    def _upload_one(self, image_name: str) -> bool:
        data = self.reader.read(image_name)
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        key = self.key(image_name)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise self._backend_error(exc, key) from None
        except BotoCoreError as exc:
            raise BackendError(f"S3 bucket {self.bucket!r}: {exc}; check the endpoint and "
                               "credentials (boto3's chain, --profile)") from None
        else:
            if head.get("ETag", "").strip('"') == md5 and head.get("ContentLength") == len(data):
                return False
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentType=mime_type(image_name), ContentMD5=_b64_md5(data))
        except ClientError as exc:
            raise self._backend_error(exc, key) from None
        except BotoCoreError as exc:
            raise BackendError(f"S3 bucket {self.bucket!r}: {exc}; check the endpoint and "
                               "credentials (boto3's chain, --profile)") from None
        return True

    def _backend_error(self, exc: ClientError, key: str) -> BackendError:
        code = _error_code(exc)
        if code == "NoSuchBucket":
            return BackendError(f"S3 bucket {self.bucket!r} does not exist; create it first "
                                "(private, in your account) or name another with --s3-bucket")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "ExpiredToken", "TokenRefreshRequired"):
            return BackendError(f"S3 bucket {self.bucket!r}, key {key!r}: access refused ({code}); "
                                "check the credentials (boto3's chain, --profile) and the bucket policy")
        message = exc.response.get("Error", {}).get("Message", "")
        return BackendError(f"S3 bucket {self.bucket!r}, key {key!r}: {code} {message}".rstrip())

    def check_bucket(self) -> None:
        """Check the bucket exists and lives in the client's region (SigV4 URLs are region-bound)."""
        try:
            head = self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
                raise BackendError(f"S3 bucket {self.bucket!r} does not exist; create it first "
                                   "(private, in your account) or name another with --s3-bucket") from None
            raise self._backend_error(exc, "") from None
        except BotoCoreError as exc:
            raise BackendError(f"S3 bucket {self.bucket!r}: {exc}; check the endpoint and "
                               "credentials (boto3's chain, --profile)") from None
        headers = head.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        bucket_region = headers.get("x-amz-bucket-region")
        client_region = self.client.meta.region_name
        if bucket_region and client_region and bucket_region != client_region:
            raise ConfigError(f"S3 bucket {self.bucket!r} is in region {bucket_region}, but the client "
                              f"signs for {client_region}; presigned URLs would be refused: pass "
                              f"--region {bucket_region}")

    def upload(self, image_names: Iterable[str]) -> int:
        """Upload the images not already there with the same content; return how many were sent.

        Idempotent: an object whose ETag equals the local file's MD5 is skipped, so a rerun after a
        crash sends only what is missing. Objects are private (no ACL is set).
        """
        names = sorted(set(image_names))
        for name in names:  # check every file before sending anything
            self.reader.read(name)
        if not names:
            return 0
        self.check_bucket()
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(names))) as pool:
            return sum(pool.map(self._upload_one, names))

    def url(self, image_name: str) -> str:
        """A presigned GET URL for the image, valid ``expires_in`` seconds from now."""
        self.reader.read(image_name)
        try:
            url = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": self.key(image_name)},
                ExpiresIn=self.expires_in,
            )
        except (ClientError, BotoCoreError) as exc:
            raise BackendError(f"S3 bucket {self.bucket!r}: cannot sign a URL for {image_name!r} "
                               f"({exc}); check the credentials") from None
        if "X-Amz-Signature=" not in url:
            raise ConfigError("the S3 client did not presign with SigV4; make it with "
                              "botocore Config(signature_version='s3v4')")
        return url


def _presign_with_sigv4(signature_version: str, **kwargs: Any) -> str | None:
    """``choose-signer.s3`` handler: SigV4 query signing for presigned URLs, nothing else."""
    if signature_version.endswith("-query") and not signature_version.startswith("v4a"):
        return "s3v4-query"
    return None


def _b64_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")
