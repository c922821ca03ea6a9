"""`windflow login|logout`, `windflow users create-admin|list`, `windflow tokens create|list|revoke`."""

from __future__ import annotations

import getpass
import sys
from typing import Annotated, Any

import typer

from windflow.cli.client import (
    ApiUrl,
    all_pages,
    api_url,
    check,
    client,
    console,
    credentials_from,
    credentials_path,
    err_console,
    load_credentials,
    resolve_api,
    save_credentials,
    stored_access_token,
    unreachable,
)
from windflow.cli.output import Output, OutputOpt, emit

PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input")]

users_app = typer.Typer(help="Users (the first admin; listing needs users:manage).", no_args_is_help=True)
tokens_app = typer.Typer(help="Personal API tokens for scripts and machines.", no_args_is_help=True)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _read_password(from_stdin: bool, *, confirm: bool = False) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    if not password:
        err_console.print("[red]empty password[/red]")
        raise typer.Exit(2)
    return password


def login(
    username: Annotated[str | None, typer.Option("-u", "--username", help="User name (prompted if omitted)")] = None,
    password_stdin: PasswordStdin = False,
    api: ApiUrl = None,
) -> None:
    """Sign in and keep the tokens in your config dir (other commands use them, refreshing as needed)."""
    import httpx2

    base, source = resolve_api(api)
    name = username or typer.prompt("User name")
    password = _read_password(password_stdin)
    try:
        resp = httpx2.post(
            f"{base}/api/v1/auth/login",
            json={"username": name, "password": password},
            headers={"User-Agent": "windflow-cli"},
            timeout=30.0,
        )
    except httpx2.HTTPError as exc:
        unreachable(base, exc, source)
    if resp.status_code == 429:
        err_console.print(f"[red]too many attempts[/red]: retry in {resp.headers.get('retry-after', '?')} s")
        raise typer.Exit(2)
    pair = check(resp)
    path = save_credentials({"api_url": base, "username": name.strip().lower(), **credentials_from(pair)})
    console.print(f"signed in as [bold]{name}[/bold] at {base} (credentials in {path})")


def logout(
    all_sessions: Annotated[bool, typer.Option("--all", help="End every session of yours, everywhere")] = False,
) -> None:
    """End the stored session on the server and forget the stored tokens."""
    import httpx2

    creds = load_credentials()
    if not creds.get("access_token"):
        console.print("not signed in")
        return
    tok = stored_access_token()
    try:
        with httpx2.Client(
            base_url=str(creds.get("api_url") or api_url()),
            timeout=30.0,
            headers={"Authorization": f"Bearer {tok}", "User-Agent": "windflow-cli"},
        ) as http:
            resp = http.post(
                "/api/v1/auth/logout", json={"refresh_token": creds.get("refresh_token"), "all_sessions": all_sessions}
            )
        if resp.status_code not in (204, 401):
            check(resp)
    except httpx2.HTTPError as exc:
        err_console.print(f"[yellow]could not reach the API ({exc}); forgetting the local tokens anyway[/yellow]")
    keep = {k: v for k, v in creds.items() if k in ("api_url", "username")}
    save_credentials(keep)
    console.print(f"signed out (tokens removed from {credentials_path()})")


# --------------------------------------------------------------------------- users


@users_app.command("create-admin")
def create_admin(
    username: Annotated[
        str | None, typer.Option("-u", "--username", help="Default: WINDFLOW_BOOTSTRAP_ADMIN_USER (admin)")
    ] = None,
    password_stdin: PasswordStdin = False,
    generate: Annotated[bool, typer.Option("--generate", help="Generate a password and print it once")] = False,
) -> None:
    """Create an admin user directly in the database (the way to the first admin in production)."""
    from sqlalchemy.exc import DBAPIError

    from windflow.api.accounts import AdminExists
    from windflow.api.accounts import create_admin as _create
    from windflow.auth.passwords import MIN_PASSWORD_LENGTH, generate_password
    from windflow.cli.commands import settings_or_exit
    from windflow.persistence.db import Database
    from windflow.persistence.migrate import upgrade
    from windflow.settings import Mode

    settings = settings_or_exit()
    name = username or settings.bootstrap_admin_user
    password = generate_password() if generate else _read_password(password_stdin, confirm=not password_stdin)
    if len(password) < MIN_PASSWORD_LENGTH:
        err_console.print(f"[red]the password needs at least {MIN_PASSWORD_LENGTH} characters[/red]")
        raise typer.Exit(2)

    async def _run() -> str:
        settings.ensure_data_dir()
        db = Database.from_url(settings.sqlalchemy_url)
        try:
            if settings.mode == Mode.EMBEDDED:
                await upgrade(db.engine)
            account = await _create(
                db, username=name, password=password, actor=f"cli:{_os_user()}", action="user.create"
            )
            return account.user.username
        finally:
            await db.dispose()

    try:
        import asyncio

        created = asyncio.run(_run())
    except (AdminExists, ValueError) as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    except DBAPIError as exc:
        err_console.print(f"[red]database error: {exc.orig}[/red]\n  (is the schema current? `windflow db upgrade`)")
        raise typer.Exit(1) from None
    console.print(f"created admin user [bold]{created}[/bold]")
    if generate:
        console.print(f"password (shown once): [bold]{password}[/bold]")


@users_app.command("list")
def list_users(output: OutputOpt = Output.TABLE, api: ApiUrl = None) -> None:
    """List users with their roles."""
    with client(api) as http:
        items = all_pages(http, "/api/v1/users")

    def table() -> None:
        from rich.table import Table

        out = Table("user", "roles", "disabled", "last login")
        for u in items:
            out.add_row(
                u["username"], ", ".join(u["roles"]), "yes" if u["disabled"] else "", u["last_login_at"] or "never"
            )
        console.print(out)

    emit(items, output, table)


# --------------------------------------------------------------------------- tokens


@tokens_app.command("create")
def create_token(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. ci-deploy")],
    permission: Annotated[
        list[str] | None, typer.Option("-p", "--permission", help="Repeat for several; default: all of yours")
    ] = None,
    expires_in_days: Annotated[
        int | None,
        typer.Option(
            "--expires-in-days", min=1, max=3650, help="Default: the server's (90 days); at most its maximum (365 days)"
        ),
    ] = None,
    api: ApiUrl = None,
) -> None:
    """Create a personal API token; its secret is printed once."""
    body: dict[str, Any] = {"name": name, "expires_in_days": expires_in_days}
    if permission:
        body["permissions"] = permission
    with client(api) as http:
        created = check(http.post("/api/v1/auth/tokens", json=body))
    console.print(f"token [bold]{created['id']}[/bold] ({', '.join(created['permissions']) or 'no permissions'})")
    console.print("secret (shown once, store it now):")
    sys.stdout.write(created["token"] + "\n")


@tokens_app.command("list")
def list_tokens(
    all_users: Annotated[bool, typer.Option("--all-users", help="Every user's tokens (users:manage)")] = False,
    include_revoked: Annotated[bool, typer.Option("--include-revoked", help="Revoked tokens too")] = False,
    output: OutputOpt = Output.TABLE,
    api: ApiUrl = None,
) -> None:
    """List API tokens (never their secrets)."""
    with client(api) as http:
        items = check(
            http.get("/api/v1/auth/tokens", params={"all_users": all_users, "include_revoked": include_revoked})
        )

    def table() -> None:
        from rich.table import Table

        out = Table("id", "name", "owner", "prefix", "permissions", "expires", "last used", "revoked")
        for t in items:
            out.add_row(
                t["id"],
                t["name"],
                t["owner"],
                t["prefix"] + "…",
                ", ".join(t["permissions"]),
                t["expires_at"] or "never",
                t["last_used_at"] or "never",
                t["revoked_at"] or "",
            )
        console.print(out)

    emit(items, output, table)


@tokens_app.command("revoke")
def revoke_token(token_id: Annotated[str, typer.Argument(help="The token's id")], api: ApiUrl = None) -> None:
    """Revoke an API token (it stops working at once)."""
    with client(api) as http:
        check(http.delete(f"/api/v1/auth/tokens/{token_id}"))
    console.print(f"revoked {token_id}")


def register(app: typer.Typer) -> None:
    """Attach these commands to the root `windflow` app."""
    app.command("login")(login)
    app.command("logout")(logout)
    app.add_typer(users_app, name="users")
    app.add_typer(tokens_app, name="tokens")
