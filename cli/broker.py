"""``trader broker status``: connect with the configured settings (TRADER_IB__*) and report the session."""

from __future__ import annotations

import typer

from cli.common import cli_errors, console, fail, one_shot_broker, settings

app = typer.Typer(help="The broker session (TWS / IB Gateway).", no_args_is_help=True)


def mask(account: str) -> str:
    """An account code shown to people: the first two characters (DU = paper) and the last two."""
    return f"{account[:2]}***{account[-2:]}" if len(account) > 4 else "***"


@app.command("status")
@cli_errors
def status() -> None:
    """Connect once (no retries), print state, server version and the account (masked), or the error (exit 1)."""
    from services.errors import BrokerConnectionError

    ib = settings().ib
    endpoint = f"{ib.host}:{ib.port} clientId {ib.client_id}"
    broker = one_shot_broker()
    try:
        try:
            broker.connect()
            account = broker.account_values().account
        except BrokerConnectionError as exc:
            console.print(f"broker {endpoint}: disconnected", markup=False)
            raise fail(f"error: {exc}") from None
        link = broker.status()
        console.print(f"broker {endpoint}: {broker.connectivity.value}", markup=False)
        console.print(f"  server version: {link.server_version if link is not None else '-'}", markup=False)
        console.print(f"  account: {mask(account) if account else '-'}", markup=False)
    finally:
        broker.close()
