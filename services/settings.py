"""Typed settings: environment variables with the ``TRADER_`` prefix, ``__`` between sections.

Examples: ``TRADER_DATA_DIR=/srv/trader``, ``TRADER_IB__PORT=4002``, ``TRADER_LLM__API_KEY=sk-...``,
``TRADER_TRADING__MODE=live``. Nothing is read at import time: call :func:`load_settings`.
Unknown ``TRADER_*`` variables are rejected, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Mapping
from contextvars import ContextVar
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from models.enums import BadRowPolicy, LlmProvider, RunMode, TradingMode
from services.errors import ConfigurationError, InputError, Problem

ENV_PREFIX = "TRADER_"
ENV_NESTED_DELIMITER = "__"


def default_data_dir() -> Path:
    """Return the per-user data directory (XDG data home), not created here."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ibkr-trader"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL. Default: a SQLite file trader.db in the data directory.",
    )


class IBSettings(_Section):
    host: str = Field(default="127.0.0.1", description="TWS / IB Gateway host.")
    port: int = Field(default=7497, ge=1, le=65535, description="7497 TWS paper, 7496 TWS live, 4002/4001 Gateway.")
    client_id: int = Field(default=17, ge=0, description="Fixed clientId of the order-owning service.")
    account: SecretStr | None = Field(default=None, description="IB account code (DU... for paper).")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    request_timeout_s: float = Field(default=30.0, gt=0)
    max_messages_per_s: int = Field(default=45, ge=1, le=50, description="Client-side message pacing.")
    hist_requests_per_10min: int = Field(default=60, ge=1, le=60, description="IB historical pacing budget.")
    contract_cache_ttl_s: int = Field(default=7 * 24 * 3600, ge=0, description="Contract details cache TTL.")


class ModelPriceSetting(_Section):
    """A model's list price in USD per 1M tokens (an entry of ``TRADER_LLM__PRICES``)."""

    input_per_m: Decimal = Field(ge=0, allow_inf_nan=False)
    output_per_m: Decimal = Field(ge=0, allow_inf_nan=False)


TokenLimitParam = Literal["max_tokens", "max_completion_tokens"]


class LLMSettings(_Section):
    """The analyst of step 5. ``provider`` unset: ``compatible`` when ``base_url`` is set, ``openai`` when only
    ``api_key`` is, else ``offline`` (the deterministic rules analyst, the default). Checked at start-up: a provider
    missing what it needs is a settings error naming the variable."""

    provider: LlmProvider | None = Field(
        default=None, description="offline, openai, azure or compatible; unset: inferred from base_url / api_key."
    )
    api_key: SecretStr | None = Field(default=None, description="The endpoint's key; a local server needs none.")
    base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint (…/v1); for azure the resource endpoint."
    )
    model: str = Field(default="gpt-4o-mini", min_length=1, description="Model name (azure: the deployed model).")
    deployment: str | None = Field(default=None, description="Azure deployment name.")
    api_version: str = Field(default="2024-10-21", description="Azure api-version query parameter.")
    token_limit_param: TokenLimitParam | None = Field(
        default=None,
        description="Which request field caps the answer; unset: max_completion_tokens for openai, max_tokens else.",
    )
    vision: bool = Field(default=True, description="The model reads images; false: the prompt goes without the chart.")
    prices: dict[str, ModelPriceSetting] = Field(
        default_factory=dict, description="Extra or overriding price table entries, JSON keyed by model name."
    )
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    daily_budget_usd: Decimal = Field(default=Decimal("5.00"), ge=0)
    temperature: float = Field(default=0.0, ge=0, le=2)

    @field_validator("prices", mode="before")
    @classmethod
    def _prices_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not JSON ({exc}); e.g. '{{\"my-model\": {{\"input_per_m\": \"1\", "
                                 f"\"output_per_m\": \"2\"}}}}'") from None  # fmt: skip
        if isinstance(value, Mapping):
            return {str(name).strip().lower(): price for name, price in value.items()}
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL with a host")
        return value.strip()

    def key(self) -> str | None:
        """The API key, or ``None`` when unset or blank."""
        if self.api_key is None:
            return None
        return self.api_key.get_secret_value().strip() or None

    @property
    def resolved_provider(self) -> LlmProvider:
        if self.provider is not None:
            return self.provider
        if self.base_url is not None:
            return LlmProvider.COMPATIBLE
        return LlmProvider.OPENAI if self.key() is not None else LlmProvider.OFFLINE

    @property
    def is_local(self) -> bool:
        """A compatible endpoint without a key or on a loopback / private address: free, outside the budget."""
        if self.resolved_provider is not LlmProvider.COMPATIBLE:
            return False
        return self.key() is None or _private_host(urlsplit(self.base_url or "").hostname or "")

    @property
    def endpoint(self) -> str:
        """Which model server answers: provider, host, port and path of the base URL (never its credentials), and the
        Azure deployment. Part of the LLM cache key, so one model name on two endpoints never shares an answer."""
        parts = urlsplit(self.base_url or "")
        where = f"{parts.scheme}://{parts.hostname or ''}:{parts.port or ''}{parts.path}" if self.base_url else ""
        return f"{self.resolved_provider.value}|{where}|{(self.deployment or '').strip()}"

    @property
    def token_param(self) -> TokenLimitParam:
        if self.token_limit_param is not None:
            return self.token_limit_param
        return "max_completion_tokens" if self.resolved_provider is LlmProvider.OPENAI else "max_tokens"

    @model_validator(mode="after")
    def _provider_has_what_it_needs(self) -> LLMSettings:
        provider = self.resolved_provider
        missing: list[str] = []
        if provider in (LlmProvider.OPENAI, LlmProvider.AZURE) and self.key() is None:
            missing.append("TRADER_LLM__API_KEY")
        if provider in (LlmProvider.AZURE, LlmProvider.COMPATIBLE) and self.base_url is None:
            what = " (the resource endpoint, https://NAME.openai.azure.com)" if provider is LlmProvider.AZURE else ""
            missing.append("TRADER_LLM__BASE_URL" + what)
        if provider is LlmProvider.AZURE and not (self.deployment or "").strip():
            missing.append("TRADER_LLM__DEPLOYMENT (the deployment name)")
        if missing:
            raise ValueError(f"provider {provider.value} needs {' and '.join(missing)}")
        if self.deployment is not None and provider is not LlmProvider.AZURE:
            raise ValueError(f"TRADER_LLM__DEPLOYMENT applies to provider azure only, not {provider.value}")
        return self


def _private_host(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith((".localhost", ".local")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


class TradingSettings(_Section):
    mode: TradingMode = Field(default=TradingMode.PAPER, description="paper or live.")
    dry_run: bool = Field(default=True, description="Dry run: in-memory broker fills, no socket orders.")
    live_enabled: bool = Field(default=False, description="Second switch required for live trading.")
    max_daily_loss_usd: Decimal = Field(
        default=Decimal("1000"),
        gt=0,
        allow_inf_nan=False,
        description="Max loss today (realized since the session open + unrealized of every open position); "
        "at or over it every new order is refused for the rest of the trading day. 0 is rejected: there is no off.",
    )
    max_open_orders: int = Field(default=20, ge=0)
    bad_row_policy: BadRowPolicy = Field(default=BadRowPolicy.FLAG)
    archive_after_days: int = Field(default=90, ge=1)
    retry_max_attempts: int = Field(default=3, ge=0)

    def run_mode(self, *, in_memory: bool) -> RunMode:
        """The run mode of an order sent with these settings: ``dry_run`` to the run's in-memory broker, else
        ``live`` with ``mode=live`` (two switches), else ``paper`` (TWS / Gateway paper account or the simulator;
        the send-time gate refuses a live account in paper mode and a paper account in live mode)."""
        if in_memory:
            return RunMode.DRY_RUN
        return RunMode.LIVE if self.mode is TradingMode.LIVE else RunMode.PAPER

    @model_validator(mode="after")
    def _live_needs_switch(self) -> TradingSettings:
        if self.mode is TradingMode.LIVE and not self.live_enabled:
            raise ValueError("mode=live requires live_enabled=true (TRADER_TRADING__LIVE_ENABLED)")
        return self


class PrefectSettings(_Section):
    work_pool: str = Field(default="trader-pool")
    ui_url: str | None = Field(default=None, description="Base URL of the Prefect UI for printed links.")


class NotificationSettings(_Section):
    """What ``trader bootstrap`` makes Prefect automations for, and where they send (``deployments.notifications``).

    The code emits every event regardless; a switch turned off means that kind has no automation."""

    webhook_url: SecretStr | None = Field(
        default=None,
        description="Generic webhook (JSON POST of subject, body, text) that notifications go to; bootstrap keeps "
        "a Custom Webhook block for it.",
    )
    block: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9-]+/[A-Za-z0-9_-]+$",
        description="Instead of the webhook: an existing notification block as TYPE/NAME, e.g. "
        "slack-webhook/trader-slack or sendgrid-email/trader-mail.",
    )
    order_filled: bool = Field(default=True, description="Notify on an order filled.")
    order_rejected: bool = Field(default=True, description="... rejected by the broker or by the risk gate.")
    order_expired: bool = Field(default=True, description="... expired (its signal's validity ran out).")
    approval_pending: bool = Field(default=True, description="... an order waits for approval.")
    abstain_streak: int = Field(
        default=3, ge=0, description="Notify when a strategy gives this many ABSTAIN signals in a row; 0: off."
    )
    ib_reconnected: bool = Field(default=True, description="Notify when IB is back after an outage.")
    ib_outage_minutes: float = Field(
        default=5.0, ge=0, description="... of at least this many minutes (shorter ones only go to the log)."
    )
    llm_budget: bool = Field(default=True, description="Notify when the LLM daily budget is reached.")
    kill_switch: bool = Field(default=True, description="Notify when the kill switch is engaged or released.")
    daily_loss: bool = Field(default=True, description="Notify when the daily loss limit is hit.")
    reconcile_failed: bool = Field(default=True, description="Notify when a reconciliation fails.")
    flow_run_failed: bool = Field(default=True, description="Notify when any flow run ends Failed or Crashed.")

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> NotificationSettings:
        if self.webhook_url is not None and self.block is not None:
            raise ValueError("set webhook_url or block, not both")
        return self


# Set while load_settings() builds from an explicit mapping: then the process environment is not read at all.
_ENV_SOURCES_OFF: ContextVar[bool] = ContextVar("trader_env_sources_off", default=False)


class SimSettings(_Section):
    control_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="The simulator's clock control port that `trader sim status/step/advance-to` use; default: "
        "the simulator's own (`trader sim start` serves it on --port + 1). Those commands read it from the "
        "environment themselves, so their start stays light.",
    )


class Settings(BaseSettings):
    """Root settings. Sections: database, ib, llm, trading, prefect, sim, notifications."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    ib: IBSettings = Field(default_factory=IBSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    trading: TradingSettings = Field(default_factory=TradingSettings)
    prefect: PrefectSettings = Field(default_factory=PrefectSettings)
    sim: SimSettings = Field(default_factory=SimSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _ENV_SOURCES_OFF.get():
            return (init_settings,)
        return (init_settings, env_settings, dotenv_settings, file_secret_settings)

    def database_url(self) -> str:
        """Return the configured URL, or the default SQLite file (creating its directory)."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.ensure_data_dir() / 'trader.db'}"

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir

    def runs_dir(self) -> Path:
        """Directory for per-run outputs (charts, prompts)."""
        path = self.ensure_data_dir() / "runs"
        path.mkdir(exist_ok=True)
        return path


def _known_env_names() -> set[str]:
    names = {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub in annotation.model_fields:
                names.add(f"{ENV_PREFIX}{name}{ENV_NESTED_DELIMITER}{sub}".upper())
    return names


def unknown_env_keys(environ: Mapping[str, str]) -> list[str]:
    """Return ``TRADER_*`` variable names that match no setting."""
    known = _known_env_names()
    return sorted(k for k in environ if k.upper().startswith(ENV_PREFIX) and k.upper() not in known)


def _nested(environ: Mapping[str, str]) -> dict[str, Any]:
    """``TRADER_IB__PORT=4002`` -> ``{"ib": {"port": "4002"}}`` (keys lower-cased; values validated later)."""
    data: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.upper().startswith(ENV_PREFIX):
            continue
        path = key[len(ENV_PREFIX) :].lower().split(ENV_NESTED_DELIMITER)
        target = data
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return data


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment (or only from ``environ``), validated; raise ``InputError`` listing every
    problem. ``overrides`` (keyword sections or fields) win over variables."""
    env = dict(os.environ if environ is None else environ)
    problems = [Problem(k, "unknown setting") for k in unknown_env_keys(env)]
    if problems:
        raise InputError("settings", problems)
    try:
        if environ is None:
            return Settings(**overrides)
        token = _ENV_SOURCES_OFF.set(True)
        try:
            return Settings(**_merge(_nested(env), overrides))
        finally:
            _ENV_SOURCES_OFF.reset(token)
    except ValidationError as exc:
        raise InputError(
            "settings",
            [Problem(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()],
        ) from None


def require_live_consistency(settings: Settings, *, account_code: str | None) -> None:
    """Stop unless the account kind agrees with the trading mode (IB paper accounts start with ``D``)."""
    if account_code is None:
        return
    is_paper_account = account_code.upper().startswith("D")
    if settings.trading.mode is TradingMode.LIVE and is_paper_account:
        raise ConfigurationError(f"trading mode is live but account {account_code[:2]}*** is a paper account")
    if settings.trading.mode is TradingMode.PAPER and not is_paper_account:
        raise ConfigurationError(f"trading mode is paper but account {account_code[:2]}*** is a live account")
