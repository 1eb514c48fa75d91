"""The one boto3 seam: every AWS client (MTurk, S3) is made here.

Credentials come only from boto3's own chain (environment variables, shared config and credentials
files, SSO, instance roles); cage-eval never reads, asks for or stores a key. ``--profile``,
``--endpoint-url`` and ``--region`` follow the AWS CLI's conventions. Retries use botocore's
``standard`` (or ``adaptive``) mode, which retries throttling and 5xx answers with capped
exponential backoff; create calls are safe to retry because each carries a ``UniqueRequestToken``.
"""

from __future__ import annotations

from typing import Any

from cage_eval.errors import BackendError, ConfigError
from mturk.environments import REGION, environment

RETRY_MODES = ("standard", "adaptive", "legacy")

#: Error codes that mean the credentials themselves are bad: retrying cannot help.
CREDENTIAL_ERROR_CODES = frozenset({
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "AccessDeniedException",
    "AuthFailure",
    "MissingAuthenticationToken",
})


def make_client(
    service: str = "mturk",
    *,
    sandbox: bool = True,
    profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 10,
    max_pool_connections: int = 10,
) -> Any:
    """Make a boto3 client for ``service`` (``"mturk"`` or ``"s3"``).

    Parameters
    ----------
    service
        The AWS service name.
    sandbox
        For MTurk: the sandbox endpoint (True) or production (False). Ignored when ``endpoint_url``
        is given.
    profile
        A named profile from the shared AWS config; None uses boto3's default chain.
    endpoint_url
        Override the service endpoint (a local MTurk-protocol server, an S3-compatible store).
    region
        The AWS region; MTurk defaults to us-east-1, S3 to the profile's region.
    retry_mode, max_attempts
        botocore's retry configuration (``standard`` or ``adaptive``; attempts including the first).
    max_pool_connections
        The HTTP connection pool size; set it to at least the number of threads sharing the client.

    Raises
    ------
    ConfigError
        Unknown profile, retry mode or attempt count.
    """
    import boto3
    import botocore.config
    import botocore.exceptions

    if retry_mode not in RETRY_MODES:
        raise ConfigError(f"--retry-mode {retry_mode!r}: expected one of {', '.join(RETRY_MODES)}")
    if not 1 <= max_attempts <= 50:
        raise ConfigError(f"max_attempts {max_attempts}: expected 1..50")
    try:
        session = boto3.session.Session(profile_name=profile)
    except botocore.exceptions.ProfileNotFound:
        raise ConfigError(
            f"--profile {profile!r}: no such profile in the AWS config; run `aws configure "
            f"--profile {profile}` or choose an existing profile"
        ) from None
    config = botocore.config.Config(
        # total_max_attempts counts the first try; botocore's "max_attempts" key counts retries only.
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        max_pool_connections=max(1, max_pool_connections),
        connect_timeout=10,
        read_timeout=60,
        # Presigned S3 URLs must be SigV4 (7-day maximum); older botocore signs some regions with SigV2.
        signature_version="s3v4" if service == "s3" else None,
    )
    kwargs: dict[str, Any] = {"config": config}
    if service == "mturk" and region and region != REGION and not endpoint_url:
        raise ConfigError(f"--region {region!r}: the MTurk requester API exists only in {REGION}; "
                          "drop --region")
    if service == "mturk":
        kwargs["region_name"] = region or REGION
        kwargs["endpoint_url"] = endpoint_url or environment(sandbox).endpoint_url
    else:
        if region:
            kwargs["region_name"] = region
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
    try:
        return session.client(service, **kwargs)
    except botocore.exceptions.NoRegionError:
        raise ConfigError(f"{service}: no AWS region configured; pass --region") from None
    except ValueError as exc:  # e.g. a malformed --endpoint-url
        raise ConfigError(f"--endpoint-url {endpoint_url!r}: {exc}") from None


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def error_message(exc: BaseException) -> str:
    """The AWS error message of a botocore ``ClientError``, else ``str(exc)``.

    Only the first line, at most 300 characters: signature errors go on to quote the canonical
    request, which may contain a session token, and that must never reach a log or the ledger.
    """
    response = getattr(exc, "response", None)
    message = str(exc)
    if isinstance(response, dict) and response.get("Error", {}).get("Message"):
        message = str(response["Error"]["Message"])
    first = message.strip().splitlines()[0] if message.strip() else ""
    return first[:300]


def is_credential_error(exc: BaseException) -> bool:
    """True when AWS refused the credentials (expired, unknown, bad signature, no access)."""
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return True
    return error_code(exc) in CREDENTIAL_ERROR_CODES


def backend_error(exc: BaseException, operation: str, *, context: str = "MTurk") -> BackendError:
    """Translate a boto3/botocore failure of ``operation`` into one clear :class:`BackendError`.

    The message never contains credentials: only the operation, the AWS error code and message.
    """
    import botocore.exceptions

    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return BackendError(
            f"{context} {operation}: no AWS credentials found; configure them the usual way "
            "(aws configure, AWS_PROFILE / --profile, or environment variables)"
        )
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | botocore.exceptions.ConnectTimeoutError):
        return BackendError(f"{context} {operation}: cannot reach the endpoint ({exc}); check "
                            "--endpoint-url and your network, then rerun (the ledger keeps progress)")
    code = error_code(exc)
    if is_credential_error(exc):
        return BackendError(
            f"{context} {operation}: AWS refused the credentials ({code}: {error_message(exc)}); "
            "refresh them (e.g. `aws sso login` or new session keys) and rerun"
        )
    if code:
        return BackendError(f"{context} {operation}: {code}: {error_message(exc)}")
    return BackendError(f"{context} {operation}: {type(exc).__name__}: {exc}")
