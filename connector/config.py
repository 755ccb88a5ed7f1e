"""config.yaml as frozen typed models: sources, objects, schedule, write-back; `${ENV}` and relative paths."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connector.durations import Duration, Percent, parse_duration
from connector.errors import ConfigError, Problem, UsageError
from connector.mapping import StageMapping, read_mapping
from connector.web.address import is_loopback, split_listen
from connector.yamlfile import YamlDocument, dotted, interpolate_env, load_yaml, report_validation_error

DEFAULT_CONFIG = "config.yaml"
MIN_TOKEN_LENGTH = 16  # the health page token: long enough not to be guessed over the network


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- auth, one model per method ---------------------------------------------------------------
class TokenAuth(_Model):
    method: Literal["token"]
    access_token: SecretStr
    instance_url: StrictStr | None = None


# Salesforce's generic login servers; the client-credentials flow is refused there.
GENERIC_LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com")


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


class ClientCredentialsAuth(_Model):
    method: Literal["client_credentials"]
    # None: the source's instance_url, which is the org's My Domain.
    login_url: StrictStr | None = None
    client_id: StrictStr
    client_secret: SecretStr

    @field_validator("login_url")
    @classmethod
    def _my_domain(cls, value: str | None) -> str | None:
        if value is not None and _host(value) in GENERIC_LOGIN_HOSTS:
            raise ValueError(
                f"Salesforce refuses the client_credentials flow on {_host(value)}: use the org's My Domain "
                "login URL, e.g. https://acme.my.salesforce.com (a sandbox org: "
                "https://acme--uat.sandbox.my.salesforce.com)"
            )
        return value


class JwtAuth(_Model):
    method: Literal["jwt"]
    login_url: StrictStr = "https://login.salesforce.com"
    client_id: StrictStr
    username: StrictStr
    private_key_file: Path
    # The assertion's `aud`; None: https://login.salesforce.com, or https://test.salesforce.com when
    # login_url is test.salesforce.com or a sandbox org's My Domain, whatever URL the token is asked of.
    audience: StrictStr | None = None

    @property
    def aud(self) -> str:
        if self.audience is not None:
            return self.audience.rstrip("/")
        host = _host(self.login_url)
        sandbox_org = host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com")
        return "https://test.salesforce.com" if sandbox_org else "https://login.salesforce.com"


class PasswordAuth(_Model):
    method: Literal["password"]
    login_url: StrictStr = "https://login.salesforce.com"
    client_id: StrictStr
    client_secret: SecretStr
    username: StrictStr
    password: SecretStr
    security_token: SecretStr | None = None


SalesforceAuth = Annotated[
    TokenAuth | ClientCredentialsAuth | JwtAuth | PasswordAuth, Field(discriminator="method")
]


class HubSpotTokenAuth(_Model):
    method: Literal["token"]
    access_token: SecretStr


HubSpotAuth = Annotated[HubSpotTokenAuth, Field(discriminator="method")]


# --- objects and sources -------------------------------------------------------------------------
class ActivityConfig(_Model):
    """Where a source finds activity for the records of an object, and how values map to events."""

    enabled: StrictBool = True
    # Salesforce: Task.<field> value -> event; HubSpot: engagement kind or kind:property=value -> event.
    types: dict[StrictStr, StrictStr] = Field(default_factory=dict)


class ObjectConfig(_Model):
    status_field: StrictStr
    mapping: Path
    owner_field: StrictStr | None = None
    fields: tuple[StrictStr, ...] = ()  # extra fields read with each record (for assign rules)
    activity: ActivityConfig | None = None
    # HubSpot's lifecycle stage refuses to move backwards unless cleared first.
    clear_before_backwards: StrictBool = True


class HubSpotWebhooks(_Model):
    """A HubSpot app's webhook subscriptions, checked by their v3 signature."""

    # Secret: the app's client secret, which signs every request (X-HubSpot-Signature-v3).
    app_secret: SecretStr
    # A request whose X-HubSpot-Request-Timestamp is older than this is a replay (HubSpot: 5 minutes).
    max_age: Duration = timedelta(minutes=5)
    # The target URL as registered in the app, when a proxy in front changes scheme, host or port:
    # the signature covers the URL HubSpot called, not the one this server sees.
    url: StrictStr | None = None

    @field_validator("url")
    @classmethod
    def _target_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/\s?#]+/\S*", value):
            raise ValueError("url is the target URL as registered in the HubSpot app, e.g. "
                             "https://connector.example.com/webhooks/hubspot")
        return value


class SalesforceWebhooks(_Model):
    """Outbound Messages from a flow or workflow rule; each names the org it comes from."""

    organization_id: StrictStr  # 00D..., 15 or 18 characters; a message from another org is refused
    # Secret: optional, a value the Outbound Message's endpoint URL carries as ?token=...
    token: SecretStr | None = None

    @field_validator("organization_id")
    @classmethod
    def _org_id(cls, value: str) -> str:
        if not re.fullmatch(r"00D[A-Za-z0-9]{12}([A-Za-z0-9]{3})?", value):
            raise ValueError(
                "organization_id is the org's id: 15 or 18 letters and digits starting with 00D "
                "(Setup > Company Information > Salesforce.com Organization ID)"
            )
        return value


class _SourceBase(_Model):
    ca_bundle: Path | None = None
    api_budget: Percent = 0.5
    lookback: Duration = timedelta(seconds=5)
    # Every pull re-reads this much before its cursor, for changes a CRM shows late (None: the CRM's default).
    settle: Duration | None = None
    page_size: StrictInt = Field(default=0, ge=0)  # 0: the CRM's own default
    timeout: Duration = timedelta(seconds=60)
    max_retries: StrictInt = Field(default=6, ge=0, le=20)
    objects: dict[StrictStr, ObjectConfig] = Field(min_length=1)


class SalesforceSource(_SourceBase):
    type: Literal["salesforce"]
    instance_url: StrictStr | None = None
    api_version: StrictStr = "62.0"
    auth: SalesforceAuth
    webhooks: SalesforceWebhooks | None = None

    @property
    def settle_window(self) -> timedelta:
        # A transaction can commit with a SystemModstamp older than records already visible; public
        # taps re-read 10 s, and our lookback may already be longer.
        return self.settle if self.settle is not None else max(timedelta(seconds=10), self.lookback)

    @field_validator("api_version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        # `api_version: 62.0` unquoted is a float in YAML; accept it as the text the user meant.
        return f"{value:.1f}" if isinstance(value, float) else value

    @field_validator("auth")
    @classmethod
    def _client_credentials_url(cls, auth: Any, info: ValidationInfo) -> Any:
        instance_url = info.data.get("instance_url")
        if isinstance(auth, ClientCredentialsAuth) and auth.login_url is None:
            if instance_url is None:
                raise ValueError(
                    "auth method client_credentials needs the org's My Domain as login_url (or as the "
                    "source's instance_url), e.g. https://acme.my.salesforce.com"
                )
            if _host(instance_url) in GENERIC_LOGIN_HOSTS:
                raise ValueError(
                    "auth method client_credentials is refused on login.salesforce.com and test.salesforce.com: "
                    "set instance_url or auth.login_url to the org's My Domain, e.g. https://acme.my.salesforce.com"
                )
        return auth

    @property
    def login_url(self) -> str | None:
        """Where tokens are asked for: the auth's login_url, else (client credentials) the My Domain."""
        return getattr(self.auth, "login_url", None) or self.instance_url


class HubSpotSource(_SourceBase):
    type: Literal["hubspot"]
    base_url: StrictStr = "https://api.hubapi.com"
    auth: HubSpotAuth
    webhooks: HubSpotWebhooks | None = None
    # The account (Hub ID) number, for links to records in notifications: app.hubspot.com/contacts/<portal_id>/...
    portal_id: StrictInt | StrictStr | None = None

    @property
    def settle_window(self) -> timedelta:
        # HubSpot's search index shows a write seconds, sometimes minutes, after it happened.
        return self.settle if self.settle is not None else max(timedelta(minutes=2), self.lookback)


SourceConfig = Annotated[SalesforceSource | HubSpotSource, Field(discriminator="type")]


class Schedule(_Model):
    sync_every: Duration = timedelta(seconds=60)
    writeback_every: Duration = timedelta(seconds=10)
    timers_every: Duration = timedelta(minutes=15)
    reconcile_every: Duration = timedelta(hours=24)


class Writeback(_Model):
    enabled: StrictBool = True
    conflict_check: StrictBool = True
    max_attempts: StrictInt = Field(default=8, ge=1, le=100)


class Server(_Model):
    listen: StrictStr = "127.0.0.1:9108"
    # Secret: whoever holds it reads the health page; required to listen beyond loopback.
    token: SecretStr | None = None
    # A second address that serves only /webhooks/<source> (what the CRMs must reach); None: `listen`.
    webhooks: StrictStr | None = None

    @field_validator("listen", "webhooks")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            split_listen(value)
        return value

    @model_validator(mode="after")
    def _token_beyond_loopback(self) -> Server:
        host, _ = split_listen(self.listen)
        if self.token is not None and len(self.token.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"token must be at least {MIN_TOKEN_LENGTH} characters (a long random value)")
        if self.token is None and not is_loopback(host):
            raise ValueError(
                f"listen {self.listen} is reachable from other machines: set server.token "
                "(e.g. token: ${CONNECTOR_SERVER_TOKEN}), or listen on 127.0.0.1"
            )
        return self


class SmtpConfig(_Model):
    host: StrictStr
    port: StrictInt = 25
    sender: StrictStr
    username: StrictStr | None = None
    password: SecretStr | None = None
    starttls: StrictBool = False


class Notifications(_Model):
    smtp: SmtpConfig | None = None
    webhook: StrictStr | None = None
    # owner id -> email address, for SMTP notifications
    owners: dict[StrictStr, StrictStr] = Field(default_factory=dict)


class ConfigFile(_Model):
    # Secret: a PostgreSQL URL may carry a password (often from ${ENV}).
    database: SecretStr = SecretStr("sqlite:///connector.db")
    sources: dict[StrictStr, SourceConfig] = Field(min_length=1)
    schedule: Schedule = Schedule()
    writeback: Writeback = Writeback()
    server: Server | None = None
    notifications: Notifications | None = None


# --- the loaded configuration --------------------------------------------------------------------
# The owner field each CRM reads when `owner_field` is not given.
DEFAULT_OWNER_FIELD = {"salesforce": "OwnerId", "hubspot": "hubspot_owner_id"}


@dataclass(frozen=True)
class SyncedObject:
    source: str
    name: str
    settings: ObjectConfig  # `fields` here already carries the mapping's criteria fields (see `with_criteria`)
    mapping: StageMapping
    source_type: str = "salesforce"

    @property
    def read_fields(self) -> tuple[str, ...]:
        """Every field read with each record besides the status: the owner, `fields` and the fields
        the criteria triggers name. Pulls, `pull_all` and `read_statuses` all read these; a webhook
        receiver can use them to tell which property changes matter."""
        owner = self.settings.owner_field or DEFAULT_OWNER_FIELD.get(self.source_type, "OwnerId")
        return tuple(dict.fromkeys((owner, *self.settings.fields)))


def with_criteria(settings: ObjectConfig, mapping: StageMapping) -> ObjectConfig:
    """The object's settings with the criteria triggers' fields added to `fields`, so that every read
    of a record (pull, pull_all, read_statuses) carries them without the user listing them."""
    extra = [f for f in mapping.criteria_fields if f not in settings.fields and f != settings.status_field]
    return settings.model_copy(update={"fields": (*settings.fields, *extra)}) if extra else settings


@dataclass(frozen=True)
class Config:
    file: Path
    model: ConfigFile
    objects: MappingProxyType[tuple[str, str], SyncedObject]
    warnings: tuple[Problem, ...] = ()
    # A ca_bundle or JWT key file that does not exist, per source: an error for whatever talks to that CRM
    # (and for `validate`), while commands that only read the store still work.
    missing_files: MappingProxyType[str, tuple[Problem, ...]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def database_url(self) -> str:
        return self.model.database.get_secret_value()

    @property
    def sources(self) -> dict[str, SalesforceSource | HubSpotSource]:
        return dict(self.model.sources)

    def object(self, source: str, name: str) -> SyncedObject:
        return self.objects[(source, name)]


def default_config_path() -> Path:
    return Path(os.environ.get("CONNECTOR_CONFIG", DEFAULT_CONFIG))


def load_config(file: Path, environ: dict[str, str] | None = None, *, read_mappings: bool = True) -> Config:
    """Parse config.yaml and every mapping it names; raise ConfigError with every problem found.

    Without `read_mappings` (for `mapping init`, which writes one) no object is loaded, only sources.
    """
    doc = load_yaml(file, env_refs=True)
    if doc.data is None and doc.problems:
        raise ConfigError(doc.problems)
    if doc.data is None:  # an empty document (`---`, `null`): report what it lacks
        doc.data = {}
    if not isinstance(doc.data, dict):
        doc.problem((), "the config must be a mapping with 'sources' and other settings")
        raise ConfigError(doc.problems)
    interpolate_env(doc, environ)
    _resolve_paths(doc, file.parent)
    try:
        model = ConfigFile.model_validate(doc.data)
    except ValidationError as exc:
        report_validation_error(doc, exc, ConfigFile)
        # Check the mapping files too, so that one run lists every problem.
        for path in _raw_mapping_paths(doc.data):
            doc.problems.extend(read_mapping(path)[1])
        raise ConfigError(doc.problems) from None
    problems = list(doc.problems)
    objects: dict[tuple[str, str], SyncedObject] = {}
    mappings: dict[Path, StageMapping | None] = {}
    for source_name, source in model.sources.items() if read_mappings else ():
        for object_name, settings in source.objects.items():
            path = settings.mapping
            if path not in mappings and not path.is_file():
                # Said where the config names it, not as a bare "file not found" on a path nobody typed.
                key = ("sources", source_name, "objects", object_name, "mapping")
                problems.append(doc.at(key, f"{dotted(key)}: mapping file not found: {path}"))
                mappings[path] = None
            if path not in mappings:
                mapping, found = read_mapping(path)
                mappings[path] = mapping
                problems.extend(found)
            mapping = mappings[path]
            for trigger in mapping.criteria if mapping is not None else ():
                if trigger.on.field.lower() == settings.status_field.lower():
                    key = ("sources", source_name, "objects", object_name, "mapping")
                    message = (
                        f"{dotted(key)}: criteria trigger '{trigger.name}' reads the status field "
                        f"{settings.status_field}; a status read is rule 1's (map it in 'statuses')"
                    )
                    problems.append(doc.at(key, message))
            if mapping is not None:
                settings = with_criteria(settings, mapping)
                objects[(source_name, object_name)] = SyncedObject(
                    source_name, object_name, settings, mapping, source.type
                )
    model = _with_read_fields(model, objects)
    missing = _missing_files(doc, model)
    if any(not p.warning for p in problems):
        # Every problem at once: the missing key or CA files too, though alone they would not stop this load.
        raise ConfigError(problems + [p for found in missing.values() for p in found])
    return Config(file, model, MappingProxyType(objects), tuple(problems), missing)


def _with_read_fields(model: ConfigFile, objects: dict[tuple[str, str], SyncedObject]) -> ConfigFile:
    """The sources build their reads from the config's object settings: give them the criteria fields."""
    sources = {}
    for name, source in model.sources.items():
        settings = {o: objects[(name, o)].settings if (name, o) in objects else s for o, s in source.objects.items()}
        sources[name] = source.model_copy(update={"objects": settings})
    return model.model_copy(update={"sources": sources})


def _missing_files(doc: YamlDocument, model: ConfigFile) -> MappingProxyType[str, tuple[Problem, ...]]:
    missing: dict[str, tuple[Problem, ...]] = {}
    for name, source in model.sources.items():
        files: list[tuple[tuple[str, ...], Path | None]] = [(("sources", name, "ca_bundle"), source.ca_bundle)]
        auth = getattr(source, "auth", None)
        files.append((("sources", name, "auth", "private_key_file"), getattr(auth, "private_key_file", None)))
        found = tuple(
            doc.at(key, f"{dotted(key)}: file not found: {path}") for key, path in files if path and not path.is_file()
        )
        if found:
            missing[name] = found
    return MappingProxyType(missing)


def _raw_mapping_paths(data: dict[str, Any]) -> list[Path]:
    paths: list[Path] = []
    sources = data.get("sources")
    for source in sources.values() if isinstance(sources, dict) else ():
        objects = source.get("objects") if isinstance(source, dict) else None
        for obj in objects.values() if isinstance(objects, dict) else ():
            if isinstance(obj, dict) and isinstance(obj.get("mapping"), str):
                path = Path(obj["mapping"])
                if path not in paths:
                    paths.append(path)
    return paths


def _resolve_paths(doc: YamlDocument, base: Path) -> None:
    """Paths in the config are relative to the config file, and so is a relative SQLite database."""
    data = doc.data
    data.setdefault("database", "sqlite:///connector.db")  # the default lives beside the config too
    database = data.get("database")
    if isinstance(database, str) and database.startswith("sqlite:///") and not database.startswith("sqlite:////"):
        rest = database.removeprefix("sqlite:///")
        if "\x00" in rest:
            doc.problem(("database",), "database: the SQLite path contains a NUL character")
        elif rest and rest != ":memory:":
            data["database"] = f"sqlite:///{(base / rest).resolve()}"
    sources = data.get("sources")
    if not isinstance(sources, dict):
        return
    for source in sources.values():
        if not isinstance(source, dict):
            continue
        for key in ("ca_bundle",):
            if isinstance(source.get(key), str):
                source[key] = str(base / source[key])
        auth = source.get("auth")
        if isinstance(auth, dict) and isinstance(auth.get("private_key_file"), str):
            auth["private_key_file"] = str(base / auth["private_key_file"])
        objects = source.get("objects")
        if isinstance(objects, dict):
            for obj in objects.values():
                if isinstance(obj, dict) and isinstance(obj.get("mapping"), str):
                    obj["mapping"] = str(base / obj["mapping"])


def with_listen(config: Config, listen: str) -> Config:
    """`connector run --listen ADDR`: the config's server settings, its token included, at another address."""
    current = config.model.server
    token = current.token if current is not None else None
    webhooks = current.webhooks if current is not None else None
    try:
        server = Server(listen=listen, token=token, webhooks=webhooks)
    except ValidationError as exc:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise UsageError(f"--listen: {reasons}") from None
    return replace(config, model=config.model.model_copy(update={"server": server}))


def interval(value: str) -> timedelta:
    """A duration given on the command line."""
    return parse_duration(value)
