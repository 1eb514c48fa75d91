"""The boto3 seam: endpoints, retry configuration, error translation without secrets."""

import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from cage_eval.errors import ConfigError
from mturk.aws import backend_error, error_message, is_credential_error, make_client


def test_endpoints_and_retries(aws_env):
    sandbox = make_client()
    assert sandbox.meta.endpoint_url == "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
    assert sandbox.meta.region_name == "us-east-1"
    assert sandbox.meta.config.retries == {"mode": "standard", "total_max_attempts": 10}
    production = make_client(sandbox=False, retry_mode="adaptive", max_pool_connections=32)
    assert production.meta.endpoint_url == "https://mturk-requester.us-east-1.amazonaws.com"
    assert production.meta.config.retries["mode"] == "adaptive"
    assert production.meta.config.max_pool_connections == 32
    local = make_client(endpoint_url="http://127.0.0.1:9")
    assert local.meta.endpoint_url == "http://127.0.0.1:9"
    s3 = make_client("s3", region="eu-west-1")
    assert s3.meta.region_name == "eu-west-1"
    with pytest.raises(ConfigError, match="--retry-mode"):
        make_client(retry_mode="sometimes")
    with pytest.raises(ConfigError, match="no such profile"):
        make_client(profile="nobody-here")


def _client_error(code, message):
    return ClientError({"Error": {"Code": code, "Message": message}}, "CreateHITType")


def test_error_translation_keeps_secrets_out():
    exc = _client_error("InvalidSignatureException", "The request signature we calculated does not "
                        "match.\nThe Canonical String for this request should have been\n"
                        "'x-amz-security-token:SECRETSESSIONTOKEN'")
    assert is_credential_error(exc)
    err = backend_error(exc, "CreateHITType")
    assert "SECRETSESSIONTOKEN" not in str(err) and "AWS refused the credentials" in str(err)
    assert error_message(exc) == "The request signature we calculated does not match."
    assert is_credential_error(NoCredentialsError())
    assert not is_credential_error(_client_error("ServiceFault", "try again"))
    assert str(backend_error(_client_error("RequestError", "bad"), "GetHIT")) == "MTurk GetHIT: RequestError: bad"
