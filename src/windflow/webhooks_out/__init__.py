"""Outgoing webhooks: signed JSON deliveries of windflow's events to subscribed URLs.

:mod:`windflow.webhooks_out.signing` holds the signature scheme (also what a receiver needs to verify one);
:mod:`windflow.webhooks_out.dispatcher` turns bus events into persisted deliveries and sends them with retries.
"""
