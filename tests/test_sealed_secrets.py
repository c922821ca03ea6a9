"""Webhook and channel secrets, and rollout proposals, are sealed in the store with the codec keys."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from tests.test_codec import K1, K2
from windflow.domain.notifications import ChannelConfig
from windflow.persistence import sealing
from windflow.persistence.notifications import NotificationChannelRepository
from windflow.persistence.webhooks_out_repositories import WebhookSubscriptionRepository

pytestmark = pytest.mark.asyncio(loop_scope="session")
SECRET = "whsec_" + "s3cr3t" * 6
SLACK = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"


@pytest.fixture(autouse=True)
def sealed():
    sealing.configure({"k1": K1}, "k1")
    yield
    sealing.configure({}, None)


async def raw(db, sql: str) -> str:
    async with db.read() as session:
        return str((await session.execute(text(sql))).scalar_one())


async def test_webhook_secret_is_sealed_at_rest_and_opens_for_signing(db):
    repo = WebhookSubscriptionRepository()
    async with db.write() as session:
        await repo.add(
            session=session,
            subscription_id="wh1",
            url="https://receiver.example/hook",
            event_types=[],
            secret=SECRET,
            enabled=True,
            description="",
            created_by="tester",
        )
    stored = await raw(db, "select secret from webhook_subscriptions")
    assert stored.startswith("wfenc:v1:k1:") and SECRET not in stored
    async with db.read() as session:
        assert (await repo.require(session=session, subscription_id="wh1")).secret == SECRET
    # rotated keys: the old value still opens, a rewrite seals with the new key
    sealing.configure({"k1": K1, "k2": K2}, "k2")
    async with db.write() as session:
        row = await repo.require(session=session, subscription_id="wh1")
        assert row.secret == SECRET
        await repo.set_secret(session=session, subscription_id="wh1", secret=SECRET + "2")
    assert (await raw(db, "select secret from webhook_subscriptions")).startswith("wfenc:v1:k2:")
    # without the key, a sealed value is refused, never returned as ciphertext
    sealing.configure({"k9": K1}, "k9")
    with pytest.raises(sealing.UnsealError, match="unknown key id 'k2'"):
        async with db.read() as session:
            await repo.require(session=session, subscription_id="wh1")


async def test_channel_config_is_sealed_and_clear_rows_still_read(db):
    channels = NotificationChannelRepository()
    slack = ChannelConfig(name="oncall", kind="slack", url=SLACK, headers={"Authorization": "Bearer t0k3n"})
    async with db.write() as session:
        await channels.replace(session=session, channels=[slack])
    stored = await raw(db, "select config from notification_channels")
    assert "wfenc:v1:k1:" in stored and "XXXXSECRET" not in stored and "t0k3n" not in stored
    async with db.read() as session:
        assert await channels.get_all(session=session) == [slack]
    # a value written in clear (before sealing, or with the codec disabled) reads as it is
    sealing.configure({}, None)
    async with db.write() as session:
        await channels.replace(session=session, channels=[slack])
    assert "XXXXSECRET" in await raw(db, "select config from notification_channels")
    sealing.configure({"k1": K1}, "k1")
    async with db.read() as session:
        assert await channels.get_all(session=session) == [slack]


async def test_build_resources_seals_with_the_settings_keys(settings, db):
    from windflow.api.app import build_resources

    res = await build_resources(settings.model_copy(update={"codec_keys": {"k2": SecretStr(K2)}}), migrate=False)
    try:
        assert sealing.seal("x").startswith("wfenc:v1:k2:")
    finally:
        await res.db.dispose()
        await res.bus.close()


async def test_hook_signing_secret_is_sealed_at_rest(db):
    from windflow.persistence.alerts_in_repositories import HookRepository

    repo = HookRepository()
    async with db.write() as session:
        await repo.add(
            session=session,
            hook_id="hk_sealed",
            name="sealed",
            kind="generic",
            config={},
            token_hash="0" * 64,
            token_prefix="wf_hook_x",
            created_by="tester",
            auth="signature",
            signing_secret=SECRET,
        )
    stored = await raw(db, "select signing_secret from hooks")
    assert stored.startswith("wfenc:v1:k1:") and SECRET not in stored
    async with db.read() as session:
        assert (await repo.require(session=session, hook_id="hk_sealed")).signing_secret == SECRET
