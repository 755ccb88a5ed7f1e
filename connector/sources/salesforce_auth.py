"""Access tokens for the Salesforce source, one way per `auth.method`.

simple-salesforce's own logins always go to https://{domain}.salesforce.com and re-login on a 401
by themselves, which can recurse; so we ask the configured `login_url` for a token here and hand the
client a plain session id. Secrets are unwrapped only to build the token request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import requests

from connector.config import ClientCredentialsAuth, JwtAuth, PasswordAuth, TokenAuth
from connector.sources import errors
from connector.sources.errors import Action, CrmError

TOKEN_PATH = "/services/oauth2/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_LIFETIME = 180  # seconds; Salesforce accepts assertions valid for at most a few minutes

SalesforceAuth = TokenAuth | ClientCredentialsAuth | JwtAuth | PasswordAuth


@dataclass(frozen=True)
class Grant:
    access_token: str = field(repr=False)
    instance_url: str


def configured_token(auth: TokenAuth, instance_url: str | None) -> Grant:
    url = auth.instance_url or instance_url
    if not url:
        raise CrmError(Action.ADMIN, "auth method 'token' needs an instance_url (in auth or on the source)")
    return Grant(auth.access_token.get_secret_value(), url)


def request_token(
    session: requests.Session, auth: ClientCredentialsAuth | JwtAuth | PasswordAuth, login_url: str
) -> Grant:
    """One token request to `login_url`; raises a classified CrmError (4xx: ADMIN, 5xx / network: RETRY)."""
    url = login_url.rstrip("/") + TOKEN_PATH
    form, basic = _token_form(auth)
    response = session.post(url, data=form, auth=basic, headers={"Accept": "application/json"})
    if response.status_code != 200:
        raise _refused(url, response)
    try:
        body = response.json()
    except ValueError:
        raise errors.not_json(response.text, response.status_code) from None
    body = body if isinstance(body, dict) else {}
    token, instance = body.get("access_token"), body.get("instance_url")
    if not isinstance(token, str) or not isinstance(instance, str):
        raise CrmError(Action.RETRY, f"the token answer from {url} has no access_token or instance_url")
    return Grant(token, instance)


def _token_form(
    auth: ClientCredentialsAuth | JwtAuth | PasswordAuth,
) -> tuple[dict[str, str], tuple[str, str] | None]:
    if isinstance(auth, ClientCredentialsAuth):
        return {"grant_type": "client_credentials"}, (auth.client_id, auth.client_secret.get_secret_value())
    if isinstance(auth, PasswordAuth):
        suffix = auth.security_token.get_secret_value() if auth.security_token else ""
        return {
            "grant_type": "password",
            "client_id": auth.client_id,
            "client_secret": auth.client_secret.get_secret_value(),
            "username": auth.username,
            "password": auth.password.get_secret_value() + suffix,
        }, None
    return {"grant_type": JWT_GRANT, "assertion": _assertion(auth)}, None


def _assertion(auth: JwtAuth) -> str:
    try:
        key = auth.private_key_file.read_bytes()
    except OSError as exc:
        raise CrmError(Action.ADMIN, f"cannot read the JWT private key file: {exc.strerror}") from None
    claims = {
        "iss": auth.client_id,
        "sub": auth.username,
        "aud": auth.aud,
        "exp": int(time.time()) + JWT_LIFETIME,
    }
    try:
        return jwt.encode(claims, key, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        # The library's message can quote the key material: say which file, never what is in it.
        kind = type(exc).__name__
        raise CrmError(Action.ADMIN, f"the JWT private key file is not an RSA private key in PEM ({kind})") from None


def _refused(url: str, response: requests.Response) -> CrmError:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:300]
    error = errors.from_http_response(response.status_code, body, response.headers)
    if error.action in (Action.RETRY, Action.RATE_LIMIT, Action.PAUSE):
        return error
    # A refused login is never about one record, and retrying it cannot help: the admin must act.
    reason = error.message or "no reason given"
    return CrmError(Action.ADMIN, f"login at {url} refused: {reason}", code=error.code, status=response.status_code)
