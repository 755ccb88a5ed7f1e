"""The sandbox org's OAuth token endpoint: client credentials, password and JWT bearer grants.

Salesforce refuses the client-credentials flow on the generic login servers (login.salesforce.com,
test.salesforce.com) and accepts a JWT bearer assertion only for the audience of its kind of org
(https://login.salesforce.com, or https://test.salesforce.com for a sandbox org), whatever URL the
token is asked of. `login_host` says which host the loopback URL stands for (None: the org's My
Domain); a request whose Host header names a generic login server is treated the same.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from connector.sandbox._http import Request, Response
from connector.sandbox.salesforce_org import Org
from connector.sandbox.salesforce_schema import B62

GENERIC_LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com")
_JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

_KEY_LOCK = threading.Lock()
_KEY: rsa.RSAPrivateKey | None = None


def jwt_key() -> rsa.RSAPrivateKey:
    """One throwaway RSA key per process: generating one per sandbox would slow every test down."""
    global _KEY
    with _KEY_LOCK:
        if _KEY is None:
            _KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return _KEY


class OAuthEndpoint(Org):
    """Who may log in, and the access tokens handed out (token -> the user's Id)."""

    def __init__(self, *, seed: int, client_id: str, client_secret: str, username: str, password: str,
                 login_host: str | None, is_sandbox_org: bool) -> None:
        super().__init__(seed=seed, username=username)
        self.client_id, self.client_secret = client_id, client_secret
        self.password = password
        self.login_host = login_host
        self.is_sandbox_org = is_sandbox_org
        self._tokens: dict[str, str] = {}  # access token -> user Id

    @property
    def url(self) -> str:
        raise NotImplementedError

    def expire_sessions(self) -> None:
        """Every token issued so far now gets 401 INVALID_SESSION_ID; a new login works."""
        with self._lock:
            self._tokens.clear()

    # --- OAuth ------------------------------------------------------------------------------------
    def _oauth(self, request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode(errors="replace")).items()}
        grant = form.get("grant_type")
        if grant == "client_credentials":
            if self._generic_login_host(request):
                # Salesforce: "The client credentials flow doesn't support calls to login.salesforce.com
                # or test.salesforce.com"; the token endpoint answers so (recorded, see the docs).
                return _oauth_error("invalid_grant", "request not supported on this domain")
            client_id, secret = form.get("client_id"), form.get("client_secret")
            scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
            if scheme == "Basic":
                try:
                    client_id, _, secret = base64.b64decode(encoded + "==").decode(errors="replace").partition(":")
                except ValueError:
                    client_id = secret = None
            return self._client_checked(client_id, secret) or self._issue(self._admin_id)
        if grant == "password":
            failure = self._client_checked(form.get("client_id"), form.get("client_secret"))
            if failure is None and (form.get("username"), form.get("password")) != (self.username, self.password):
                failure = _oauth_error("invalid_grant", "authentication failure")
            return failure or self._issue(self._admin_id)
        if grant == _JWT_GRANT:
            return self._jwt_login(form.get("assertion", ""))
        return _oauth_error("unsupported_grant_type", "grant type not supported")

    def _generic_login_host(self, request: Request) -> bool:
        host = request.headers.get("host", "").split(":")[0].lower()
        return host in GENERIC_LOGIN_HOSTS or (self.login_host or "").lower() in GENERIC_LOGIN_HOSTS

    def _client_checked(self, client_id: str | None, secret: str | None) -> Response | None:
        if client_id != self.client_id:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        if secret != self.client_secret:
            return _oauth_error("invalid_client", "invalid client credentials")
        return None

    def _jwt_login(self, assertion: str) -> Response:
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return _oauth_error("invalid_grant", "invalid assertion")
        if claims.get("iss") != self.client_id:
            return _oauth_error("invalid_client_id", "client identifier invalid")
        try:
            jwt.decode(assertion, jwt_key().public_key(), algorithms=["RS256"],
                       options={"require": ["exp"], "verify_aud": False})
        except jwt.ExpiredSignatureError:
            return _oauth_error("invalid_grant", "expired authorization code")
        except jwt.InvalidTokenError:
            return _oauth_error("invalid_grant", "invalid assertion")
        audiences = claims.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        # Salesforce's JWT bearer flow: `aud` is https://login.salesforce.com, or https://test.salesforce.com
        # for a sandbox org, whatever URL the token is asked of; the org's My Domain is not an audience.
        allowed = "https://test.salesforce.com" if self.is_sandbox_org else "https://login.salesforce.com"
        if not any(isinstance(a, str) and a.rstrip("/") == allowed for a in audiences):
            return _oauth_error("invalid_grant", "audience is invalid")
        if claims.get("sub") != self.username:
            return _oauth_error("invalid_grant", "invalid assertion")
        return self._issue(self._admin_id)

    def _issue(self, user: str) -> Response:
        with self._lock:
            token = self.org_id[:15] + "!" + "".join(self._rng.choices(B62 + ".", k=96))
            self._tokens[token] = user
        identity = f"{self.url}/id/{self.org_id}/{user}"
        issued_at = str(int(time.time() * 1000))
        digest = hmac.new(self.client_secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        return Response(200, {
            "access_token": token, "instance_url": self.url, "id": identity, "token_type": "Bearer",
            "issued_at": issued_at, "signature": base64.b64encode(digest).decode(),
        })


def _oauth_error(error: str, description: str) -> Response:
    return Response(400, {"error": error, "error_description": description})
