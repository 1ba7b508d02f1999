from decimal import Decimal

import pytest

from models.enums import RunMode, TradingMode
from services.errors import ConfigurationError, InputError
from services.settings import load_settings, require_live_consistency


def test_defaults_are_safe(tmp_path):
    settings = load_settings({"TRADER_DATA_DIR": str(tmp_path / "d")})
    assert settings.trading.mode is TradingMode.PAPER
    assert settings.trading.dry_run is True
    assert settings.trading.live_enabled is False
    assert not (tmp_path / "d").exists(), "nothing is created until asked for"
    assert settings.database_url() == f"sqlite:///{tmp_path / 'd' / 'trader.db'}"
    assert (tmp_path / "d").is_dir()


def test_nested_env_and_secret_masking():
    settings = load_settings({"TRADER_IB__PORT": "4002", "TRADER_LLM__API_KEY": "sk-very-secret"})
    assert settings.ib.port == 4002
    assert settings.llm.api_key is not None and settings.llm.api_key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in repr(settings)
    assert "sk-very-secret" not in str(settings.model_dump())


def test_unknown_key_rejected_and_all_problems_listed():
    with pytest.raises(InputError) as info:
        load_settings({"TRADER_IB__PROT": "1", "TRADER_LLMM__MODEL": "x"})
    locations = [p.location for p in info.value.problems]
    assert locations == ["TRADER_IB__PROT", "TRADER_LLMM__MODEL"]


def test_invalid_values_reported_with_field_paths():
    with pytest.raises(InputError) as info:
        load_settings({"TRADER_IB__PORT": "not-a-port", "TRADER_LLM__DAILY_BUDGET_USD": "-1"})
    locations = sorted(p.location for p in info.value.problems)
    assert locations == ["ib.port", "llm.daily_budget_usd"]


def test_live_needs_explicit_switch():
    with pytest.raises(InputError, match="live_enabled"):
        load_settings({"TRADER_TRADING__MODE": "live"})
    settings = load_settings({"TRADER_TRADING__MODE": "live", "TRADER_TRADING__LIVE_ENABLED": "true"})
    assert settings.trading.mode is TradingMode.LIVE
    assert settings.llm.daily_budget_usd == Decimal("5.00")
    assert settings.trading.run_mode(in_memory=False) is RunMode.LIVE


def test_run_mode_follows_the_broker_and_the_mode():
    trading = load_settings({}).trading
    assert trading.run_mode(in_memory=True) is RunMode.DRY_RUN
    assert trading.run_mode(in_memory=False) is RunMode.PAPER  # the simulator or a paper account


def test_environment_is_restored_after_explicit_environ(monkeypatch):
    monkeypatch.setenv("TRADER_IB__PORT", "4001")
    load_settings({"TRADER_IB__PORT": "4002"})
    import os

    assert os.environ["TRADER_IB__PORT"] == "4001"


def test_account_kind_must_match_mode():
    paper = load_settings({})
    require_live_consistency(paper, account_code="DU1234567")
    with pytest.raises(ConfigurationError):
        require_live_consistency(paper, account_code="U1234567")
    live = load_settings({"TRADER_TRADING__MODE": "live", "TRADER_TRADING__LIVE_ENABLED": "1"})
    with pytest.raises(ConfigurationError):
        require_live_consistency(live, account_code="DU1234567")


def test_explicit_environ_ignores_the_process_environment(monkeypatch):
    monkeypatch.setenv("TRADER_IB__PORT", "4001")
    assert load_settings({}).ib.port == 7497
    assert load_settings().ib.port == 4001


def test_overrides_merge_into_sections_from_variables():
    settings = load_settings({"TRADER_IB__PORT": "4002"}, database={"url": "sqlite:///x.db"}, ib={"host": "gw"})
    assert (settings.ib.port, settings.ib.host) == (4002, "gw")
    assert settings.database.url == "sqlite:///x.db"


def test_the_sim_control_port_variable_is_a_setting_not_an_unknown_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """`trader sim status/step` read TRADER_SIM__CONTROL_PORT; every other command must accept it too."""
    monkeypatch.setenv("TRADER_SIM__CONTROL_PORT", "7600")
    assert load_settings().sim.control_port == 7600
    monkeypatch.setenv("TRADER_SIM__CONTROL_PORT", "70000")
    with pytest.raises(InputError, match=r"sim\.control_port"):
        load_settings()


def test_a_zero_daily_loss_limit_is_rejected() -> None:
    """0 would mean "every order refused" to the gate but reads like "no limit": there is no off, so it is an error."""
    with pytest.raises(InputError, match=r"trading\.max_daily_loss_usd"):
        load_settings({"TRADER_TRADING__MAX_DAILY_LOSS_USD": "0"})
    assert load_settings({"TRADER_TRADING__MAX_DAILY_LOSS_USD": "0.01"}).trading.max_daily_loss_usd > 0


def test_notification_settings_refuse_a_bad_target() -> None:
    """One target at most, a URL that is one, a block named TYPE/NAME; every problem named (issue 15)."""
    with pytest.raises(InputError) as caught:
        load_settings(
            {"TRADER_NOTIFICATIONS__WEBHOOK_URL": "hooks.slack.com/x", "TRADER_NOTIFICATIONS__BLOCK": "slack"}
        )
    text = str(caught.value)
    assert "notifications.webhook_url" in text and "http:// or https://" in text and "notifications.block" in text
    with pytest.raises(InputError, match="set webhook_url or block, not both"):
        load_settings({"TRADER_NOTIFICATIONS__WEBHOOK_URL": "https://x.test/h",
                       "TRADER_NOTIFICATIONS__BLOCK": "slack-webhook/trader-slack"})  # fmt: skip
    ok = load_settings({"TRADER_NOTIFICATIONS__BLOCK": "slack-webhook/trader-slack"}).notifications
    assert ok.block == "slack-webhook/trader-slack" and ok.abstain_streak == 3 and ok.order_filled
